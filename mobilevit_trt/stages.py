"""A small stage runner for the pipeline: content-hash caching, skip reasons, one state file per run folder.

A stage is ``runner.run(name, fn, inputs=[files], params={...}, outputs=[files])``.  Its key is the SHA-256 of
the params (JSON) and of the contents of its input files.  When the key equals the recorded key and every
output still exists, the recorded result is returned and the stage is reported as ``cached``; ``force``
re-runs everything.  ``runner.skip(name, reason)`` records a stage this machine cannot run; so does a stage
that raises ``errors.Unavailable`` (no TensorRT, no GPU, no plugin library: decided where it is known).
"""
import hashlib
import json
import os
import time
import traceback

from .errors import Unavailable, UserError
from .fileio import sha256_file, write_json

STATE_FILE = "pipeline_state.json"


class StageRunner(object):
    def __init__(self, run_dir, force=False, log=print):
        self.run_dir = os.path.abspath(run_dir)
        os.makedirs(self.run_dir, exist_ok=True)
        self.force = force
        self.log = log
        self.state_path = os.path.join(self.run_dir, STATE_FILE)
        self.state = {}
        if os.path.isfile(self.state_path):
            try:
                with open(self.state_path) as f:
                    self.state = json.load(f)
            except ValueError:
                self.state = {}
        self.records = []  # this run's stage list, in order
        self._hash_cache = {}

    def path(self, *parts):
        return os.path.join(self.run_dir, *parts)

    def _file_hash(self, path):
        st = os.stat(path)
        k = (path, st.st_size, st.st_mtime_ns)
        if k not in self._hash_cache:
            self._hash_cache[k] = sha256_file(path)
        return self._hash_cache[k]

    def key(self, inputs, params):
        h = hashlib.sha256()
        h.update(json.dumps(params, sort_keys=True, default=str).encode())
        for p in inputs:
            h.update(os.path.basename(p).encode())
            h.update(self._file_hash(p).encode() if os.path.isfile(p) else b"<missing>")
        return h.hexdigest()

    def run(self, name, fn, inputs=(), params=None, outputs=()):
        params = params or {}
        missing = [p for p in inputs if not os.path.isfile(p)]
        if missing:
            return self.skip(name, "input missing: %s" % ", ".join(os.path.relpath(p, self.run_dir) for p in missing))
        key = self.key(inputs, params)
        prev = self.state.get(name)
        if (not self.force and prev and prev.get("key") == key and prev.get("status") in ("ran", "cached")
                and all(os.path.exists(p) for p in outputs)):
            self.log("[cached] %s (inputs unchanged)" % name)
            rec = dict(prev, status="cached")
            self.records.append(dict(rec, name=name))
            return rec.get("result")
        self.log("[run]    %s" % name)
        t0 = time.time()
        try:
            result = fn()
        except Unavailable as e:  # this machine cannot run the stage: a skip with the reason, not a failure
            return self.skip(name, str(e))
        except UserError as e:
            rec = {"status": "failed", "error": str(e), "seconds": time.time() - t0, "key": None}
            self.log("[failed] %s: %s" % (name, e))
            self._record(name, rec)
            return None
        except Exception as e:  # a bug: keep going with the other stages, show the traceback in the state file
            rec = {"status": "failed", "error": "%s: %s" % (type(e).__name__, e), "seconds": time.time() - t0,
                   "traceback": traceback.format_exc(), "key": None}
            self.log("[failed] %s: %s: %s" % (name, type(e).__name__, e))
            self._record(name, rec)
            return None
        rec = {"status": "ran", "key": key, "seconds": round(time.time() - t0, 2), "result": result}
        self._record(name, rec)
        return result

    def skip(self, name, reason):
        self.log("[skip]   %s: %s" % (name, reason))
        self._record(name, {"status": "skipped", "reason": reason, "key": None})
        return None

    def _record(self, name, rec):
        self.state[name] = rec
        self.records.append(dict(rec, name=name))
        write_json(self.state_path, self.state)

    def summary_rows(self):
        rows = []
        for r in self.records:
            note = r.get("reason") or r.get("error") or ""
            rows.append({"stage": r["name"], "status": r["status"],
                         "seconds": r.get("seconds", ""), "note": note})
        return rows

    @property
    def failed(self):
        return [r["name"] for r in self.records if r["status"] == "failed"]
