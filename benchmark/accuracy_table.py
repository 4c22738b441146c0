#!/usr/bin/env python3
"""Accuracy of every precision variant of a model (default: the shipped default model) on the held-out split.

Builds (in --out): the FP32 ONNX export, its FP16 conversion, PTQ INT8 Q/DQ (Entropy and MinMax calibration on
100 training images), and for the original project's model the Q/DQ exports of its QAT checkpoints (weights only;
weights + activations) and the original's recipe (QAT weights + Entropy-calibrated activations); then measures
each through ONNX Runtime on the CPU with the same loop as test_trt_precision.py, plus the checkpoint in PyTorch,
each with the model's own preprocessing.  Prints a Markdown table and writes JSON.  About 5-10 minutes on 2 CPU
cores.

  python benchmark/make_default_dataset.py && python benchmark/accuracy_table.py        # the default model
  python benchmark/accuracy_table.py --model original --out runs/accuracy-original      # the original's + QAT
"""
import os

from mobilevit_trt import cli

WEIGHTS = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "MobileViT_Pytorch",
                       "weights-file")


def build_parser():
    p = cli.make_parser(__doc__.splitlines()[0], prog="accuracy_table.py")
    p.add_argument("--model_path", default=None,
                   help="checkpoint (any kind pipeline.py reads; default: the shipped default model, with --model "
                        "original the original project's default checkpoint)")
    p.add_argument("--model", default=None, help="the checkpoint's kind, as for pipeline.py (default: detected)")
    p.add_argument("--qat-w", default=os.path.join(WEIGHTS, "mobilevit_default_qat_w.pth.tar"),
                   help="QAT checkpoint of the original project's model, weights only ('' to skip)")
    p.add_argument("--qat-wa", default=os.path.join(WEIGHTS, "mobilevit_default_qat_wa.pth.tar"),
                   help="QAT checkpoint of the original project's model, weights + activations ('' to skip)")
    p.add_argument("--val_path", default=None, help="held-out split (default: the default dataset's)")
    p.add_argument("--train_path", default=None, help="calibration source (default: the default dataset's train)")
    p.add_argument("--calib-count", type=cli.positive_int, default=100)
    p.add_argument("--batch", type=cli.positive_int, default=16)
    p.add_argument("--limit", type=cli.positive_int, default=None,
                   help="evaluate a class-stratified seeded subset of N images")
    p.add_argument("--rows", nargs="*", default=None, help="only these variants (default: all)")
    p.add_argument("--out", default="runs/accuracy", help="folder for the ONNX variants and results")
    p.add_argument("--results-file", default=None, help="JSON results (default: <out>/accuracy.json)")
    p.add_argument("--no-progress", action="store_true")
    return p


def main(argv=None):
    args = build_parser().parse_args(argv)
    from MobileViT_Pytorch.official import DEFAULT_WEIGHTS
    from MobileViT_Pytorch.source import CheckpointSource, open_source
    from mobilevit_trt.accuracy import markdown_table, table_rows
    from mobilevit_trt.errors import UserError
    from mobilevit_trt.fileio import write_json, write_text
    from mobilevit_trt.pipeline import run_pipeline
    from mobilevit_trt.plan import ACCURACY_TABLE, accuracy_table_plan

    bad = [r for r in (args.rows or []) if r not in ACCURACY_TABLE]
    if bad:
        raise UserError("unknown variant(s) %s (choose from %s)" % (", ".join(bad), ", ".join(ACCURACY_TABLE)))
    cli.check_outputs(files={"--results-file": args.results_file}, folders={"--out": args.out})
    if args.model_path is None:
        args.model_path = os.path.join(WEIGHTS, "mobilevit_default.pth.tar") if args.model == "original" \
            else DEFAULT_WEIGHTS
    cli.require_file(args.model_path, "checkpoint")
    qat = {"qat_w": args.qat_w or None, "qat_wa": args.qat_wa or None}
    source = open_source(args.model, args.model_path, qat_paths=qat)
    if isinstance(source, CheckpointSource):
        for p in (args.qat_w, args.qat_wa):
            if p:
                cli.require_file(p, "QAT checkpoint")
    print("model: %s; preprocessing: %s [%s]" % (args.model_path, source.preprocess.describe(),
                                                 source.preprocess_origin))
    # the table is the pipeline's plan filtered: the FP32 dynamic export, its FP16/PTQ graphs, the QAT graphs
    plan, rows = accuracy_table_plan(qat_keys=tuple(k for k in ("qat_w", "qat_wa") if not source.unavailable(qat=k)),
                                     calib_n=min(32, args.calib_count), rows=args.rows)
    results, run = run_pipeline(source, out=args.out, plan=plan, data_path=args.val_path or _default("val"),
                                train_path=args.train_path or _default("train"), calib_count=args.calib_count,
                                acc_limit=args.limit, acc_batch=args.batch, stages=("make", "accuracy"))
    if run.failed:
        raise UserError("stages failed: %s (see %s)" % (", ".join(run.failed), run.state_path))
    files = {v.name: run.path("onnx", v.name + ".onnx") for v in plan.files()}
    table = {"meta": {"model": _rel(args.model_path), "val": _rel(args.val_path or _default("val")),
                      "preprocess": source.preprocess.describe(),
                      "images": _images(results), "opset": 13,
                      "runtime": "ONNX Runtime CPUExecutionProvider (default graph optimizations)",
                      "calibration": "%d images of %s (seeded random pick, seed 0)" % (
                          args.calib_count, _rel(args.train_path or _default("train")))},
             "rows": table_rows(sorted([r for r in results["accuracy"] if r["variant"] in rows],
                                       key=lambda r: rows.index(r["variant"])),
                                lambda name: files.get(name) or (args.model_path if name == "torch_fp32" else None))}
    import onnxruntime
    table["meta"]["onnxruntime"] = onnxruntime.__version__
    md = markdown_table(table["rows"])
    print("\n" + md)
    out = args.results_file or os.path.join(args.out, "accuracy.json")
    write_json(out, table)
    write_text(os.path.join(args.out, "accuracy.md"), md + "\n")
    print("\nresults: %s" % out)
    return 0


def _default(split):
    from mobilevit_trt.data import default_split
    return default_split(split)


def _rel(path):
    """A path inside the repository as a relative path (the JSON is committed), others as given."""
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    full = os.path.abspath(path)
    return os.path.relpath(full, root) if full.startswith(root + os.sep) else path


def _images(results):
    return max([r["images"] for r in results["accuracy"]] or [0])


if __name__ == "__main__":
    cli.run_main(main)
