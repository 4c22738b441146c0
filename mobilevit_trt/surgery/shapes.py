"""Shape inference for the surgery passes (analysis only: nothing of it is written into the output graph).

:func:`infer_shapes` runs ONNX Runtime's symbolic shape inference (falling back to ``onnx.shape_inference``) on a
copy of the model in which plugin nodes already present are replaced by standard stand-in ops; it returns
``{tensor name: (numpy dtype or None, dims or None)}``.  :func:`_dims_of` reads the dims of one ValueInfo.
Before the inference, small constant subgraphs of that copy (shape arithmetic an un-simplified export computes
from constants, such as transformers' ``ceil(H / patch) * patch``) are evaluated with ``onnx.reference``
(:func:`_fold_small_constants`), which the symbolic inference cannot do itself.
"""
import logging

from .. import plugin_spec
from ..reference_ops import PLUGIN_DOMAINS, np_dtype


def _shape_stand_ins(model):
    """Replace plugin nodes in ``model`` (in place) by standard ops with the same output shape and dtype."""
    from onnx import helper
    opset = max([o.version for o in model.opset_import if o.domain in ("", "ai.onnx")] or [0])
    for i, node in enumerate(model.graph.node):
        if node.op_type not in plugin_spec.SPECS or node.domain not in PLUGIN_DOMAINS:
            continue
        if node.op_type == plugin_spec.ATTENTION_OP and len(node.input) == 1:
            # packed [..., N, 3E] -> [..., N, E]: an equal three-way split on the last axis, first output
            outs = [node.output[0], node.output[0] + "__stand_in_k", node.output[0] + "__stand_in_v"]
            extra = {"num_outputs": 3} if opset >= 18 else {}
            new = helper.make_node("Split", [node.input[0]], outs, axis=-1, **extra)
        else:
            new = helper.make_node("Identity", [node.input[0]], [node.output[0]])
        new.name = node.name
        model.graph.node[i].CopyFrom(new)


def _constant_attr_value(node):
    from onnx import numpy_helper
    import numpy as np
    for a in node.attribute:
        if a.name == "value":
            return numpy_helper.to_array(a.t)
        if a.name == "value_float":
            return np.array(a.f, np.float32)
        if a.name == "value_floats":
            return np.array(list(a.floats), np.float32)
        if a.name == "value_int":
            return np.array(a.i, np.int64)
        if a.name == "value_ints":
            return np.array(list(a.ints), np.int64)
    return None


_NOT_FOLDED = ("RandomNormal", "RandomUniform", "RandomNormalLike", "RandomUniformLike", "Multinomial",
               "Bernoulli")


def _fold_small_constants(model, max_elements=4096):
    """Replace (in place) nodes whose inputs are all small constants by initializers holding their outputs.

    Analysis only (the copy given to the shape inference); nodes onnx.reference cannot run are kept.  Returns
    the number of nodes folded.
    """
    import numpy as np
    from onnx import AttributeProto, helper, numpy_helper
    try:
        from onnx.reference import ReferenceEvaluator
    except ImportError:          # onnx < 1.13
        return 0
    g = model.graph
    const = dict((i.name, numpy_helper.to_array(i)) for i in g.initializer if int(np.prod(i.dims)) <= max_elements)
    graph_inputs = set(i.name for i in g.input)
    graph_outputs = set(o.name for o in g.output)
    keep, folded = [], 0
    for node in g.node:
        if node.op_type == "Constant" and node.domain in ("", "ai.onnx"):
            v = _constant_attr_value(node)
            if v is not None and v.size <= max_elements:
                const[node.output[0]] = v
            keep.append(node)
            continue
        ins = [i for i in node.input if i]
        foldable = (node.domain in ("", "ai.onnx") and ins and node.op_type not in _NOT_FOLDED and
                    all(i in const and i not in graph_inputs for i in ins) and
                    not any(o in graph_outputs for o in node.output) and
                    not any(a.type in (AttributeProto.GRAPH, AttributeProto.GRAPHS) for a in node.attribute))
        if not foldable:
            keep.append(node)
            continue
        try:
            inputs = [helper.make_tensor_value_info(i, helper.np_dtype_to_tensor_dtype(const[i].dtype),
                                                    const[i].shape) for i in ins]
            outputs = [helper.make_empty_tensor_value_info(o) for o in node.output if o]
            piece = helper.make_model(helper.make_graph([node], "fold", inputs, outputs),
                                      opset_imports=list(model.opset_import))
            values = ReferenceEvaluator(piece).run(None, dict((i, const[i]) for i in ins))
        except Exception:  # noqa: BLE001 - anything onnx.reference cannot evaluate stays a node
            keep.append(node)
            continue
        if any(np.asarray(v).size > max_elements for v in values):
            keep.append(node)
            continue
        for o, v in zip([o for o in node.output if o], values):
            v = np.asarray(v)
            const[o] = v
            g.initializer.append(numpy_helper.from_array(v, o))
        folded += 1
    del g.node[:]
    g.node.extend(keep)
    return folded


def _dims_of(value_info):
    tt = value_info.type.tensor_type
    if not tt.HasField("shape"):
        return None
    dims = []
    for d in tt.shape.dim:
        if d.HasField("dim_value"):
            dims.append(int(d.dim_value))
        elif d.dim_param:
            dims.append(d.dim_param)
        else:
            dims.append(None)
    return dims


def _symbolic_infer(model):
    """ONNX Runtime's symbolic shape inference (keeps 'batch' symbolic, propagates Shape/Gather/Concat values).

    Driven step by step instead of through ``infer_shapes`` so that an incomplete inference still returns what
    it found (the public entry point raises and drops a file into the working directory in that case).
    """
    from onnxruntime.tools.symbolic_shape_infer import SymbolicShapeInference
    sym_logger = logging.getLogger("onnxruntime.tools.symbolic_shape_infer")
    level = sym_logger.level
    sym_logger.setLevel(logging.CRITICAL)
    try:
        s = SymbolicShapeInference(2 ** 31 - 1, True, False, 0)
        s._preprocess(model)
        while s.run_:
            s._infer_impl()
        s._update_output_from_vi()
        return s.out_mp_
    finally:
        sym_logger.setLevel(level)


def infer_shapes(graph_or_model, info=None):
    """Return ``{tensor name: (numpy dtype or None, dims or None)}``; dims hold ints, symbols (str) or None.

    Uses ONNX Runtime's symbolic shape inference (needs sympy) and falls back to ``onnx.shape_inference``,
    which cannot follow the Shape->Gather->Concat arithmetic of un-simplified exports (attention is then not
    found there).  ``info`` (a dict), when given, receives which inference ran.  Plugin nodes already in the
    graph are given standard stand-ins for the analysis.
    """
    import copy

    import onnx
    import onnx_graphsurgeon as gs

    if isinstance(graph_or_model, gs.Graph):
        model = gs.export_onnx(graph_or_model, do_type_check=False)
    else:
        model = copy.deepcopy(graph_or_model)
    _shape_stand_ins(model)
    try:
        _fold_small_constants(model)
    except Exception:  # noqa: BLE001 - the folding is only a help for the inference
        pass
    inferred = None
    info = {} if info is None else info
    try:
        inferred = _symbolic_infer(model)
        info["shape_inference"] = "onnxruntime symbolic"
    except Exception as e:  # noqa: BLE001 - any failure of the symbolic pass falls back to onnx's
        inferred = None
        info["shape_inference"] = "onnx (symbolic inference failed: %s: %s)" % (
            type(e).__name__, (str(e).strip().splitlines() or [""])[0][:120])
    if inferred is None:
        try:
            inferred = onnx.shape_inference.infer_shapes(model)
        except Exception:  # noqa: BLE001
            inferred = model
    shapes = {}
    g = inferred.graph
    for vi in list(g.input) + list(g.value_info) + list(g.output):
        et = vi.type.tensor_type.elem_type
        dtype = np_dtype(et) if et else None
        shapes[vi.name] = (dtype, _dims_of(vi))
    for init in g.initializer:
        shapes[init.name] = (np_dtype(init.data_type), [int(d) for d in init.dims])
    return shapes
