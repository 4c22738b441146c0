"""Stage 4: latency/throughput of a TensorRT engine per batch size, and its output error against reference data.

Examples:
  python test_trt.py --trt_path target/MobileViT_b4.trt --batch 4 --data benchmark/data
  python test_trt.py --trt_path target/MobileViT_dynamic_opt_plugin_int8.trt --dynamic --cudaGraph --ProfilerLayer
  python test_trt.py --trt_path target/dyn.trt --data benchmark/data --results-file runs/trt.csv
  python test_trt.py --trt_path target/dyn.trt --batch 8 --export-times times.json --ProfilerLayer \
      --export-profile profile.json       # the JSON layouts of trtexec --exportTimes / --exportProfile
  python test_trt.py --trt_path target/dyn.trt --batch 8 --streams 2   # pipelined throughput on 2 streams

The ``mobilevit-trt bench`` command; ``python test_trt.py`` (repository root) runs the same ``main``.
"""
from mobilevit_trt import cli

PROG = "test_trt.py"  # the parser's name when run as the root script; mobilevit-trt passes its own
LAYER_ROWS = 25  # per-layer table: the slowest N layers, then the rest summed


def add_export_args(parser):
    """trtexec-shaped timing files and the pipelined throughput mode."""
    g = parser.add_argument_group("trtexec-shaped output")
    g.add_argument("--export-times", default=None, metavar="FILE",
                   help="per-iteration timings as trtexec --exportTimes writes them (one file per batch size: "
                        "FILE, or FILE.b<batch>.json for several); the timed loop has no copies, so the H2D/D2H "
                        "fields are written as trtexec --noDataTransfers writes them (0 ms)")
    g.add_argument("--export-profile", default=None, metavar="FILE",
                   help="with --ProfilerLayer: per-layer times as trtexec --exportProfile writes them")
    g.add_argument("--streams", type=cli.positive_int, default=None, metavar="N",
                   help="also measure pipelined throughput: N execution contexts on N streams, executions "
                        "enqueued back to back (trtexec --infStreams=N); host wall time over all of them")
    return g


def build_parser(prog=PROG):
    p = cli.make_parser(__doc__.splitlines()[0], prog=prog)
    cli.add_trt_run_args(p)
    add_export_args(p)
    return p


def main(argv=None, prog=PROG):
    args = build_parser(prog).parse_args(argv)
    from mobilevit_trt.errors import UserError
    if not args.trt_path:
        raise UserError("--trt_path is required")
    if args.warmup < 0:
        raise UserError("--warmup must be >= 0")
    if args.export_profile and not args.profile_layers:
        raise UserError("--export-profile needs --ProfilerLayer (the per-layer times it writes)")
    cli.check_outputs(results_file=args.results_file,
                      files={"--export-times": args.export_times, "--export-profile": args.export_profile})
    cli.require_file(args.trt_path, "engine")
    from mobilevit_trt import bench, report
    from mobilevit_trt.bench import TABLE_COLUMNS, TABLE_HEADERS
    from mobilevit_trt.runtime import benchmark_engine

    traces = [] if args.export_times else None
    rows, meta, layers = benchmark_engine(args.trt_path, data=args.data, batches=args.batch, warmup=args.warmup,
                                          iters=args.iters, cuda_graph=args.cuda_graph,
                                          profile_layers=args.profile_layers, atol=args.atol, plugins=args.plugin,
                                          verbose=args.verbose, **({"traces": traces} if traces is not None else {}))
    side = meta.get("sidecar") or {}
    if args.dynamic and not side.get("dynamic", True):
        print("note: --dynamic given, but the engine has a static batch")
    dev = meta["device"]
    trt_name = "%s %s" % ("TensorRT-RTX" if meta["tensorrt"]["flavour"] == "tensorrt_rtx" else "TensorRT",
                          meta["tensorrt"]["version"])
    print("%s on %s (compute %s); %s engine%s; %d warm-up + %d timed runs%s; latency = GPU time per run" % (
        trt_name, dev["name"], dev["compute_capability"], side.get("precision", "?"),
        "" if side else " (no sidecar)", args.warmup, args.iters, ", CUDA graphs" if meta["cuda_graph"] else
        (", CUDA graphs asked for but not used (the graph column says why per batch)" if args.cuda_graph else "")))
    print(report.format_table(rows, TABLE_COLUMNS, TABLE_HEADERS))
    print("verdict: max abs diff <= %g (abs diff = |TensorRT - reference logits|)" % meta["atol"])
    for batch, table in layers:
        top = table[:LAYER_ROWS]
        rest = table[LAYER_ROWS:]
        if rest:
            top = top + [{"layer": "(%d more layers)" % len(rest), "ms": sum(r["ms"] for r in rest),
                          "share_pct": sum(r["share_pct"] for r in rest), "calls": None}]
        print()
        print(report.format_table(top, ["layer", "ms", "share_pct"], {"ms": "ms/run", "share_pct": "share %"},
                                  title="per-layer times, batch %d (sum %.3f ms/run)" % (
                                      batch, sum(r["ms"] for r in table))))
    layout = bench.trtexec_layout(meta["tensorrt"])
    if args.export_times:
        paths = bench.per_batch_paths(args.export_times, [t["batch"] for t in traces])
        for path, t in zip(paths, traces):
            bench.write_trtexec_times(path, bench.trtexec_times(t["result"], layout))
        print("trtexec --exportTimes layout (TensorRT %s; no copies in the loop: H2D/D2H 0 ms, as "
              "--noDataTransfers): %s" % (layout, ", ".join(paths)))
        meta["export_times"] = paths
    if args.export_profile:
        paths = bench.per_batch_paths(args.export_profile, [b for b, _ in layers])
        for path, (b, table) in zip(paths, layers):
            bench.write_trtexec_profile(path, bench.trtexec_profile(bench.profile_layers_from_rows(table, args.iters),
                                                                    args.iters, layout))
        print("trtexec --exportProfile layout (TensorRT %s): %s" % (layout, ", ".join(paths)))
        meta["export_profile"] = paths
    if args.streams:
        from mobilevit_trt.backends import TensorRTBackend
        refs = bench.load_reference_data(args.data) if args.data else None
        srows = bench.streams_rows(
            lambda: TensorRTBackend(args.trt_path, plugins=args.plugin, cuda_graph=args.cuda_graph,
                                    purpose="test_trt.py --streams"),
            args.streams, refs, args.batch, args.data, warmup=args.warmup, iters=args.iters)
        print()
        print(report.format_table(srows, bench.STREAM_COLUMNS, bench.STREAM_HEADERS,
                                  title="pipelined throughput: %d streams, %d executions each, back to back "
                                        "(trtexec --infStreams=%d)" % (args.streams, args.iters, args.streams)))
        meta["streams"] = srows
    if args.results_file:
        meta["layers"] = [{"batch": b, "layers": t} for b, t in layers]
        report.write_results(args.results_file, rows, meta=meta)
        print("results: %s" % args.results_file)
    failed = [r for r in rows if r.get("verdict") == "FAILED"]
    return 1 if failed else 0

