"""Reference data for the precision checks (benchmark/gen_test_data.py): :func:`write_reference_data`.

Format: one ``batch<N>.npz`` per batch size N of :data:`REFERENCE_BATCHES` holding ``input`` (float32
``[N, 3, S, S]``, preprocessed), ``logits`` (float32, the reference backend's output for that batch run as one
batch of N), ``label`` (int64 ``[N]``) and ``index`` (int64 ``[N]``, the images' dataset indices); and
``calibration.npz`` holding ``input`` (a seeded pick disjoint from the reference images).  Every file also holds
``preprocess``: a 0-d string array, the JSON of the preprocessing the inputs were made with
(:meth:`mobilevit_trt.preprocess.Preprocess.to_dict`), which ``calib.load_calibration_data`` checks against the
model's.
"""
import os

from .datasets import Subset, iter_batches, sample_indices


# ---------------------------------------------------------------------------------------------- reference data
REFERENCE_BATCHES = (1, 2, 4, 8)


def write_reference_data(backend, dataset, save_path, batches=REFERENCE_BATCHES, calib_dataset=None,
                         calib_count=100, seed=0, log=print):
    """Write ``batch<N>.npz`` (``input``, ``logits`` from ``backend``, ``label``, ``index``) for each N in
    ``batches`` and ``calibration.npz`` (``input``) into ``save_path``; returns ``{file name: shapes}``.

    Reference images are the first ``sum(batches)`` of a seeded random order of ``dataset``; calibration images
    are a seeded pick of ``calib_dataset`` (default: ``dataset``, excluding the reference images).  Each batch is
    run through the backend as one batch of N, as the original generator did.  The inputs are preprocessed by
    the datasets' own ``preprocess`` (the model's: open them with ``preprocess=``), which is printed and recorded;
    ``calib_dataset`` must use the same.
    """
    import json

    import numpy as np

    from ..errors import UserError
    from ..fileio import atomic_path

    pp = dataset.preprocess
    if calib_dataset is not None and not calib_dataset.preprocess.same_transform(pp):
        raise UserError("the calibration images would be preprocessed as %s, the reference images as %s: open both "
                        "with the model's preprocessing" % (calib_dataset.preprocess.describe(), pp.describe()))
    log("preprocessing: %s" % pp.describe())
    record = np.array(json.dumps(pp.to_dict(), sort_keys=True))
    os.makedirs(save_path, exist_ok=True)
    ref_idx = sample_indices(len(dataset), sum(batches), seed)
    written = {}

    def save(name, **arrays):
        path = os.path.join(save_path, name)
        with atomic_path(path) as tmp:
            with open(tmp, "wb") as f:
                np.savez(f, **arrays)
        written[name] = {k: list(v.shape) for k, v in arrays.items()}
        log("wrote %s (%s)" % (path, ", ".join("%s %s" % (k, tuple(v.shape)) for k, v in arrays.items()
                                                if v.ndim)))

    start = 0
    for b in batches:
        idx = ref_idx[start:start + b]
        start += b
        items = [dataset[i] for i in idx]
        x = np.stack([it[0] for it in items]).astype(np.float32)
        y = np.asarray([it[1] for it in items], dtype=np.int64)
        logits = np.asarray(backend.infer(x), dtype=np.float32)
        save("batch%d.npz" % b, input=x, logits=logits, label=y, index=np.asarray(idx, dtype=np.int64),
             preprocess=record)
    if calib_count:
        same = calib_dataset is None
        cds = dataset if same else calib_dataset
        cidx = sample_indices(len(cds), calib_count, seed + 1, exclude=ref_idx if same else ())
        xs = [x for x, _, _ in iter_batches(Subset(cds, cidx), 32)]
        save("calibration.npz", input=np.concatenate(xs).astype(np.float32), preprocess=record)
    return written
