"""The accuracy loop: one dataset, any backend (TensorRT engine, ONNX file, PyTorch checkpoint) -> top-1/top-5.

Images are read in dataset order (no shuffling: every run and every backend sees the same batches), batched,
run through ``verify.run_all`` and scored with exact counts.  A batch the backend does not accept (the last
partial batch of a static engine, or one below a dynamic engine's profile MIN) is padded with copies of its last
image up to an accepted size (the toolkit's one padding rule) and the padded rows dropped, so every image is
counted once.

``limit`` evaluates a class-stratified seeded subset (``data.stratified_subset``), never the first N images (a
dataset stored class by class would give a few classes only); the result says which classes it covers.  The
result also records the preprocessing the dataset applied (``preprocess``, ``preprocess_config``): pick it with
:func:`model_preprocess` (the model's own, from the ONNX metadata, the engine sidecar or the checkpoint) and
``preprocess.resolve``.
"""
import os
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


def static_input_size(backend):
    """The ``(H, W)`` a backend's artifact fixes (its input shape), or None where it does not (dynamic sizes, a
    PyTorch module)."""
    shape = getattr(backend, "input_shape", None)
    if not shape or len(shape) != 4:
        return None
    h, w = int(shape[2]), int(shape[3])
    return (h, w) if h > 0 and w > 0 else None


def model_preprocess(backend):
    """``(Preprocess or None, where it came from)``: the preprocessing the backend's model records -- an
    engine's sidecar (``sidecar.engine_preprocess``), an ONNX file's metadata, a PyTorch model's ``info``
    (``preprocess``; this project's own checkpoints: the original project's transform at their size).  None:
    unknown (``preprocess.resolve`` then warns and uses the original's default)."""
    from . import sidecar
    from .preprocess import Preprocess

    name = getattr(backend, "name", "")
    source = getattr(backend, "source", None)
    if name == "trt":
        runner = getattr(backend, "runner", None)
        return sidecar.engine_preprocess(source, getattr(runner, "meta", None))
    if name.startswith("onnxruntime"):
        proto = getattr(backend, "proto", None)
        if proto is not None:
            return Preprocess.from_onnx(proto), "ONNX metadata of %s" % source
        if source and os.path.isfile(source):
            return Preprocess.from_onnx(source), "ONNX metadata of %s" % source
        return None, "%s (no ONNX file to read metadata from)" % source
    info = getattr(backend, "info", None) or {}
    if info.get("preprocess") is not None:
        pp = Preprocess.coerce(info["preprocess"])
        if info.get("img_size") and int(info["img_size"]) != pp.img_size:
            pp = pp.with_overrides(img_size=int(info["img_size"]))
        return pp, info.get("preprocess_origin") or "checkpoint %s" % source
    if info.get("family", "mobilevit-original") == "mobilevit-original" and "img_size" in info:
        return (Preprocess.original(int(info["img_size"])),
                "the original project's model %s (trained with the original's transform)" % source)
    return None, "the PyTorch model %s" % source


def evaluate(backend, dataset, batch=None, limit=None, show_progress=True, workers=None, ks=TOPK,
             keep_logits=False, seed=0):
    """Run ``backend`` over ``dataset`` (``limit``: a class-stratified subset of that many images, seeded by
    ``seed``); returns the result dict (percent and counts, the preprocessing, the subset)."""
    import numpy as np

    from .backends import fit_batch, max_batch
    from .data import iter_batches, stratified_subset
    from .verify import run_all

    static = getattr(backend, "static_batch", None)
    if batch is None:
        ranges = backend.batch_ranges()
        batch = static or fit_batch(ranges, min(8, max_batch(ranges) or 8))  # at least a profile's MIN
    elif static and batch != static:
        raise UserError("%s was built for batch %d; pass --batch %d (or leave --batch out)"
                        % (backend.source, static, static))
    fixed = static_input_size(backend)
    from .preprocess import Preprocess
    pp = getattr(dataset, "preprocess", None) or Preprocess.original(getattr(dataset, "img_size", 256))
    if fixed and fixed != (pp.img_size, pp.img_size):
        raise UserError("%s takes %dx%d inputs; the data is preprocessed to %dx%d (%s)"
                        % (backend.source, fixed[0], fixed[1], pp.img_size, pp.img_size, pp.describe()))
    if len(dataset) == 0:
        raise UserError("no images to evaluate")
    ds, subset = stratified_subset(dataset, limit, seed) if limit else (dataset, None)
    correct = {k: 0 for k in ks}
    n = 0
    logits_all, labels_all = [], []
    num_classes = None
    t0 = time.time()
    infer_s = 0.0
    for x, y, _ in iter_batches(ds, batch, workers=workers, show_progress=show_progress, desc="evaluating"):
        t = time.time()
        out = run_all(backend, x)
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
           "images": n, "batch": batch, "num_classes": num_classes, "preprocess": pp.describe(),
           "preprocess_origin": getattr(pp, "origin", None), "preprocess_config": pp.to_dict(),
           "subset": subset["description"] if subset else None,
           "subset_per_class": subset["per_class"] if subset else None}
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


def calibration_inputs(dataset, count=100, seed=0, exclude=(), workers=None):
    """``[count, 3, S, S]`` float32 from a seeded random pick of ``dataset`` (see ``data.sample_indices``)."""
    import numpy as np

    from .data import Subset, iter_batches, sample_indices

    idx = sample_indices(len(dataset), count, seed, exclude)
    xs = [x for x, _, _ in iter_batches(Subset(dataset, idx), 32, workers=workers)]
    return np.concatenate(xs), idx


def table_rows(rows, path_of, reference="torch_fp32"):
    """The accuracy table's rows: each accuracy row plus its artifact (``path_of(variant)``: the file, or None for
    a PyTorch model) with its size, and the top-1 difference from ``reference``'s row."""
    import os

    ref = next((r for r in rows if r["variant"] == reference), None)
    out = []
    for r in rows:
        path = path_of(r["variant"])
        out.append(dict(r, artifact=os.path.basename(path) if path else "(checkpoint)",
                        size_mb=round(os.path.getsize(path) / 1e6, 2) if path and os.path.isfile(path) else 0.0,
                        delta_top1=None if ref is None else round(r["top1"] - ref["top1"], 3)))
    return out


def markdown_table(rows):
    lines = ["| variant | top-1 (%) | top-5 (%) | correct top-1 / top-5 | Δ top-1 vs PyTorch | file (MB) |",
             "|---|---:|---:|---:|---:|---:|"]
    for r in rows:
        d = r.get("delta_top1")
        lines.append("| %s | %.2f | %.2f | %d / %d of %d | %s | %s (%.1f) |" % (
            r["description"], r["top1"], r["top5"], r["correct1"], r["correct5"], r["images"],
            "-" if d is None else "%+.2f" % d, r["artifact"], r["size_mb"]))
    return "\n".join(lines)
