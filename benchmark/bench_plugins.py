"""Speed of the plugin kernels (plugin/kernels via ctypes) next to PyTorch, on the MobileViT shapes of both families.

    make -C plugin kernels SM=90
    python benchmark/bench_plugins.py --out bench.json [--batches 1 4 8] [--reps 200] [--calls 100]
        [--models orig-s apple-xxs apple-xs apple-s]

Needs a CUDA GPU, torch and plugin/build/libmvt_kernels.so ($MVT_KERNELS_LIB overrides the path).

How time is measured (the shapes are tiny, so a single eager launch measures the CPU launch path, not the GPU):
  graph   `calls` back-to-back launches of one implementation are captured into a CUDA graph; each replay is
          bracketed by CUDA events; the reported time is the median over `reps` replays divided by `calls`
          (after warm-up). This is the primary number: per-call GPU time with the launch gaps of a graph.
          `calls` defaults to 100 so that one replay is >= ~200 us of GPU work: with 20 calls of a ~2 us kernel
          the same kernel read up to 1.5x slower in separate measurements on the H100 (most likely the Python
          loop - event, replay, event - fell behind the GPU). The >= 64 MiB bandwidth cases use 5 calls per
          replay (each call is >= 46 us).
  kernel  sum of the durations of all GPU kernels one call launches, from the PyTorch profiler (CUPTI),
          averaged over 50 calls: pure kernel time, no gaps (PyTorch paths may launch several kernels).
  eager   CUDA events around one ordinary call, median of `reps`: includes the CPU launch overhead.
Inputs stay resident in L2 between back-to-back calls at these sizes (as they would between layers).
The GPU is warmed up (about a second of matrix products) before any timing, and the plugin-vs-PyTorch pairs are
timed twice in A-B-A-B order; the reported graph time is the mean of the two medians (both are in the JSON), because
separate captures of one microsecond-scale kernel were seen to differ by up to ~0.4 us on the H100.

Shapes at 256x256 input (a 2x2 patch gives 4 sequences per image: LayerNorm sees B*4*N rows of C, attention
B*4 sequences of N tokens per head, packed qkv [B, 4, N, 3*H*D]):
  orig-s     the original project's MobileViT-S: C = 144 / 192 / 240 at N = 256 / 64 / 16, attention 1 head of 32
  apple-xxs  Apple's MobileViT-XXS: C = 64 / 80 / 96, 4 heads of C/4 = 16 / 20 / 24
  apple-xs   C = 96 / 120 / 144, head dims 24 / 30 / 36
  apple-s    C = 144 / 192 / 240, head dims 36 / 48 / 60
PyTorch attention paths: SDPA (default dispatch) on the strided views and on contiguous copies, each SDPA backend
(flash, efficient, cuDNN; math only with --math) and the explicit softmax(q k^T * scale) v, on views and on copies;
the verdicts compare the plugin with the fastest of them.
"""
import json
import statistics
import sys
import time
from pathlib import Path

from mobilevit_trt import cli
from mobilevit_trt.errors import UserError

N_BY_STAGE = [("stage3", 256), ("stage4", 64), ("stage5", 16)]
# model -> (LayerNorm C per stage, attention heads, head dim per stage)
MODELS = {
    "orig-s": ((144, 192, 240), 1, (32, 32, 32)),
    "apple-xxs": ((64, 80, 96), 4, (16, 20, 24)),
    "apple-xs": ((96, 120, 144), 4, (24, 30, 36)),
    "apple-s": ((144, 192, 240), 4, (36, 48, 60)),
}
PATCH_AREA = 4
LN_EPS = 1e-5
LN_TPR_CHOICES = [4, 8, 16, 32]
BIG_BYTES = [64 << 20, 256 << 20]  # LayerNorm / copy bandwidth sizes (bytes of x)
BIG_C = 192
TARGET_LN_SPEEDUP = 1.5
TARGET_LN_COPY_FRACTION = 0.90
TARGET_ATTN_SPEEDUP = {"float16": 2.0, "float32": 1.2}


def layernorm_shapes(models):
    """Unique (stage, C, N) LayerNorm shapes of the given models, with the models that have each."""
    seen = {}
    for m in models:
        widths = MODELS[m][0]
        for (stage, n), c in zip(N_BY_STAGE, widths):
            seen.setdefault((stage, c, n), []).append(m)
    return [(stage, c, n, ms) for (stage, c, n), ms in seen.items()]


def attention_shapes(models):
    """(model, stage, N, heads, head dim) per model and stage."""
    out = []
    for m in models:
        _, heads, dims = MODELS[m]
        for (stage, n), d in zip(N_BY_STAGE, dims):
            out.append((m, stage, n, heads, d))
    return out


T0 = [time.time()]  # start of the run, for the progress lines on stderr


class BenchError(UserError):
    """User-facing problem (no GPU, library missing): printed as one line, exit 1."""


def _first_line(e, limit=200):
    """An exception's message for a result row (its first line; no exception class names)."""
    return (str(e).strip().splitlines() or ["failed without a message"])[0][:limit]


# ------------------------------------------------------------------------------------------------ timing
class Timer:
    def __init__(self, torch, reps, calls, warmup=20):
        self.torch = torch
        self.reps = reps
        self.calls = calls
        self.warmup = warmup

    def _events(self, n):
        return [(self.torch.cuda.Event(enable_timing=True), self.torch.cuda.Event(enable_timing=True))
                for _ in range(n)]

    @staticmethod
    def _stats(samples_us):
        samples_us = sorted(samples_us)
        q = lambda f: samples_us[min(len(samples_us) - 1, int(f * len(samples_us)))]  # noqa: E731
        return {"us": statistics.median(samples_us), "p10": q(0.1), "p90": q(0.9), "n": len(samples_us)}

    def warm(self, fn, n=3):
        torch = self.torch
        side = torch.cuda.Stream()
        side.wait_stream(torch.cuda.current_stream())
        with torch.cuda.stream(side):
            for _ in range(n):
                fn()
        torch.cuda.current_stream().wait_stream(side)
        torch.cuda.synchronize()

    def graph(self, fn, calls=None):
        """Median per-call time (us) of `calls` back-to-back launches replayed as one CUDA graph."""
        torch = self.torch
        calls = calls or self.calls
        self.warm(fn)
        g = torch.cuda.CUDAGraph()
        with torch.cuda.graph(g):
            for _ in range(calls):
                fn()
        for _ in range(self.warmup):
            g.replay()
        torch.cuda.synchronize()
        ev = self._events(self.reps)
        for start, end in ev:
            start.record()
            g.replay()
            end.record()
        torch.cuda.synchronize()
        st = self._stats([s.elapsed_time(e) * 1000.0 / calls for s, e in ev])
        st["calls_per_replay"] = calls
        del g
        return st

    def eager(self, fn):
        torch = self.torch
        self.warm(fn)
        for _ in range(self.warmup):
            fn()
        torch.cuda.synchronize()
        ev = self._events(self.reps)
        for start, end in ev:
            start.record()
            fn()
            end.record()
        torch.cuda.synchronize()
        return self._stats([s.elapsed_time(e) * 1000.0 for s, e in ev])

    def kernel(self, fn, calls=50):
        """Mean summed GPU-kernel duration per call (us) from the PyTorch profiler, and the kernel count."""
        torch = self.torch
        from torch.profiler import ProfilerActivity, profile

        self.warm(fn)
        with profile(activities=[ProfilerActivity.CUDA]) as prof:
            for _ in range(calls):
                fn()
            torch.cuda.synchronize()
        total = 0.0
        count = 0
        for e in prof.events():
            if e.device_type == torch.autograd.DeviceType.CUDA:
                total += e.time_range.elapsed_us()
                count += 1
        if count == 0:
            return None
        return {"us": total / calls, "kernels_per_call": count / calls}


def measure(timer, fn, modes, errors, label):
    """{mode: stats or None}; failures (e.g. a backend that cannot run this shape) are recorded, not raised."""
    out = {}
    for mode in modes:
        try:
            out[mode] = getattr(timer, mode)(fn)
        except Exception as e:  # noqa: BLE001 - a benchmark row must not stop the run
            out[mode] = None
            errors.append("%s [%s]: %s" % (label, mode, _first_line(e)))
            timer.torch.cuda.synchronize()
    return out


def warm_gpu(torch, seconds=1.0):
    """Keep the GPU busy for a while so that timing starts from a steady clock (no clock settings are touched)."""
    a = torch.randn(4096, 4096, device="cuda", dtype=torch.float16)
    t0 = time.time()
    while time.time() - t0 < seconds:
        for _ in range(20):
            a @ a
        torch.cuda.synchronize()
    del a


def measure_pair(timer, fn_a, fn_b, errors, label_a, label_b):
    """A-B-A-B graph timings; each entry's "us" becomes the mean of its two medians (both kept)."""
    out = []
    first_a = measure(timer, fn_a, ["graph"], errors, label_a)["graph"]
    first_b = measure(timer, fn_b, ["graph"], errors, label_b)["graph"]
    second_a = measure(timer, fn_a, ["graph"], errors, label_a + " (repeat)")["graph"]
    second_b = measure(timer, fn_b, ["graph"], errors, label_b + " (repeat)")["graph"]
    for first, second in ((first_a, second_a), (first_b, second_b)):
        if first and second:
            merged = dict(first)
            merged["us"] = 0.5 * (first["us"] + second["us"])
            merged["repeats_us"] = [first["us"], second["us"]]
            out.append(merged)
        else:
            out.append(first or second)
    return out


def us(entry, mode="graph"):
    if not entry or not entry.get(mode):
        return None
    return entry[mode]["us"]


def rel_err(torch, out, ref):
    out = out.double()
    ref = ref.double()
    if not torch.isfinite(out).all():
        return float("inf")
    return ((out - ref).norm() / ref.norm()).item()


# ------------------------------------------------------------------------------------------------ benches
def bench_copy(torch, timer, errors):
    rows = []
    for nbytes in BIG_BYTES:
        src = torch.randn(nbytes // 4, device="cuda")
        dst = torch.empty_like(src)
        st = measure(timer, lambda: dst.copy_(src), ["graph"], errors, "copy %d MiB" % (nbytes >> 20))
        t = us(st)
        rows.append({"bytes": nbytes, "time": st,
                     "gbps": (2 * nbytes / (t * 1e-6) / 1e9) if t else None})  # read + write
        src = dst = None  # free the buffers before the next size (not `del`: the lambda above closes over them)
    return rows


def bench_layernorm(torch, lib, timer, vtimer, models, batches, dtypes, errors, variants=True, modes=("kernel",)):
    F = torch.nn.functional
    rows = []
    for dtype in dtypes:
        for stage, c, n, owners in layernorm_shapes(models):
            for b in batches:
                nrows = b * PATCH_AREA * n
                x = (torch.randn(b, PATCH_AREA, n, c, device="cuda") * 2 + 1).to(dtype)
                gamma = torch.randn(c, device="cuda")
                beta = torch.randn(c, device="cuda")
                g_t, b_t = gamma.to(dtype), beta.to(dtype)
                out = torch.empty_like(x)
                label = "LN %s C=%d rows=%d %s" % (stage, c, nrows, str(dtype)[6:])
                row = {"stage": stage, "C": c, "N": n, "rows": nrows, "batch": b, "dtype": str(dtype)[6:],
                       "models": owners}
                mine = lambda tpr=0: lib.layernorm(x, gamma, beta, LN_EPS, out=out, threads_per_row=tpr)  # noqa
                ref = F.layer_norm(x.double(), (c,), gamma.double(), beta.double(), LN_EPS)
                mine()
                torch.cuda.synchronize()
                row["rel_err_vs_fp64"] = rel_err(torch, out, ref)
                torch_fn = lambda: F.layer_norm(x, (c,), g_t, b_t, LN_EPS)  # noqa: E731
                row["mvt"] = measure(timer, mine, list(modes), errors, label + " mvt")
                row["torch"] = measure(timer, torch_fn, list(modes), errors, label + " torch")
                row["mvt"]["graph"], row["torch"]["graph"] = measure_pair(timer, mine, torch_fn, errors,
                                                                          label + " mvt", label + " torch")
                row["mvt_tpr"] = {}
                for tpr in (LN_TPR_CHOICES if variants else []):
                    row["mvt_tpr"][str(tpr)] = measure(vtimer, lambda t=tpr: mine(t), ["graph"], errors,
                                                       label + " tpr=%d" % tpr)
                tm, tt = us(row["mvt"]), us(row["torch"])
                row["speedup"] = tt / tm if tm and tt else None
                km, kt = us(row["mvt"], "kernel"), us(row["torch"], "kernel")
                row["speedup_kernel"] = kt / km if km and kt else None
                rows.append(row)
    return rows


def bench_layernorm_bandwidth(torch, lib, timer, dtypes, copy_rows, errors):
    F = torch.nn.functional
    copy_by_bytes = {r["bytes"]: r["gbps"] for r in copy_rows}
    rows = []
    for dtype in dtypes:
        esize = torch.tensor([], dtype=dtype).element_size()
        for nbytes in BIG_BYTES:
            nrows = -(-nbytes // (BIG_C * esize))
            x = torch.randn(nrows, BIG_C, device="cuda").to(dtype)
            gamma = torch.randn(BIG_C, device="cuda")
            beta = torch.randn(BIG_C, device="cuda")
            g_t, b_t = gamma.to(dtype), beta.to(dtype)
            out = torch.empty_like(x)
            moved = 2 * x.numel() * esize  # read x + write y (gamma/beta are negligible)
            label = "LN bandwidth %d MiB %s" % (nbytes >> 20, str(dtype)[6:])
            mine = measure(timer, lambda: lib.layernorm(x, gamma, beta, LN_EPS, out=out), ["graph"], errors,
                           label + " mvt")
            theirs = measure(timer, lambda: F.layer_norm(x, (BIG_C,), g_t, b_t, LN_EPS), ["graph"], errors,
                             label + " torch")
            tm, tt = us(mine), us(theirs)
            copy_gbps = copy_by_bytes.get(nbytes)
            row = {"dtype": str(dtype)[6:], "C": BIG_C, "rows": nrows, "x_bytes": x.numel() * esize,
                   "mvt": mine, "torch": theirs,
                   "mvt_gbps": moved / (tm * 1e-6) / 1e9 if tm else None,
                   "torch_gbps": moved / (tt * 1e-6) / 1e9 if tt else None,
                   "copy_gbps": copy_gbps}
            row["mvt_fraction_of_copy"] = row["mvt_gbps"] / copy_gbps if row["mvt_gbps"] and copy_gbps else None
            rows.append(row)
            x = out = None  # free the buffers before the next size (the lambdas above close over them)
    return rows


def bench_attention(torch, lib, timer, vtimer, models, batches, dtypes, errors, variants=True, modes=("kernel",),
                    math=False):
    F = torch.nn.functional
    from torch.nn.attention import SDPBackend, sdpa_kernel

    backends = [("sdpa_flash", SDPBackend.FLASH_ATTENTION), ("sdpa_efficient", SDPBackend.EFFICIENT_ATTENTION),
                ("sdpa_cudnn", SDPBackend.CUDNN_ATTENTION)]
    if math:
        backends.append(("sdpa_math", SDPBackend.MATH))
    impls = lib.attention_impls()
    rows = []
    for dtype in dtypes:
        for model, stage, n, heads, d in attention_shapes(models):
            scale = d ** -0.5
            hd = heads * d
            for b in batches:
                seqs = b * PATCH_AREA
                qkv = torch.randn(b, PATCH_AREA, n, 3 * hd, device="cuda").to(dtype)
                out = torch.empty(b, PATCH_AREA, n, hd, device="cuda", dtype=dtype)
                # strided [B*4, H, N, D] views of the packed tensor, as the model produces them
                q, k, v = (t.reshape(seqs, n, heads, d).transpose(1, 2) for t in qkv.split(hd, dim=-1))
                qc, kc, vc = q.contiguous(), k.contiguous(), v.contiguous()
                label = "Attn %s N=%d H=%d D=%d seqs=%d %s" % (model, n, heads, d, seqs, str(dtype)[6:])
                row = {"model": model, "stage": stage, "N": n, "heads": heads, "head_dim": d, "sequences": seqs,
                       "batch": b, "dtype": str(dtype)[6:]}
                auto_impl = lib.attention_auto_impl(qkv, num_heads=heads)
                row["auto_impl"] = impls.get(auto_impl, str(auto_impl))
                mine = lambda impl=0: lib.attention_packed(qkv, scale, num_heads=heads, out=out, impl=impl)  # noqa
                ref = torch.matmul(torch.softmax(torch.matmul(q.double(), k.double().transpose(-1, -2)) * scale, -1),
                                   v.double()).transpose(1, 2).reshape(b, PATCH_AREA, n, hd)
                mine()
                torch.cuda.synchronize()
                row["rel_err_vs_fp64"] = rel_err(torch, out, ref)
                row["mvt"] = measure(timer, mine, ["graph"] + list(modes), errors, label + " mvt")
                row["mvt_impls"] = {}
                for impl, name in impls.items():
                    if impl == 0 or not variants:
                        continue
                    try:
                        mine(impl)
                        torch.cuda.synchronize()
                    except Exception:  # noqa: BLE001 - this implementation does not take this shape/dtype
                        continue
                    row["mvt_impls"][name] = measure(vtimer, lambda i=impl: mine(i), ["graph"], errors,
                                                     label + " " + name)
                torch_paths = {
                    "sdpa": lambda: F.scaled_dot_product_attention(q, k, v, scale=scale),
                    "sdpa_contiguous_inputs": lambda: F.scaled_dot_product_attention(qc, kc, vc, scale=scale),
                    "explicit": lambda: torch.matmul(torch.softmax(torch.matmul(q, k.transpose(-1, -2)) * scale, -1), v),
                    "explicit_contiguous_inputs": lambda: torch.matmul(
                        torch.softmax(torch.matmul(qc, kc.transpose(-1, -2)) * scale, -1), vc),
                }
                for name, backend in backends:
                    torch_paths[name] = (lambda be=backend: _with_backend(sdpa_kernel, be, F, qc, kc, vc, scale))
                row["torch"] = {}
                for name, fn in torch_paths.items():
                    try:
                        res = fn()
                        torch.cuda.synchronize()
                    except Exception as e:  # noqa: BLE001 - backend cannot run this shape / dtype
                        row["torch"][name] = {"unsupported": _first_line(e, 160)}
                        continue
                    pmodes = ["graph"] + (list(modes) if name in ("sdpa", "explicit") else [])
                    row["torch"][name] = measure(vtimer, fn, pmodes, errors, label + " " + name)
                    row["torch"][name]["rel_err_vs_fp64"] = rel_err(
                        torch, res.transpose(1, 2).reshape(b, PATCH_AREA, n, hd), ref)
                timed = {name: us(e) for name, e in row["torch"].items() if us(e)}
                if timed:
                    best = min(timed, key=timed.get)
                    # A-B-A-B: plugin (auto) and the fastest PyTorch path again (full reps), means of the medians
                    again_mvt, again_torch = measure_pair(timer, mine, torch_paths[best], errors, label + " mvt",
                                                          label + " " + best)
                    for entry, again in ((row["mvt"], again_mvt), (row["torch"][best], again_torch)):
                        if entry.get("graph") and again:
                            runs = [entry["graph"]["us"]] + again.get("repeats_us", [again["us"]])
                            entry["graph"] = dict(entry["graph"], us=sum(runs) / len(runs), repeats_us=runs)
                    timed[best] = us(row["torch"][best])
                    best = min(timed, key=timed.get)  # still the fastest after the re-timing?
                    row["torch_fastest"] = {"path": best, "us": timed[best]}
                    tm = us(row["mvt"])
                    row["speedup"] = timed[best] / tm if tm else None
                km = us(row["mvt"], "kernel")
                kernel_torch = {name: us(e, "kernel") for name, e in row["torch"].items() if us(e, "kernel")}
                if km and kernel_torch:
                    bestk = min(kernel_torch, key=kernel_torch.get)
                    row["speedup_kernel"] = kernel_torch[bestk] / km
                    row["torch_fastest_kernel"] = {"path": bestk, "us": kernel_torch[bestk]}
                rows.append(row)
                print("  [%.0f s] %s: %s us, fastest PyTorch %s" % (time.time() - T0[0], label, fmt(us(row["mvt"])),
                      fmt((row.get("torch_fastest") or {}).get("us"))), file=sys.stderr, flush=True)
                q = k = v = qc = kc = vc = qkv = out = None
    return rows


def _with_backend(sdpa_kernel, backend, F, q, k, v, scale):
    with sdpa_kernel(backend):
        return F.scaled_dot_product_attention(q, k, v, scale=scale)


# ------------------------------------------------------------------------------------------------ report
def fmt(v, spec="%.2f"):
    return "-" if v is None else spec % v


def print_tables(res):
    print("\nDevice: %s | torch %s | %s" % (res["device"], res["torch"], res["timing_method"]))
    print("\nDevice-to-device copy (torch copy_, read+write bytes):")
    for r in res["copy"]:
        print("  %4d MiB  %8s us  %8s GB/s" % (r["bytes"] >> 20, fmt(us(r["time"]), "%.1f"), fmt(r["gbps"], "%.0f")))

    print("\nLayerNorm (us per call: graph = CUDA-graph replay median; kernel = profiler kernel time)")
    print("  %-6s %-4s %4s %5s %6s | %8s %8s %-8s | %8s %8s | %7s %7s | %9s %s" % (
        "stage", "dt", "C", "N", "rows", "mvt", "mvt-kern", "bestTPR", "torch", "th-kern", "speedup", "sp-kern",
        "relerr", "verdict"))
    for r in res["layernorm"]:
        tprs = {t: us(v) for t, v in r["mvt_tpr"].items() if us(v)}
        best = min(tprs, key=tprs.get) if tprs else "-"
        print("  %-6s %-4s %4d %5d %6d | %8s %8s %-8s | %8s %8s | %7s %7s | %9s %s" % (
            r["stage"], r["dtype"][:4], r["C"], r["N"], r["rows"], fmt(us(r["mvt"])), fmt(us(r["mvt"], "kernel")),
            "%s:%s" % (best, fmt(tprs.get(best), "%.2f")) if tprs else "-",
            fmt(us(r["torch"])), fmt(us(r["torch"], "kernel")), fmt(r["speedup"]), fmt(r.get("speedup_kernel")),
            fmt(r["rel_err_vs_fp64"], "%.1e"), verdict(r["speedup"], TARGET_LN_SPEEDUP)))

    print("\nLayerNorm bandwidth (C=%d, read x + write y)" % BIG_C)
    for r in res["layernorm_bandwidth"]:
        print("  %-8s %5d MiB  mvt %8s us %7s GB/s (%s of copy %s GB/s) | torch %8s us %7s GB/s %s" % (
            r["dtype"], r["x_bytes"] >> 20, fmt(us(r["mvt"]), "%.1f"), fmt(r["mvt_gbps"], "%.0f"),
            fmt(r["mvt_fraction_of_copy"] and 100 * r["mvt_fraction_of_copy"], "%.0f%%"), fmt(r["copy_gbps"], "%.0f"),
            fmt(us(r["torch"]), "%.1f"), fmt(r["torch_gbps"], "%.0f"),
            verdict(r["mvt_fraction_of_copy"], TARGET_LN_COPY_FRACTION)))

    print("\nAttention, packed qkv [B,4,N,3*H*D] (us per call, graph replay median; fastest = min over PyTorch paths)")
    print("  %-9s %-4s %4s %2s %3s %4s | %-16s %7s %7s | %-16s %7s | %7s %7s %7s | %-22s %7s | %6s %6s | %8s %s" % (
        "model", "dt", "N", "H", "D", "seqs", "mvt impl", "mvt", "kern", "best mvt impl", "us", "sdpa", "sdpa-c",
        "explic", "fastest PyTorch path", "us", "speedup", "sp-krn", "relerr", "verdict"))
    for r in res["attention"]:
        impls = {k: us(v) for k, v in r["mvt_impls"].items() if us(v)}
        bi = min(impls, key=impls.get) if impls else None
        tf = r.get("torch_fastest") or {}
        print("  %-9s %-4s %4d %2d %3d %4d | %-16s %7s %7s | %-16s %7s | %7s %7s %7s | %-22s %7s | %6s %6s | %8s %s" % (
            r["model"], r["dtype"].replace("float", "fp"), r["N"], r["heads"], r["head_dim"], r["sequences"],
            r["auto_impl"][:16],
            fmt(us(r["mvt"])), fmt(us(r["mvt"], "kernel")), (bi or "-")[:16], fmt(impls.get(bi)),
            fmt(us(r["torch"].get("sdpa"))), fmt(us(r["torch"].get("sdpa_contiguous_inputs"))),
            fmt(us(r["torch"].get("explicit"))), tf.get("path", "-")[:22], fmt(tf.get("us")), fmt(r.get("speedup")),
            fmt(r.get("speedup_kernel")), fmt(r["rel_err_vs_fp64"], "%.1e"),
            verdict(r.get("speedup"), TARGET_ATTN_SPEEDUP[r["dtype"]])))
    for dtype, label in (("float16", "FP16"), ("float32", "FP32")):
        sweep = [r for r in res["attention"] if r["mvt_impls"] and r["dtype"] == dtype]
        if sweep:
            print_sweep(sweep, label)


def print_sweep(sweep, label):
    """One line per shape: the time of every tiling (names without their tc_ / x3_ prefix)."""
    names = sorted({k for r in sweep for k in r["mvt_impls"]}, key=lambda k: (k != "simt", k))
    print("\n%s tiling sweep (us, graph replay; * = fastest; auto = what auto picks)" % label)
    print("  %-9s %4s %3s %5s | %-16s | %s" % ("model", "N", "D", "B*4*H", "auto", " ".join(
        "%8s" % n.replace("tc_", "").replace("x3_", "")[:8] for n in names)))
    for r in sweep:
        t = {k: us(v) for k, v in r["mvt_impls"].items() if us(v)}
        fastest = min(t, key=t.get) if t else None
        print("  %-9s %4d %3d %5d | %-16s | %s" % (r["model"], r["N"], r["head_dim"], r["sequences"] * r["heads"],
              r["auto_impl"][:16], " ".join("%7s%s" % (fmt(t.get(n)), "*" if n == fastest else " ")
                                            for n in names)))


def verdict(value, target):
    if value is None:
        return "n/a"
    return "MET" if value >= target else "MISSED (%.0f%% short)" % (100.0 * (1.0 - value / target))


def summarize(res):
    s = {}
    ln = [r for r in res["layernorm"] if r["speedup"] is not None]
    s["layernorm_min_speedup"] = min((r["speedup"] for r in ln), default=None)
    s["layernorm_rows_below_target"] = ["%s C%d %s B%d: %.2fx" % (r["stage"], r["C"], r["dtype"], r["batch"],
                                                                  r["speedup"])
                                        for r in ln if r["speedup"] < TARGET_LN_SPEEDUP]
    bw = [r for r in res["layernorm_bandwidth"] if r["mvt_fraction_of_copy"] is not None]
    s["layernorm_min_fraction_of_copy"] = min((r["mvt_fraction_of_copy"] for r in bw), default=None)
    targets = {
        "layernorm_speedup_>=%.1fx" % TARGET_LN_SPEEDUP: bool(ln) and not s["layernorm_rows_below_target"],
        "layernorm_>=%d%%_of_copy_bw" % int(TARGET_LN_COPY_FRACTION * 100):
            bool(bw) and s["layernorm_min_fraction_of_copy"] >= TARGET_LN_COPY_FRACTION,
    }
    for dt, target in sorted(TARGET_ATTN_SPEEDUP.items()):
        at = [r for r in res["attention"] if r["dtype"] == dt and r.get("speedup") is not None]
        key = "attention_%s" % ("fp16" if dt == "float16" else "fp32")
        s[key + "_min_speedup"] = min((r["speedup"] for r in at), default=None)
        s[key + "_rows_below_target"] = ["%s N%d D%d B%d: %.2fx vs %s" % (
            r["model"], r["N"], r["head_dim"], r["batch"], r["speedup"], r["torch_fastest"]["path"])
            for r in at if r["speedup"] < target]
        s[key + "_rows_met"] = "%d/%d" % (len(at) - len(s[key + "_rows_below_target"]), len(at))
        targets["%s_speedup_>=%.1fx" % (key, target)] = bool(at) and not s[key + "_rows_below_target"]
    s["targets"] = targets
    return s


def print_verdicts(summary):
    print("\nTargets:")
    for name, ok in summary["targets"].items():
        print("  %-40s %s" % (name, "MET" if ok else "MISSED"))
    for key in ("layernorm_rows_below_target", "attention_fp16_rows_below_target", "attention_fp32_rows_below_target"):
        rows = summary.get(key) or []
        if rows:
            print("  %s (%d): %s" % (key, len(rows), "; ".join(rows)))


def main(argv=None):
    ap = cli.make_parser(__doc__.split("\n")[0], prog="bench_plugins.py")
    ap.add_argument("--out", help="write all results as JSON here")
    ap.add_argument("--lib", help="path of libmvt_kernels.so (default: $MVT_KERNELS_LIB or plugin/build/)")
    ap.add_argument("--batches", type=int, nargs="+", default=[1, 4, 8])
    ap.add_argument("--dtypes", nargs="+", default=["float32", "float16"], choices=["float32", "float16"])
    ap.add_argument("--models", nargs="+", default=list(MODELS), choices=list(MODELS))
    ap.add_argument("--reps", type=int, default=200, help="timed replays / calls per measurement (median)")
    ap.add_argument("--variant-reps", type=int, default=50,
                    help="replays per measurement of the sweep (every tiling / group width) and of the PyTorch paths "
                         "before the fastest one is re-timed with --reps")
    ap.add_argument("--no-kernel-times", dest="kernel_times", action="store_false",
                    help="skip the profiler kernel times")
    ap.add_argument("--math", action="store_true", help="also time the SDPA math backend")
    ap.add_argument("--calls", type=int, default=100, help="back-to-back calls captured per graph replay")
    ap.add_argument("--no-variants", dest="variants", action="store_false",
                    help="skip timing every forced LayerNorm group width / attention tiling (only auto)")
    ap.add_argument("--only", nargs="+", choices=["copy", "layernorm", "bandwidth", "attention"],
                    default=["copy", "layernorm", "bandwidth", "attention"])
    args = ap.parse_args(argv)
    cli.check_outputs(files={"--out": args.out})
    try:
        import torch
    except ImportError:
        raise BenchError("needs torch")
    if not torch.cuda.is_available():
        raise BenchError("no CUDA GPU visible to torch")
    from mobilevit_trt.kernels import MvtKernels
    lib = MvtKernels(args.lib)  # UserError (one line) when the library is not built or not findable
    warm_gpu(torch)
    torch.backends.cuda.matmul.allow_tf32 = False  # FP32 baselines in true FP32, like the plugin
    torch.backends.cudnn.allow_tf32 = False
    dtypes = [getattr(torch, d) for d in args.dtypes]
    timer = Timer(torch, args.reps, args.calls)
    vtimer = Timer(torch, args.variant_reps, args.calls)
    modes = ("kernel",) if args.kernel_times else ()
    big_timer = Timer(torch, args.reps, min(args.calls, 5))  # >= 64 MiB tensors: each call is >= 46 us
    props = torch.cuda.get_device_properties(0)
    res = {
        "device": "%s (cc %d.%d, %d SMs)" % (props.name, props.major, props.minor, props.multi_processor_count),
        "torch": torch.__version__, "cuda": torch.version.cuda, "library": str(lib.path),
        "command": " ".join([Path(sys.executable).name] + sys.argv),
        "timing_method": ("graph: %d back-to-back calls per CUDA-graph replay (%d for >= 64 MiB), median of %d "
                          "replays / calls (%d in the sweep); plugin vs PyTorch timed A-B-A-B, mean of the medians" % (
                              args.calls, big_timer.calls, args.reps, args.variant_reps)),
        "copy": [], "layernorm": [], "layernorm_bandwidth": [], "attention": [], "errors": [],
    }
    t0 = time.time()
    if "copy" in args.only or "bandwidth" in args.only:
        res["copy"] = bench_copy(torch, big_timer, res["errors"])
    if "layernorm" in args.only:
        res["layernorm"] = bench_layernorm(torch, lib, timer, vtimer, args.models, args.batches, dtypes, res["errors"],
                                           args.variants, modes)
    if "bandwidth" in args.only:
        res["layernorm_bandwidth"] = bench_layernorm_bandwidth(torch, lib, big_timer, dtypes, res["copy"],
                                                               res["errors"])
    if "attention" in args.only:
        res["attention"] = bench_attention(torch, lib, timer, vtimer, args.models, args.batches, dtypes, res["errors"],
                                           args.variants, modes, args.math)
    res["seconds"] = time.time() - t0
    res["summary"] = summarize(res)
    if args.out:
        from mobilevit_trt.fileio import write_text
        write_text(args.out, json.dumps(res, indent=1, default=str))
    print_tables(res)
    if res["errors"]:
        print("\n%d measurement(s) failed (first 10):" % len(res["errors"]))
        for e in res["errors"][:10]:
            print("  " + e)
    print_verdicts(res["summary"])
    print("\nSummary: " + json.dumps(res["summary"], default=str))
    return 0


if __name__ == "__main__":
    cli.run_main(main)
