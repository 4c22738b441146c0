"""The accuracy loop: one dataset, any backend (TensorRT engine, ONNX file, PyTorch checkpoint) -> top-1/top-5.

Images are read in dataset order (no shuffling: every run and every backend sees the same batches), batched,
run through ``backend.infer`` and scored with exact counts.  A batch the backend does not accept (the last partial
batch of a static engine, or one below a dynamic engine's profile MIN) is padded with copies of its last image up
to an accepted size (``backends.fit_batch``) and the padded rows dropped, so every image is counted once.
"""
import time

from .errors import UserError

TOPK = (1, 5)


def topk_correct(logits, labels, ks=TOPK):
    """``{k: number of rows whose label is among the k highest logits}``; k is capped at the class count.
    Ties are broken by the lower class index (stable sort), as ``metrics.topk`` does."""
    import numpy as np

    from .metrics import topk

    logits = np.asarray(logits)
    labels = np.asarray(labels).reshape(-1)
    if logits.ndim != 2 or logits.shape[0] != labels.shape[0]:
        raise ValueError("logits %s do not match %d labels" % (logits.shape, labels.shape[0]))
    kmax = min(max(ks), logits.shape[1])
    pred = topk(logits, kmax).reshape(len(labels), kmax)
    return {k: int((pred[:, :min(k, kmax)] == labels[:, None]).any(axis=1).sum()) for k in ks}


def infer_padded(backend, x):
    """``backend.infer`` on any number of rows: split into chunks the backend accepts (at most its largest batch),
    pad a chunk below every accepted size with copies of its last row, drop the padded outputs."""
    import numpy as np

    from .backends import fit_batch, max_batch

    ranges = backend.batch_ranges()
    n = len(x)
    if n == 0:
        raise UserError("no images to run")
    step = min(n, max_batch(ranges) or n)
    outs = []
    for s in range(0, n, step):
        chunk = x[s:s + step]
        k = len(chunk)
        b = fit_batch(ranges, k)
        if b > k:
            chunk = np.concatenate([chunk, np.repeat(chunk[-1:], b - k, axis=0)])
        outs.append(np.asarray(backend.infer(chunk))[:k])
    out = outs[0] if len(outs) == 1 else np.concatenate(outs)
    out = np.asarray(out)
    if out.ndim != 2 or out.shape[0] != n:
        raise RuntimeError("backend returned logits of shape %s for a batch of %d" % (out.shape, n))
    return out


def evaluate(backend, dataset, batch=None, limit=None, show_progress=True, workers=None, ks=TOPK,
             keep_logits=False):
    """Run ``backend`` over ``dataset`` (first ``limit`` images); returns the result dict (percent and counts)."""
    import numpy as np

    from .backends import fit_batch, max_batch
    from .data import iter_batches, limit_dataset

    static = getattr(backend, "static_batch", None)
    if batch is None:
        ranges = backend.batch_ranges()
        batch = static or fit_batch(ranges, min(8, max_batch(ranges) or 8))  # at least a profile's MIN
    elif static and batch != static:
        raise UserError("%s was built for batch %d; pass --batch %d (or leave --batch out)"
                        % (backend.source, static, static))
    ds = limit_dataset(dataset, limit)
    if len(ds) == 0:
        raise UserError("no images to evaluate")
    correct = {k: 0 for k in ks}
    n = 0
    logits_all, labels_all = [], []
    num_classes = None
    t0 = time.time()
    infer_s = 0.0
    for x, y, _ in iter_batches(ds, batch, workers=workers, show_progress=show_progress, desc="evaluating"):
        t = time.time()
        out = infer_padded(backend, x)
        infer_s += time.time() - t
        num_classes = out.shape[1]
        if int(y.max()) >= num_classes or int(y.min()) < 0:
            raise UserError("dataset label %d is out of range for a model with %d classes (wrong dataset or "
                            "model?)" % (int(y.max()), num_classes))
        c = topk_correct(out, y, ks)
        for k in ks:
            correct[k] += c[k]
        n += len(y)
        if keep_logits:
            logits_all.append(out)
            labels_all.append(y)
    elapsed = time.time() - t0
    res = {"backend": backend.name, "source": backend.source, "static_batch": static, "data": ds.describe(),
           "images": n, "batch": batch, "num_classes": num_classes}
    for k in ks:
        res["top%d" % k] = 100.0 * correct[k] / n
        res["correct%d" % k] = correct[k]
    res.update(seconds=round(elapsed, 3), infer_seconds=round(infer_s, 3), img_per_s=round(n / elapsed, 2)
               if elapsed > 0 else None)
    if keep_logits:
        res["logits"] = np.concatenate(logits_all)
        res["labels"] = np.concatenate(labels_all)
    return res


def format_result(res, label=None):
    ks = [int(k[3:]) for k in res if k.startswith("top") and k[3:].isdigit()]
    parts = ["top%d: %.3f%% (%d/%d)" % (k, res["top%d" % k], res["correct%d" % k], res["images"]) for k in ks]
    return "%s%s  [%d images, batch %d, %.1f img/s]" % (
        (label + ": ") if label else "", "  ".join(parts), res["images"], res["batch"], res["img_per_s"] or 0)


def run_accuracy(args, log=print):
    """Shared body of ``test_trt_precision.py`` and ``benchmark/test_torch_precision.py`` (args from
    ``cli.add_accuracy_args``): build the backend, open the data, evaluate, print, write ``--results-file``."""
    from .backends import make_backend
    from .data import default_eval_data, open_dataset

    data_path = args.data_path or default_eval_data()
    ds = open_dataset(data_path, label_file=getattr(args, "labels", None), img_size=args.img_size)
    plugins = getattr(args, "plugins", None)
    backend = make_backend(getattr(args, "backend", None) or "torch", trt_path=getattr(args, "trt_path", None),
                           onnx_path=getattr(args, "onnx_path", None), model_path=getattr(args, "model_path", None),
                           plugins=plugins, arch=getattr(args, "arch", None),
                           num_classes=getattr(args, "num_classes", None), img_size=args.img_size,
                           opt=getattr(args, "opt", False), device=getattr(args, "device", "cpu") or "cpu",
                           fake_quant=getattr(args, "fake_quant", False))
    try:
        log("backend %s; data %s" % (backend.describe(), ds.describe()))
        res = evaluate(backend, ds, batch=args.batch, limit=args.limit, show_progress=not args.no_progress,
                       workers=args.workers)
    finally:
        backend.close()
    log(format_result(res))
    if args.results_file:
        from .report import write_results
        write_results(args.results_file, [res], meta={"data_path": data_path})
        log("results: %s" % args.results_file)
    return res


# ------------------------------------------------------------------------------------------ precision table
TABLE_ROWS = (
    ("torch_fp32", "PyTorch FP32 (checkpoint)"),
    ("onnx_fp32", "ONNX FP32"),
    ("onnx_fp16", "ONNX FP16 (converted)"),
    ("ptq_entropy", "PTQ INT8 Q/DQ, Entropy calibration"),
    ("ptq_minmax", "PTQ INT8 Q/DQ, MinMax calibration"),
    ("qat_w", "QAT INT8, weights only (W8, float activations)"),
    ("qat_w_ptq_entropy", "QAT weights-only + Entropy PTQ activations (the original's recipe)"),
    ("qat_wa", "QAT INT8, weights + activations (W8A8)"),
)


def calibration_inputs(dataset, count=100, seed=0, exclude=(), workers=None):
    """``[count, 3, S, S]`` float32 from a seeded random pick of ``dataset`` (see ``data.sample_indices``)."""
    import numpy as np

    from .data import Subset, iter_batches, sample_indices

    idx = sample_indices(len(dataset), count, seed, exclude)
    xs = [x for x, _, _ in iter_batches(Subset(dataset, idx), 32, workers=workers)]
    return np.concatenate(xs), idx


def precision_table(out_dir, model_path, qat_w_path=None, qat_wa_path=None, val_path=None, train_path=None,
                    calib_count=100, batch=16, limit=None, opset=13, rows=None, show_progress=True, log=print):
    """Build every ONNX variant of ``model_path`` in ``out_dir`` and measure each on the held-out split through
    ONNX Runtime (CPU), plus the checkpoint itself in PyTorch.  Returns ``{"rows": [...], "meta": {...}}``."""
    import os

    from MobileViT_Pytorch.checkpoint import load_model
    from MobileViT_Pytorch.qat import export_qdq_onnx, load_qat_model

    from .backends import OnnxRuntimeBackend, TorchBackend
    from .data import default_split, iter_batches, limit_dataset, open_dataset
    from .export import export_onnx
    from .precision import convert_fp16, quantize_qdq

    want = set(rows or [r for r, _ in TABLE_ROWS])
    if not qat_w_path:
        want -= {"qat_w", "qat_w_ptq_entropy"}
    if not qat_wa_path:
        want -= {"qat_wa"}
    os.makedirs(out_dir, exist_ok=True)
    val = open_dataset(val_path or default_split("val"))
    train = open_dataset(train_path or default_split("train"))
    quiet = lambda s: None  # noqa: E731
    meta = {"model": os.path.abspath(model_path), "val": val.describe(), "images": len(limit_dataset(val, limit)),
            "calibration": "%d images of %s (seeded random pick, seed 0)" % (calib_count, train.describe()),
            "runtime": "ONNX Runtime CPUExecutionProvider (default graph optimizations)", "opset": opset}
    try:
        import onnxruntime
        meta["onnxruntime"] = onnxruntime.__version__
    except ImportError:
        pass
    calib = None
    artifacts = {}

    def need_calib():
        if calib is None:
            log("calibration inputs: %s" % meta["calibration"])
            return calibration_inputs(train, calib_count)[0]
        return calib

    fp32 = os.path.join(out_dir, "mobilevit_fp32.onnx")
    if want - {"torch_fp32", "qat_w", "qat_wa"}:
        model, _ = load_model(model_path, quiet=True)
        log("export FP32 ONNX -> %s" % fp32)
        export_onnx(model, fp32, dynamic=True, opset=opset, log=quiet)
        artifacts["onnx_fp32"] = fp32
    if "onnx_fp16" in want:
        path = os.path.join(out_dir, "mobilevit_fp16.onnx")
        log("convert FP16 -> %s" % path)
        convert_fp16(fp32, path)
        artifacts["onnx_fp16"] = path
    for method in ("entropy", "minmax"):
        if "ptq_" + method in want:
            calib = need_calib()
            path = os.path.join(out_dir, "mobilevit_int8_ptq_%s.onnx" % method)
            log("PTQ (%s) -> %s" % (method, path))
            quantize_qdq(fp32, path, calib, method)
            artifacts["ptq_" + method] = path
    # a few held-out images to check each QAT export against its fake-quant model
    check_x = next(iter_batches(val, 16, workers=1))[0]
    for key, ckpt in (("qat_w", qat_w_path), ("qat_wa", qat_wa_path)):
        if key in want:
            path = os.path.join(out_dir, "mobilevit_int8_%s.onnx" % key)
            qmodel, _ = load_qat_model(ckpt)
            log("QAT export (%s) -> %s" % (os.path.basename(ckpt), path))
            artifacts[key + "_verify"] = export_qdq_onnx(qmodel, path, dynamic=True, opset=opset, log=log,
                                                         verify_inputs=check_x)["verify"]
            artifacts[key] = path
    if "qat_w_ptq_entropy" in want:
        calib = need_calib()
        base = os.path.join(out_dir, "mobilevit_qat_w_fp32.onnx")
        export_onnx(load_model(qat_w_path, quiet=True)[0], base, dynamic=True, opset=opset, log=quiet)
        path = os.path.join(out_dir, "mobilevit_int8_qat_w_ptq_entropy.onnx")
        log("QAT weights + Entropy PTQ -> %s" % path)
        quantize_qdq(base, path, calib, "entropy")
        artifacts["qat_w_ptq_entropy"] = path

    results = []
    for key, label in TABLE_ROWS:
        if key not in want:
            continue
        if key == "torch_fp32":
            backend = TorchBackend(model_path, quiet=True)
        else:
            backend = OnnxRuntimeBackend(artifacts[key])
        try:
            res = evaluate(backend, val, batch=batch, limit=limit, show_progress=show_progress)
        finally:
            backend.close()
        row = {"variant": key, "description": label, "top1": res["top1"], "top5": res["top5"],
               "correct1": res["correct1"], "correct5": res["correct5"], "images": res["images"],
               "artifact": os.path.basename(res["source"]),
               "size_mb": round(os.path.getsize(res["source"]) / 1e6, 2), "img_per_s": res["img_per_s"]}
        if key + "_verify" in artifacts:
            row["qdq_vs_fake_quant_max_abs"] = artifacts[key + "_verify"]["max_abs"]
        results.append(row)
        log(format_result(res, label))
    ref = next((r for r in results if r["variant"] == "torch_fp32"), None)
    for r in results:
        r["delta_top1"] = None if ref is None else round(r["top1"] - ref["top1"], 3)
    return {"meta": meta, "rows": results}


def markdown_table(rows):
    lines = ["| variant | top-1 (%) | top-5 (%) | correct top-1 / top-5 | Δ top-1 vs PyTorch | file (MB) |",
             "|---|---:|---:|---:|---:|---:|"]
    for r in rows:
        d = r.get("delta_top1")
        lines.append("| %s | %.2f | %.2f | %d / %d of %d | %s | %s (%.1f) |" % (
            r["description"], r["top1"], r["top5"], r["correct1"], r["correct5"], r["images"],
            "-" if d is None else "%+.2f" % d, r["artifact"], r["size_mb"]))
    return "\n".join(lines)
