"""Run every stage this machine supports on one model, into one run folder, and write one report.

Stages: export (base and --opt, static and dynamic) -> graph surgery -> FP16 and INT8 variants (each checked in
ONNX Runtime) -> engine builds (TensorRT if present, else TensorRT-RTX ahead-of-time on the CPU) -> with TensorRT
and a GPU, engine benchmarks -> accuracy of every variant -> ONNX Runtime CPU latency -> summary.md, JSON, CSV,
PNG plots.  Stages this machine cannot run are listed as skipped with the reason.  Re-running skips stages whose
inputs did not change (content hash) unless --force.

The ``mobilevit-trt pipeline`` command; ``python pipeline.py`` (repository root) runs the same ``main``.
"""
import os
import sys

from mobilevit_trt import cli
from mobilevit_trt.plan import MIXED_MAX_DROP
from mobilevit_trt.preprocess import add_preprocess_args

PROG = "pipeline.py"  # the parser's name when run as the root script; mobilevit-trt passes its own


def build_parser(prog=PROG):
    p = cli.make_parser(__doc__.splitlines()[0], prog=prog)
    cli.add_model_args(p)
    p.add_argument("--out", default="runs/default", help="run folder")
    p.add_argument("--force", action="store_true", help="re-run every stage")
    p.add_argument("--data_path", "--data-path", dest="data_path", default=None,
                   help="held-out evaluation data (LMDB or image folder; default: the default dataset's val split)")
    p.add_argument("--train_path", "--train-path", dest="train_path", default=None,
                   help="calibration data source (default: the default dataset's train split)")
    p.add_argument("--calib-count", type=cli.positive_int, default=100, help="calibration images (as the original)")
    p.add_argument("--limit", type=cli.positive_int, default=None,
                   help="evaluate a class-stratified seeded subset of N images")
    p.add_argument("--bench-iters", type=cli.positive_int, default=50,
                   help="timed ONNX Runtime calls per variant and batch, in interleaved rounds of 5 (at least 3 "
                        "rounds; the speed-ups get bootstrap intervals over the rounds)")
    s = p.add_argument_group("selection")
    s.add_argument("--select", action="store_true",
                   help="choose the fastest variant within --max-drop top-1 points of the FP32 model: best.onnx "
                        "(+ best.engine where engines ran), the Pareto front (pareto.png), the reason")
    s.add_argument("--max-drop", type=float, default=0.5, help="top-1 budget in points against FP32 (default 0.5)")
    s.add_argument("--select-batch", type=int, default=1, choices=(1, 4, 8),
                   help="the batch size whose latency decides (default 1)")
    s.add_argument("--export-triton", default=None, metavar="DIR",
                   help="with --select: a Triton Inference Server model repository of the choice in DIR -- the "
                        "engine (tensorrt_plan) and its ONNX as the onnxruntime fallback, or the ONNX alone when no "
                        "engine ran here; replaces the 'mobilevit' / 'mobilevit_onnx' folders it writes (default: "
                        "<out>/triton when the choice is an engine)")
    s.add_argument("--mixed-max-drop", type=float, default=None,
                   help="with --select: the top-1 budget (points, on training images) the sensitivity-guided mixed "
                        "INT8 candidate keeps layers in float for (default %.1f)" % MIXED_MAX_DROP)
    p.add_argument("--opset", type=int, default=13)
    add_preprocess_args(p)
    return p


def main(argv=None, prog=PROG):
    args = build_parser(prog).parse_args(argv)
    from MobileViT_Pytorch.official import DEFAULT_WEIGHTS
    from MobileViT_Pytorch.source import apply_preprocess_args, open_source
    from mobilevit_trt.pipeline import run_pipeline
    from mobilevit_trt.plan import build_plan
    cli.check_outputs(folders={"--out": args.out})
    if not args.max_drop >= 0:
        from mobilevit_trt.errors import UserError
        raise UserError("--max-drop must be >= 0 top-1 points, got %g" % args.max_drop)
    if args.export_triton and not args.select:
        from mobilevit_trt.errors import UserError
        raise UserError("--export-triton writes the --select choice; add --select")
    if args.mixed_max_drop is not None and not args.select:
        from mobilevit_trt.errors import UserError
        raise UserError("--mixed-max-drop is for the --select candidates; add --select")
    mixed_max_drop = MIXED_MAX_DROP if args.mixed_max_drop is None else args.mixed_max_drop
    if not mixed_max_drop >= 0:
        from mobilevit_trt.errors import UserError
        raise UserError("--mixed-max-drop must be >= 0 top-1 points, got %g" % mixed_max_drop)
    model_path = args.model_path
    # no model named: the official XXS trained on the default dataset (--model original: the original project's)
    if model_path is None and args.model is None and os.path.isfile(DEFAULT_WEIGHTS):
        model_path = DEFAULT_WEIGHTS
        print("no --model_path: the default model %s" % os.path.relpath(model_path))
    source = open_source(args.model, model_path, args.arch, args.num_classes, args.img_size, args.use_ema)
    apply_preprocess_args(source, args)
    plan = build_plan(opset=args.opset, candidates=args.select, mixed_max_drop=mixed_max_drop)
    results, run = run_pipeline(source, out=args.out, plan=plan, force=args.force, data_path=args.data_path,
                                train_path=args.train_path, calib_count=args.calib_count, acc_limit=args.limit,
                                bench_iters=args.bench_iters, select=args.max_drop if args.select else None,
                                select_batch=args.select_batch, triton_dir=args.export_triton)
    from mobilevit_trt.report import format_table
    print()
    print(format_table(results["stages"], ["stage", "status", "seconds", "note"]))
    sel = results.get("selection")
    if sel:
        print("\nselection (batch %d, budget %.2f top-1 points): %s -- %s\n  latency: %s" % (
            sel["batch"], sel["max_drop"], sel["chosen"] or "none", sel["reason"], sel["latency_source"]))
    if run.failed:
        print("\nFAILED stages: %s" % ", ".join(run.failed), file=sys.stderr)
        return 1
    print("\nsummary: %s" % os.path.join(run.run_dir, "summary.md"))
    return 0

