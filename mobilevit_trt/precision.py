"""Reduced precision carried by the ONNX itself, for strongly typed TensorRT (11.x, TensorRT-RTX) and for checks.

* :func:`convert_fp16`: weights and activations to float16 with ONNX alone (no onnxconverter-common), graph I/O
  kept float32 (Cast at the boundaries), and the numerically sensitive parts kept float32: LayerNorm statistics
  (the ReduceMean/Sub/Pow/ReduceMean/Add/Sqrt/Div chain that opset < 17 exports, or LayerNormalization), Softmax,
  Q/DQ nodes, and the gamma/beta inputs of the LayerNorm plugin node (plugin_spec: always float32).
* :func:`quantize_qdq`: explicit INT8 Q/DQ with ONNX Runtime's ``quantize_static`` -- symmetric, per-channel
  weights, biases left in float (TensorRT rejects the int32 bias DequantizeLinear), Q/DQ on the inputs of the
  quantized nodes (TensorRT's placement), calibrated (:func:`calibrate_ranges`: Entropy, MinMax, percentile) on
  given inputs or from a cache, named nodes left in float (mixed INT8).
Checking a converted graph against its source is ``verify.compare_files``.
"""
import collections
import os

from . import plugin_spec
from .reference_ops import with_check_domain
from .errors import UserError
from .fileio import atomic_path
from .preprocess import METADATA_KEY, copy_onnx_metadata

INPUT_NAME = "input"
OUTPUT_NAME = "class"

#: ops computed in float32 as a whole (inputs cast up, outputs cast down)
FP32_OPS = frozenset(["Softmax", "LayerNormalization", "QuantizeLinear", "DequantizeLinear"])
#: (op_type, input index) that stay float32 even when the node runs in float16
FP32_INPUTS = frozenset([(plugin_spec.LAYERNORM_OP, 1), (plugin_spec.LAYERNORM_OP, 2), ("Resize", 2)])
#: ops whose float outputs do not follow their inputs' type (handled specially or left alone)
_CONTROL_FLOW = frozenset(["If", "Loop", "Scan"])
FP16_MAX = 65504.0

#: ops quantized by quantize_qdq by default: TensorRT runs these in INT8 when their inputs carry Q/DQ
QDQ_OP_TYPES = ("Conv", "MatMul", "Gemm")
QDQ_METHODS = ("entropy", "minmax", "percentile")
#: the percentile of |activation| that ``percentile`` calibration keeps (pytorch-quantization / ModelOpt use 99.99)
PERCENTILE = 99.99
#: histogram bins for entropy calibration (TensorRT uses 2048; ORT's Python search is quadratic in the bins:
#: about 13 s at 512 and 90 s at 2048 for MobileViT-XXS on 2 cores)
ENTROPY_BINS = 512


def _onnx():
    import onnx
    return onnx


# -- inputs ---------------------------------------------------------------------------------------------------------

def structured_inputs(n, img_size=256, seed=0, channels=3):
    """Random but image-like inputs [n, C, H, W] float32: smooth low-frequency fields, edges and blobs, normalised
    per channel like ImageNet-preprocessed images (mean 0, std 1).  Pure noise makes a classifier's logits flat,
    which hides precision problems behind arbitrary top-1 flips."""
    import numpy as np
    rng = np.random.default_rng(seed)
    h = w = img_size
    yy, xx = np.meshgrid(np.linspace(0, 1, h, dtype=np.float32), np.linspace(0, 1, w, dtype=np.float32),
                         indexing="ij")
    out = np.empty((n, channels, h, w), np.float32)
    for i in range(n):
        img = np.zeros((channels, h, w), np.float32)
        for cells in (2, 4, 8, 16):  # multi-scale smooth noise (bilinear upsampling of a coarse grid)
            grid = rng.standard_normal((channels, cells + 1, cells + 1)).astype(np.float32)
            gy, gx = yy * cells, xx * cells
            y0, x0 = np.minimum(gy.astype(int), cells - 1), np.minimum(gx.astype(int), cells - 1)
            fy, fx = gy - y0, gx - x0
            v = (grid[:, y0, x0] * (1 - fy) * (1 - fx) + grid[:, y0 + 1, x0] * fy * (1 - fx)
                 + grid[:, y0, x0 + 1] * (1 - fy) * fx + grid[:, y0 + 1, x0 + 1] * fy * fx)
            img += v / cells ** 0.5
        for _ in range(rng.integers(2, 6)):  # a few solid rectangles and discs: edges
            color = rng.standard_normal((channels, 1)).astype(np.float32) * 1.5
            cy, cx = rng.uniform(0, 1, 2)
            r = rng.uniform(0.05, 0.3)
            if rng.random() < 0.5:
                mask = (np.abs(yy - cy) < r) & (np.abs(xx - cx) < r * rng.uniform(0.3, 2))
            else:
                mask = (yy - cy) ** 2 + (xx - cx) ** 2 < r * r
            img[:, mask] = color
        img += 0.05 * rng.standard_normal(img.shape).astype(np.float32)
        m = img.mean(axis=(1, 2), keepdims=True)
        s = img.std(axis=(1, 2), keepdims=True) + 1e-6
        out[i] = (img - m) / s
    return out


# -- graph helpers ----------------------------------------------------------------------------------------------------

def has_qdq(model):
    return any(n.op_type in ("QuantizeLinear", "DequantizeLinear") for n in model.graph.node)


def _consumers(graph):
    cons = collections.defaultdict(list)
    for i, n in enumerate(graph.node):
        for name in n.input:
            if name:
                cons[name].append(i)
    return cons


def find_layernorm_stat_nodes(graph):
    """Indices of the nodes computing LayerNorm statistics in the decomposed pattern

        m = ReduceMean(x); d = Sub(x, m); v = ReduceMean(Pow(d, 2) | Mul(d, d)); s = Sqrt(Add(v, eps)); y = Div(d, s)

    Returns (set of node indices, number of LayerNorms found).  The scale/shift after the Div stays float16."""
    nodes = graph.node
    producer = {}
    for i, n in enumerate(nodes):
        for o in n.output:
            producer[o] = i
    cons = _consumers(graph)
    keep, found = set(), 0

    def only(idx_list, op):
        c = [j for j in idx_list if nodes[j].op_type == op]
        return c

    for i, n in enumerate(nodes):
        if n.op_type != "ReduceMean":
            continue
        x = n.input[0]
        for s in only(cons[n.output[0]], "Sub"):
            sub = nodes[s]
            if list(sub.input) != [x, n.output[0]]:
                continue
            d = sub.output[0]
            sq = [j for j in cons[d] if (nodes[j].op_type == "Pow") or
                  (nodes[j].op_type == "Mul" and list(nodes[j].input) == [d, d])]
            for p in sq:
                for r2 in only(cons[nodes[p].output[0]], "ReduceMean"):
                    for a in only(cons[nodes[r2].output[0]], "Add"):
                        for q in only(cons[nodes[a].output[0]], "Sqrt"):
                            for dv in only(cons[nodes[q].output[0]], "Div"):
                                if list(nodes[dv].input) == [d, nodes[q].output[0]]:
                                    keep.update([i, s, p, r2, a, q, dv])
                                    found += 1
    return keep, found


def _elem_types(model):
    onnx = _onnx()
    types = {}
    g = model.graph
    for vi in list(g.input) + list(g.output) + list(g.value_info):
        if vi.type.HasField("tensor_type"):
            types[vi.name] = vi.type.tensor_type.elem_type
    for init in g.initializer:
        types[init.name] = init.data_type
    for n in g.node:
        if n.op_type == "Constant":
            for a in n.attribute:
                if a.name == "value":
                    types[n.output[0]] = a.t.data_type
                elif a.name in ("value_float", "value_floats"):
                    types[n.output[0]] = onnx.TensorProto.FLOAT
    return types


def _constants_to_initializers(model):
    """Move float Constant nodes into initializers so that one code path converts all float constants."""
    onnx = _onnx()
    g = model.graph
    keep = []
    moved = 0
    for n in g.node:
        if n.op_type == "Constant" and len(n.attribute) == 1 and n.attribute[0].name == "value" \
                and n.attribute[0].t.data_type == onnx.TensorProto.FLOAT:
            t = onnx.TensorProto()
            t.CopyFrom(n.attribute[0].t)
            t.name = n.output[0]
            g.initializer.append(t)
            moved += 1
        else:
            keep.append(n)
    if moved:
        del g.node[:]
        g.node.extend(keep)
    return moved


def _to_fp16_tensor(t, name=None):
    """float32 TensorProto -> float16 TensorProto; returns (tensor, number of values clipped to +-65504)."""
    import numpy as np
    from onnx import numpy_helper
    a = numpy_helper.to_array(t).astype(np.float32)
    finite = np.isfinite(a)
    clipped = int(np.count_nonzero(finite & (np.abs(a) > FP16_MAX)))
    a16 = np.where(finite, np.clip(a, -FP16_MAX, FP16_MAX), a).astype(np.float16)
    out = numpy_helper.from_array(a16, name or t.name)
    return out, clipped


def convert_fp16(in_path, out_path, keep_fp32_ops=FP32_OPS, keep_layernorm_stats=True, log=None):
    """Write a float16 copy of ``in_path`` to ``out_path`` (atomic); return a report dict.

    Graph inputs/outputs stay float32.  Raises UserError for graphs it cannot convert (control flow)."""
    onnx = _onnx()
    FLOAT16 = onnx.TensorProto.FLOAT16
    model, types = _fp16_load(in_path)
    g = model.graph
    ln_nodes, ln_count = find_layernorm_stat_nodes(g) if keep_layernorm_stats else (set(), 0)
    node_dt = _fp16_node_dtypes(g, keep_fp32_ops, ln_nodes)
    cur = _fp16_graph_inputs(g, types)  # float tensor name -> its dtype after conversion
    init_alias, clipped, n_fp16_inits = _fp16_initializers(g, node_dt)
    new_nodes, n_fp32_nodes = _fp16_nodes(g, node_dt, types, init_alias, cur)
    _fp16_outputs(g, new_nodes, types, cur)
    try:
        onnx.checker.check_model(with_check_domain(model), full_check=True)
    except Exception as e:
        raise RuntimeError("FP16 conversion produced an invalid graph: %s" % str(e).strip().splitlines()[0])
    with atomic_path(out_path) as tmp:
        onnx.save(model, tmp)
    n_casts = sum(1 for n in new_nodes if n.op_type == "Cast" and n.name.startswith("fp16_cast"))
    report = {"path": os.path.abspath(out_path), "source": os.path.abspath(in_path),
              "layernorm_chains_fp32": ln_count, "fp32_nodes": dict(n_fp32_nodes),
              "fp16_nodes": sum(1 for i, n in enumerate(g.node) if i < len(node_dt) and node_dt[i] == FLOAT16),
              "casts_inserted": n_casts, "initializers_fp16": n_fp16_inits, "values_clipped": clipped}
    if log:
        log("FP16 ONNX: %d LayerNorm statistic chains and %s kept in FP32, %d Casts inserted, %d initializers "
            "converted%s -> %s" % (ln_count, ", ".join("%d %s" % (v, k) for k, v in sorted(n_fp32_nodes.items())
                                                       if k not in ("ReduceMean", "Sub", "Pow", "Add", "Sqrt", "Div"))
                                   or "nothing else", n_casts, n_fp16_inits,
                                   (", %d values clipped to +-65504" % clipped) if clipped else "", out_path))
    return report


def _fp16_load(in_path):
    """convert_fp16: the model (checked convertible, float Constants moved to initializers) and every tensor's
    element type after shape inference."""
    onnx = _onnx()
    from onnx import TensorProto
    FLOAT16 = TensorProto.FLOAT16
    model = onnx.load(in_path)
    g = model.graph
    if any(n.op_type in _CONTROL_FLOW for n in g.node):
        raise UserError("FP16 conversion does not handle control-flow subgraphs (If/Loop/Scan) in %s" % in_path)
    if any(init.data_type == FLOAT16 for init in g.initializer):
        raise UserError("%s already holds float16 initializers; convert the float32 model" % in_path)
    _constants_to_initializers(model)
    inferred = onnx.shape_inference.infer_shapes(with_check_domain(model))
    types = _elem_types(inferred)
    unknown = sorted({o for n in g.node for o in n.output if o and o not in types})
    if unknown:
        raise UserError("FP16 conversion needs every tensor type; shape inference left %d unknown (e.g. %s)"
                        % (len(unknown), unknown[0]))
    return model, types


def _fp16_node_dtypes(g, keep_fp32_ops, ln_nodes):
    """convert_fp16: the dtype each node computes in (float32 for the kept ops and LayerNorm statistics)."""
    from onnx import TensorProto
    FLOAT, FLOAT16 = TensorProto.FLOAT, TensorProto.FLOAT16
    node_dt = []
    for i, n in enumerate(g.node):
        node_dt.append(FLOAT if (n.op_type in keep_fp32_ops or i in ln_nodes) else FLOAT16)
    return node_dt


def _fp16_graph_inputs(g, types):
    """convert_fp16: {float graph input (not an initializer): float32}, the start of the dtypes walked through."""
    from onnx import TensorProto
    FLOAT = TensorProto.FLOAT
    inits = {t.name: t for t in g.initializer}
    graph_inputs = {vi.name for vi in g.input}
    cur = {}
    for name in graph_inputs:
        if types.get(name) == FLOAT and name not in inits:
            cur[name] = FLOAT
    return cur


def _fp16_initializers(g, node_dt):
    """convert_fp16: float initializers converted for the dtypes their consumers want (a float32 and a ``__fp16``
    copy where both are wanted); returns ({(name, dtype): name holding it}, values clipped, float16 copies)."""
    from onnx import TensorProto
    FLOAT, FLOAT16 = TensorProto.FLOAT, TensorProto.FLOAT16
    inits = {t.name: t for t in g.initializer}
    # initializers: which dtypes do consumers want?
    wanted = collections.defaultdict(set)
    for i, n in enumerate(g.node):
        for k, name in enumerate(n.input):
            if name in inits and inits[name].data_type == FLOAT:
                wanted[name].add(FLOAT if ((n.op_type, k) in FP32_INPUTS or node_dt[i] == FLOAT) else FLOAT16)
    new_inits, clipped, n_fp16_inits = [], 0, 0
    init_alias = {}  # (name, dtype) -> name holding that dtype
    for t in g.initializer:
        want = wanted.get(t.name, set())
        if t.data_type != FLOAT or not want:
            new_inits.append(t)
            continue
        if FLOAT in want:
            new_inits.append(t)
            init_alias[(t.name, FLOAT)] = t.name
        if FLOAT16 in want:
            name16 = t.name if FLOAT not in want else t.name + "__fp16"
            t16, c = _to_fp16_tensor(t, name16)
            clipped += c
            new_inits.append(t16)
            init_alias[(t.name, FLOAT16)] = name16
            n_fp16_inits += 1
    del g.initializer[:]
    g.initializer.extend(new_inits)
    return init_alias, clipped, n_fp16_inits


def _fp16_nodes(g, node_dt, types, init_alias, cur):
    """convert_fp16: the nodes in order with Casts inserted where an input's dtype is not the one wanted
    (``cur`` follows each float tensor's dtype); returns (new node list, Counter of float32 nodes by op)."""
    from onnx import TensorProto, helper
    FLOAT, FLOAT16 = TensorProto.FLOAT, TensorProto.FLOAT16
    casts = {}
    new_nodes = []
    counter = [0]

    def cast_to(name, dtype):
        key = (name, dtype)
        if key not in casts:
            counter[0] += 1
            out = "%s__to_%s" % (name, "fp16" if dtype == FLOAT16 else "fp32")
            new_nodes.append(helper.make_node("Cast", [name], [out], to=dtype,
                                              name="fp16_cast_%d" % counter[0]))
            casts[key] = out
        return casts[key]

    n_fp32_nodes = collections.Counter()
    for i, n in enumerate(g.node):
        dt = node_dt[i]
        has_float_io = any(types.get(x) == FLOAT for x in list(n.input) + list(n.output) if x)
        if dt == FLOAT and has_float_io:
            n_fp32_nodes[n.op_type] += 1
        for k, name in enumerate(n.input):
            if not name or not types.get(name) == FLOAT:
                continue
            need = FLOAT if ((n.op_type, k) in FP32_INPUTS or dt == FLOAT) else FLOAT16
            if (name, need) in init_alias:
                n.input[k] = init_alias[(name, need)]
                continue
            have = cur.get(name)
            if have is None:
                raise UserError("FP16 conversion: tensor %r is used before it is produced" % name)
            if have != need:
                n.input[k] = cast_to(name, need)
        _fp16_node_attributes(n, dt)
        for o in n.output:
            if o and types.get(o) == FLOAT:
                cur[o] = dt
        new_nodes.append(n)
    return new_nodes, n_fp32_nodes


def _fp16_node_attributes(n, dt):
    """convert_fp16: a float16 node's float32 Cast target and ConstantOfShape value become float16."""
    from onnx import TensorProto
    FLOAT, FLOAT16 = TensorProto.FLOAT, TensorProto.FLOAT16
    if n.op_type == "Cast":
        to = next(a for a in n.attribute if a.name == "to")
        if to.i == FLOAT and dt == FLOAT16:
            to.i = FLOAT16
    elif n.op_type == "ConstantOfShape":
        for a in n.attribute:
            if a.name == "value" and a.t.data_type == FLOAT and dt == FLOAT16:
                t16, _ = _to_fp16_tensor(a.t, a.t.name)
                a.t.CopyFrom(t16)


def _fp16_outputs(g, new_nodes, types, cur):
    """convert_fp16: float16 graph outputs cast back to float32 (the producer writes ``<name>__fp16``), the new
    nodes put in the graph, declared value_info types following the conversion."""
    from onnx import TensorProto, helper
    FLOAT, FLOAT16 = TensorProto.FLOAT, TensorProto.FLOAT16
    graph_outputs = [vi.name for vi in g.output]
    # graph outputs back to float32
    rename = {}
    for name in graph_outputs:
        if types.get(name) == FLOAT and cur.get(name) == FLOAT16:
            rename[name] = name + "__fp16"
    if rename:
        for n in new_nodes:
            for k, x in enumerate(n.input):
                if x in rename:
                    n.input[k] = rename[x]
            for k, x in enumerate(n.output):
                if x in rename:
                    n.output[k] = rename[x]
        for name, tmp in rename.items():
            new_nodes.append(helper.make_node("Cast", [tmp], [name], to=FLOAT, name="fp16_cast_out_%s" % name))
    del g.node[:]
    g.node.extend(new_nodes)
    # declared types (e.g. plugin outputs written by graph surgery) follow the conversion; a declaration of an
    # initializer (an exporter's Constant moved to the initializers, now float16) goes: the initializer says it
    inits = {t.name for t in g.initializer}
    kept = [vi for vi in g.value_info if vi.name not in inits]
    for vi in kept:
        if vi.type.tensor_type.elem_type == FLOAT and vi.name in cur:
            vi.type.tensor_type.elem_type = cur[vi.name]
    del g.value_info[:]
    g.value_info.extend(kept)


# -- Q/DQ INT8 --------------------------------------------------------------------------------------------------------

def qdq_summary(model):
    """Counts that matter to TensorRT: per-channel weight DQs (with axis), int32 (bias) DQs, Q and DQ nodes."""
    from onnx import TensorProto
    inits = {t.name: t for t in model.graph.initializer}
    s = {"quantize_linear": 0, "dequantize_linear": 0, "weight_dq_per_channel": 0, "weight_dq_per_tensor": 0,
         "int32_dq": 0, "zero_point_nonzero": 0, "per_channel_axes": {}}
    for n in model.graph.node:
        if n.op_type == "QuantizeLinear":
            s["quantize_linear"] += 1
        if n.op_type != "DequantizeLinear":
            continue
        s["dequantize_linear"] += 1
        src = inits.get(n.input[0])
        if src is None:
            continue
        if src.data_type == TensorProto.INT32:
            s["int32_dq"] += 1
            continue
        scale = inits.get(n.input[1])
        if scale is not None and len(scale.dims) == 1 and scale.dims[0] > 1:
            s["weight_dq_per_channel"] += 1
            axis = next((a.i for a in n.attribute if a.name == "axis"), None)
            key = "default" if axis is None else str(axis)
            s["per_channel_axes"][key] = s["per_channel_axes"].get(key, 0) + 1
        else:
            s["weight_dq_per_tensor"] += 1
        if len(n.input) > 2 and n.input[2] in inits:
            from onnx import numpy_helper
            if numpy_helper.to_array(inits[n.input[2]]).any():
                s["zero_point_nonzero"] += 1
    return s


def _calibration_reader(input_name, inputs, batch):
    from onnxruntime.quantization import CalibrationDataReader
    import numpy as np

    class _Reader(CalibrationDataReader):
        def __init__(self):
            self._i = 0

        def get_next(self):
            if self._i >= len(inputs):
                return None
            x = inputs[self._i:self._i + batch]
            self._i += batch
            if len(x) < batch:
                x = np.concatenate([x, np.repeat(x[-1:], batch - len(x), axis=0)])
            return {input_name: np.ascontiguousarray(x, dtype=np.float32)}

        def rewind(self):
            self._i = 0

    return _Reader()


def _quiet_ort():
    """Silence ONNX Runtime quantization's prints and root-logger warnings for the duration of a call."""
    import contextlib
    import io
    import logging

    @contextlib.contextmanager
    def quiet():
        root = logging.getLogger()
        level = root.level
        root.setLevel(logging.ERROR)
        try:
            with contextlib.redirect_stdout(io.StringIO()):
                yield
        finally:
            root.setLevel(level)
    return quiet()


def calibration_batch(model, n):
    """The calibration batch: the ONNX's static batch, else min(8, ``n``)."""
    d0 = model.graph.input[0].type.tensor_type.shape.dim[0]
    return d0.dim_value if d0.HasField("dim_value") and d0.dim_value > 0 else min(8, n)


def calibrate_ranges(model_path, calib_inputs, method, work, op_types=QDQ_OP_TYPES, entropy_bins=ENTROPY_BINS,
                     percentile=PERCENTILE):
    """The activation ranges of ``method`` on ``calib_inputs``, computed once and saved as an ONNX Runtime
    calibration cache in ``work`` (ORT writes its augmented model there too); returns ``(cache path, calibration
    description)``.

    * ``entropy``: KL search over ``entropy_bins`` histogram bins into 128 quantized bins (TensorRT's
      IInt8EntropyCalibrator2 idea; ``quantize_static``'s own Entropy uses 128 bins into 128, which never clips).
    * ``minmax``: ONNX Runtime's MinMax calibrator with ``quantize_static``'s defaults.
    * ``percentile``: the symmetric ``percentile``-th percentile of |x| over a 2048-bin histogram (TensorRT's
      legacy calibrator's quantile idea, pytorch-quantization's ``percentile`` method).
    """
    from pathlib import Path
    from onnxruntime.quantization import CalibrationMethod, create_calibrator
    from onnxruntime.quantization.calibrate import save_tensors_data
    model = _onnx().load(model_path, load_external_data=False)
    reader = _calibration_reader(model.graph.input[0].name, calib_inputs, calibration_batch(model, len(calib_inputs)))
    if method == "entropy":
        cm, opts = CalibrationMethod.Entropy, {"symmetric": True, "num_bins": int(entropy_bins),
                                               "num_quantized_bins": 128}
        what = "entropy (%d histogram bins -> 128)" % entropy_bins
    elif method == "percentile":
        cm, opts = CalibrationMethod.Percentile, {"symmetric": True, "num_bins": 2048, "percentile": float(percentile)}
        what = "percentile (%g, 2048 bins)" % percentile
    else:
        cm, opts, what = CalibrationMethod.MinMax, {}, "minmax"
    with _quiet_ort():
        cal = create_calibrator(Path(model_path), list(op_types), augmented_model_path=os.path.join(work, "aug.onnx"),
                                calibrate_method=cm, extra_options=opts)
        cal.collect_data(reader)
        ranges = cal.compute_data()
    cache = os.path.join(work, "ranges.json")
    save_tensors_data(ranges, cache)
    return cache, what


def unwire_excluded(model, excluded):
    """Give excluded nodes their float inputs back where ``quantize_static`` fed them a DequantizeLinear output
    (a tensor shared with a quantized consumer: ``Q -> DQ -> {quantized, excluded}``; ONNX Runtime rewires every
    consumer), then drop Q/DQ nodes left without consumers.  Returns the number of inputs rewired (in place)."""
    g = model.graph
    producer = {o: n for n in g.node for o in n.output}
    excluded = set(excluded)
    rewired = 0
    for n in g.node:
        if n.name not in excluded:
            continue
        for k, x in enumerate(n.input):
            dq = producer.get(x)
            if dq is None or dq.op_type != "DequantizeLinear":
                continue
            q = producer.get(dq.input[0])
            if q is None or q.op_type != "QuantizeLinear":
                continue  # a quantized initializer: not something an excluded node is given
            n.input[k] = q.input[0]
            rewired += 1
    if rewired:
        graph_outputs = {o.name for o in g.output}
        while True:
            used = {x for n in g.node for x in n.input} | graph_outputs
            dead = [n for n in g.node if n.op_type in ("QuantizeLinear", "DequantizeLinear")
                    and not any(o in used for o in n.output)]
            if not dead:
                break
            dead_ids = {id(n) for n in dead}
            keep = [n for n in g.node if id(n) not in dead_ids]
            del g.node[:]
            g.node.extend(keep)
        used = {x for n in g.node for x in n.input}
        keep_inits = [t for t in g.initializer if t.name in used or t.name in graph_outputs]
        del g.initializer[:]
        g.initializer.extend(keep_inits)
    return rewired


def _has_cache_arg():
    import inspect
    from onnxruntime.quantization import quantize_static
    return "calibration_cache_path" in inspect.signature(quantize_static).parameters


def quantize_qdq(in_path, out_path, calib_inputs=None, method="entropy", op_types=QDQ_OP_TYPES, per_channel=True,
                 entropy_bins=ENTROPY_BINS, percentile=PERCENTILE, exclude=(), output_qdq=False, cache=None, log=None):
    """Explicit INT8 Q/DQ ONNX that TensorRT accepts -- the toolkit's one quantizer (PTQ variants, mixed INT8,
    ``convert_to_trt.py --int8 --calib qdq``).

    ONNX Runtime's ``quantize_static`` in QDQ format: symmetric int8 activations and per-channel symmetric int8
    weights, float biases (TensorRT rejects the int32 bias DequantizeLinear).  ``method``: 'entropy', 'minmax' or
    'percentile' (:func:`calibrate_ranges`); ``calib_inputs``: [N,3,H,W] float32, or ``cache``: the ranges of an
    earlier :func:`calibrate_ranges` call (calibrate once, quantize many times).  ``exclude``: node names left in
    float, with no Q/DQ on any of their inputs (:func:`unwire_excluded`).

    ``output_qdq`` False (default): Q/DQ on the inputs and weights of the quantized Conv/MatMul/Gemm only, the
    placement TensorRT's explicit quantization expects (a Q/DQ pair between a Conv and its activation, or before
    a residual Add, stops TensorRT fusing them); True: ONNX Runtime's default, which also quantizes each quantized
    node's output.  Returns a report with :func:`qdq_summary` counts."""
    import tempfile

    import numpy as np
    onnx = _onnx()
    from onnxruntime.quantization import CalibrationMethod, QuantFormat, QuantType, quantize_static
    if method not in QDQ_METHODS:
        raise UserError("calibration method must be one of %s, got %r" % (", ".join(QDQ_METHODS), method))
    if cache is None:
        calib_inputs = np.asarray(calib_inputs if calib_inputs is not None else [], dtype=np.float32)
        if calib_inputs.ndim != 4 or len(calib_inputs) == 0:
            raise UserError("calibration inputs must be a non-empty [N,3,H,W] array, got shape %s"
                            % (calib_inputs.shape,))
    src = onnx.load(in_path)
    if has_qdq(src):
        raise UserError("%s already carries Q/DQ nodes (a QAT export?): build it as it is" % in_path)
    names = {n.name for n in src.graph.node if n.op_type in op_types}
    unknown = [n for n in exclude if n not in names]
    if unknown:
        raise UserError("not a %s node of %s: %s" % ("/".join(op_types), in_path, unknown[0]))
    calib_method = {"entropy": CalibrationMethod.Entropy, "minmax": CalibrationMethod.MinMax,
                    "percentile": CalibrationMethod.Percentile}[method]
    extra = {"QuantizeBias": False, "ActivationSymmetric": True, "WeightSymmetric": True,
             "OpTypesToExcludeOutputQuantization": [] if output_qdq else list(op_types)}
    calibration = method if cache is None else "%s (cached ranges)" % method
    n_calib = None if cache is not None else int(len(calib_inputs))
    with atomic_path(out_path) as tmp:
        with tempfile.TemporaryDirectory() as work:
            # ORT writes an augmented model for calibration beside its input: keep it out of the user's folder
            local = os.path.join(work, "model.onnx")
            onnx.save(src, local)
            reader, kwargs = None, {}
            if cache is None and _has_cache_arg():
                cache, calibration = calibrate_ranges(local, calib_inputs, method, work, op_types, entropy_bins,
                                                      percentile)
            if cache is not None:
                if not _has_cache_arg():
                    raise UserError("this ONNX Runtime's quantize_static takes no calibration_cache_path: reusing "
                                    "calibration ranges needs ONNX Runtime >= 1.22 (pip install -U onnxruntime)")
                kwargs["calibration_cache_path"] = cache
            else:  # an older ONNX Runtime: its own calibration (Entropy: 128 bins -> 128, no clipping)
                reader = _calibration_reader(src.graph.input[0].name, calib_inputs,
                                             calibration_batch(src, len(calib_inputs)))
                extra.update(CalibPercentile=float(percentile), CalibTensorRangeSymmetric=True)
                calibration = {"entropy": "entropy (ONNX Runtime default: 128 bins -> 128, no clipping)",
                               "percentile": "percentile (%g, ONNX Runtime default bins)" % percentile}.get(method,
                                                                                                         method)
            with _quiet_ort():
                quantize_static(local, tmp, reader, quant_format=QuantFormat.QDQ, op_types_to_quantize=list(op_types),
                                per_channel=per_channel, activation_type=QuantType.QInt8, weight_type=QuantType.QInt8,
                                nodes_to_exclude=list(exclude), calibrate_method=calib_method, extra_options=extra,
                                **kwargs)
        q = onnx.load(tmp)
        rewired = unwire_excluded(q, exclude)
        if any(p.key == METADATA_KEY for p in src.metadata_props):
            q = copy_onnx_metadata(src, q)  # the model's preprocessing travels with the Q/DQ copy
        summary = qdq_summary(q)
        if summary["int32_dq"]:
            raise RuntimeError("quantize_static left %d int32 DequantizeLinear nodes (TensorRT rejects them)"
                               % summary["int32_dq"])
        onnx.save(q, tmp)
    report = {"path": os.path.abspath(out_path), "source": os.path.abspath(in_path), "method": method,
              "calibration": calibration, "calibration_inputs": n_calib, "op_types": list(op_types),
              "per_channel": bool(per_channel), "output_qdq": bool(output_qdq), "float_nodes": list(exclude),
              "inputs_rewired": rewired, "qdq": summary}
    if log:
        log("Q/DQ ONNX (ONNX Runtime quantize_static, %s calibration): %d QuantizeLinear, %d DequantizeLinear "
            "(%d per-channel weight)%s -> %s"
            % (calibration, summary["quantize_linear"], summary["dequantize_linear"],
               summary["weight_dq_per_channel"], ", %d nodes float" % len(exclude) if exclude else "", out_path))
    return report
