#!/usr/bin/env python3
"""Stage 1: export a MobileViT checkpoint to ONNX (static or dynamic batch, base or --opt), cleaned and verified.

Examples:
  python convert_to_onnx.py --model_path MobileViT_Pytorch/weights-file/model_best.pth.tar \
      --save_path target/MobileViT_b4.onnx --batch 4
  python convert_to_onnx.py --model_path ckpt.pth.tar --save_path target/MobileViT_dynamic_opt.onnx --opt --dynamic
"""
import json
import os
import sys

from mobilevit_trt import cli


def build_parser():
    p = cli.make_parser(__doc__.splitlines()[0], prog="convert_to_onnx.py")
    cli.add_model_args(p)
    g = p.add_argument_group("export")
    g.add_argument("--save_path", "--save-path", dest="save_path", default="./target/MobileViT.onnx",
                   help="output ONNX file (written atomically)")
    g.add_argument("--batch", type=cli.positive_int, default=None,
                   help="static batch size (default 1; not allowed with --dynamic)")
    g.add_argument("--dynamic", action="store_true", help="dynamic batch dimension ('batch')")
    g.add_argument("--opt", action="store_true",
                   help="optimized model: attention without rearranges, 2-D matmuls around the FFN")
    g.add_argument("--opset", type=int, default=13,
                   help="ONNX opset: 13 parses in TensorRT 8.2 (LayerNorm decomposed); 17 gives the native "
                        "LayerNormalization node (TensorRT >= 8.6)")
    g.add_argument("--no-simplify", action="store_true", help="skip the onnxslim cleanup")
    g.add_argument("--no-verify", action="store_true",
                   help="skip the ONNX Runtime comparison against PyTorch (onnx.checker still runs)")
    g.add_argument("--atol", type=float, default=1e-4, help="max abs diff allowed against PyTorch")
    g.add_argument("--report", default=None, help="write the export report (JSON) here")
    return p


def main(argv=None):
    args = build_parser().parse_args(argv)
    from mobilevit_trt.errors import UserError
    if args.dynamic and args.batch is not None:
        raise UserError("--batch sets a static batch size and cannot be combined with --dynamic")
    if not (11 <= args.opset <= 21):
        raise UserError("--opset must be between 11 and 21, got %d" % args.opset)
    batch = args.batch or 1
    from MobileViT_Pytorch.checkpoint import load_model
    from mobilevit_trt.export import export_onnx
    from mobilevit_trt.fileio import write_json

    model, info = load_model(args.model_path or None, args.arch, args.num_classes, args.img_size, opt=args.opt)
    kind = "dynamic" if args.dynamic else "static batch %d" % batch
    print("exporting MobileViT-%s%s (%s, %d classes, weights: %s) -> %s [%s, opset %d]" % (
        info["arch"].upper(), " opt" if args.opt else "", "%dx%d" % (args.img_size, args.img_size),
        info["num_classes"], info["weights"], args.save_path, kind, args.opset))
    report = export_onnx(model, args.save_path, batch=batch, dynamic=args.dynamic, opset=args.opset,
                         img_size=args.img_size, do_simplify=not args.no_simplify, verify=not args.no_verify,
                         atol=args.atol)
    report["model"] = info
    if args.report:
        write_json(args.report, report)
    print("saved %s (%d nodes, %.1f MB)" % (args.save_path, report["nodes"], os.path.getsize(args.save_path) / 1e6))
    return 0


if __name__ == "__main__":
    sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
    cli.run_main(main)
