"""Stage 2, graph surgery: fuse LayerNorm and self-attention subgraphs into single plugin nodes.

The passes are structural: each starts from an anchor op (ReduceMean / LayerNormalization, Softmax), walks
producers and consumers, and checks op types, constant operands (read from the graph, never assumed), axes and
shapes.  Node order and node names play no part in matching.  A subgraph is only fused when every intermediate
tensor it removes is used by nothing else (no other consumer, not a graph output).

* :func:`fuse_layernorm` -- the decomposed LayerNorm PyTorch exports at opset <= 16 (ReduceMean, Sub, Pow/Mul,
  ReduceMean, Add eps, Sqrt, Div or Reciprocal+Mul, optional Mul gamma, optional Add beta; ReduceMean axes as
  attribute or input) and the native ``LayerNormalization`` node (opset >= 17), normalised over the last axis.
* :func:`fuse_attention` -- ``softmax(Q K^T * scale) V`` with an optional Mul/Div by a constant as the scale.
  Q/K/V reach the two MatMuls through Reshape/Transpose chains; those chains are checked to be exactly the
  head split ``[..., N, H*D] -> [..., H, N, D]`` (K: ``[..., H, D, N]``) by running them on an index tensor,
  which also gives ``num_heads``.  The output chain is followed until the tensor is ``[..., N, H*D]`` again.
  The plugin input is the packed QKV tensor when Q, K and V are the three consecutive thirds of one tensor
  (Slice x3 or Split on the last axis), else the three tensors q, k, v.

Each pass returns a list of fusion records (JSON-ready dicts) and ends with ``graph.cleanup().toposort()``.
The node contract (op type, inputs, attributes) comes from :mod:`mobilevit_trt.plugin_spec`.
"""
import collections
import logging
import math
import sys

from . import plugin_spec
from .errors import UserError
# The plugin nodes live in the default domain with op types no ONNX op uses (plugin_spec); the TensorRT ONNX
# parser finds them through its fallback plugin importer (plugin name = op_type, plugin_version and
# plugin_namespace attributes).  onnx.checker runs on a copy where they are moved to CHECK_DOMAIN.
from .reference_ops import PLUGIN_DOMAINS, np_dtype, with_check_domain  # noqa: F401 (surgery.with_check_domain)

KINDS = collections.OrderedDict([
    ("layernorm", plugin_spec.LAYERNORM_OP),
    ("attention", plugin_spec.ATTENTION_OP),
])
DEFAULT_KINDS = tuple(KINDS)
VERIFY_ATOL = 1e-4
DYNAMIC_VERIFY_BATCHES = (1, 4)
_SIM_SUBSTITUTES = (2, 3)     # values given to symbolic dims when a rearrange chain is run on index tensors
_MAX_SIM_ELEMENTS = 1 << 24


class _NoMatch(Exception):
    """Raised inside a matcher: the subgraph at this anchor is not the pattern (reason in the message)."""


def parse_kinds(text):
    """``"layernorm,attention"`` -> ``["layernorm", "attention"]`` (validated, order kept, duplicates dropped)."""
    kinds = []
    for part in (text or "").split(","):
        k = part.strip().lower()
        if not k:
            continue
        if k not in KINDS:
            raise UserError("unknown plugin kind %r in --plugins (choose from %s)" % (k, ",".join(KINDS)))
        if k not in kinds:
            kinds.append(k)
    if not kinds:
        raise UserError("--plugins is empty (choose from %s)" % ",".join(KINDS))
    return kinds


# ---------------------------------------------------------------------------------------------------------
# shape inference (analysis only: nothing of it is written into the output graph)
# ---------------------------------------------------------------------------------------------------------

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


# ---------------------------------------------------------------------------------------------------------
# graph queries and constant evaluation
# ---------------------------------------------------------------------------------------------------------

def _trunc_div(a, b):
    if isinstance(a, (int,)) and isinstance(b, (int,)):
        q = abs(a) // abs(b)
        return q if (a >= 0) == (b >= 0) else -q
    return a / b


def _pyop(fn):
    def wrapped(a, b):
        if a is None or b is None:
            return None
        a = a.item() if hasattr(a, "item") else a
        b = b.item() if hasattr(b, "item") else b
        return fn(a, b)
    return wrapped


_ARITH = {
    "Add": _pyop(lambda a, b: a + b),
    "Sub": _pyop(lambda a, b: a - b),
    "Mul": _pyop(lambda a, b: a * b),
    "Div": _pyop(_trunc_div),
}


class _Analysis(object):
    """Graph queries for the matchers: producers, consumers, shapes, and values of constant tensors."""

    def __init__(self, graph, shapes):
        import numpy as np
        self.np = np
        self.graph = graph
        self.shapes = shapes if shapes is not None else {}
        self.output_names = set(t.name for t in graph.outputs)
        self.opset = int(graph.opset or 0)
        self._cache = {}
        self.used_node_names = set(n.name for n in graph.nodes if n.name)
        self.used_tensor_names = set(graph.tensors().keys())

    # -- structure ------------------------------------------------------------------------------------
    @staticmethod
    def producer(t):
        return t.inputs[0] if len(t.inputs) == 1 else None

    @staticmethod
    def consumers(t):
        seen, out = set(), []
        for n in t.outputs:
            if id(n) not in seen:
                seen.add(id(n))
                out.append(n)
        return out

    def is_graph_output(self, t):
        return t.name in self.output_names

    def single_consumer(self, t):
        """The only node that reads ``t``, or None (several readers, none, or ``t`` is a graph output)."""
        cons = self.consumers(t)
        if len(cons) != 1 or self.is_graph_output(t):
            return None
        return cons[0]

    # -- shapes ---------------------------------------------------------------------------------------
    def dims(self, t):
        import onnx_graphsurgeon as gs
        if isinstance(t, gs.Constant):
            return [int(d) for d in t.shape]
        info = self.shapes.get(t.name)
        if info is not None and info[1] is not None:
            return list(info[1])
        if t.shape is not None:
            return [d if isinstance(d, int) else (d or None) for d in t.shape]
        return None

    def rank(self, t):
        d = self.dims(t)
        return None if d is None else len(d)

    def dtype(self, t):
        import onnx_graphsurgeon as gs
        if isinstance(t, gs.Constant):
            return self.np.dtype(t.values.dtype)
        info = self.shapes.get(t.name)
        if info is not None and info[0] is not None:
            return self.np.dtype(info[0])
        if t.dtype is not None:
            try:
                return self.np.dtype(t.dtype)
            except TypeError:
                return None
        return None

    def last_dim(self, t):
        d = self.dims(t)
        if not d or not isinstance(d[-1], int):
            return None
        return d[-1]

    # -- constant values ------------------------------------------------------------------------------
    def value(self, t):
        """The value of ``t`` as a numpy array when it is computable from constants and static shapes."""
        v = self._eval(t, 0)
        if v is None:
            return None
        np = self.np
        if v.dtype == object:
            flat = v.ravel().tolist()
            if any(x is None for x in flat):
                return None
            return np.array(flat).reshape(v.shape)
        return v

    def _eval(self, t, depth):
        if t is None or not t.name:
            return None
        if t.name in self._cache:
            return self._cache[t.name]
        self._cache[t.name] = None   # cycle guard
        try:
            v = self._eval_uncached(t, depth)
            if v is not None:
                v = self.np.asarray(v)
        except (ValueError, IndexError, TypeError, ZeroDivisionError, OverflowError):
            v = None
        self._cache[t.name] = v
        return v

    def _eval_uncached(self, t, depth):
        import onnx_graphsurgeon as gs
        np = self.np
        if isinstance(t, gs.Constant):
            return np.asarray(t.values)
        if depth > 64:
            return None
        p = self.producer(t)
        if p is None:
            return None
        op = p.op
        if op == "Constant":
            return _constant_node_value(p)

        def arg(i):
            if i >= len(p.inputs):
                return None
            return self._eval(p.inputs[i], depth + 1)

        if op == "Identity":
            return arg(0)
        if op == "Cast":
            v = arg(0)
            if v is None:
                return None
            to = np_dtype(int(p.attrs["to"]))
            if v.dtype == object:
                return v if np.issubdtype(to, np.integer) else None
            return v.astype(to)
        if op == "Shape":
            dims = self.dims(p.inputs[0])
            if dims is None:
                return None
            arr = np.array([d if isinstance(d, int) else None for d in dims] + [0], dtype=object)[:-1]
            start = int(p.attrs.get("start", 0))
            end = p.attrs.get("end", None)
            return arr[start:(None if end is None else int(end))]
        if op == "Gather":
            data, idx = arg(0), arg(1)
            if data is None or idx is None or idx.dtype == object:
                return None
            return np.take(data, idx.astype(np.int64), axis=int(p.attrs.get("axis", 0)))
        if op in ("Unsqueeze", "Squeeze"):
            v = arg(0)
            if v is None:
                return None
            axes = p.attrs.get("axes")
            if axes is None and len(p.inputs) > 1:
                a = arg(1)
                if a is None or a.dtype == object:
                    return None
                axes = a.ravel().tolist()
            if op == "Squeeze":
                return np.squeeze(v) if axes is None else np.squeeze(v, axis=tuple(int(a) for a in axes))
            out_rank = v.ndim + len(axes)
            for a in sorted(int(a) % out_rank for a in axes):
                v = np.expand_dims(v, a)
            return v
        if op == "Concat":
            parts = [arg(i) for i in range(len(p.inputs))]
            if any(x is None for x in parts):
                return None
            if any(x.dtype == object for x in parts):
                parts = [x.astype(object) for x in parts]
            return np.concatenate(parts, axis=int(p.attrs.get("axis", 0)))
        if op in _ARITH:
            a, b = arg(0), arg(1)
            if a is None or b is None:
                return None
            if a.dtype != object and b.dtype != object:
                if op == "Div" and np.issubdtype(a.dtype, np.integer) and np.issubdtype(b.dtype, np.integer):
                    return (np.abs(a) // np.abs(b) * np.sign(a) * np.sign(b)).astype(np.result_type(a, b))
                return {"Add": np.add, "Sub": np.subtract, "Mul": np.multiply, "Div": np.divide}[op](a, b)
            return np.frompyfunc(_ARITH[op], 2, 1)(a.astype(object), b.astype(object))
        if op == "Slice" and len(p.inputs) >= 3:
            data, starts, ends = arg(0), arg(1), arg(2)
            axes = arg(3) if len(p.inputs) > 3 and p.inputs[3].name else None
            steps = arg(4) if len(p.inputs) > 4 and p.inputs[4].name else None
            if data is None or starts is None or ends is None:
                return None
            if any(x is not None and x.dtype == object for x in (starts, ends, axes, steps)):
                return None
            axes = list(range(len(starts))) if axes is None else axes.ravel().tolist()
            steps = [1] * len(axes) if steps is None else steps.ravel().tolist()
            sl = [slice(None)] * data.ndim
            for a, s, e, st in zip(axes, starts.ravel().tolist(), ends.ravel().tolist(), steps):
                sl[int(a)] = slice(int(s), int(e), int(st))
            return data[tuple(sl)]
        return None

    def scalar(self, t):
        """Float value of a constant with a single element, else None."""
        v = self.value(t)
        if v is None or v.size != 1 or v.dtype == object:
            return None
        if not (self.np.issubdtype(v.dtype, self.np.floating) or self.np.issubdtype(v.dtype, self.np.integer)):
            return None
        return float(v.ravel()[0])

    # -- naming ---------------------------------------------------------------------------------------
    def node_name(self, nodes, op_type):
        names = [n.name for n in nodes if n.name]
        prefix = ""
        if names:
            prefix = names[0]
            for n in names[1:]:
                while not n.startswith(prefix):
                    prefix = prefix[:-1]
            prefix = prefix[:prefix.rfind("/") + 1] if "/" in prefix else ""
        base = prefix + op_type
        name, i = base, 1
        while name in self.used_node_names:
            name = "%s_%d" % (base, i)
            i += 1
        self.used_node_names.add(name)
        return name

    def tensor_name(self, base):
        name, i = base, 1
        while name in self.used_tensor_names:
            name = "%s_%d" % (base, i)
            i += 1
        self.used_tensor_names.add(name)
        return name


def _constant_node_value(node):
    import numpy as np
    import onnx_graphsurgeon as gs
    a = node.attrs
    if "value" in a and isinstance(a["value"], gs.Constant):
        return np.asarray(a["value"].values)
    for key, dt in (("value_float", np.float32), ("value_floats", np.float32),
                    ("value_int", np.int64), ("value_ints", np.int64)):
        if key in a:
            return np.asarray(a[key], dtype=dt)
    return None


def _private(an, tensors, nodes):
    """True when each tensor in ``tensors`` is read only by ``nodes`` and is no graph output."""
    ids = set(id(n) for n in nodes)
    for t in tensors:
        if an.is_graph_output(t):
            return False
        for c in an.consumers(t):
            if id(c) not in ids:
                return False
    return True


def _detach(nodes):
    for n in nodes:
        n.inputs.clear()
        n.outputs.clear()


def _other_input(node, t):
    """For a binary node with ``t`` as one operand, return the other operand (None if not exactly one)."""
    if len(node.inputs) != 2:
        return None
    a, b = node.inputs
    if a is t and b is not t:
        return b
    if b is t and a is not t:
        return a
    return None


def _clean_dims(dims):
    if dims is None:
        return None
    out = []
    for d in dims:
        if isinstance(d, int):
            out.append(d)
        elif isinstance(d, str) and d.isidentifier():
            out.append(d)
        else:
            out.append(None)
    return out


def _set_output_info(an, t, dtype, dims):
    """Give a plugin output its dtype and shape (where known) so that it is written as value_info."""
    if dtype is not None:
        t.dtype = dtype
    d = _clean_dims(dims if dims is not None else an.dims(t))
    if d is not None:
        t.shape = d


def _neg_axis(axis, rank):
    """Axis normalised to a negative number (None when it cannot be decided)."""
    axis = int(axis)
    if axis < 0:
        return axis
    if rank is None:
        return None
    return axis - rank


# ---------------------------------------------------------------------------------------------------------
# LayerNorm
# ---------------------------------------------------------------------------------------------------------

def _reduce_axes(an, node):
    """Axes of a ReduceMean (attribute before opset 18, input from 18), or None when not constant."""
    if "axes" in node.attrs:
        return [int(a) for a in node.attrs["axes"]]
    if len(node.inputs) > 1 and node.inputs[1].name:
        v = an.value(node.inputs[1])
        return None if v is None else [int(a) for a in v.ravel().tolist()]
    return None


def _is_last_axis_mean(an, node, x):
    if node.op != "ReduceMean" or not node.inputs or node.inputs[0] is not x:
        return False
    if int(node.attrs.get("keepdims", 1)) != 1:
        return False
    axes = _reduce_axes(an, node)
    if axes is None or len(axes) != 1:
        return False
    return _neg_axis(axes[0], an.rank(x)) == -1


def _affine_param(an, t, c, rank=None):
    """gamma/beta operand -> float32 vector [C], or None when it is not a per-channel constant on the last axis
    (shape [C] or [1, ..., 1, C] of at most the input's rank)."""
    np = an.np
    v = an.value(t)
    if v is None or v.dtype == object or not np.issubdtype(v.dtype, np.floating):
        return None
    if v.ndim == 0 or any(s != 1 for s in v.shape[:-1]) or (rank is not None and v.ndim > rank):
        return None
    if c is not None and v.shape[-1] != c:
        return None
    return v.reshape(-1).astype(np.float32)


def _constant_for(an, t, values, base):
    """A float32 gs.Constant [C] for ``values``: the original tensor when it already is one, else a new one."""
    import onnx_graphsurgeon as gs
    np = an.np
    if isinstance(t, gs.Constant) and t.values.dtype == np.float32 and tuple(t.shape) == values.shape:
        return t
    return gs.Constant(an.tensor_name(base), np.ascontiguousarray(values, dtype=np.float32))


def _match_decomposed_layernorm(an, mean1):
    x = mean1.inputs[0] if mean1.inputs else None
    if x is None or not _is_last_axis_mean(an, mean1, x):
        raise _NoMatch("not a ReduceMean over the last axis")
    if an.rank(x) is not None and an.rank(x) < 2:
        raise _NoMatch("input rank < 2")
    nodes = [mean1]
    mu = mean1.outputs[0]
    sub = an.single_consumer(mu)
    if sub is None or sub.op != "Sub" or len(sub.inputs) != 2 or sub.inputs[0] is not x or sub.inputs[1] is not mu:
        raise _NoMatch("mean is not subtracted from the input (only)")
    nodes.append(sub)
    d = sub.outputs[0]
    cons = an.consumers(d)
    if an.is_graph_output(d) or len(cons) != 2:
        raise _NoMatch("x - mean must feed exactly the variance and the normalisation")
    square = norm = None
    for c in cons:
        if c.op == "Pow" and c.inputs[0] is d and an.scalar(c.inputs[1]) == 2.0:
            square = c
        elif c.op == "Mul" and len(c.inputs) == 2 and c.inputs[0] is d and c.inputs[1] is d:
            square = c
        elif c.op in ("Div", "Mul"):
            norm = c
    if square is None or norm is None:
        raise _NoMatch("no (x - mean)^2 and normalisation pair")
    nodes.append(square)
    mean2 = an.single_consumer(square.outputs[0])
    if mean2 is None or not _is_last_axis_mean(an, mean2, square.outputs[0]):
        raise _NoMatch("variance is not a ReduceMean over the last axis")
    nodes.append(mean2)
    add_eps = an.single_consumer(mean2.outputs[0])
    if add_eps is None or add_eps.op != "Add":
        raise _NoMatch("no Add eps after the variance")
    eps_t = _other_input(add_eps, mean2.outputs[0])
    eps = None if eps_t is None else an.scalar(eps_t)
    if eps is None or not (eps >= 0.0) or math.isinf(eps):
        raise _NoMatch("eps is not a constant scalar")
    nodes.append(add_eps)
    sqrt = an.single_consumer(add_eps.outputs[0])
    if sqrt is None or sqrt.op != "Sqrt":
        raise _NoMatch("no Sqrt after var + eps")
    nodes.append(sqrt)
    std = sqrt.outputs[0]
    if norm.op == "Div":
        if norm.inputs[0] is not d or norm.inputs[1] is not std:
            raise _NoMatch("normalisation is not (x - mean) / std")
    else:
        recip = an.single_consumer(std)
        is_recip = recip is not None and (
            recip.op == "Reciprocal" or
            (recip.op == "Div" and len(recip.inputs) == 2 and recip.inputs[1] is std and
             an.scalar(recip.inputs[0]) == 1.0))
        if not is_recip:
            raise _NoMatch("normalisation is neither Div by std nor Mul by 1/std")
        if _other_input(norm, d) is not recip.outputs[0]:
            raise _NoMatch("normalisation Mul does not use Reciprocal(std)")
        nodes.append(recip)
    nodes.append(norm)
    y = norm.outputs[0]
    c = an.last_dim(x)
    gamma = beta = None
    gamma_t = beta_t = None
    nxt = an.single_consumer(y)
    if nxt is not None and nxt.op == "Mul":
        other = _other_input(nxt, y)
        g = None if other is None else _affine_param(an, other, c, an.rank(x))
        if g is not None:
            gamma, gamma_t = g, other
            nodes.append(nxt)
            y = nxt.outputs[0]
            nxt = an.single_consumer(y)
    if nxt is not None and nxt.op == "Add":
        other = _other_input(nxt, y)
        b = None if other is None else _affine_param(an, other, c if c is not None else (
            None if gamma is None else gamma.size), an.rank(x))
        if b is not None:
            beta, beta_t = b, other
            nodes.append(nxt)
            y = nxt.outputs[0]
    if c is None:
        c = gamma.size if gamma is not None else (beta.size if beta is not None else None)
    if c is None:
        raise _NoMatch("channel count unknown (no shape, no gamma/beta)")
    if gamma is not None and beta is not None and gamma.size != beta.size:
        raise _NoMatch("gamma and beta sizes differ")
    internal = [t for n in nodes for t in n.outputs if t is not y]
    if not _private(an, internal, nodes):
        raise _NoMatch("an intermediate tensor is used outside the pattern")
    return dict(x=x, y=y, nodes=nodes, eps=eps, c=c, gamma=gamma, gamma_t=gamma_t, beta=beta, beta_t=beta_t,
                form="decomposed")


def _match_native_layernorm(an, node):
    if not node.inputs or len(node.inputs) < 2:
        raise _NoMatch("LayerNormalization without scale")
    x = node.inputs[0]
    axis = _neg_axis(node.attrs.get("axis", -1), an.rank(x))
    if axis != -1:
        raise _NoMatch("LayerNormalization axis is not the last one")
    for extra in node.outputs[1:]:
        if extra.name and (an.consumers(extra) or an.is_graph_output(extra)):
            raise _NoMatch("Mean/InvStdDev outputs are used")
    c = an.last_dim(x)
    gamma = _affine_param(an, node.inputs[1], c)
    if gamma is None:
        raise _NoMatch("scale is not a constant [C]")
    beta = beta_t = None
    if len(node.inputs) > 2 and node.inputs[2].name:
        beta_t = node.inputs[2]
        beta = _affine_param(an, beta_t, gamma.size)
        if beta is None:
            raise _NoMatch("bias is not a constant [C]")
    eps = float(node.attrs.get("epsilon", 1e-5))
    return dict(x=x, y=node.outputs[0], nodes=[node], eps=eps, c=gamma.size, gamma=gamma, gamma_t=node.inputs[1],
                beta=beta, beta_t=beta_t, form="LayerNormalization")


def fuse_layernorm(graph, shapes=None):
    """Replace every LayerNorm subgraph of ``graph`` by one ``LayerNorm`` plugin node; return the fusion records."""
    import numpy as np
    import onnx_graphsurgeon as gs

    if shapes is None:
        shapes = infer_shapes(graph)
    an = _Analysis(graph, shapes)
    records, taken = [], set()
    for anchor in list(graph.nodes):
        if anchor.op not in ("ReduceMean", "LayerNormalization") or id(anchor) in taken:
            continue
        try:
            m = (_match_native_layernorm if anchor.op == "LayerNormalization" else _match_decomposed_layernorm)(
                an, anchor)
        except _NoMatch:
            continue
        if any(id(n) in taken for n in m["nodes"]):
            continue
        name = an.node_name(m["nodes"], plugin_spec.LAYERNORM_OP)
        c = m["c"]
        gamma = m["gamma"] if m["gamma"] is not None else np.ones(c, np.float32)
        beta = m["beta"] if m["beta"] is not None else np.zeros(c, np.float32)
        gamma_c = _constant_for(an, m["gamma_t"], gamma, name + ".gamma")
        beta_c = _constant_for(an, m["beta_t"], beta, name + ".beta")
        x, y = m["x"], m["y"]
        replaced = [n.name for n in m["nodes"]]
        _detach(m["nodes"])
        taken.update(id(n) for n in m["nodes"])
        node = gs.Node(plugin_spec.LAYERNORM_OP, name=name,
                       attrs=plugin_spec.node_attrs(plugin_spec.LAYERNORM_OP, epsilon=m["eps"]),
                       inputs=[x, gamma_c, beta_c], outputs=[y], domain="")
        graph.nodes.append(node)
        _set_output_info(an, y, an.dtype(x), an.dims(x))
        records.append(collections.OrderedDict([
            ("kind", plugin_spec.LAYERNORM_OP), ("node", name), ("form", m["form"]),
            ("inputs", [x.name, gamma_c.name, beta_c.name]), ("outputs", [y.name]),
            ("epsilon", float(np.float32(m["eps"]))), ("channels", int(c)),
            ("affine_in_graph", [m["gamma"] is not None, m["beta"] is not None]),
            ("replaced_nodes", replaced),
        ]))
    graph.cleanup().toposort()
    return records


# ---------------------------------------------------------------------------------------------------------
# Attention
# ---------------------------------------------------------------------------------------------------------

def _reshape_target(an, node, in_shape):
    """Output shape of a Reshape applied to ``in_shape`` (ONNX rules for 0 and -1), or raise _NoMatch."""
    if len(node.inputs) < 2:
        raise _NoMatch("Reshape without shape")
    v = an.value(node.inputs[1])
    if v is None:
        raise _NoMatch("Reshape shape is not static")
    target = [int(s) for s in v.ravel().tolist()]
    allowzero = int(node.attrs.get("allowzero", 0))
    out = []
    for i, s in enumerate(target):
        if s == 0 and not allowzero:
            if i >= len(in_shape):
                raise _NoMatch("Reshape copies a missing dim")
            out.append(in_shape[i])
        else:
            out.append(s)
    total = 1
    for s in in_shape:
        total *= s
    if out.count(-1) > 1:
        raise _NoMatch("Reshape with several -1")
    if -1 in out:
        known = 1
        for s in out:
            if s != -1:
                known *= s
        if known == 0 or total % known:
            raise _NoMatch("Reshape -1 does not divide")
        out[out.index(-1)] = total // known
    prod = 1
    for s in out:
        prod *= s
    if prod != total:
        raise _NoMatch("Reshape changes the element count")
    return out


def _run_chain(an, arr, chain):
    """Apply a Reshape/Transpose chain (list of nodes, in data order) to a numpy array."""
    np = an.np
    for node in chain:
        if node.op == "Reshape":
            arr = arr.reshape(_reshape_target(an, node, list(arr.shape)))
        elif node.op == "Transpose":
            perm = node.attrs.get("perm")
            perm = list(range(arr.ndim))[::-1] if perm is None else [int(p) for p in perm]
            if sorted(perm) != list(range(arr.ndim)):
                raise _NoMatch("bad Transpose perm")
            arr = np.transpose(arr, perm)
        elif node.op == "Identity":
            pass
        else:
            raise _NoMatch("unexpected op in a rearrange chain: %s" % node.op)
    return arr


_REARRANGE_OPS = ("Reshape", "Transpose", "Identity")


def _backward_chain(an, t):
    """Tensors from ``t`` back through single-consumer Reshape/Transpose producers.

    Returns ``[(source, chain nodes in data order)]`` from the farthest source to ``t`` itself.
    """
    out = [(t, [])]
    chain = []
    cur = t
    while True:
        p = an.producer(cur)
        if p is None or p.op not in _REARRANGE_OPS or not p.inputs:
            break
        src = p.inputs[0]
        if an.single_consumer(src) is not p:
            break
        chain = [p] + chain
        out.append((src, list(chain)))
        cur = src
    return out[::-1]


def _substitutions(dims):
    """Concrete shapes for a (possibly symbolic) shape: one per substitute value, or one when fully static."""
    if all(isinstance(d, int) for d in dims):
        return [list(dims)]
    return [[d if isinstance(d, int) else s for d in dims] for s in _SIM_SUBSTITUTES]


def _head_layout(np, lead, n, h, d, transposed):
    """Index tensor of the head split of arange(lead + [n, h*d]): lead + [h, n, d] (or [h, d, n])."""
    size = 1
    for s in lead:
        size *= s
    idx = np.arange(size * n * h * d, dtype=np.int64).reshape(list(lead) + [n, h, d])
    idx = np.moveaxis(idx, -2, -3)
    if transposed:
        idx = np.swapaxes(idx, -1, -2)
    return idx


def _check_head_split(an, source, chain, role):
    """Check that ``chain`` maps ``source`` [..., N, H*D] to the MatMul operand layout [..., H, N, D].

    ``role`` is "q", "k" (expects [..., H, D, N]: K transposed) or "v".  The chain is run on an index tensor
    (arange) for every substitution of the symbolic dims and compared with the head split; leading dims
    (batch dims and heads) may be merged by the chain.  Returns dict(h, d, n, batch_shapes) where
    ``batch_shapes`` are the operand's MatMul batch dims per substitution.
    """
    np = an.np
    dims = an.dims(source)
    if dims is None or len(dims) < 2:
        raise _NoMatch("rank of %s unknown" % source.name)
    if any(d is None for d in dims) or not isinstance(dims[-1], int) or not isinstance(dims[-2], int):
        raise _NoMatch("N or H*D of %s not static" % source.name)
    found, batch_shapes = None, []
    for concrete in _substitutions(dims):
        size = int(np.prod(concrete, dtype=np.int64))
        if size > _MAX_SIM_ELEMENTS or size == 0:
            raise _NoMatch("tensor too large to check")
        lead, n, e = concrete[:-2], concrete[-2], concrete[-1]
        sim = _run_chain(an, np.arange(size, dtype=np.int64).reshape(concrete), chain)
        if sim.ndim < 2:
            raise _NoMatch("operand rank < 2")
        transposed = role == "k"
        d = sim.shape[-2] if transposed else sim.shape[-1]
        seq = sim.shape[-1] if transposed else sim.shape[-2]
        if d <= 0 or e % d or seq != n:
            raise _NoMatch("%s operand is not [..., N, D]" % role)
        h = e // d
        expected = _head_layout(np, lead, n, h, d, transposed)
        if int(np.prod(sim.shape[:-2], dtype=np.int64)) != int(np.prod(expected.shape[:-2], dtype=np.int64)):
            raise _NoMatch("batch/head dims do not match")
        if not np.array_equal(expected.reshape(sim.shape), sim):
            raise _NoMatch("%s rearrange is not a head split" % role)
        if found is not None and found != (h, d, n):
            raise _NoMatch("head split depends on the batch size")
        found = (h, d, n)
        batch_shapes.append(tuple(sim.shape[:-2]))
    return dict(h=found[0], d=found[1], n=found[2], batch_shapes=batch_shapes)


def _path(an, operand, role):
    """Find the source of a q/k/v operand: the farthest tensor whose chain to the operand is a head split."""
    last_error = None
    for source, chain in _backward_chain(an, operand):
        try:
            info = _check_head_split(an, source, chain, role)
        except _NoMatch as e:
            last_error = e
            continue
        info.update(source=source, chain=chain)
        return info
    raise last_error or _NoMatch("no %s source" % role)


def _output_chain(an, av_out, dims, path):
    """Follow the Reshape/Transpose consumers of the attention result (checked on index tensors).

    Stops at the first tensor that is [..., N, H*D] in the source's layout: returns (tensor, chain nodes,
    None).  When the merge ends in a Reshape straight to another shape of the same element order (the opt
    model with several heads: [B*P, N, H, D] -> [B*P*N, H*D]), that Reshape is kept and fed by the plugin
    output instead: returns (its output, chain nodes before it, the Reshape).
    """
    np = an.np
    h, d, n = path["h"], path["d"], path["n"]
    result = None
    for concrete, batch_shape in zip(_substitutions(dims), path["batch_shapes"]):
        size = int(np.prod(concrete, dtype=np.int64))
        target = np.arange(size, dtype=np.int64).reshape(concrete)
        arr = _head_layout(np, concrete[:-2], n, h, d, False).reshape(list(batch_shape) + [n, d])
        cur, chain, found = av_out, [], None
        while True:
            if list(arr.shape) == list(concrete) and np.array_equal(arr, target):
                found = (cur, list(chain), None)
                break
            if chain and chain[-1].op == "Reshape":
                try:
                    direct = _run_chain(an, target, chain[-1:])
                except _NoMatch:
                    direct = None
                if direct is not None and direct.shape == arr.shape and np.array_equal(direct, arr):
                    found = (cur, list(chain[:-1]), chain[-1])
                    break
            nxt = an.single_consumer(cur)
            if nxt is None or nxt.op not in _REARRANGE_OPS or nxt.inputs[0] is not cur:
                break
            try:
                arr = _run_chain(an, arr, [nxt])
            except _NoMatch:
                break
            chain.append(nxt)
            cur = nxt.outputs[0]
        if found is None:
            raise _NoMatch("attention output is not merged back to [..., N, H*D]")
        if result is not None and (found[0] is not result[0] or found[2] is not result[2]):
            raise _NoMatch("output merge depends on the batch size")
        result = found
    return result


def _slice_range(an, node, data):
    """(start, end) of a Slice on the last axis with step 1 (normalised, clamped), or None."""
    if node.op != "Slice" or len(node.inputs) < 3 or node.inputs[0] is not data:
        return None
    dim = an.last_dim(data)
    rank = an.rank(data)
    if dim is None:
        return None
    starts, ends = an.value(node.inputs[1]), an.value(node.inputs[2])
    axes = an.value(node.inputs[3]) if len(node.inputs) > 3 and node.inputs[3].name else None
    steps = an.value(node.inputs[4]) if len(node.inputs) > 4 and node.inputs[4].name else None
    if starts is None or ends is None or starts.size != 1 or ends.size != 1:
        return None
    if axes is None:
        if rank != 1:
            return None
        axis = -1
    else:
        if axes.size != 1:
            return None
        axis = _neg_axis(int(axes.ravel()[0]), rank)
    if axis != -1 or (steps is not None and (steps.size != 1 or int(steps.ravel()[0]) != 1)):
        return None

    def clamp(v):
        v = int(v)
        if v < 0:
            v += dim
        return max(0, min(dim, v))
    return clamp(starts.ravel()[0]), clamp(ends.ravel()[0])


def _packed_source(an, q, k, v):
    """The packed QKV tensor when q, k, v are its thirds [0,E), [E,2E), [2E,3E) on the last axis, else None."""
    pq, pk, pv = an.producer(q), an.producer(k), an.producer(v)
    if pq is None or pk is None or pv is None:
        return None, []
    data = pq.inputs[0] if pq.inputs else None
    if data is None:
        return None, []
    if pq.op == "Split" and pq is pk is pv:
        axis = _neg_axis(pq.attrs.get("axis", 0), an.rank(data))
        if axis != -1 or len(pq.outputs) != 3 or any(a is not b for a, b in zip(pq.outputs, (q, k, v))):
            return None, []
        dim = an.last_dim(data)
        split = pq.attrs.get("split")
        if split is None and len(pq.inputs) > 1 and pq.inputs[1].name:
            sv = an.value(pq.inputs[1])
            split = None if sv is None else sv.ravel().tolist()
        if dim is None or dim % 3 or (split is not None and [int(s) for s in split] != [dim // 3] * 3):
            return None, []
        return data, [pq]
    if pq.op == "Slice" and pk.op == "Slice" and pv.op == "Slice" and len({id(pq), id(pk), id(pv)}) == 3:
        if pk.inputs[0] is not data or pv.inputs[0] is not data:
            return None, []
        dim = an.last_dim(data)
        rq, rk, rv = _slice_range(an, pq, data), _slice_range(an, pk, data), _slice_range(an, pv, data)
        if dim is None or None in (rq, rk, rv) or dim % 3:
            return None, []
        e = dim // 3
        if (rq, rk, rv) != ((0, e), (e, 2 * e), (2 * e, 3 * e)):
            return None, []
        return data, [pq, pk, pv]
    return None, []


def _match_attention(an, softmax):
    s_in = softmax.inputs[0]
    rank = an.rank(s_in)
    default_axis = -1 if an.opset >= 13 else 1
    if _neg_axis(softmax.attrs.get("axis", default_axis), rank) != -1:
        raise _NoMatch("Softmax is not over the last axis")
    nodes = [softmax]
    scale = 1.0
    p = an.producer(s_in)
    if p is not None and p.op in ("Mul", "Div") and len(p.inputs) == 2:
        if p.op == "Mul":
            a, b = p.inputs
            ca, cb = an.scalar(a), an.scalar(b)
            if cb is not None and ca is None:
                scores, c = a, cb
            elif ca is not None and cb is None:
                scores, c = b, ca
            else:
                raise _NoMatch("Mul before Softmax is not by a constant")
            scale = c
        else:
            c = an.scalar(p.inputs[1])
            if c is None or c == 0.0:
                raise _NoMatch("Div before Softmax is not by a constant")
            scores, scale = p.inputs[0], 1.0 / c
        nodes.append(p)
        qk = an.producer(scores)
    else:
        qk = p
    if qk is None or qk.op != "MatMul" or len(qk.inputs) != 2:
        raise _NoMatch("no Q.K^T MatMul before Softmax")
    nodes.append(qk)
    if not (math.isfinite(scale) and scale != 0.0):
        raise _NoMatch("bad scale")
    av = an.single_consumer(softmax.outputs[0])
    if av is None or av.op != "MatMul" or av.inputs[0] is not softmax.outputs[0]:
        raise _NoMatch("Softmax output is not the left operand of one MatMul")
    nodes.append(av)

    pq = _path(an, qk.inputs[0], "q")
    pk = _path(an, qk.inputs[1], "k")
    pv = _path(an, av.inputs[1], "v")
    for other in (pk, pv):
        if (other["h"], other["d"], other["n"]) != (pq["h"], pq["d"], pq["n"]):
            raise _NoMatch("q, k, v disagree on heads/length")
        if other["batch_shapes"] != pq["batch_shapes"]:
            raise _NoMatch("q, k, v batch dims differ")
    dims = an.dims(pq["source"])
    if not (dims == an.dims(pk["source"]) == an.dims(pv["source"])):
        raise _NoMatch("q, k, v sources have different shapes")
    h, d, n = pq["h"], pq["d"], pq["n"]
    for path in (pq, pk, pv):
        nodes.extend(path["chain"])

    sources = [pq["source"], pk["source"], pv["source"]]
    packed, split_nodes = _packed_source(an, *sources)
    if packed is not None and _private(an, sources, nodes + split_nodes):
        nodes.extend(split_nodes)
        inputs = [packed]
    else:
        packed = None
        inputs = sources
        if len({id(t) for t in inputs}) != 3:
            raise _NoMatch("q, k, v are not three distinct tensors")

    out_t, out_chain, kept_reshape = _output_chain(an, av.outputs[0], dims, pq)
    nodes.extend(out_chain)
    keep_internal = kept_reshape.inputs[0] if kept_reshape is not None else None
    internal = [t for n_ in nodes for t in n_.outputs if t is not out_t and t is not keep_internal]
    if not _private(an, internal, nodes):
        raise _NoMatch("an intermediate tensor is used outside the pattern")
    if keep_internal is not None and not _private(an, [keep_internal], [kept_reshape]):
        raise _NoMatch("an intermediate tensor is used outside the pattern")
    return dict(inputs=inputs, output=out_t, nodes=nodes, scale=scale, num_heads=h, head_dim=d, seq_len=n,
                packed=packed is not None, kept_reshape=kept_reshape)


def fuse_attention(graph, shapes=None):
    """Replace every self-attention subgraph of ``graph`` by one ``Attention`` plugin node; return the records."""
    import numpy as np
    import onnx_graphsurgeon as gs

    if shapes is None:
        shapes = infer_shapes(graph)
    an = _Analysis(graph, shapes)
    records, taken = [], set()
    for anchor in list(graph.nodes):
        if anchor.op != "Softmax" or id(anchor) in taken:
            continue
        try:
            m = _match_attention(an, anchor)
        except _NoMatch:
            continue
        if any(id(n) in taken for n in m["nodes"]):
            continue
        name = an.node_name(m["nodes"], plugin_spec.ATTENTION_OP)
        out = m["output"]
        replaced = [n.name for n in m["nodes"]]
        src_dtype = an.dtype(m["inputs"][0])
        src_dims = an.dims(m["inputs"][0])
        out_dims = None
        if src_dims is not None:
            out_dims = list(src_dims[:-1]) + [m["num_heads"] * m["head_dim"]]
        _detach(m["nodes"])
        taken.update(id(n) for n in m["nodes"])
        kept = m["kept_reshape"]
        if kept is not None:
            # the plugin output [..., N, H*D] feeds the final Reshape, which keeps its shape operand
            out = gs.Variable(an.tensor_name(name + "_output"))
            kept.inputs[0] = out
            _set_output_info(an, out, src_dtype, out_dims)
        node = gs.Node(plugin_spec.ATTENTION_OP, name=name,
                       attrs=plugin_spec.node_attrs(plugin_spec.ATTENTION_OP, scale=m["scale"],
                                                    num_heads=m["num_heads"]),
                       inputs=list(m["inputs"]), outputs=[out], domain="")
        graph.nodes.append(node)
        if kept is None:
            _set_output_info(an, out, src_dtype, an.dims(out) or out_dims)
        records.append(collections.OrderedDict([
            ("kind", plugin_spec.ATTENTION_OP), ("node", name),
            ("input_form", "packed_qkv" if m["packed"] else "q_k_v"),
            ("inputs", [t.name for t in m["inputs"]]), ("outputs", [out.name]),
            ("scale", float(np.float32(m["scale"]))), ("num_heads", int(m["num_heads"])),
            ("head_dim", int(m["head_dim"])), ("seq_len", int(m["seq_len"])),
            ("replaced_nodes", replaced),
        ]))
    graph.cleanup().toposort()
    return records


# ---------------------------------------------------------------------------------------------------------
# driver, checks, verification
# ---------------------------------------------------------------------------------------------------------

_FUSERS = collections.OrderedDict([("layernorm", fuse_layernorm), ("attention", fuse_attention)])


def load_onnx(path):
    """Load an ONNX file; a missing or unreadable file is a UserError."""
    import os

    import onnx
    if not path or not os.path.isfile(path):
        raise UserError("ONNX file not found: %s" % path)
    try:
        model = onnx.load(path)
    except Exception as e:  # noqa: BLE001 - protobuf DecodeError and friends: the file is not ONNX
        first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise UserError("%s is not a readable ONNX model (%s)" % (path, first[:160]))
    if model.ir_version == 0 or not model.graph.node:
        raise UserError("%s is not an ONNX model (no IR version or no graph nodes)" % path)
    return model


def count_plugins(model):
    """{op_type: count} of plugin nodes in a ModelProto."""
    c = collections.OrderedDict((op, 0) for op in plugin_spec.SPECS)
    for n in model.graph.node:
        if n.op_type in c and n.domain in PLUGIN_DOMAINS:
            c[n.op_type] += 1
    return c


def add_plugins(model, kinds=DEFAULT_KINDS, allow_missing=False, log=print):
    """Fuse the requested plugin kinds into a copy of ``model`` (ModelProto); return ``(fused ModelProto, report)``.

    Finding no subgraph of a requested kind is a UserError unless ``allow_missing``.
    """
    import onnx_graphsurgeon as gs

    kinds = list(kinds)
    for k in kinds:
        if k not in KINDS:
            raise UserError("unknown plugin kind %r (choose from %s)" % (k, ",".join(KINDS)))
    try:
        graph = gs.import_onnx(model)
    except Exception as e:  # noqa: BLE001
        raise UserError("onnx-graphsurgeon cannot import the model: %s" % str(e).splitlines()[0])
    info = {}
    shapes = infer_shapes(model, info)
    records = []
    counts = collections.OrderedDict()
    for k in kinds:
        recs = _FUSERS[k](graph, shapes)
        counts[KINDS[k]] = len(recs)
        records.extend(recs)
    fused = gs.export_onnx(graph)
    fused.ir_version = model.ir_version
    missing = [KINDS[k] for k in kinds if counts[KINDS[k]] == 0]
    report = collections.OrderedDict([
        ("plugins", [KINDS[k] for k in kinds]), ("counts", counts),
        ("nodes_before", len(model.graph.node)), ("nodes_after", len(fused.graph.node)),
        ("missing", missing), ("shape_inference", info["shape_inference"]), ("fusions", records),
    ])
    if missing and not allow_missing:
        hint = ""
        if not info["shape_inference"].startswith("onnxruntime"):
            hint = "; shape inference fell back to %s -- pip install sympy" % info["shape_inference"]
        raise UserError("no %s subgraph found in the model (pass --allow-missing to accept, or choose "
                        "--plugins)%s" % (" / ".join(missing), hint))
    return fused, report


def check_fused(model):
    """onnx.checker with full_check (strict shape inference) on a copy where plugin nodes are in CHECK_DOMAIN.

    The plugin nodes stay in the default domain in the written file (the TensorRT parser looks them up there);
    the checker would reject an unregistered op there, while in a custom domain it checks everything else
    (graph structure, topological order, types, value_info) and strict shape inference still runs.
    """
    import onnx
    try:
        onnx.checker.check_model(with_check_domain(model), full_check=True)
    except Exception as e:  # noqa: BLE001
        raise UserError("onnx.checker rejected the fused model: %s" % str(e).strip().splitlines()[0])


def default_batches(model):
    """Static batch of the first input, or DYNAMIC_VERIFY_BATCHES when it is symbolic."""
    dims = _dims_of(model.graph.input[0]) if model.graph.input else None
    if dims and isinstance(dims[0], int) and dims[0] > 0:
        return (dims[0],)
    return DYNAMIC_VERIFY_BATCHES


def random_feeds(model, batch, seed=0):
    """Random standard-normal feeds for every graph input; symbolic dims take ``batch``."""
    import numpy as np
    rng = np.random.default_rng(seed)
    inits = set(i.name for i in model.graph.initializer)
    feeds = collections.OrderedDict()
    for vi in model.graph.input:
        if vi.name in inits:
            continue
        dims = _dims_of(vi) or []
        shape = [d if isinstance(d, int) and d > 0 else batch for d in dims]
        dtype = np_dtype(vi.type.tensor_type.elem_type)
        if np.issubdtype(dtype, np.floating):
            feeds[vi.name] = rng.standard_normal(shape).astype(dtype)
        else:
            feeds[vi.name] = rng.integers(0, 2, size=shape).astype(dtype)
    return feeds


def _reference_outputs(model, feeds, output_names):
    """Run the reference: a torch.nn.Module (single input), or an ONNX model/path in ONNX Runtime (CPU)."""
    import numpy as np
    if hasattr(model, "forward") and hasattr(model, "eval"):
        import torch
        with torch.no_grad():
            out = model(*[torch.from_numpy(np.ascontiguousarray(v)) for v in feeds.values()])
        outs = out if isinstance(out, (tuple, list)) else [out]
        return [o.detach().cpu().numpy() for o in outs], "pytorch"
    from .reference_ops import run_with_reference_ops
    # a plain graph runs as one ONNX Runtime session; a graph that already holds plugin nodes runs with the
    # reference ops as well
    return run_with_reference_ops(model, dict(feeds), list(output_names)), "onnxruntime"


def verify_fused(model, fused_path, batches=None, atol=VERIFY_ATOL, seed=0, log=print):
    """Check the fused graph and compare it with ``model`` on random inputs; print one verdict line.

    ``model`` is the reference: the PyTorch module, or the original (unfused) ONNX model (path or ModelProto),
    run in ONNX Runtime.  The fused graph runs in ONNX Runtime (CPU) with the NumPy reference implementations
    of the plugin ops (:func:`mobilevit_trt.reference_ops.run_with_reference_ops`).  Returns a report dict
    (``passed``, ``max_abs``, per-batch results, the checker verdict).
    """
    import numpy as np
    import onnx

    from .reference_ops import ReferenceRunner

    fused = onnx.load(fused_path) if isinstance(fused_path, str) else fused_path
    report = collections.OrderedDict([("atol", atol)])
    try:
        check_fused(fused)
        report["checker"] = "passed"
    except UserError as e:
        report["checker"] = str(e)
    batches = tuple(batches) if batches else default_batches(fused)
    output_names = [o.name for o in fused.graph.output]
    runner = ReferenceRunner(fused)
    results, reference = [], None
    for i, b in enumerate(batches):
        feeds = random_feeds(fused, b, seed + i)
        got = runner.run(output_names, feeds)
        ref, reference = _reference_outputs(model, feeds, output_names)
        worst, ok = 0.0, True
        for name, g, r in zip(output_names, got, ref):
            if g.shape != r.shape:
                worst, ok = float("inf"), False
                continue
            diff = float(np.max(np.abs(g.astype(np.float64) - r.astype(np.float64)))) if g.size else 0.0
            if not np.isfinite(diff):
                diff = float("inf")
            worst = max(worst, diff)
            ok = ok and diff <= atol
        results.append(collections.OrderedDict([("batch", b), ("max_abs", worst), ("passed", ok)]))
    worst = max(r["max_abs"] for r in results) if results else float("inf")
    passed = report["checker"] == "passed" and bool(results) and all(r["passed"] for r in results)
    report.update([("reference", reference), ("batches", results), ("max_abs", worst), ("passed", passed)])
    counts = count_plugins(fused)
    log("%s fused graph (%s) vs %s, batch %s: checker %s, max abs diff %.3g (tol %g)" % (
        "PASSED" if passed else "FAILED",
        ", ".join("%d %s" % (v, k) for k, v in counts.items()),
        "PyTorch" if reference == "pytorch" else "original ONNX",
        ",".join(str(b) for b in batches),
        "ok" if report["checker"] == "passed" else "FAILED (%s)" % report["checker"], worst, atol))
    return report


if __name__ == "__main__":  # pragma: no cover
    sys.exit("use onnx_add_plugin.py")
