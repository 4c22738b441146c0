#!/usr/bin/env python3
"""PyTorch GPU baselines a user would pick instead of TensorRT: MobileViT latency/throughput per batch size.

Variants: eager FP32, eager FP16, eager FP16 channels-last, CUDA-graph replay of eager FP16, torch.compile
(default mode) FP16 and torch.compile(mode="reduce-overhead", i.e. with CUDA graphs) FP16.
Timing: CUDA events around ``--iters`` back-to-back calls after ``--warmup`` calls, repeated ``--repeats`` times;
the table shows the median ms per batch over repeats and the spread (min..max).

    python benchmark/bench_torch_gpu.py --arch xxs s --batch 1 4 8 64 --out results.json
"""
import statistics
import time

from mobilevit_trt import cli

VARIANTS = ("eager_fp32", "eager_fp16", "eager_fp16_channels_last", "cudagraph_fp16", "compile_fp16",
            "compile_cudagraphs_fp16")


def time_fn(fn, x, warmup, iters, repeats):
    import torch
    for _ in range(warmup):
        fn(x)
    torch.cuda.synchronize()
    per_iter = []
    for _ in range(repeats):
        start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        start.record()
        for _ in range(iters):
            fn(x)
        end.record()
        end.synchronize()
        per_iter.append(start.elapsed_time(end) / iters)
    return per_iter


def make_runner(variant, model_fp32, batch, img):
    import copy

    import torch
    dtype = torch.float32 if variant == "eager_fp32" else torch.float16
    model = copy.deepcopy(model_fp32).to(dtype)
    x = torch.randn(batch, 3, img, img, device="cuda", dtype=dtype)
    if variant == "eager_fp16_channels_last":
        model = model.to(memory_format=torch.channels_last)
        x = x.contiguous(memory_format=torch.channels_last)
    if variant in ("eager_fp32", "eager_fp16", "eager_fp16_channels_last"):
        return (lambda t: model(t)), x, model
    if variant == "cudagraph_fp16":
        static_x = x.clone()
        s = torch.cuda.Stream()
        s.wait_stream(torch.cuda.current_stream())
        with torch.cuda.stream(s):
            for _ in range(3):
                model(static_x)
        torch.cuda.current_stream().wait_stream(s)
        g = torch.cuda.CUDAGraph()
        with torch.cuda.graph(g):
            static_out = model(static_x)

        def replay(t):
            g.replay()
            return static_out
        return replay, static_x, model
    mode = "reduce-overhead" if variant == "compile_cudagraphs_fp16" else "default"
    torch._dynamo.reset()  # every (model, batch) compiles fresh: no recompile limit, no fallback to eager
    compiled = torch.compile(model, mode=mode, dynamic=False)
    return (lambda t: compiled(t)), x, model


def main(argv=None):
    p = cli.make_parser(__doc__.splitlines()[0], prog="bench_torch_gpu.py")
    p.add_argument("--arch", nargs="+", default=["xxs", "s"])
    p.add_argument("--batch", nargs="+", type=int, default=[1, 4, 8, 64])
    p.add_argument("--variants", nargs="+", default=list(VARIANTS), choices=VARIANTS)
    p.add_argument("--img-size", type=int, default=256)
    p.add_argument("--warmup", type=int, default=20)
    p.add_argument("--iters", type=int, default=50)
    p.add_argument("--repeats", type=int, default=7)
    p.add_argument("--out", default=None, help="JSON results")
    args = p.parse_args(argv)
    cli.check_outputs(files={"--out": args.out})

    import torch
    from mobilevit_trt.errors import UserError
    from mobilevit_trt.fileio import write_json
    if not torch.cuda.is_available():
        raise UserError("no CUDA GPU visible to PyTorch: this benchmark times MobileViT on the GPU")
    from MobileViT_Pytorch.models import build_mobilevit
    torch.backends.cudnn.benchmark = True
    dev = torch.cuda.get_device_name(0)
    print("device: %s, torch %s, CUDA %s" % (dev, torch.__version__, torch.version.cuda))
    rows = []
    for arch in args.arch:
        torch.manual_seed(0)
        base = build_mobilevit(arch, img_size=args.img_size).eval().cuda()
        for variant in args.variants:
            for b in args.batch:
                t0 = time.time()
                try:
                    with torch.no_grad():
                        fn, x, model = make_runner(variant, base, b, args.img_size)
                        ref = base(x.float().contiguous())
                        out = fn(x).float()
                        err = float((out - ref).abs().max())
                        ms = time_fn(fn, x, args.warmup, args.iters, args.repeats)
                except Exception as e:  # report and go on: one failing variant should not hide the rest
                    rows.append({"arch": arch, "variant": variant, "batch": b,
                                 "error": (str(e).strip().splitlines() or ["failed without a message"])[0][:200]})
                    print("%-4s %-26s b=%-3d FAILED %s" % (arch, variant, b, rows[-1]["error"]))
                    continue
                med = statistics.median(ms)
                row = {"arch": arch, "variant": variant, "batch": b, "ms_median": med, "ms_min": min(ms),
                       "ms_max": max(ms), "img_per_s": b * 1000.0 / med, "max_abs_vs_fp32": err,
                       "setup_s": time.time() - t0}
                rows.append(row)
                print("%-4s %-26s b=%-3d %8.3f ms [%.3f..%.3f] %9.0f img/s  maxdiff %.2e  (setup %.0fs)" % (
                    arch, variant, b, med, min(ms), max(ms), row["img_per_s"], err, row["setup_s"]), flush=True)
                del fn, x, model
                torch.cuda.empty_cache()
    result = {"device": dev, "torch": torch.__version__, "cuda": torch.version.cuda, "warmup": args.warmup,
              "iters": args.iters, "repeats": args.repeats, "rows": rows}
    if args.out:
        write_json(args.out, result)
    return 0


if __name__ == "__main__":
    cli.run_main(main)
