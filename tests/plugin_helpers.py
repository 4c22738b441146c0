"""What the plugin build tests share: where plugin/ is and the nvcc lookup (the contract they check is
``mobilevit_trt.plugin_spec``, imported as any module)."""
import os
import shutil
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
PLUGIN = REPO / "plugin"


def find_nvcc():
    """nvcc on PATH, else $CUDA_PATH/bin/nvcc, else /usr/local/cuda/bin/nvcc (as the Makefile looks)."""
    found = shutil.which("nvcc")
    if found:
        return found
    for root in (os.environ.get("CUDA_PATH"), "/usr/local/cuda"):
        if root and (Path(root) / "bin" / "nvcc").is_file():
            return str(Path(root) / "bin" / "nvcc")
    return None
