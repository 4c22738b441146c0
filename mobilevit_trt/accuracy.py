"""The accuracy loop: one dataset, any backend (TensorRT engine, ONNX file, PyTorch checkpoint) -> top-1/top-5.

Images are read in dataset order (no shuffling: every run and every backend sees the same batches), batched,
run through ``verify.run_all`` and scored with exact counts.  A batch the backend does not accept (the last
partial batch of a static engine, or one below a dynamic engine's profile MIN) is padded with copies of its last
image up to an accepted size (the toolkit's one padding rule) and the padded rows dropped, so every image is
counted once.
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


def evaluate(backend, dataset, batch=None, limit=None, show_progress=True, workers=None, ks=TOPK,
             keep_logits=False):
    """Run ``backend`` over ``dataset`` (first ``limit`` images); returns the result dict (percent and counts)."""
    import numpy as np

    from .backends import fit_batch, max_batch
    from .data import iter_batches, limit_dataset
    from .verify import run_all

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
