"""How each kind of plan step is made and checked (``plan.Step.kind`` -> a recipe), for the pipeline.

A recipe ``make(ctx, variant, path)`` writes the variant's ONNX to ``path`` (a temporary name: the file lands
only when every check passed) and returns what it wants recorded.  :func:`make_checked` runs the recipe, then
every ``plan.Check`` of the variant through ``verify.compare``; a failed check raises and nothing is written.
``ctx`` is the pipeline's :class:`Context`.
"""
import os

from .errors import UserError
from .fileio import atomic_path


def _quiet(*a, **k):
    pass


class Context(object):
    """What the recipes share in one pipeline run: the model source, the plan, file locations, the loaded
    PyTorch models (one load per root), the calibration images, the log."""

    def __init__(self, source, plan, run, calib_path=None, calib_count=100, train_path=None, log=print):
        self.source, self.plan, self.run, self.log = source, plan, run, log
        self.calib_path, self.calib_count = calib_path, calib_count
        self.train_path = train_path
        self.img_size = getattr(source, "img_size", 256)
        self._modules = {}

    def path(self, variant):
        name = variant if isinstance(variant, str) else variant.name
        return self.run.path("onnx", name + ".onnx")

    def engine_path(self, variant):
        return self.run.path("engines", variant.name + ".engine")

    def module(self, root_name):
        """``(module, info)`` of a root variant, loaded once."""
        if root_name not in self._modules:
            self._modules[root_name] = self.source.load(**self.plan[root_name].make.params)
        return self._modules[root_name]

    def backend(self, name, path=None):
        """A backend for the variant ``name``: its PyTorch model for a root, else its ONNX (``path``: another
        location of it, e.g. the not-yet-landed file) through ONNX Runtime."""
        from .backends import OnnxRuntimeBackend, TorchBackend
        v = self.plan[name]
        if v.is_root:
            module, info = self.module(name)
            info = dict(info, preprocess=self.source.preprocess.to_dict(),
                        preprocess_origin=self.source.preprocess_origin)
            return TorchBackend(module, source=info.get("weights", name), info=info)
        return OnnxRuntimeBackend(path or self.path(v))

    def calibration(self):
        """``[N, 3, S, S]`` calibration images (the pipeline's calibration data stage), or structured noise when
        there is no training split."""
        import numpy as np
        if self.calib_path and os.path.isfile(self.calib_path):
            with np.load(self.calib_path, allow_pickle=False) as z:
                return z["input"]
        from .precision import structured_inputs
        return structured_inputs(self.calib_count, self.img_size)

    def check_inputs(self, check, seed=0):
        from .verify import random_batches
        if check.inputs == "calibration":
            return self.calibration()[:check.batches[0]]
        return random_batches(check.batches, self.img_size, seed)

    # -- what a stage of variants depends on (hashed by the stage runner) and whether it can be made here
    def inputs_of(self, variants):
        files = []
        for v in variants:
            refs = [v.source] + [self.plan.against(v, c).name for c in v.checks]
            for ref in refs:
                r = self.plan[ref]
                files += self.source.files(**r.make.params) if r.is_root else [self.path(r)]
            uses_calib = v.make.kind in CALIBRATED or any(c.inputs == "calibration" for c in v.checks)
            if uses_calib and self.calib_path and os.path.isfile(self.calib_path):
                files.append(self.calib_path)
            if v.make.kind == "mixed" and self.train_path and os.path.isfile(str(self.train_path)):
                files.append(str(self.train_path))
        return sorted(set(files), key=files.index)

    def unavailable(self, v):
        """Why ``v`` cannot be made here (a root model the source does not have, e.g. no QAT checkpoint), or
        None."""
        for r in [self.plan[v.source]] + [self.plan.against(v, c) for c in v.checks]:
            why = self.source.unavailable(**r.make.params) if r.is_root else None
            if why:
                return why
        if v.make.kind == "mixed" and not self.train_path:
            return "mixed INT8 chooses its float layers on the training split: there is none (pass --train_path)"
        if v.make.kind == "modelopt":
            from .modelopt_ptq import unavailable
            return unavailable()
        return None


# ------------------------------------------------------------------------------------------------ recipes

def make_export(ctx, v, path):
    from .export import export_onnx
    model, info = ctx.module(v.source)
    r = export_onnx(model, path, batch=v.make.get("batch", 1), dynamic=v.make.get("dynamic", False),
                    opset=v.make.get("opset", 13), img_size=ctx.img_size, verify=False, log=_quiet,
                    preprocess=ctx.source.preprocess)
    return {"nodes": r["nodes"], "nodes_exported": r["nodes_exported"], "op_counts": r["op_counts"], "model": info}


def make_fuse(ctx, v, path):
    import onnx

    from . import surgery
    target = v.make.get("target", "plugin")
    if target not in surgery.TARGETS:
        raise UserError("variant %s: fusion target %r is not one of %s" % (v.name, target, ", ".join(surgery.TARGETS)))
    fused, rep = surgery.fuse(surgery.load_onnx(ctx.path(v.source)), target)
    surgery.check_fused(fused)
    onnx.save(fused, path)
    return {"counts": rep.get("counts"), "target": target, "opset": rep.get("opset"),
            "head_padding": rep.get("head_padding")}


def make_fp16(ctx, v, path):
    from .precision import convert_fp16
    convert_fp16(ctx.path(v.source), path)
    return {}


def make_ptq(ctx, v, path):
    from .precision import quantize_qdq
    quantize_qdq(ctx.path(v.source), path, ctx.calibration(), v.make.get("method"))
    return {}


def make_qat(ctx, v, path):
    model, _ = ctx.module(v.source)
    r = ctx.source.export_qdq(model, path, dynamic=v.make.get("dynamic", True), batch=v.make.get("batch", 1),
                              opset=v.make.get("opset", 13), verify=False)
    return {"qdq": r.get("qdq"), "nodes": sum(r["op_counts"].values())}


def make_mixed(ctx, v, path):
    """Mixed INT8 (mixed_int8.search): sensitivities on the first calibration images, the float layers chosen
    greedily under the budget on labelled images of the *training* split (so the held-out accuracy the pipeline
    reports afterwards is not the split they were chosen on)."""
    from .backends import OnnxRuntimeBackend
    from .data import open_dataset
    from .mixed_int8 import MixedQuantizer, check_accuracy, search
    from .plan import MIXED_CHECK_IMAGES, MIXED_SENSITIVITY_IMAGES
    src = ctx.path(v.source)
    check_ds = open_dataset(ctx.train_path, preprocess=ctx.source.preprocess)
    n = v.make.get("check_images", MIXED_CHECK_IMAGES)
    with OnnxRuntimeBackend(src) as fp32:
        fp32_check = check_accuracy(fp32, check_ds, limit=n, batch=8)
    x = ctx.calibration()
    with MixedQuantizer(src, x, v.make.get("method", "entropy")) as mq:
        found = search(mq, check_ds, fp32_check, max_drop=v.make.get("max_drop"),
                       granularity=v.make.get("granularity", "node"), check_limit=n, batch=8,
                       sensitivity_inputs=x[:v.make.get("sensitivity_images", MIXED_SENSITIVITY_IMAGES)],
                       lazy=True, log=lambda m: ctx.log("    " + m))
        rep = mq.build(found["float_nodes"], path)
    choice = found["choice"]
    ctx.log("    mixed INT8: %s; %d groups float (%s), %.1f %% of Conv/MatMul/Gemm MACs INT8; check top-1 %.2f %% vs "
            "FP32 %.2f %% on %d training images" % (
                "budget met" if choice["met"] else "budget NOT met", len(choice["excluded"]),
                ", ".join(choice["excluded"]) or "none", 100 * rep["int8_mac_fraction"], choice["result"]["top1"],
                fp32_check["top1"], fp32_check["images"]))
    return {"float_groups": choice["excluded"], "float_nodes": found["float_nodes"], "met": choice["met"],
            "int8_mac_fraction": rep["int8_mac_fraction"], "check_top1": choice["result"]["top1"],
            "check_fp32_top1": fp32_check["top1"], "check_images": fp32_check["images"],
            "check_split": str(ctx.train_path), "seconds": found["seconds"], "qdq": rep["qdq"],
            "sensitivity_run": found["ranking"] is not None}


def make_modelopt(ctx, v, path):
    from .modelopt_ptq import quantize
    return quantize(ctx.path(v.source), path, ctx.calibration(), method=v.make.get("method", "entropy"),
                    log=lambda m: ctx.log("    " + m))


#: step kinds that calibrate on the calibration images
CALIBRATED = ("ptq", "mixed", "modelopt")

MAKERS = {"export": make_export, "fuse": make_fuse, "fp16": make_fp16, "ptq": make_ptq, "qat": make_qat,
          "mixed": make_mixed, "modelopt": make_modelopt}


def check(ctx, v, path, c, seed=0):
    """One ``plan.Check`` of variant ``v`` (its ONNX at ``path``): ``verify.compare`` and the verdict line."""
    from . import verify
    from .backends import OnnxRuntimeBackend

    ref = ctx.plan.against(v, c)
    with OnnxRuntimeBackend(path, optimize=c.optimize) as test, ctx.backend(ref.name) as reference:
        res = verify.compare(test, reference, ctx.check_inputs(c, seed), c.tol)
    res.update(against=ref.name, inputs=c.inputs)
    ctx.log("    " + verify.verdict_line(v.name, res, ref.name))
    return verify.require(v.name, res, ref.name, what=os.path.basename(ctx.path(v)))


def make_checked(ctx, v):
    """Make ``v`` and check it; the file lands at ``ctx.path(v)`` only when every check passed."""
    if os.path.isfile(ctx.path(v)):  # a file of an earlier run must not outlive a check that fails now
        os.remove(ctx.path(v))
    with atomic_path(ctx.path(v)) as tmp:
        info = MAKERS[v.make.kind](ctx, v, tmp)
        info["checks"] = [check(ctx, v, tmp, c) for c in v.checks]
    return dict(info, variant=v.name)
