#!/usr/bin/env python3
"""Run every stage this machine supports on one model, into one run folder.

Today: export (base and --opt, static batch 1 and dynamic) with ONNX Runtime verification of each.
"""
import os
import sys

from mobilevit_trt import cli


def build_parser():
    p = cli.make_parser(__doc__.splitlines()[0], prog="pipeline.py")
    cli.add_model_args(p)
    p.add_argument("--out", default="runs/default", help="run folder")
    p.add_argument("--opset", type=int, default=13)
    return p


def main(argv=None):
    args = build_parser().parse_args(argv)
    from MobileViT_Pytorch.checkpoint import DEFAULT_WEIGHTS, load_model
    from mobilevit_trt.export import export_onnx
    from mobilevit_trt.fileio import write_json

    model_path = args.model_path
    if model_path is None and os.path.isfile(DEFAULT_WEIGHTS):
        model_path = DEFAULT_WEIGHTS
    os.makedirs(args.out, exist_ok=True)
    results = []
    for opt in (False, True):
        model, info = load_model(model_path, args.arch, args.num_classes, args.img_size, opt=opt)
        for dynamic in (False, True):
            name = "mobilevit_%s%s_%s.onnx" % (info["arch"], "_opt" if opt else "", "dynamic" if dynamic else "b1")
            print("== export %s" % name)
            r = export_onnx(model, os.path.join(args.out, name), batch=1, dynamic=dynamic, opset=args.opset,
                            img_size=args.img_size, log=lambda s: None)
            print("   %d nodes (exported %d), ORT vs PyTorch max abs %.3g: %s" % (
                r["nodes"], r["nodes_exported"], r["verify"]["max_abs"],
                "PASSED" if r["verify"]["passed"] else "FAILED"))
            r["model"] = info
            results.append(r)
    write_json(os.path.join(args.out, "export.json"), results)
    print("results: %s" % os.path.join(args.out, "export.json"))
    return 0


if __name__ == "__main__":
    sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
    cli.run_main(main)
