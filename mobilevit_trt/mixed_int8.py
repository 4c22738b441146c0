"""Sensitivity-guided mixed INT8: keep the few layers that INT8 hurts most in float, quantize the rest.

The recipe (``benchmark/mixed_int8.py`` drives it; ``docs/MIXED_INT8.md`` has the measured numbers):

1. **Calibrate once.**  The activation ranges (``precision.calibrate_ranges``: Entropy, MinMax or percentile)
   are written once to an ONNX Runtime calibration cache; every Q/DQ graph below is ``precision.quantize_qdq``
   with that cache and ``exclude``, so the float layers change and nothing else.
2. **Sensitivity, one group at a time, by dequantizing.**  Start from the fully quantized graph and leave one
   group (a node, or a block: :func:`group_nodes`) in float; measure the logits against FP32 on the calibration
   inputs (``verify.judge``: max abs, mean abs, top-1 agreement).  A group's sensitivity is how much the error
   falls when it alone is float (:func:`sensitivity_scores`).  Dequantize-one rather than quantize-one: the same
   number of runs, but it measures each layer in the state the greedy search starts from (everything else INT8),
   where quantization noise from upstream layers is amplified downstream; a layer quantized alone in an FP32
   network understates exactly those layers.
3. **Greedy exclusion under a budget** (:func:`greedy_exclusion`, a pure function): in ranking order, keep one
   more group in float until the budget holds on a labelled check set (top-1 drop against FP32 at most
   ``max_drop`` points, and optionally top-1 agreement with FP32 at least ``min_agreement``); then a pruning pass
   re-quantizes each kept-float group, least sensitive first, wherever the budget still holds without it.
4. **Report** the float groups and the fraction of Conv/MatMul/Gemm MACs left in INT8 (:func:`node_macs`, from ONNX
   shape inference on a static-batch copy).

Q/DQ placement is ``precision.quantize_qdq``'s, the toolkit's one quantizer: Q/DQ on the inputs and weights of
the quantized Conv/MatMul/Gemm only (TensorRT's placement; ``output_qdq=True`` adds ONNX Runtime's output pairs),
and a float node has no Q/DQ on any input (``precision.unwire_excluded``; :func:`qdq_inputs` checks it).
"""
import collections
import os
import re
import shutil
import tempfile

from .errors import UserError
from .precision import ENTROPY_BINS, QDQ_METHODS, QDQ_OP_TYPES, calibrate_ranges, quantize_qdq

#: sensitivity metrics: key of ``verify.judge``'s result -> True where higher is better
METRICS = {"mean_abs": False, "max_abs": False, "top1_agreement": True}
GRANULARITIES = ("node", "block")


def _onnx():
    import onnx
    return onnx


# -- the graph: which nodes, how they group, how many MACs -----------------------------------------------------------

def quantizable_nodes(model, op_types=QDQ_OP_TYPES):
    """Names of the ``op_types`` nodes in graph order (what ``quantize_static`` quantizes).  UserError when one
    is unnamed or two share a name: ``nodes_to_exclude`` addresses nodes by name."""
    names = [n.name for n in model.graph.node if n.op_type in op_types]
    if any(not n for n in names):
        raise UserError("the graph has unnamed %s nodes: mixed INT8 excludes nodes by name" % "/".join(op_types))
    dup = [k for k, v in collections.Counter(names).items() if v > 1]
    if dup:
        raise UserError("node names are not unique (e.g. %r): mixed INT8 excludes nodes by name" % dup[0])
    return names


_TRANSFORMER = re.compile(r"^transformer\.\d+$")


def block_of(name):
    """The block a node belongs to, from its exporter path: inside a transformer layer its attention or MLP part
    (``.../transformer.0/attn``), else the first three path components (``/stages/stages.1/stages.1.0``: one
    inverted-residual block; the convolutions of one MobileViT block), else the name itself."""
    parts = name.strip("/").split("/")
    for i, p in enumerate(parts):
        if _TRANSFORMER.match(p) and i + 1 < len(parts) - 1:
            return "/" + "/".join(parts[:i + 2])
    if len(parts) > 3:
        return "/" + "/".join(parts[:3])
    if len(parts) > 1:
        return "/" + "/".join(parts[:-1])
    return name


def group_nodes(names, granularity="node"):
    """``OrderedDict group -> [node names]`` in graph order: one group per node, or per :func:`block_of`."""
    if granularity not in GRANULARITIES:
        raise UserError("granularity must be one of %s, got %r" % (", ".join(GRANULARITIES), granularity))
    groups = collections.OrderedDict()
    for n in names:
        groups.setdefault(n if granularity == "node" else block_of(n), []).append(n)
    return groups


def static_batch_copy(model, batch=1):
    """A copy of ``model`` whose graph inputs have batch ``batch`` where the first dimension is symbolic, with the
    stale shape annotations (value_info) dropped."""
    m = _onnx().ModelProto()
    m.CopyFrom(model)
    inits = {t.name for t in m.graph.initializer}
    for vi in m.graph.input:
        if vi.name in inits or not vi.type.tensor_type.shape.dim:
            continue
        d0 = vi.type.tensor_type.shape.dim[0]
        if not (d0.HasField("dim_value") and d0.dim_value > 0):
            d0.Clear()
            d0.dim_value = int(batch)
    for vi in m.graph.output:
        if vi.type.tensor_type.shape.dim:
            d0 = vi.type.tensor_type.shape.dim[0]
            if not (d0.HasField("dim_value") and d0.dim_value > 0):
                d0.Clear()
                d0.dim_value = int(batch)
    del m.graph.value_info[:]
    return m


def _shapes(model):
    """{tensor: [dims]} after shape inference (ONNX's; ONNX Runtime's symbolic inference where ONNX leaves gaps)."""
    onnx = _onnx()
    from .reference_ops import with_check_domain

    def collect(m):
        out = {}
        for vi in list(m.graph.input) + list(m.graph.output) + list(m.graph.value_info):
            dims = vi.type.tensor_type.shape.dim
            if vi.type.tensor_type.HasField("shape") and all(d.HasField("dim_value") for d in dims):
                out[vi.name] = [int(d.dim_value) for d in dims]
        for t in m.graph.initializer:
            out[t.name] = [int(d) for d in t.dims]
        return out

    shapes = collect(onnx.shape_inference.infer_shapes(with_check_domain(model)))
    want = [o for n in model.graph.node if n.op_type in QDQ_OP_TYPES for o in n.output]
    if all(o in shapes for o in want):
        return shapes
    try:
        from onnxruntime.tools.symbolic_shape_infer import SymbolicShapeInference
        shapes.update(collect(SymbolicShapeInference.infer_shapes(model, auto_merge=True)))
    except Exception:  # noqa: BLE001 - the missing shapes are reported below
        pass
    return shapes


def _prod(xs):
    p = 1
    for x in xs:
        p *= int(x)
    return p


def node_macs(model, op_types=QDQ_OP_TYPES, batch=1):
    """``OrderedDict node name -> multiply-accumulates`` of each ``op_types`` node at batch ``batch`` (a dynamic
    batch is fixed to it first), from the inferred shapes:

    * Conv: ``N * C_out * prod(out spatial) * (C_in / group) * prod(kernel)``
    * MatMul: ``prod(output shape) * K`` (K: the shared dimension; batched and broadcast products included)
    * Gemm: ``M * N * K``

    UserError when a shape is unknown."""
    m = static_batch_copy(model, batch)
    shapes = _shapes(m)
    out = collections.OrderedDict()
    for n in m.graph.node:
        if n.op_type not in op_types:
            continue
        need = [n.input[0], n.input[1], n.output[0]]
        missing = [t for t in need if t not in shapes]
        if missing:
            raise UserError("shape inference gives no static shape for %r (input of %s %s): MACs unknown"
                            % (missing[0], n.op_type, n.name))
        a, b, y = (shapes[t] for t in need)
        if n.op_type == "Conv":
            out[n.name] = _prod(y) * _prod(b[1:])            # y = [N, C_out, *spatial], w = [C_out, C_in/g, *k]
        elif n.op_type == "MatMul":
            out[n.name] = _prod(y) * (a[-1] if a else 1)     # a = [..., M, K] (or [K])
        elif n.op_type == "Gemm":
            trans_a = next((at.i for at in n.attribute if at.name == "transA"), 0)
            out[n.name] = _prod(y) * (a[0] if trans_a else a[-1])
        else:
            raise UserError("MAC counting knows Conv, MatMul and Gemm, not %s" % n.op_type)
    return out


def int8_fraction(macs, excluded):
    """Fraction of the MACs in ``macs`` (node -> MACs) on nodes not in ``excluded``."""
    total = sum(macs.values())
    excluded = set(excluded)
    return float(sum(v for k, v in macs.items() if k not in excluded)) / total if total else float("nan")


# -- Q/DQ graphs ----------------------------------------------------------------------------------------------------

def qdq_inputs(model, names=None):
    """``{node name: [True where input k is a DequantizeLinear output]}`` for the Conv/MatMul/Gemm nodes (or
    ``names``): which inputs a TensorRT build would read as INT8."""
    dq_out = {o for n in model.graph.node if n.op_type == "DequantizeLinear" for o in n.output}
    want = set(names) if names is not None else None
    out = {}
    for n in model.graph.node:
        if (want is None and n.op_type in QDQ_OP_TYPES) or (want is not None and n.name in want):
            out[n.name] = [x in dq_out for x in n.input]
    return out


class MixedQuantizer(object):
    """One FP32 ONNX, its calibration ranges (computed once) and the Q/DQ graphs made from them
    (``output_qdq``: see :func:`quantize_with_cache`).

    ``build(exclude, out_path)`` writes the Q/DQ graph with ``exclude`` (node names) in float; ``backend(exclude)``
    an ``OnnxRuntimeBackend`` on such a graph in the work folder.  Use as a context manager (the work folder is
    deleted on exit)."""

    def __init__(self, onnx_path, calib_inputs, method="entropy", op_types=QDQ_OP_TYPES, entropy_bins=ENTROPY_BINS,
                 output_qdq=False, log=None):
        import inspect

        import numpy as np
        onnx = _onnx()
        from onnxruntime.quantization import quantize_static

        from .precision import has_qdq
        if method not in QDQ_METHODS:
            raise UserError("calibration method must be one of %s, got %r" % (", ".join(QDQ_METHODS), method))
        if "calibration_cache_path" not in inspect.signature(quantize_static).parameters:
            raise UserError("this ONNX Runtime's quantize_static takes no calibration_cache_path: mixed INT8 needs "
                            "ONNX Runtime >= 1.22 (pip install -U onnxruntime)")
        if not onnx_path or not os.path.isfile(onnx_path):
            raise UserError("ONNX file not found: %s" % onnx_path)
        self.calib_inputs = np.ascontiguousarray(calib_inputs, dtype=np.float32)
        if self.calib_inputs.ndim != 4 or len(self.calib_inputs) == 0:
            raise UserError("calibration inputs must be a non-empty [N,3,H,W] array, got shape %s"
                            % (self.calib_inputs.shape,))
        self.source = os.path.abspath(onnx_path)
        self.model = onnx.load(onnx_path)
        if has_qdq(self.model):
            raise UserError("%s already carries Q/DQ nodes (a QAT export?): mixed INT8 starts from an FP32 graph"
                            % onnx_path)
        self.method, self.op_types, self.output_qdq = method, tuple(op_types), bool(output_qdq)
        self.nodes = quantizable_nodes(self.model, self.op_types)
        self.macs = node_macs(self.model, self.op_types)
        self._work = tempfile.mkdtemp(prefix="mixed-int8.")
        self._local = os.path.join(self._work, "model.onnx")
        onnx.save(self.model, self._local)  # ORT writes its augmented model beside its input: keep it here
        self._n = 0
        self.cache, self.calibration = calibrate_ranges(self._local, self.calib_inputs, method, self._work,
                                                        self.op_types, entropy_bins)
        if log:
            log("calibrated once (%s, %d inputs); %d %s nodes, %.1f M MACs at batch 1"
                % (self.calibration, len(self.calib_inputs), len(self.nodes), "/".join(self.op_types),
                   sum(self.macs.values()) / 1e6))

    def check_names(self, exclude):
        unknown = [n for n in exclude if n not in self.macs]
        if unknown:
            raise UserError("not a %s node of %s: %s" % ("/".join(self.op_types), self.source, unknown[0]))
        return list(exclude)

    def build(self, exclude, out_path):
        """Write the Q/DQ graph with ``exclude`` in float to ``out_path``; returns its report."""
        exclude = self.check_names(exclude)
        rep = quantize_qdq(self._local, out_path, method=self.method, op_types=self.op_types, exclude=exclude,
                           output_qdq=self.output_qdq, cache=self.cache)
        return dict(rep, source=self.source, calibration=self.calibration,
                    calibration_inputs=int(len(self.calib_inputs)),
                    int8_mac_fraction=int8_fraction(self.macs, exclude))

    def backend(self, exclude):
        """An ``OnnxRuntimeBackend`` on the Q/DQ graph with ``exclude`` in float (a fresh file in the work folder)."""
        from .backends import OnnxRuntimeBackend
        self._n += 1
        path = os.path.join(self._work, "variant_%d.onnx" % self._n)
        self.build(exclude, path)
        try:
            return OnnxRuntimeBackend(path)
        finally:
            os.unlink(path)  # the session holds the graph

    def close(self):
        shutil.rmtree(self._work, ignore_errors=True)

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()


# -- sensitivity and the greedy search (pure functions) --------------------------------------------------------------

def sensitivity_scores(base, per_group, metric="mean_abs"):
    """``{group: score}``: how much ``metric`` improves when the group alone is float (``per_group[g]``) compared
    with the fully quantized graph (``base``); the dicts are ``verify.judge`` results.  Higher: more sensitive."""
    if metric not in METRICS:
        raise UserError("sensitivity metric must be one of %s, got %r" % (", ".join(METRICS), metric))
    sign = 1.0 if METRICS[metric] else -1.0
    return collections.OrderedDict((g, sign * (float(r[metric]) - float(base[metric])))
                                   for g, r in per_group.items())


def rank_groups(scores, cost=None):
    """Groups most sensitive first.  Ties (equal scores) go to the cheaper group first (``cost``: group -> MACs
    kept in float if it is excluded), then graph order (the order of ``scores``)."""
    order = {g: i for i, g in enumerate(scores)}
    cost = cost or {}
    return sorted(scores, key=lambda g: (-scores[g], cost.get(g, 0), order[g]))


def budget(max_drop=None, min_agreement=None):
    """A budget test for :func:`greedy_exclusion`: ``holds(result)`` where ``result["drop"]`` (points of top-1
    below FP32) is at most ``max_drop`` and ``result["agreement"]`` (top-1 agreement with FP32, a fraction) is at
    least ``min_agreement``; either may be None (not tested), not both."""
    if max_drop is None and min_agreement is None:
        raise UserError("give a budget: a maximum top-1 drop and/or a minimum top-1 agreement")

    def holds(result):
        ok = True
        if max_drop is not None:
            ok = ok and result["drop"] <= max_drop + 1e-9
        if min_agreement is not None:
            ok = ok and result["agreement"] >= min_agreement - 1e-12
        return ok
    return holds


def greedy_exclusion(ranking, measure, holds, prune=True, max_groups=None, log=None):
    """The float set, chosen greedily.

    ``ranking``: groups, most sensitive first, or a function returning them (called only when the fully
    quantized graph is over budget); ``measure(excluded tuple) -> result`` (e.g. the check-set accuracy);
    ``holds(result) -> bool`` (:func:`budget`).

    Forward: measure with nothing excluded, then with the first 1, 2, ... groups of ``ranking`` (at most
    ``max_groups``) until the budget holds: the shortest ranking prefix that meets it.  Backward (``prune``):
    each group of that prefix, least sensitive first, is re-quantized where the budget still holds without it,
    so every group left in float was needed when it was tested.  A budget that no prefix meets: everything tried
    is excluded, ``met`` False.  Returns ``{"excluded": [...] in ranking order, "met", "result": the measured
    result of the returned set, "history": [{"excluded", "result", "holds", "step"}]}``; each set is measured
    once."""
    history, seen = [], {}

    def run(excluded, step):
        key = tuple(excluded)
        if key not in seen:
            r = measure(key)
            ok = bool(holds(r))
            seen[key] = (r, ok)
            history.append({"step": step, "excluded": list(key), "result": r, "holds": ok})
            if log:
                log("%s: %d float -> %s" % (step, len(key), "budget holds" if ok else "over budget"))
        return seen[key]

    k = 0
    result, ok = run((), "forward")
    if callable(ranking):  # a ranking that costs a measurement of its own: made only when all-INT8 is over budget
        ranking = [] if ok else ranking()
    ranking = list(ranking)
    limit = len(ranking) if max_groups is None else min(int(max_groups), len(ranking))
    while not ok and k < limit:
        k += 1
        result, ok = run(tuple(ranking[:k]), "forward")
    chosen = list(ranking[:k])
    if not ok:
        return {"excluded": chosen, "met": False, "result": result, "history": history}
    if prune and len(chosen) > 1:
        for g in reversed(list(chosen)):
            trial = [x for x in chosen if x != g]
            r, trial_ok = run(tuple(trial), "prune")
            if trial_ok:
                chosen, result = trial, r
    return {"excluded": chosen, "met": True, "result": result, "history": history}


# -- the measurements -----------------------------------------------------------------------------------------------

def logit_errors(backend, inputs, ref_logits):
    """``verify.judge`` of ``backend`` on ``inputs`` against ``ref_logits`` (statistics only)."""
    from .verify import Tolerance, judge, run_all
    return judge(run_all(backend, inputs), ref_logits, Tolerance())


def measure_sensitivity(mq, groups, ref_logits, inputs=None, log=None):
    """``(base, {group: result})``: ``logit_errors`` of the fully quantized graph and of the graph with each
    group alone in float, on ``inputs`` (default: the calibration inputs) against ``ref_logits``."""
    x = mq.calib_inputs if inputs is None else inputs
    with mq.backend(()) as b:
        base = logit_errors(b, x, ref_logits)
    if log:
        log("all INT8: mean abs %.4g, max abs %.4g, top-1 agreement %.1f%%"
            % (base["mean_abs"], base["max_abs"], 100 * base["top1_agreement"]))
    out = collections.OrderedDict()
    for i, (g, nodes) in enumerate(groups.items()):
        with mq.backend(nodes) as b:
            out[g] = logit_errors(b, x, ref_logits)
        if log:
            log("[%d/%d] %s float: mean abs %.4g, max abs %.4g, top-1 agreement %.1f%%"
                % (i + 1, len(groups), g, out[g]["mean_abs"], out[g]["max_abs"], 100 * out[g]["top1_agreement"]))
    return base, out


def check_accuracy(backend, dataset, ref=None, limit=None, batch=None, workers=None):
    """``accuracy.evaluate`` on ``dataset`` with the logits kept; with ``ref`` (the FP32 result of the same
    call) also ``drop`` (points of top-1 below it) and ``agreement`` (top-1 agreement with its logits)."""
    from .accuracy import evaluate
    from .metrics import top1_agreement
    res = evaluate(backend, dataset, batch=batch, limit=limit, show_progress=False, workers=workers,
                   keep_logits=True)
    if ref is not None:
        res["drop"] = float(ref["top1"] - res["top1"])
        res["agreement"] = top1_agreement(res["logits"], ref["logits"])
    return res


def public(result):
    """An accuracy result without its logit arrays (for JSON)."""
    return {k: v for k, v in result.items() if k not in ("logits", "labels")}


def search(mq, check_ds, fp32_check, max_drop=0.2, min_agreement=None, granularity="node", metric="mean_abs",
           prune=True, max_float=None, check_limit=None, batch=None, sensitivities=None, sensitivity_inputs=None,
           lazy=False, log=None):
    """The whole recipe on a :class:`MixedQuantizer`: sensitivity of every group on the calibration inputs
    (``sensitivity_inputs``: another, e.g. smaller, set; ``sensitivities``: ``(base, per_group)`` measured
    before, to skip that step), the ranking, and the greedy
    exclusion to the budget measured on ``check_ds`` (a labelled dataset; ``fp32_check``: the FP32 model's
    :func:`check_accuracy` on it, logits kept).  Choose the float layers on a split other than the one the
    result is reported on, or the result is optimistic.  ``lazy``: measure the sensitivities only when the fully
    quantized graph is over budget (else ``base``, ``per_group``, ``scores`` and ``ranking`` are None).

    Returns ``{"groups", "group_macs", "base", "per_group", "scores", "ranking", "choice" (greedy_exclusion's
    result), "float_nodes", "seconds": {"sensitivity_s", "greedy_s"}}``."""
    import time

    from .backends import OnnxRuntimeBackend
    from .verify import run_all
    groups = group_nodes(mq.nodes, granularity)
    group_macs = {g: sum(mq.macs[n] for n in nodes) for g, nodes in groups.items()}
    sens = {"base": None, "per_group": None, "scores": None, "ranking": None, "seconds": 0.0}

    def rank():
        t = time.time()
        if sensitivities is not None:
            base, per_group = sensitivities
        else:
            x = mq.calib_inputs if sensitivity_inputs is None else sensitivity_inputs
            if log:
                log("sensitivity: %d %s groups, each alone in float, on %d calibration inputs"
                    % (len(groups), granularity, len(x)))
            with OnnxRuntimeBackend(mq.source) as fp32:
                ref_logits = run_all(fp32, x)
            base, per_group = measure_sensitivity(mq, groups, ref_logits, inputs=x, log=log)
        scores = sensitivity_scores(base, per_group, metric)
        sens.update(base=base, per_group=per_group, scores=scores, ranking=rank_groups(scores, group_macs),
                    seconds=time.time() - t)
        return sens["ranking"]
    ranking = rank if lazy else rank()

    def measure(excluded):
        nodes = [n for g in excluded for n in groups[g]]
        with mq.backend(nodes) as b:
            r = check_accuracy(b, check_ds, ref=fp32_check, limit=check_limit, batch=batch)
        if log:
            log("  float %s: check top-1 %.2f%% (drop %+.2f), agreement %.1f%%, INT8 MACs %.1f%%"
                % (", ".join(excluded) or "nothing", r["top1"], r["drop"], 100 * r["agreement"],
                   100 * int8_fraction(mq.macs, nodes)))
        return r

    t = time.time()
    if log:
        log("greedy: budget top-1 drop <= %g points%s on the check set" % (
            max_drop, "" if min_agreement is None else ", agreement >= %.1f%%" % (100 * min_agreement)))
    choice = greedy_exclusion(ranking, measure, budget(max_drop, min_agreement), prune=prune, max_groups=max_float,
                              log=log)
    if sens["ranking"] is None and log:
        log("all INT8 meets the budget on the check set: no sensitivity run needed")
    return {"groups": groups, "group_macs": group_macs, "base": sens["base"], "per_group": sens["per_group"],
            "scores": sens["scores"], "ranking": sens["ranking"], "choice": choice,
            "float_nodes": [n for g in choice["excluded"] for n in groups[g]],
            "seconds": {"sensitivity_s": round(sens["seconds"], 1),
                        "greedy_s": round(time.time() - t - sens["seconds"], 1)}}
