"""Writing the toolkit's LMDB format (described in :mod:`.datasets`): :func:`encode_record`, :func:`write_lmdb`
(atomic: built beside the target and renamed into place), :func:`verify_lmdb` and :func:`folder_to_lmdb`
(image folder, or flat folder + label file -> LMDB)."""
import io
import json
import os
import shutil
import tempfile

from ..errors import UserError
from .datasets import (KEY_FORMAT, LABEL_HEADER, LMDB_FORMAT, LMDB_VERSION, BadImageError, ImageFolderDataset,
                       LabelFileDataset, _import_lmdb, _read_bytes, progress, release_env, shared_env)


# --------------------------------------------------------------------------------------------------- LMDB write
def encode_record(image_bytes, label):
    return LABEL_HEADER.pack(int(label)) + bytes(image_bytes)


def write_lmdb(save_path, records, total=None, classes=None, extra_meta=None, show_progress=True,
               overwrite=False):
    """Write ``records`` (iterable of ``(encoded image bytes, int label)``) as a toolkit LMDB folder.

    The database is built in a temporary folder beside ``save_path`` and renamed into place only when every
    record was written and the count read back matches; on any error nothing is left at ``save_path``.
    Returns the number of records.
    """
    lmdb = _import_lmdb()
    save_path = os.path.abspath(save_path.rstrip("/\\"))
    if os.path.exists(save_path) and not overwrite:
        raise UserError("%s already exists (pass --overwrite to replace it)" % save_path)
    parent = os.path.dirname(save_path)
    os.makedirs(parent, exist_ok=True)
    tmp = tempfile.mkdtemp(prefix="." + os.path.basename(save_path) + ".", suffix=".tmp", dir=parent)
    try:
        map_size = 64 << 20
        env = lmdb.open(tmp, subdir=True, map_size=map_size, readonly=False, meminit=False, map_async=True)
        count = 0
        try:
            pending = []

            def flush(items):
                for attempt in range(40):
                    try:
                        with env.begin(write=True) as txn:
                            for k, v in items:
                                txn.put(k, v)
                        return
                    except lmdb.MapFullError:
                        env.set_mapsize(env.info()["map_size"] * 2)
                raise RuntimeError("LMDB map could not grow")

            for image_bytes, label in progress(records, total=total, desc="writing LMDB", enabled=show_progress,
                                               unit="img"):
                pending.append(((KEY_FORMAT % count).encode("ascii"), encode_record(image_bytes, label)))
                count += 1
                if len(pending) >= 1000:
                    flush(pending)
                    pending = []
            meta = {"format": LMDB_FORMAT, "version": LMDB_VERSION, "count": count,
                    "key_format": KEY_FORMAT, "label_header": "int64 little-endian",
                    "classes": list(classes) if classes else None,
                    "num_classes": len(classes) if classes else None}
            meta.update(extra_meta or {})
            pending.append((b"__len__", json.dumps(count).encode("ascii")))
            pending.append((b"__meta__", json.dumps(meta, sort_keys=True).encode("utf-8")))
            flush(pending)
            env.sync(True)
        finally:
            env.close()
        written = verify_lmdb(tmp, count)
        release_env(tmp)
        release_env(save_path)
        if os.path.exists(save_path):
            shutil.rmtree(save_path) if os.path.isdir(save_path) else os.unlink(save_path)
        os.replace(tmp, save_path)
        return written
    finally:
        if os.path.exists(tmp):
            shutil.rmtree(tmp, ignore_errors=True)


def verify_lmdb(path, expected):
    """Re-open ``path`` and check that ``__len__`` and the number of records both equal ``expected``."""
    with shared_env(path).begin() as txn:
        stored = json.loads(bytes(txn.get(b"__len__") or b"null").decode("ascii"))
        records = sum(1 for k, _ in txn.cursor() if not k.startswith(b"__"))
    if stored != expected or records != expected:
        raise UserError("LMDB count check failed for %s: expected %d records, __len__ says %s, found %d"
                        % (path, expected, stored, records))
    return records


def folder_to_lmdb(input_path, save_path, label_file=None, skip_bad=False, show_progress=True, overwrite=False,
                   log=print):
    """Image folder (class sub-folders, or flat + ``label_file``) -> toolkit LMDB.  Returns a report dict.

    Every image is decoded before it is stored; an undecodable one raises :class:`BadImageError` (nothing is
    written) unless ``skip_bad``, in which case it is left out and listed in the report.
    """
    ds = LabelFileDataset(input_path, label_file) if label_file else ImageFolderDataset(input_path)
    bad = []

    def records():
        from PIL import Image
        for i in range(len(ds)):
            path, label = ds.samples[i]
            data = _read_bytes(path)
            try:
                with Image.open(io.BytesIO(data)) as im:
                    im.load()
            except Exception as e:
                msg = "%s: %s" % (path, (str(e).splitlines() or [type(e).__name__])[0])
                if not skip_bad:
                    raise BadImageError("corrupt image %s (pass --skip-bad to leave such images out)" % msg)
                log("skipping corrupt image %s" % msg)
                bad.append(path)
                continue
            yield data, label

    count = write_lmdb(save_path, records(), total=len(ds), classes=ds.classes,
                       extra_meta={"source": os.path.basename(os.path.abspath(input_path))},
                       show_progress=show_progress, overwrite=overwrite)
    if count != len(ds) - len(bad):
        raise UserError("count mismatch: %d images found, %d skipped, %d written" % (len(ds), len(bad), count))
    return {"input": os.path.abspath(input_path), "save_path": os.path.abspath(save_path), "found": len(ds),
            "written": count, "skipped": bad, "classes": ds.classes}
