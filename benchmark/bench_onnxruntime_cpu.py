#!/usr/bin/env python3
"""CPU performance study: ONNX Runtime latency of every ONNX variant of a pipeline run, interleaved.

Reads the ONNX files a `pipeline.py` run made (default: runs/default/onnx), and times each (variant, batch) in
``--rounds`` interleaved rounds of ``--iters`` calls (so a burst of load on the machine hits every variant alike);
the reported figure is the median over rounds of the per-round p50, with the spread of the round p50s. Also prints
node counts per variant and latency ratios (base vs --opt, static vs dynamic, FP32 vs FP16 vs INT8).

    python benchmark/bench_onnxruntime_cpu.py --run runs/default --out docs/data/cpu_onnxruntime.json
"""
import os

from mobilevit_trt import cli

VARIANTS = [  # (series, file stem or stem pattern with {b})
    ("base_static", "base_b{b}"), ("base_dynamic", "base_dynamic"), ("opt_static", "opt_b{b}"),
    ("opt_dynamic", "opt_dynamic"), ("opt_dynamic_fp16", "opt_dynamic_fp16"),
    ("opt_dynamic_int8_entropy", "opt_dynamic_int8_entropy"), ("opt_dynamic_int8_minmax", "opt_dynamic_int8_minmax"),
    ("qat_wa_dynamic", "qat_wa_dynamic"),
]
RATIOS = [("opt vs base (static)", "base_static", "opt_static"), ("opt vs base (dynamic)", "base_dynamic", "opt_dynamic"),
          ("static vs dynamic (base)", "base_dynamic", "base_static"),
          ("static vs dynamic (opt)", "opt_dynamic", "opt_static"),
          ("FP16 vs FP32 (opt dynamic)", "opt_dynamic", "opt_dynamic_fp16"),
          ("INT8 entropy vs FP32 (opt dynamic)", "opt_dynamic", "opt_dynamic_int8_entropy"),
          ("INT8 QAT W8A8 vs FP32 (opt dynamic)", "opt_dynamic", "qat_wa_dynamic")]


def main(argv=None):
    p = cli.make_parser(__doc__.splitlines()[0], prog="bench_onnxruntime_cpu.py")
    p.add_argument("--run", default="runs/default", help="pipeline run folder (its onnx/ sub-folder is read)")
    p.add_argument("--batch", nargs="+", type=int, default=[1, 4, 8])
    p.add_argument("--rounds", type=cli.positive_int, default=5)
    p.add_argument("--iters", type=cli.positive_int, default=10)
    p.add_argument("--threads", type=int, default=0, help="ONNX Runtime intra-op threads (0: ONNX Runtime chooses)")
    p.add_argument("--out", default=None, help="JSON results")
    args = p.parse_args(argv)
    cli.check_outputs(files={"--out": args.out})

    import multiprocessing
    import platform

    import onnx
    import onnxruntime as ort

    from mobilevit_trt.errors import UserError
    from mobilevit_trt.fileio import write_json
    from mobilevit_trt.ort_bench import bench_interleaved, onnx_static_batch
    from mobilevit_trt.pipeline_report import md_table

    onnx_dir = os.path.join(args.run, "onnx")
    if not os.path.isdir(onnx_dir):
        raise UserError("%s not found: run pipeline.py --out %s first" % (onnx_dir, args.run))
    jobs, nodes = [], {}
    for series, stem in VARIANTS:
        for b in args.batch:
            path = os.path.join(onnx_dir, stem.format(b=b) + ".onnx")
            if not os.path.isfile(path):
                continue
            static = onnx_static_batch(path)
            if static is not None and static != b:
                continue
            jobs.append((series, b, path))
            if series not in nodes:
                nodes[series] = len(onnx.load(path, load_external_data=False).graph.node)
    if not jobs:
        raise UserError("no ONNX variants in %s" % onnx_dir)
    rows = bench_interleaved(jobs, rounds=args.rounds, iters=args.iters, threads=args.threads,
                             log=lambda m: print(m, flush=True))
    for r in rows:
        r["nodes"] = nodes[r["variant"]]
    at = {(r["variant"], r["batch"]): r["latency_ms_p50"] for r in rows}
    ratios = []
    for label, ref, test in RATIOS:
        row = {"comparison": label}
        for b in args.batch:
            if (ref, b) in at and (test, b) in at:
                row["b%d" % b] = at[(ref, b)] / at[(test, b)]
        ratios.append(row)
    names = [s for s, _ in VARIANTS if any(r["variant"] == s for r in rows)]
    lat = []
    for b in args.batch:
        row = {"batch": b}
        for s in names:
            r = [x for x in rows if x["variant"] == s and x["batch"] == b]
            if r:
                row[s] = "%.2f [%.2f..%.2f]" % (r[0]["latency_ms_p50"], r[0]["latency_ms_min"], r[0]["latency_ms_max"])
        lat.append(row)
    machine = {"cpu": platform.processor() or platform.machine(), "cores": multiprocessing.cpu_count(),
               "onnxruntime": ort.__version__, "threads": args.threads or "default"}
    print("\nmachine: %s" % machine)
    print("\nnode counts: " + ", ".join("%s %d" % (k, v) for k, v in nodes.items()))
    print("\nlatency ms per batch (median of %d round p50s of %d calls; [min..max] of the round p50s)\n" % (
        args.rounds, args.iters))
    print(md_table(lat, ["batch"] + names))
    print("\nspeed-up (reference latency / variant latency; > 1: the second is faster)\n")
    print(md_table(ratios, ["comparison"] + ["b%d" % b for b in args.batch], fmt={"b%d" % b: "%.2f" for b in args.batch}))
    if args.out:
        write_json(args.out, {"machine": machine, "rounds": args.rounds, "iters": args.iters, "nodes": nodes,
                              "rows": rows, "ratios": ratios})
    return 0


if __name__ == "__main__":
    cli.run_main(main)
