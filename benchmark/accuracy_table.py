#!/usr/bin/env python3
"""Accuracy of every precision variant of the shipped default model, on the default dataset's held-out split.

Builds (in --out): the FP32 ONNX export, its FP16 conversion, PTQ INT8 Q/DQ (Entropy and MinMax calibration on
100 training images), the Q/DQ exports of the shipped QAT checkpoints (weights only; weights + activations) and
the original's recipe (QAT weights + Entropy-calibrated activations); then measures each through ONNX Runtime on
the CPU with the same loop as test_trt_precision.py, plus the checkpoint in PyTorch.  Prints a Markdown table and
writes JSON.  About 5-10 minutes on 2 CPU cores.

  python benchmark/make_default_dataset.py && python benchmark/accuracy_table.py
"""
import os
import sys

if __name__ == "__main__":  # run as a script from anywhere: make the repository root importable
    sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from mobilevit_trt import cli  # noqa: E402

WEIGHTS = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "MobileViT_Pytorch",
                       "weights-file")


def build_parser():
    p = cli.make_parser(__doc__.splitlines()[0], prog="accuracy_table.py")
    p.add_argument("--model_path", default=os.path.join(WEIGHTS, "mobilevit_default.pth.tar"))
    p.add_argument("--qat-w", default=os.path.join(WEIGHTS, "mobilevit_default_qat_w.pth.tar"),
                   help="QAT checkpoint, weights only ('' to skip)")
    p.add_argument("--qat-wa", default=os.path.join(WEIGHTS, "mobilevit_default_qat_wa.pth.tar"),
                   help="QAT checkpoint, weights + activations ('' to skip)")
    p.add_argument("--val_path", default=None, help="held-out split (default: the default dataset's)")
    p.add_argument("--train_path", default=None, help="calibration source (default: the default dataset's train)")
    p.add_argument("--calib-count", type=cli.positive_int, default=100)
    p.add_argument("--batch", type=cli.positive_int, default=16)
    p.add_argument("--limit", type=cli.positive_int, default=None, help="evaluate only the first N images")
    p.add_argument("--rows", nargs="*", default=None, help="only these variants (default: all)")
    p.add_argument("--out", default="runs/accuracy", help="folder for the ONNX variants and results")
    p.add_argument("--results-file", default=None, help="JSON results (default: <out>/accuracy.json)")
    p.add_argument("--no-progress", action="store_true")
    return p


def main(argv=None):
    args = build_parser().parse_args(argv)
    from mobilevit_trt.accuracy import TABLE_ROWS, markdown_table, precision_table
    from mobilevit_trt.errors import UserError
    from mobilevit_trt.fileio import write_json, write_text

    known = [k for k, _ in TABLE_ROWS]
    bad = [r for r in (args.rows or []) if r not in known]
    if bad:
        raise UserError("unknown variant(s) %s (choose from %s)" % (", ".join(bad), ", ".join(known)))
    cli.check_outputs(files={"--results-file": args.results_file}, folders={"--out": args.out})
    cli.require_file(args.model_path, "checkpoint")
    for p in (args.qat_w, args.qat_wa):
        if p:
            cli.require_file(p, "QAT checkpoint")
    table = precision_table(args.out, args.model_path, args.qat_w or None, args.qat_wa or None, args.val_path,
                            args.train_path, args.calib_count, args.batch, args.limit, rows=args.rows,
                            show_progress=not args.no_progress)
    md = markdown_table(table["rows"])
    print("\n" + md)
    results = args.results_file or os.path.join(args.out, "accuracy.json")
    write_json(results, table)
    write_text(os.path.join(args.out, "accuracy.md"), md + "\n")
    print("\nresults: %s" % results)
    return 0


if __name__ == "__main__":
    cli.run_main(main)
