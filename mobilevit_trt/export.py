"""PyTorch -> ONNX export for MobileViT: static or dynamic batch, opset choice, cleanup, verification.

Cleanup uses onnxslim (pure Python, maintained, keeps symbolic batch dims, no compiled extension to build on
the reference container's Python 3.8) after PyTorch's own constant folding.  onnxsim would also do the job but
ships a native extension whose wheels lag new Python/onnx releases.
"""
import collections
import os

from .errors import UserError
from .fileio import atomic_path

INPUT_NAME = "input"
OUTPUT_NAME = "class"
DEFAULT_OPSET = 13          # parses in TensorRT 8.2 (LayerNorm decomposed)
NATIVE_LAYERNORM_OPSET = 17  # LayerNormalization node: TensorRT >= 8.6
VERIFY_ATOL = 1e-4
DYNAMIC_VERIFY_BATCHES = (1, 4, 8)


def op_counts(model_proto):
    """Node count per op type (top-level graph), sorted by count then name."""
    c = collections.Counter(n.op_type for n in model_proto.graph.node)
    return collections.OrderedDict(sorted(c.items(), key=lambda kv: (-kv[1], kv[0])))


def format_op_counts(before, after=None):
    names = list(before) if after is None else sorted(set(before) | set(after),
                                                     key=lambda k: (-max(before.get(k, 0), after.get(k, 0)), k))
    lines = []
    if after is None:
        lines.append("  %-22s %6s" % ("op", "count"))
        for k in names:
            lines.append("  %-22s %6d" % (k, before[k]))
        lines.append("  %-22s %6d" % ("total", sum(before.values())))
    else:
        lines.append("  %-22s %7s %7s" % ("op", "before", "after"))
        for k in names:
            lines.append("  %-22s %7d %7d" % (k, before.get(k, 0), after.get(k, 0)))
        lines.append("  %-22s %7d %7d" % ("total", sum(before.values()), sum(after.values())))
    return "\n".join(lines)


def torch_to_onnx(model, path, batch=1, dynamic=False, opset=DEFAULT_OPSET, img_size=256):
    """Trace ``model`` to ``path`` with PyTorch's TorchScript exporter (input "input", output "class"; a dynamic
    export names its batch dimension "batch"); returns the loaded ModelProto with explicit I/O batch dims."""
    import inspect
    import warnings

    import onnx
    import torch

    dummy = torch.randn(4 if dynamic else batch, 3, img_size, img_size, generator=torch.Generator().manual_seed(0))
    kwargs = dict(input_names=[INPUT_NAME], output_names=[OUTPUT_NAME], opset_version=opset,
                  do_constant_folding=True)
    if dynamic:
        kwargs["dynamic_axes"] = {INPUT_NAME: {0: "batch"}, OUTPUT_NAME: {0: "batch"}}
    if "dynamo" in inspect.signature(torch.onnx.export).parameters:
        kwargs["dynamo"] = False  # TorchScript exporter on every torch from 1.11 to 2.x
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        with torch.no_grad():
            torch.onnx.export(model, (dummy,), path, **kwargs)
    proto = onnx.load(path)
    fix_io(proto, dynamic, batch)
    return proto


def simplify(model_proto):
    """Constant-fold and remove shape-computation clutter with onnxslim; symbolic batch stays symbolic."""
    try:
        import onnxslim
    except ImportError:
        raise UserError("onnxslim is not installed (pip install onnxslim), or pass --no-simplify")
    import io
    import contextlib
    buf = io.StringIO()
    with contextlib.redirect_stdout(buf):
        return onnxslim.slim(model_proto)


def check_model(model_proto):
    """onnx.checker full check (with shape inference); raises UserError with the checker's message."""
    import onnx
    try:
        onnx.checker.check_model(model_proto, full_check=True)
    except Exception as e:
        raise UserError("onnx.checker rejected the model: %s" % str(e).splitlines()[0])


def verify_inputs(dynamic, batch, img_size=256, seed=0):
    """The seeded random batches an export is checked on: each of DYNAMIC_VERIFY_BATCHES, or the static batch."""
    from .verify import random_batches
    return random_batches(DYNAMIC_VERIFY_BATCHES if dynamic else (batch,), img_size, seed)


def check_against_torch(model, onnx_path, dynamic, batch, img_size=256, atol=VERIFY_ATOL):
    """``verify.compare`` of the ONNX file (ONNX Runtime, CPU) with the PyTorch ``model``."""
    from .backends import OnnxRuntimeBackend, TorchBackend
    from .verify import Tolerance, compare

    with OnnxRuntimeBackend(onnx_path) as test:
        return compare(test, TorchBackend(model), verify_inputs(dynamic, batch, img_size), Tolerance(atol=atol))


def export_onnx(model, save_path, batch=1, dynamic=False, opset=DEFAULT_OPSET, img_size=256,
                do_simplify=True, verify=True, atol=VERIFY_ATOL, log=print, preprocess=None):
    """Export ``model`` to ``save_path`` atomically; returns a report dict.

    The file only appears at ``save_path`` when the checker and the ONNX Runtime comparison pass.  ``preprocess``
    (the model's :class:`~mobilevit_trt.preprocess.Preprocess`) is recorded in the file's metadata, where every
    later stage (surgery, precision, engine sidecar, accuracy, calibration) reads it.
    """
    import onnx

    if opset < 11:
        raise UserError("--opset must be at least 11, got %d" % opset)
    if batch < 1:
        raise UserError("--batch must be >= 1, got %d" % batch)
    model = model.eval()
    report = {"path": os.path.abspath(save_path), "dynamic": bool(dynamic), "batch": None if dynamic else batch,
              "opset": opset, "img_size": img_size, "simplified": bool(do_simplify)}
    with atomic_path(save_path) as tmp:
        proto = torch_to_onnx(model, tmp, batch, dynamic, opset, img_size)
        before = op_counts(proto)
        report["nodes_exported"] = sum(before.values())
        if do_simplify:
            proto = simplify(proto)
            after = op_counts(proto)
            log("node counts by op type (exported -> cleaned up):\n" + format_op_counts(before, after))
        else:
            after = before
            log("node counts by op type:\n" + format_op_counts(before))
        report["nodes"] = sum(after.values())
        report["op_counts"] = dict(after)
        fix_io(proto, dynamic, batch)
        check_model(proto)
        if preprocess is not None:
            from .preprocess import write_onnx_metadata
            write_onnx_metadata(proto, preprocess)
            report["preprocess"] = preprocess.to_dict()
        onnx.save(proto, tmp)
        if verify:
            from .verify import require, verdict_line
            res = check_against_torch(model, tmp, dynamic, batch, img_size, atol)
            report["verify"] = res
            log(verdict_line("ONNX Runtime", res, "PyTorch"))
            require("exported ONNX (ONNX Runtime)", res, "PyTorch", what=save_path)
    return report


def fix_io(proto, dynamic, batch):
    """Make I/O dims explicit: symbolic 'batch' (dynamic) or the static batch on input and output."""
    for vi in list(proto.graph.input) + list(proto.graph.output):
        if vi.name not in (INPUT_NAME, OUTPUT_NAME):
            continue
        d0 = vi.type.tensor_type.shape.dim[0]
        if dynamic:
            d0.ClearField("dim_value")
            d0.dim_param = "batch"
        else:
            d0.ClearField("dim_param")
            d0.dim_value = batch
