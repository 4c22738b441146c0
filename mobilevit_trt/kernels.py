"""ctypes binding of the plugin kernels' C ABI: the kernels-only library built from the repository's plugin/
sources (``make -C plugin kernels`` -> plugin/build/libmvt_kernels.so; ``$MVT_KERNELS_LIB`` overrides the path).

Used by tests/gpu/test_plugin_kernels.py and benchmark/bench_plugins.py. Tensors are torch CUDA tensors; work is
enqueued on ``torch.cuda.current_stream()`` (so it can be captured into a CUDA graph), and every non-zero status
raises :class:`KernelError`. Nothing is loaded at import time.

The library is built from plugin/kernels/*.cu of a checkout, so it is looked up in plugin/ beside this package
(the repository root of an editable install, ``pip install -e .``); an installed copy without the checkout needs
``$MVT_KERNELS_LIB`` (or ``MvtKernels(path)``) and otherwise gets a :class:`UserError` that says so.
"""
import ctypes
import os
from pathlib import Path

from .errors import UserError

DTYPE_FLOAT32 = 0
DTYPE_FLOAT16 = 1
ATTN_AUTO = 0
ATTN_SIMT = 1
ABI_VERSION = 1

ENV_LIBRARY = "MVT_KERNELS_LIB"
REPO_ROOT = Path(__file__).resolve().parent.parent
PLUGIN_DIR = REPO_ROOT / "plugin"
HEADER = PLUGIN_DIR / "kernels" / "mvt_kernels.h"
DEFAULT_LIBRARY = PLUGIN_DIR / "build" / "libmvt_kernels.so"
BUILD_HINT = "make -C plugin kernels"


def plugin_dir():
    """The repository's plugin/ folder (the kernels' .cu sources and their build folder); UserError when this
    package is not in a checkout (a non-editable install)."""
    if not HEADER.is_file():
        raise UserError("the plugin kernel sources are not there (%s not found): the kernels library is built from "
                        "a repository checkout (%s), so install the checkout editable (pip install -e .) or set "
                        "%s to a built libmvt_kernels.so" % (HEADER, BUILD_HINT, ENV_LIBRARY))
    return PLUGIN_DIR


def library_path():
    """$MVT_KERNELS_LIB, else plugin/build/libmvt_kernels.so of the checkout (UserError without one)."""
    env = os.environ.get(ENV_LIBRARY)
    if env:
        return Path(env)
    plugin_dir()  # outside a checkout: say so, rather than "not built"
    return DEFAULT_LIBRARY


class KernelError(RuntimeError):
    """A kernel entry point returned a non-zero status (a cudaError_t)."""

    def __init__(self, what, status, text):
        super().__init__("%s failed: status %d (%s)" % (what, status, text))
        self.status = status


def _dtype_code(dtype):
    import torch

    if dtype == torch.float32:
        return DTYPE_FLOAT32
    if dtype == torch.float16:
        return DTYPE_FLOAT16
    raise TypeError("only float32 and float16 tensors are supported, got %s" % dtype)


class MvtKernels:
    """The C ABI of plugin/kernels/mvt_kernels.h, plus torch-tensor helpers."""

    def __init__(self, path=None):
        self.path = Path(path) if path is not None else library_path()
        if not self.path.is_file():
            raise UserError("%s not found: build it first with `%s`" % (self.path, BUILD_HINT))
        lib = ctypes.CDLL(str(self.path))
        i32, i64, f32, vp = ctypes.c_int32, ctypes.c_int64, ctypes.c_float, ctypes.c_void_p
        lib.mvt_kernels_abi_version.restype = i32
        lib.mvt_kernels_abi_version.argtypes = []
        lib.mvt_status_string.restype = ctypes.c_char_p
        lib.mvt_status_string.argtypes = [i32]
        lib.mvt_layernorm.restype = i32
        lib.mvt_layernorm.argtypes = [vp, vp, vp, vp, i64, i64, f32, i32, vp]
        lib.mvt_layernorm_ex.restype = i32
        lib.mvt_layernorm_ex.argtypes = [vp, vp, vp, vp, i64, i64, f32, i32, i32, vp]
        attn = [vp, vp, vp, vp, i64, i64, i32, i32, i64, i64, f32, i32]
        lib.mvt_attention.restype = i32
        lib.mvt_attention.argtypes = attn + [vp]
        lib.mvt_attention_ex.restype = i32
        lib.mvt_attention_ex.argtypes = attn + [i32, vp]
        lib.mvt_attention_num_impls.restype = i32
        lib.mvt_attention_num_impls.argtypes = []
        lib.mvt_attention_impl_name.restype = ctypes.c_char_p
        lib.mvt_attention_impl_name.argtypes = [i32]
        lib.mvt_attention_auto_impl.restype = i32
        lib.mvt_attention_auto_impl.argtypes = [vp, vp, vp, vp, i64, i64, i32, i32, i64, i64, i32]
        self.lib = lib
        abi = lib.mvt_kernels_abi_version()
        if abi != ABI_VERSION:
            raise UserError("%s has ABI version %d, this binding expects %d: rebuild it (`%s`)"
                            % (self.path, abi, ABI_VERSION, BUILD_HINT))

    # ---------------------------------------------------------------- raw
    def status_string(self, status):
        return self.lib.mvt_status_string(status).decode()

    def check(self, status, what):
        if status != 0:
            raise KernelError(what, status, self.status_string(status))

    @staticmethod
    def _stream(stream):
        import torch

        return (stream if stream is not None else torch.cuda.current_stream()).cuda_stream

    def attention_impls(self):
        """{id: name} of all attention implementations (0 = auto)."""
        n = self.lib.mvt_attention_num_impls()
        return {i: self.lib.mvt_attention_impl_name(i).decode() for i in range(n)}

    # ---------------------------------------------------------------- LayerNorm
    def layernorm_status(self, x, gamma, beta, out, epsilon, threads_per_row=0, rows=None, cols=None, stream=None):
        """Launch and return the status (no raise). rows/cols default to x viewed as [-1, x.shape[-1]]."""
        cols = x.shape[-1] if cols is None else cols
        rows = (x.numel() // cols if cols else 0) if rows is None else rows
        return self.lib.mvt_layernorm_ex(x.data_ptr(), gamma.data_ptr(), beta.data_ptr(), out.data_ptr(), rows, cols,
                                         float(epsilon), _dtype_code(x.dtype), threads_per_row, self._stream(stream))

    def layernorm(self, x, gamma, beta, epsilon, out=None, threads_per_row=0, stream=None):
        """y = LayerNorm(x) over the last dim; x contiguous fp32/fp16, gamma/beta fp32 [C]."""
        import torch

        if not x.is_contiguous():
            raise ValueError("x must be contiguous")
        if gamma.dtype != torch.float32 or beta.dtype != torch.float32:
            raise TypeError("gamma and beta must be float32")
        out = torch.empty_like(x) if out is None else out
        self.check(self.layernorm_status(x, gamma, beta, out, epsilon, threads_per_row, stream=stream),
                   "mvt_layernorm")
        return out

    # ---------------------------------------------------------------- Attention
    def attention_status(self, q, k, v, out, batch, seq_len, num_heads, head_dim, in_row_stride, out_row_stride,
                         scale, dtype_code, impl=ATTN_AUTO, stream=None):
        """Raw mvt_attention_ex on data pointers (ints); returns the status."""
        return self.lib.mvt_attention_ex(q, k, v, out, batch, seq_len, num_heads, head_dim, in_row_stride,
                                         out_row_stride, float(scale), dtype_code, impl, self._stream(stream))

    def attention_packed(self, qkv, scale, num_heads=1, out=None, impl=ATTN_AUTO, stream=None):
        """qkv [..., N, 3*H*D] contiguous -> out [..., N, H*D]."""
        import torch

        if not qkv.is_contiguous() or qkv.dim() < 3:
            raise ValueError("qkv must be contiguous with rank >= 3")
        features = qkv.shape[-1]
        if features % (3 * num_heads):
            raise ValueError("last dim %d is not a multiple of 3*num_heads" % features)
        hd = features // 3
        n = qkv.shape[-2]
        batch = qkv.numel() // (n * features) if n else 0
        if out is None:
            out = torch.empty(qkv.shape[:-1] + (hd,), dtype=qkv.dtype, device=qkv.device)
        base = qkv.data_ptr()
        es = qkv.element_size()
        status = self.attention_status(base, base + hd * es, base + 2 * hd * es, out.data_ptr(), batch, n, num_heads,
                                       hd // num_heads, features, hd, scale, _dtype_code(qkv.dtype), impl, stream)
        self.check(status, "mvt_attention(packed)")
        return out

    def attention_separate(self, q, k, v, scale, num_heads=1, out=None, impl=ATTN_AUTO, stream=None):
        """q, k, v [..., N, H*D] contiguous, same shape -> out [..., N, H*D]."""
        import torch

        if not (q.shape == k.shape == v.shape) or q.dim() < 3:
            raise ValueError("q, k, v need one shape of rank >= 3")
        if not (q.is_contiguous() and k.is_contiguous() and v.is_contiguous()):
            raise ValueError("q, k, v must be contiguous")
        hd = q.shape[-1]
        if hd % num_heads:
            raise ValueError("last dim %d is not a multiple of num_heads" % hd)
        n = q.shape[-2]
        batch = q.numel() // (n * hd) if n else 0
        out = torch.empty_like(q) if out is None else out
        status = self.attention_status(q.data_ptr(), k.data_ptr(), v.data_ptr(), out.data_ptr(), batch, n, num_heads,
                                       hd // num_heads, hd, hd, scale, _dtype_code(q.dtype), impl, stream)
        self.check(status, "mvt_attention(separate)")
        return out

    def attention_auto_impl(self, qkv, num_heads=1):
        """Implementation id that auto picks for a packed qkv tensor."""
        features = qkv.shape[-1]
        hd = features // 3
        n = qkv.shape[-2]
        base = qkv.data_ptr()
        es = qkv.element_size()
        return self.lib.mvt_attention_auto_impl(base, base + hd * es, base + 2 * hd * es, base, qkv.numel() // (n * features),
                                                n, num_heads, hd // num_heads, features, hd, _dtype_code(qkv.dtype))
