"""Correctness of the plugin kernels (plugin/kernels, C ABI through ctypes) against float64 PyTorch references.

Needs a CUDA GPU and the kernels-only library: ``make -C plugin kernels`` (or $MVT_KERNELS_LIB). Skipped with the
reason otherwise. Every output is poisoned with NaN before the launch, every status is checked, and the stream is
synchronised after each launch so that asynchronous errors surface in the test that caused them.
Tolerances (relative Frobenius error ||out - ref|| / ||ref||): FP32 1e-5, FP16 2e-3 (FP16 inputs and outputs, FP32
softmax / accumulation, P rounded to FP16 for the P V product; measured errors are ~2.5e-4).
"""
import math

import pytest

from mobilevit_trt import kernels as mvt_kernels
from mobilevit_trt.errors import UserError

torch = pytest.importorskip("torch", reason="needs torch")

TOL = {torch.float32: 1e-5, torch.float16: 2e-3}
DTYPES = [torch.float32, torch.float16]
pytestmark = pytest.mark.gpu


@pytest.fixture(scope="module")
def mk():
    """The binding module (constants, KernelError)."""
    return mvt_kernels


@pytest.fixture(scope="module")
def lib(mk):
    if not torch.cuda.is_available():
        pytest.skip("no CUDA GPU visible to torch")
    try:
        path = mk.library_path()
    except UserError as e:  # not in a checkout (no plugin/ beside the package) and no $MVT_KERNELS_LIB
        pytest.skip(str(e))
    if not path.is_file():
        pytest.skip("%s not built: run `make -C plugin kernels` (or set MVT_KERNELS_LIB)" % path)
    return mk.MvtKernels(path)


@pytest.fixture(autouse=True)
def _seed():
    torch.manual_seed(1234)


def rel_err(out, ref):
    out = out.double()
    ref = ref.double()
    assert torch.isfinite(out).all(), "output has NaN/Inf (unwritten elements keep the NaN poison)"
    denom = ref.norm().item()
    return (out - ref).norm().item() / (denom if denom > 0 else 1.0)


def poisoned(shape, dtype):
    shape = (shape,) if isinstance(shape, int) else tuple(shape)
    return torch.full(shape, float("nan"), dtype=dtype, device="cuda")


# ------------------------------------------------------------------------------------------------ LayerNorm
def ln_reference(x, gamma, beta, eps):
    x64 = x.double()
    mean = x64.mean(-1, keepdim=True)
    var = ((x64 - mean) ** 2).mean(-1, keepdim=True)
    return (x64 - mean) / torch.sqrt(var + eps) * gamma.double() + beta.double()


def run_ln(lib, rows, cols, dtype, eps=1e-5, tpr=0, offset=0, shift=3.0):
    x_full = (torch.randn(rows * cols + offset, device="cuda") * 2.0 + shift).to(dtype)
    x = x_full[offset:].view(rows, cols)  # offset != 0: misaligned data pointer
    gamma = torch.randn(cols, device="cuda")
    beta = torch.randn(cols, device="cuda")
    out_full = poisoned(rows * cols + offset, dtype)
    out = out_full[offset:].view(rows, cols)
    status = lib.layernorm_status(x, gamma, beta, out, eps, threads_per_row=tpr, rows=rows, cols=cols)
    torch.cuda.synchronize()
    lib.check(status, "mvt_layernorm")
    if offset:
        assert torch.isnan(out_full[:offset].float()).all(), "wrote before the output"
    return rel_err(out, ln_reference(x, gamma, beta, eps))


LN_COLS = [1, 2, 7, 33, 64, 80, 96, 120, 144, 192, 240, 255, 256, 1000, 1023, 1024, 1032, 2048, 4100]
LN_ROWS = [1, 5, 1024, 4099]


@pytest.mark.parametrize("dtype", DTYPES, ids=["fp32", "fp16"])
@pytest.mark.parametrize("cols", LN_COLS)
@pytest.mark.parametrize("rows", LN_ROWS)
def test_layernorm_sweep(lib, rows, cols, dtype):
    err = run_ln(lib, rows, cols, dtype)
    assert err <= TOL[dtype], "rows=%d cols=%d %s: rel err %.3g" % (rows, cols, dtype, err)


@pytest.mark.parametrize("dtype", DTYPES, ids=["fp32", "fp16"])
@pytest.mark.parametrize("cols", [64, 80, 96, 120, 144, 192, 240])
@pytest.mark.parametrize("tpr", [4, 8, 16, 32])
def test_layernorm_threads_per_row(lib, tpr, cols, dtype):
    """Every forced group width (the benchmark times them all) on the MobileViT hidden sizes."""
    err = run_ln(lib, 4 * 256 + 3, cols, dtype, tpr=tpr)
    assert err <= TOL[dtype], "tpr=%d cols=%d %s: rel err %.3g" % (tpr, cols, dtype, err)


@pytest.mark.parametrize("dtype", DTYPES, ids=["fp32", "fp16"])
@pytest.mark.parametrize("cols", [144, 1024])
def test_layernorm_misaligned(lib, cols, dtype):
    """A data pointer off the 16-byte grid takes the scalar path and stays correct."""
    err = run_ln(lib, 37, cols, dtype, offset=1)
    assert err <= TOL[dtype]


@pytest.mark.parametrize("eps", [0.0, 1e-6, 1e-2])
def test_layernorm_eps_and_large_offset(lib, eps):
    """Rows with a large common offset (two-pass statistics, no cancellation) and several epsilons."""
    err = run_ln(lib, 300, 192, torch.float32, eps=eps, shift=1000.0)
    assert err <= TOL[torch.float32]


def test_layernorm_non_default_stream(lib):
    s = torch.cuda.Stream()
    x = torch.randn(64, 240, device="cuda")
    g = torch.randn(240, device="cuda")
    b = torch.randn(240, device="cuda")
    out = poisoned((64, 240), torch.float32)
    s.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(s):
        lib.layernorm(x, g, b, 1e-5, out=out)
    torch.cuda.current_stream().wait_stream(s)
    torch.cuda.synchronize()
    assert rel_err(out, ln_reference(x, g, b, 1e-5)) <= TOL[torch.float32]


def test_layernorm_invalid_arguments(lib, mk):
    x = torch.randn(4, 8, device="cuda")
    g = torch.randn(8, device="cuda")
    out = torch.empty_like(x)
    invalid = 1  # cudaErrorInvalidValue
    assert lib.layernorm_status(x, g, g, out, 1e-5, rows=4, cols=0) == invalid
    assert lib.layernorm_status(x, g, g, out, 1e-5, rows=-1, cols=8) == invalid
    assert lib.layernorm_status(x, g, g, out, 1e-5, threads_per_row=3) == invalid
    assert lib.lib.mvt_layernorm(x.data_ptr(), g.data_ptr(), g.data_ptr(), out.data_ptr(), 4, 8, 1e-5, 7,
                                 torch.cuda.current_stream().cuda_stream) == invalid
    assert lib.layernorm_status(x, g, g, out, 1e-5, rows=0, cols=8) == 0  # nothing to do
    torch.cuda.synchronize()


# ------------------------------------------------------------------------------------------------ Attention
def attn_reference(q, k, v, scale):
    """q, k, v [..., H, N, D] -> [..., H, N, D] in float64."""
    s = torch.matmul(q.double(), k.double().transpose(-1, -2)) * scale
    return torch.matmul(torch.softmax(s, dim=-1), v.double())


def split_heads(t, num_heads):
    """[..., N, H*D] -> [..., H, N, D]."""
    *lead, n, hd = t.shape
    return t.reshape(*lead, n, num_heads, hd // num_heads).transpose(-2, -3)


def merge_heads(t):
    *lead, h, n, d = t.shape
    return t.transpose(-2, -3).reshape(*lead, n, h * d)


def run_attention(lib, lead, n, num_heads, head_dim, dtype, packed, impl=0, scale=None, offset=0):
    hd = num_heads * head_dim
    scale = head_dim ** -0.5 if scale is None else scale
    lead = tuple(lead)
    if packed:
        numel = int(math.prod(lead)) * n * 3 * hd
        flat = torch.randn(numel + offset, device="cuda").to(dtype)
        qkv = flat[offset:].view(*lead, n, 3 * hd)
        q, k, v = qkv.split(hd, dim=-1)
    else:
        q, k, v = (torch.randn(*lead, n, hd, device="cuda").to(dtype) for _ in range(3))
    out = poisoned(lead + (n, hd), dtype)
    batch = int(math.prod(lead))
    if packed:
        es = qkv.element_size()
        base = qkv.data_ptr()
        status = lib.attention_status(base, base + hd * es, base + 2 * hd * es, out.data_ptr(), batch, n, num_heads,
                                      head_dim, 3 * hd, hd, scale, 0 if dtype == torch.float32 else 1, impl)
    else:
        status = lib.attention_status(q.data_ptr(), k.data_ptr(), v.data_ptr(), out.data_ptr(), batch, n, num_heads,
                                      head_dim, hd, hd, scale, 0 if dtype == torch.float32 else 1, impl)
    torch.cuda.synchronize()
    lib.check(status, "mvt_attention_ex(impl=%d)" % impl)
    ref = merge_heads(attn_reference(split_heads(q, num_heads), split_heads(k, num_heads),
                                     split_heads(v, num_heads), scale))
    return rel_err(out, ref)


@pytest.mark.parametrize("dtype", DTYPES, ids=["fp32", "fp16"])
@pytest.mark.parametrize("n", [16, 64, 256])
@pytest.mark.parametrize("layout", ["packed_4d", "packed_3d", "separate_3d"])
@pytest.mark.parametrize("batch", [1, 2, 8])
def test_attention_mobilevit_shapes(lib, batch, layout, n, dtype):
    """Base-model layout [B, 4, N, 96] packed, and [B*4, N, 96] / three [B*4, N, 32]; D = 32, 1 head."""
    lead = (batch, 4) if layout == "packed_4d" else (batch * 4,)
    err = run_attention(lib, lead, n, 1, 32, dtype, packed=layout.startswith("packed"))
    assert err <= TOL[dtype], "rel err %.3g" % err


@pytest.mark.parametrize("dtype", DTYPES, ids=["fp32", "fp16"])
@pytest.mark.parametrize("n", [1, 2, 15, 17, 31, 33, 100, 129, 255, 257, 1000, 1024, 1500])
@pytest.mark.parametrize("packed", [True, False], ids=["packed", "separate"])
def test_attention_odd_lengths(lib, n, packed, dtype):
    err = run_attention(lib, (3,), n, 1, 32, dtype, packed)
    assert err <= TOL[dtype], "rel err %.3g" % err


# Apple's MobileViT (4 heads): (N, head dim) per stage at 256x256 input, XXS / XS / S
APPLE_SHAPES = [(256, 16), (64, 20), (16, 24), (256, 24), (64, 30), (16, 36), (256, 36), (64, 48), (16, 60)]


@pytest.mark.parametrize("dtype", DTYPES, ids=["fp32", "fp16"])
@pytest.mark.parametrize("n, head_dim", APPLE_SHAPES)
@pytest.mark.parametrize("layout", ["packed_4d", "separate_3d"])
@pytest.mark.parametrize("batch", [1, 8])
def test_attention_apple_shapes(lib, batch, layout, n, head_dim, dtype):
    """Apple's MobileViT layouts: [B, 4, N, 3*4*D] packed, or three [B*4, N, 4*D]; 4 heads."""
    lead = (batch, 4) if layout == "packed_4d" else (batch * 4,)
    err = run_attention(lib, lead, n, 4, head_dim, dtype, packed=layout.startswith("packed"))
    assert err <= TOL[dtype], "rel err %.3g" % err


@pytest.mark.parametrize("dtype", DTYPES, ids=["fp32", "fp16"])
@pytest.mark.parametrize("head_dim", [1, 8, 15, 16, 20, 24, 30, 33, 36, 48, 60, 64, 80, 96, 100, 128])
@pytest.mark.parametrize("num_heads", [1, 3, 4])
@pytest.mark.parametrize("n", [17, 200])
def test_attention_head_dims(lib, n, num_heads, head_dim, dtype):
    err = run_attention(lib, (2,), n, num_heads, head_dim, dtype, packed=True)
    assert err <= TOL[dtype], "rel err %.3g" % err


@pytest.mark.parametrize("dtype", DTYPES, ids=["fp32", "fp16"])
@pytest.mark.parametrize("scale", [1.0, 4.0])
@pytest.mark.parametrize("head_dim", [32, 36])
def test_attention_peaked_softmax(lib, scale, head_dim, dtype):
    """Large logits: the running max moves a lot between key chunks (online-softmax rescaling)."""
    err = run_attention(lib, (4,), 1000, 1, head_dim, dtype, packed=True, scale=scale)
    assert err <= TOL[dtype], "rel err %.3g" % err


def _tc_impls(lib):
    """FP16 tensor-core tilings."""
    return [i for i, name in lib.attention_impls().items() if name.startswith("tc_")]


def _x3_impls(lib):
    """FP32 tensor-core tilings (3xTF32)."""
    return [i for i, name in lib.attention_impls().items() if name.startswith("x3_")]


@pytest.mark.parametrize("n", [1, 16, 17, 64, 100, 256, 1000])
@pytest.mark.parametrize("head_dim", [16, 20, 30, 32, 36, 60, 64, 96, 128])
def test_attention_every_implementation(lib, mk, n, head_dim):
    """Each explicit implementation (the benchmark times them all) on the shapes it accepts; with 2 heads so the
    head offset inside a row is exercised."""
    ran = 0
    x3 = set(_x3_impls(lib))
    impls = [mk.ATTN_SIMT] + _tc_impls(lib) + sorted(x3)
    for impl in impls:
        for dtype in (DTYPES if impl == mk.ATTN_SIMT else [torch.float32] if impl in x3 else [torch.float16]):
            try:
                err = run_attention(lib, (3,), n, 2, head_dim, dtype, packed=True, impl=impl)
            except mk.KernelError as e:
                assert e.status == 1, str(e)  # the implementation is not built for this head-dim class
                continue
            ran += 1
            assert err <= TOL[dtype], "impl %s %s: rel err %.3g" % (lib.attention_impls()[impl], dtype, err)
    # every tiling is built for head dims <= 32; at least SIMT (x2) + 3 tilings everywhere
    assert ran >= (len(impls) + 1 if head_dim <= 32 else 5), ran


@pytest.mark.parametrize("head_dim", [20, 30, 32, 33])
def test_attention_fp32_tensor_cores_misaligned_pointers(lib, mk, head_dim):
    """FP32 tilings with qkv 1 and 2 floats off the 16-byte grid: 4- and 8-byte copies, FP32 accuracy."""
    ran = 0
    for impl in [0] + _x3_impls(lib):
        for offset in (1, 2):
            try:
                err = run_attention(lib, (2,), 64, 2, head_dim, torch.float32, packed=True, impl=impl, offset=offset)
            except mk.KernelError as e:
                assert impl != 0 and e.status == 1, str(e)  # not built for this head-dim class
                continue
            ran += 1
            assert err <= TOL[torch.float32], (lib.attention_impls()[impl], offset, err)
    assert ran >= 8, ran


@pytest.mark.parametrize("head_dim", [20, 30, 32, 33])
def test_attention_misaligned_pointers(lib, mk, head_dim):
    """A qkv pointer off the 16-byte grid (2-byte aligned): the tensor-core paths narrow their loads to what the
    pointers allow (down to 2-byte loads) and stay correct; auto still picks a tensor-core tiling."""
    for impl in [0] + _tc_impls(lib)[:3]:
        err = run_attention(lib, (2,), 64, 2, head_dim, torch.float16, packed=True, impl=impl, offset=1)
        assert err <= TOL[torch.float16], (impl, err)
        err = run_attention(lib, (2,), 64, 2, head_dim, torch.float16, packed=True, impl=impl, offset=2)
        assert err <= TOL[torch.float16], (impl, err)


@pytest.mark.parametrize("head_dim", [1, 8, 16, 20, 24, 30, 32, 33, 36, 48, 60, 64, 80, 96, 128])
def test_attention_auto_uses_tensor_cores_for_fp16(lib, mk, head_dim):
    cap = torch.cuda.get_device_capability()
    qkv = torch.randn(8, 256, 3 * 4 * head_dim, device="cuda", dtype=torch.float16)
    impl = lib.attention_auto_impl(qkv, num_heads=4)
    names = lib.attention_impls()
    if cap >= (8, 0):
        assert names[impl].startswith("tc_"), names[impl]
    fp32 = lib.attention_auto_impl(qkv.float(), num_heads=4)
    if cap >= (8, 0) and head_dim <= 64:
        assert fp32 == mk.ATTN_SIMT or names[fp32].startswith("x3_"), names[fp32]
    else:
        assert fp32 == mk.ATTN_SIMT, names[fp32]


@pytest.mark.parametrize("heads, n, head_dim", [(1, 16, 32), (1, 64, 32), (1, 256, 32)]
                         + [(4, n, d) for n, d in APPLE_SHAPES])
def test_attention_auto_tiling_for_mobilevit(lib, heads, n, head_dim):
    """auto picks a tensor-core tiling for every MobileViT shape of both families, and the one it picks runs."""
    if torch.cuda.get_device_capability() < (8, 0):
        pytest.skip("tensor-core paths need sm_80+")
    names = lib.attention_impls()
    for b in (1, 4, 8):
        qkv = torch.randn(b, 4, n, 3 * heads * head_dim, device="cuda", dtype=torch.float16)
        name = names[lib.attention_auto_impl(qkv, num_heads=heads)]
        assert name.startswith("tc_"), (b, name)


def test_attention_non_default_stream(lib):
    s = torch.cuda.Stream()
    qkv = torch.randn(16, 64, 96, device="cuda", dtype=torch.float16)
    out = poisoned((16, 64, 32), torch.float16)
    s.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(s):
        lib.attention_packed(qkv, 32 ** -0.5, out=out)
    torch.cuda.current_stream().wait_stream(s)
    torch.cuda.synchronize()
    q, k, v = (t.unsqueeze(1) for t in qkv.split(32, -1))
    ref = attn_reference(q, k, v, 32 ** -0.5).squeeze(1)
    assert rel_err(out, ref) <= TOL[torch.float16]


def test_attention_invalid_arguments(lib, mk):
    qkv = torch.randn(2, 16, 96, device="cuda")
    out = torch.empty(2, 16, 32, device="cuda")
    p = qkv.data_ptr()
    invalid = 1
    call = lib.attention_status
    assert call(p, p + 128, p + 256, out.data_ptr(), 2, 16, 1, 129, 3 * 129, 129, 1.0, 0) == invalid  # D > 128
    assert call(p, p + 128, p + 256, out.data_ptr(), 2, 16, 0, 32, 96, 32, 1.0, 0) == invalid  # 0 heads
    assert call(p, p + 128, p + 256, out.data_ptr(), 2, 16, 1, 32, 16, 32, 1.0, 0) == invalid  # stride < H*D
    assert call(p, p + 128, p + 256, out.data_ptr(), 2, 16, 1, 32, 96, 32, 1.0, 5) == invalid  # dtype
    assert call(p, p + 128, p + 256, out.data_ptr(), 2, 16, 1, 32, 96, 32, 1.0, 0, impl=99) == invalid
    tc = _tc_impls(lib)
    assert call(p, p + 128, p + 256, out.data_ptr(), 2, 16, 1, 32, 96, 32, 1.0, 0, impl=tc[0]) == invalid  # fp32
    h = qkv.half()
    hp = h.data_ptr()
    x3 = _x3_impls(lib)
    assert x3
    assert call(hp, hp + 64, hp + 128, out.data_ptr(), 2, 16, 1, 32, 96, 32, 1.0, 1, impl=x3[0]) == invalid  # fp16
    assert call(p, p + 260, p + 520, out.data_ptr(), 2, 16, 1, 65, 195, 65, 1.0, 0, impl=x3[0]) == invalid  # D > 64
    wide_only = [i for i, name in lib.attention_impls().items() if name == "tc_q128_k1x64"]
    for impl in wide_only:  # not built for the head-dim class 96 (shared memory): refused, nothing launched
        assert call(hp, hp + 160, hp + 320, out.data_ptr(), 1, 16, 1, 80, 240, 80, 1.0, 1, impl=impl) == invalid
    assert call(p, p + 128, p + 256, out.data_ptr(), 0, 16, 1, 32, 96, 32, 1.0, 0) == 0  # empty batch
    torch.cuda.synchronize()
