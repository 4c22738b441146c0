"""The plan: every artifact the pipeline makes, declared once, as edges ``source -> variant``.

A :class:`Variant` says how it is made from its source (:class:`Step`: export, fuse, fp16, ptq, qat, or the model
itself), how it is checked (:class:`Check`: against which variant, on which inputs, under which
``verify.Tolerance``), whether an engine is built from it (:class:`Engine`), whether and in which series its ONNX
Runtime CPU latency is timed, whether its accuracy is measured, and what it is.  Its name is written once, here;
the pipeline (:mod:`mobilevit_trt.pipeline`) and the accuracy table are loops over a plan, and the report reads
the descriptions from it.

:func:`build_plan` makes the plan from a few parameters (opsets, static batches, what reduced precision is made
from, which QAT checkpoints, extra recipes), so a new dimension is a parameter and a new variant one entry.

Root variants (``Step("model")``) are the PyTorch models of the model source: they have no file; checks and the
accuracy loop run them through ``backends.TorchBackend``.
"""
import collections

from .errors import UserError
from .export import DYNAMIC_VERIFY_BATCHES
from .verify import Tolerance

#: static batch sizes exported, timed and checked by default (the original project's tables)
BATCHES = (1, 4, 8)
#: batch sizes a dynamic graph is checked at (several: a batch-dependent reshape shows)
DYNAMIC_CHECK_BATCHES = DYNAMIC_VERIFY_BATCHES
#: the opt dynamic engine's profiles (the second covers the large batches of the throughput runs)
DYNAMIC_PROFILES = ((1, 4, 8), (16, 32, 64))
#: post-training calibrations of the PTQ variants (precision.calibrate_ranges)
PTQ_METHODS = ("entropy", "minmax", "percentile")
PTQ_LABELS = {"entropy": "Entropy", "minmax": "MinMax", "percentile": "percentile 99.99"}
#: the mixed INT8 variant's budget (top-1 points on the training split's check images)
MIXED_MAX_DROP = 0.2
#: images of the training split the mixed INT8 search checks its budget on, and calibration images it ranks on
MIXED_CHECK_IMAGES = 500
MIXED_SENSITIVITY_IMAGES = 32
#: the profile choices of the FP16 engine of the opt dynamic graph offered to --select: one profile with the
#: optimum at batch 1, and one wide profile with the optimum at 8 (the default engines use DYNAMIC_PROFILES)
PROFILE_CHOICES = (("opt1", ((1, 1, 8),)), ("wide", ((1, 8, 64),)))

#: ORT vs PyTorch, FP32 export (max abs logit diff)
EXPORT_TOL = Tolerance(atol=1e-4)
#: fused graph (plugin nodes through the reference ops) vs the unfused graph
FUSE_TOL = Tolerance(atol=1e-4)
#: reduced precision vs the FP32 graph on calibration images: the predictions must survive
FP16_TOL = Tolerance(min_top1=0.9)
INT8_TOL = Tolerance(min_top1=0.75)
#: Q/DQ export vs its fake-quant PyTorch model (MobileViT_Pytorch/qat.py's tolerances)
QAT_W_TOL = Tolerance(atol=1e-3, min_top1=1.0)
QAT_WA_TOL = Tolerance(atol=0.1, min_top1=0.99)
STATS_ONLY = Tolerance()


class Step(collections.namedtuple("Step", "kind params")):
    """How a variant is made: ``kind`` names the recipe (``makers.MAKERS``), ``params`` its arguments."""
    __slots__ = ()

    def __new__(cls, kind, **params):
        return super(Step, cls).__new__(cls, kind, dict(params))

    def get(self, key, default=None):
        return self.params.get(key, default)


class Check(collections.namedtuple("Check", "against inputs tol batches optimize")):
    """Compare the variant with ``against`` (None: its source) on ``inputs`` -- ``"random"`` (seeded normal
    noise, one array per entry of ``batches``) or ``"calibration"`` (the first ``batches[0]`` calibration images)
    -- under ``tol``; ``optimize=False`` runs the variant in ONNX Runtime with graph optimizations off (a Q/DQ
    graph evaluated as written, not through ORT's own INT8 kernels)."""
    __slots__ = ()

    def __new__(cls, against=None, inputs="random", tol=STATS_ONLY, batches=(1,), optimize=True):
        return super(Check, cls).__new__(cls, against, inputs, tol, tuple(batches), optimize)


class Engine(collections.namedtuple("Engine", "onnx fp16 int8 profiles plugin")):
    """A TensorRT engine named after the variant, built from the ONNX of ``onnx`` (None: the variant's own);
    ``fp16`` / ``int8`` (Q/DQ graphs) builder precision, ``profiles`` batch profiles, ``plugin``: needs the
    C++ plugin library."""
    __slots__ = ()

    def __new__(cls, onnx=None, fp16=False, int8=False, profiles=None, plugin=False):
        return super(Engine, cls).__new__(cls, onnx, fp16, int8, profiles, plugin)

    def options(self):
        return {"profiles": [list(p) for p in self.profiles] if self.profiles else None, "fp16": self.fp16,
                "int8": self.int8, "int8_mode": "qdq" if self.int8 else "auto", "plugin": self.plugin}


class Variant(collections.namedtuple("Variant", "name make source checks engine cpu_series accuracy description")):
    __slots__ = ()

    def __new__(cls, name, make, source=None, checks=(), engine=None, cpu_series=None, accuracy=False,
                description=""):
        return super(Variant, cls).__new__(cls, name, make, source, tuple(checks), engine, cpu_series, accuracy,
                                           description)

    @property
    def is_root(self):
        return self.make.kind == "model"

    @property
    def is_engine_only(self):
        """Another engine of an existing ONNX variant (other profiles): no file of its own."""
        return self.make.kind == "engine"

    @property
    def stage(self):
        """The make stage this variant belongs to; variants of one stage are made together (one model load)."""
        return STAGE_NAMES[self.make.kind](self)

    @property
    def static_batch(self):
        """The batch an export was made for; None for a dynamic export and for every other step (the plan makes
        those from dynamic graphs)."""
        return None if self.make.get("dynamic", True) else self.make.get("batch")


STAGE_NAMES = {
    "model": lambda v: None,
    "export": lambda v: "export %s" % {"torch_fp32": "base", "torch_opt": "opt"}.get(
        v.source, v.source.replace("torch_", "")),
    "fuse": lambda v: " ".join(["surgery"] + [t for t in [v.make.get("target", "plugin")] if t != "plugin"]),
    "fp16": lambda v: "fp16",
    "ptq": lambda v: "int8 ptq %s" % v.make.get("method"),
    "qat": lambda v: "int8 %s" % v.source.replace("torch_", ""),
    "mixed": lambda v: "int8 mixed %s" % v.make.get("method"),
    "modelopt": lambda v: "int8 modelopt %s" % v.make.get("method"),
    "engine": lambda v: None,
}


class Plan(object):
    """An ordered set of variants; every source comes before what is made from it."""

    def __init__(self, variants):
        self.variants = collections.OrderedDict()
        for v in variants:
            if v.make.kind not in STAGE_NAMES:
                raise UserError("variant %s: no recipe for a %r step (choose from %s)" % (
                    v.name, v.make.kind, ", ".join(sorted(STAGE_NAMES))))
            if v.name in self.variants:
                raise ValueError("variant %r declared twice" % v.name)
            for ref in [v.source] + [c.against for c in v.checks] + [v.engine.onnx if v.engine else None]:
                if ref is not None and ref not in self.variants:
                    raise ValueError("variant %r refers to %r, which is not declared before it" % (v.name, ref))
            self.variants[v.name] = v

    def __iter__(self):
        return iter(self.variants.values())

    def __getitem__(self, name):
        return self.variants[name]

    def __contains__(self, name):
        return name in self.variants

    def files(self):
        return [v for v in self if not v.is_root and not v.is_engine_only]

    def stages(self):
        """``[(stage name, [variants])]`` in plan order: consecutive variants of one stage name are made together;
        a name that comes back later (after what it depends on) is made apart, as "<stage>: <first variant>"."""
        out = []
        for v in self.files():
            if out and out[-1][0] == v.stage:
                out[-1][1].append(v)
            else:
                out.append((v.stage, [v]))
        seen = set()
        for i, (name, vs) in enumerate(out):
            if name in seen:
                out[i] = ("%s: %s" % (name, vs[0].name), vs)
            seen.add(name)
        return out

    def engines(self):
        return [v for v in self if v.engine is not None]

    def accuracy(self):
        return [v for v in self if v.accuracy]

    def timed(self):
        return [v for v in self if v.cpu_series]

    def against(self, variant, check):
        return self[check.against or variant.source]

    def filtered(self, keep):
        """The sub-plan of the variants ``keep`` names, plus everything they are made or checked from."""
        need = set()

        def add(name):
            if name is None or name in need:
                return
            need.add(name)
            v = self[name]
            add(v.source)
            for c in v.checks:
                add(c.against or v.source)
            if v.engine:
                add(v.engine.onnx)
        for name in keep:
            if name not in self:
                raise KeyError(name)
            add(name)
        return Plan([v for v in self if v.name in need])

    def descriptions(self):
        return collections.OrderedDict((v.name, v.description) for v in self)


# ------------------------------------------------------------------------------------------------ the plan

def _exports(tag, opt, opset, batches, candidates=False):
    """Static batch ``batches`` and dynamic exports of the base or --opt model; with ``candidates`` the static
    ones are measured too (each at its own batch: a candidate at that batch size)."""
    root = "torch_opt" if opt else "torch_fp32"
    out = []
    for b in batches:
        out.append(Variant(
            "%s_b%d" % (tag, b), Step("export", batch=b, dynamic=False, opset=opset), source=root,
            checks=[Check(inputs="random", tol=EXPORT_TOL, batches=(b,))], cpu_series="%s_static" % tag,
            engine=Engine() if (opt and b == 1) else None, accuracy=candidates,
            description="%s, static batch %d, FP32" % (tag, b)))
    out.append(Variant(
        "%s_dynamic" % tag, Step("export", dynamic=True, opset=opset), source=root,
        checks=[Check(inputs="random", tol=EXPORT_TOL, batches=DYNAMIC_CHECK_BATCHES)], cpu_series="%s_dynamic" % tag,
        engine=Engine(profiles=DYNAMIC_PROFILES if opt else None), accuracy=True,
        description="%s, dynamic batch, FP32" % tag))
    return out


def _reduced(src, calib_n, qat_keys, opset, timed=True, candidates=False, mixed_max_drop=MIXED_MAX_DROP):
    """FP16 and PTQ INT8 graphs of ``src`` (Entropy, MinMax, percentile); the Q/DQ exports of the QAT checkpoints
    ``qat_keys``; with ``candidates`` (``pipeline.py --select``) also mixed INT8 (float layers chosen on the
    training split under ``mixed_max_drop``) and ModelOpt's PTQ, and every variant gets its own CPU series."""
    def series(name, default):
        return name if candidates else (default if timed else None)
    vs = [Variant("%s_fp16" % src, Step("fp16"), source=src,
                  checks=[Check(inputs="calibration", tol=FP16_TOL, batches=(calib_n,))],
                  engine=Engine(onnx=src, fp16=True), cpu_series=series(src + "_fp16", src + "_fp16"), accuracy=True,
                  description="%s, FP16-converted" % _what(src))]
    for method in PTQ_METHODS:
        name = "%s_int8_%s" % (src, method)
        vs.append(Variant(
            name, Step("ptq", method=method), source=src,
            checks=[Check(inputs="calibration", tol=INT8_TOL, batches=(calib_n,))],
            engine=Engine(int8=True) if (method == "entropy" or candidates) else None,
            cpu_series=series(name, name if method == "entropy" else None), accuracy=True,
            description="%s, PTQ Q/DQ INT8 (%s)" % (_what(src), PTQ_LABELS[method])))
    if candidates:
        for kind, what in (("mixed", "mixed INT8 (Entropy; most sensitive layers float, chosen on the training "
                                     "split, budget %g points)" % mixed_max_drop),
                           ("modelopt", "NVIDIA ModelOpt PTQ Q/DQ INT8 (Entropy)")):
            name = "%s_int8_%s" % (src, kind)
            params = {"method": "entropy"}
            if kind == "mixed":
                params.update(max_drop=mixed_max_drop, granularity="node")
            vs.append(Variant(name, Step(kind, **params), source=src,
                              checks=[Check(inputs="calibration", tol=INT8_TOL, batches=(calib_n,))],
                              engine=Engine(int8=True), cpu_series=name, accuracy=True,
                              description="%s, %s" % (_what(src), what)))
    for key in qat_keys:
        wa = key == "qat_wa"
        name = "%s_dynamic" % key
        vs.append(Variant(
            name, Step("qat", dynamic=True, opset=opset), source="torch_" + key,
            checks=[Check(inputs="random", tol=QAT_WA_TOL if wa else QAT_W_TOL, batches=(8,), optimize=False),
                    Check(against=src, inputs="calibration", tol=STATS_ONLY, batches=(calib_n,))],
            engine=Engine(int8=True) if wa else None, cpu_series=series(name, name if wa else None),
            accuracy=True, description="%s, dynamic, QAT Q/DQ %s" % (
                src.split("_")[0], "weights+activations" if wa else "weights only")))
    return vs


def _what(src):
    return src.replace("_dynamic", ", dynamic").replace("_", " ")


#: the fusion targets besides the plugin graph that the pipeline makes from the opt dynamic export (the export
#: itself is the ``none`` target); see mobilevit_trt.surgery.targets
FUSION_TARGETS = ("native", "fusable")


def _targets(src, targets, calib_n, candidates=False):
    """The opt dynamic export rewritten for each fusion target, each with its engines: ``native`` (ONNX Attention
    -> IAttention) in FP32 and FP16, ``fusable`` (TensorRT's MHA-fusion form) in FP16, where that fusion is."""
    vs = []
    what = {"native": "ONNX Attention + LayerNormalization (native target)",
            "fusable": "MHA-fusion form + LayerNormalization (fusable target)"}
    for t in targets:
        name = "%s_%s" % (src, t)
        vs.append(Variant(name, Step("fuse", target=t), source=src,
                          checks=[Check(inputs="random", tol=FUSE_TOL, batches=(1, 4))],
                          engine=Engine(profiles=DYNAMIC_PROFILES, fp16=(t == "fusable")),
                          cpu_series=name if candidates else None,
                          accuracy=True, description="opt, dynamic, %s%s" % (what[t], ", FP16 engine" if
                                                                             t == "fusable" else "")))
        if t == "native":
            vs.append(Variant(name + "_fp16", Step("fp16"), source=name,
                              checks=[Check(inputs="calibration", tol=FP16_TOL, batches=(calib_n,))],
                              engine=Engine(onnx=name, fp16=True, profiles=DYNAMIC_PROFILES), accuracy=True,
                              cpu_series=name + "_fp16" if candidates else None,
                              description="opt, dynamic, %s, FP16-converted" % what[t]))
    return vs


def _profile_choices(src):
    """Engines of ``src``'s FP16 build with other profiles (PROFILE_CHOICES): the same ONNX, other optimum
    shapes -- which TensorRT tunes its kernels for."""
    return [Variant("%s_fp16_%s" % (src, tag), Step("engine"), source=src,
                    engine=Engine(onnx=src, fp16=True, profiles=profiles),
                    description="%s, FP16 engine, profile%s %s" % (_what(src), "s" if len(profiles) > 1 else "",
                                                                   " + ".join("%d/%d/%d" % p for p in profiles)))
            for tag, profiles in PROFILE_CHOICES]


def build_plan(opset=13, batches=BATCHES, reduced_from="opt_dynamic", qat_keys=("qat_w", "qat_wa"), fuse=True,
               static=True, qat_ptq=False, calib_n=32, extra=(), targets=FUSION_TARGETS, candidates=False,
               mixed_max_drop=MIXED_MAX_DROP):
    """The pipeline's plan.

    ``opset``: of every export; ``batches``: the static exports (``static=False``: dynamic only);
    ``reduced_from``: the FP32 graph the FP16/PTQ variants are made from; ``qat_keys``: the QAT checkpoints
    exported as Q/DQ graphs; ``fuse``: the LayerNorm/Attention plugin graph of the opt dynamic export;
    ``qat_ptq``: the original's recipe (QAT weights, Entropy-calibrated activations); ``calib_n``: calibration
    images a reduced-precision variant is checked on; ``targets``: the other fusion targets made from the opt
    dynamic export (with ``fuse``); ``candidates``: the selection's extra candidates (``pipeline.py --select``:
    mixed INT8 with budget ``mixed_max_drop``, ModelOpt PTQ, every PTQ engine, profile choices, a CPU series for
    every candidate); ``extra``: more :class:`Variant` entries, appended."""
    vs = [Variant("torch_fp32", Step("model"), accuracy=True, description="PyTorch FP32 (checkpoint)"),
          Variant("torch_opt", Step("model", opt=True), description="PyTorch FP32, --opt blocks")]
    # the QAT graphs are exported from the same blocks (base or --opt) as the graph they are compared with
    vs += [Variant("torch_" + k, Step("model", qat=k, opt=reduced_from.startswith("opt")),
                   description="PyTorch fake-quant model of the %s checkpoint" % k) for k in qat_keys]
    vs += _exports("base", False, opset, batches if static else (), candidates)
    vs += _exports("opt", True, opset, batches if static else (), candidates)
    if fuse:
        vs.append(Variant("opt_dynamic_plugin", Step("fuse", target="plugin"), source="opt_dynamic",
                          checks=[Check(inputs="random", tol=FUSE_TOL, batches=(1, 4))], engine=Engine(plugin=True),
                          accuracy=True, description="opt, dynamic, LayerNorm+Attention plugin nodes"))
        vs += _targets("opt_dynamic", targets, calib_n, candidates)
    vs += _reduced(reduced_from, calib_n, qat_keys, opset, timed=reduced_from == "opt_dynamic",
                   candidates=candidates, mixed_max_drop=mixed_max_drop)
    if candidates:
        vs += _profile_choices(reduced_from)
    if qat_ptq and "qat_w" in qat_keys:
        vs.append(Variant("torch_qat_w_float", Step("model", qat="qat_w", plain=True),
                          description="PyTorch, QAT weights-only checkpoint as float"))
        vs.append(Variant("qat_w_float_dynamic", Step("export", dynamic=True, opset=opset),
                          source="torch_qat_w_float", checks=[Check(inputs="random", tol=EXPORT_TOL,
                                                                    batches=DYNAMIC_CHECK_BATCHES)],
                          description="QAT weights-only checkpoint, dynamic, FP32"))
        vs.append(Variant("qat_w_ptq_entropy", Step("ptq", method="entropy"), source="qat_w_float_dynamic",
                          checks=[Check(inputs="calibration", tol=INT8_TOL, batches=(calib_n,))], accuracy=True,
                          description="QAT weights-only + Entropy PTQ activations (the original's recipe)"))
    return Plan(vs + list(extra))


#: the accuracy table (benchmark/accuracy_table.py): the FP32 dynamic export, its FP16 and PTQ graphs, the QAT
#: graphs and the original's QAT+PTQ recipe, measured through ONNX Runtime
ACCURACY_TABLE = ("torch_fp32", "base_dynamic", "base_dynamic_fp16", "base_dynamic_int8_entropy",
                  "base_dynamic_int8_minmax", "qat_w_dynamic", "qat_w_ptq_entropy", "qat_wa_dynamic")


def accuracy_table_plan(opset=13, qat_keys=("qat_w", "qat_wa"), calib_n=32, rows=None):
    plan = build_plan(opset=opset, reduced_from="base_dynamic", qat_keys=qat_keys, fuse=False, static=False,
                      qat_ptq=True, calib_n=calib_n)
    keep = [r for r in (rows or ACCURACY_TABLE) if r in plan]
    return plan.filtered(keep), keep
