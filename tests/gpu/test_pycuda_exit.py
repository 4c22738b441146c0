"""PyCUDA as the CUDA binding (MOBILEVIT_TRT_CUDA=pycuda): a process that used it exits cleanly.

PyCUDA aborts the interpreter at exit when its context stack is not empty ("PyCUDA ERROR: The context stack was not
empty upon module cleanup", abort() in its context_stack destructor); mobilevit_trt.cuda's PyCUDA backend
(pycuda_impl._PyCuda) pushes the primary context and pops it at exit.  The control run unregisters that pop and
must abort, so the test shows both the defect and the fix.  Skipped without a GPU or PyCUDA."""
import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
pytestmark = pytest.mark.gpu

SCRIPT = """
import atexit, sys
from mobilevit_trt import cuda
b = cuda.backend()
assert type(b).__name__ == "_PyCuda", type(b)
buf = cuda.DeviceBuffer(1 << 20)
s = cuda.Stream(); s.synchronize()
buf.free()
if sys.argv[1] == "control":
    atexit.unregister(b.release)   # the code before the fix: the push is never undone
print("done")
"""


def _run(mode):
    env = dict(os.environ, MOBILEVIT_TRT_CUDA="pycuda", PYTHONPATH=str(REPO))
    return subprocess.run([sys.executable, "-c", SCRIPT, mode], cwd=str(REPO), env=env, capture_output=True,
                          text=True, timeout=120)


def test_pycuda_process_exits_cleanly():
    pytest.importorskip("pycuda.driver", reason="PyCUDA not installed")
    from mobilevit_trt import cuda
    if cuda.driver_problem():
        pytest.skip(cuda.driver_problem())
    fixed = _run("fixed")
    assert fixed.returncode == 0 and fixed.stdout.strip() == "done", (fixed.returncode, fixed.stderr[-2000:])
    assert "PyCUDA ERROR" not in fixed.stderr
    control = _run("control")
    assert control.stdout.strip() == "done"
    assert control.returncode in (-6, 134) and "context stack was not empty" in control.stderr, (
        control.returncode, control.stderr[-2000:])
