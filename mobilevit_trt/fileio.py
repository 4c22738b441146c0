"""Atomic file writes: write to a temporary file beside the target, then rename.

:func:`check_output_file` / :func:`check_output_folder` are the one place that decides whether an output path
can be written; scripts call them right after parsing, before any expensive work, and :func:`atomic_path` calls
the first one itself, so a library caller gets the same one-line :class:`UserError`.
"""
import contextlib
import hashlib
import json
import os
import tempfile

from .errors import UserError


def _nearest_existing(path):
    """``path`` itself if it exists, else its closest existing ancestor folder (or file in the way)."""
    p = os.path.abspath(path)
    while not os.path.lexists(p):
        parent = os.path.dirname(p)
        if parent == p:
            break
        p = parent
    return p


def _label(path, what):
    return "%s %s" % (what, path) if what else path


def _check_creatable(folder, path, what):
    """``folder`` (which may not exist yet) can be created and written to."""
    base = _nearest_existing(folder)
    if not os.path.isdir(base):
        raise UserError("cannot write %s: %s is a file, not a folder (choose another path)" % (_label(path, what),
                                                                                               base))
    if not os.access(base, os.W_OK | os.X_OK):
        raise UserError("cannot write %s: folder %s is not writable (choose another path or change the folder's "
                        "permissions)" % (_label(path, what), base))


def check_output_file(path, what=None):
    """Raise :class:`UserError` unless ``path`` names a file that can be written (atomically: created beside
    the target and renamed onto it): not an existing folder, in a folder that exists or can be created, and
    writable.  ``what`` names the option in the message (``"--save_path"``).  Returns ``path``."""
    if not path:
        raise UserError("%s needs a file name" % (what or "the output path"))
    if os.path.isdir(path):
        raise UserError("%s is a folder: give the path of a file to write (e.g. %s)" % (
            _label(path, what), os.path.join(path, "<file name>")))
    _check_creatable(os.path.dirname(os.path.abspath(path)), path, what)
    return path


def check_output_folder(path, what=None, built_beside=False):
    """Raise :class:`UserError` unless ``path`` is a folder that exists or can be created, and is writable.
    ``built_beside``: the folder is built next to ``path`` and renamed onto it, so its parent must be writable."""
    if not path:
        raise UserError("%s needs a folder name" % (what or "the output folder"))
    if os.path.lexists(path) and not os.path.isdir(path):
        raise UserError("%s is a file, not a folder: give a folder (or remove the file)" % _label(path, what))
    folder = os.path.abspath(path.rstrip("/\\") or path)
    _check_creatable(os.path.dirname(folder) if built_beside else folder, path, what)
    return path


@contextlib.contextmanager
def atomic_path(path):
    """Yield a temporary path in the target's folder; on success rename it onto ``path``, else delete it.

    An unwritable target (a folder, a read-only folder, a file where a folder should be) is a :class:`UserError`
    naming the path, raised before the caller's work starts; errors of the caller's own work pass through."""
    check_output_file(path)
    path = os.path.abspath(path)
    folder = os.path.dirname(path)
    try:
        os.makedirs(folder, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix="." + os.path.basename(path) + ".", suffix=".tmp", dir=folder)
    except OSError as e:
        raise UserError("cannot write %s: %s" % (path, e.strerror or e))
    os.close(fd)
    umask = os.umask(0)
    os.umask(umask)
    os.chmod(tmp, 0o666 & ~umask)  # mkstemp makes 0600; the result should have a normal file's mode
    try:
        yield tmp
        try:
            os.replace(tmp, path)
        except OSError as e:  # IsADirectoryError (a folder appeared there), PermissionError, ...
            raise UserError("cannot write %s: %s" % (path, e.strerror or e))
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)


def write_bytes(path, data):
    with atomic_path(path) as tmp:
        with open(tmp, "wb") as f:
            f.write(data)


def write_text(path, text):
    write_bytes(path, text.encode("utf-8"))


def write_json(path, obj):
    write_text(path, json.dumps(obj, indent=2, sort_keys=False) + "\n")


def sha256_file(path, chunk=1 << 20):
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while True:
            b = f.read(chunk)
            if not b:
                break
            h.update(b)
    return h.hexdigest()
