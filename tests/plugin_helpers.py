"""What the plugin build tests share: the plugin contract loaded on its own (no package import) and nvcc lookup."""
import importlib.util
import os
import shutil
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
PLUGIN = REPO / "plugin"


def load_spec():
    spec = importlib.util.spec_from_file_location("plugin_spec", str(REPO / "mobilevit_trt" / "plugin_spec.py"))
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def find_nvcc():
    """nvcc on PATH, else $CUDA_PATH/bin/nvcc, else /usr/local/cuda/bin/nvcc (as the Makefile looks)."""
    found = shutil.which("nvcc")
    if found:
        return found
    for root in (os.environ.get("CUDA_PATH"), "/usr/local/cuda"):
        if root and (Path(root) / "bin" / "nvcc").is_file():
            return str(Path(root) / "bin" / "nvcc")
    return None
