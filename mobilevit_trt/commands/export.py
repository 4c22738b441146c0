"""Stage 1: export a MobileViT checkpoint to ONNX (static or dynamic batch, base or --opt), cleaned and verified.

Examples:
  python convert_to_onnx.py --model_path MobileViT_Pytorch/weights-file/model_best.pth.tar \
      --save_path target/MobileViT_b4.onnx --batch 4
  python convert_to_onnx.py --model_path ckpt.pth.tar --save_path target/MobileViT_dynamic_opt.onnx --opt --dynamic
  python convert_to_onnx.py --model_path MobileViT_Pytorch/weights-file/mobilevit_default_qat_wa.pth.tar \
      --save_path target/MobileViT_qat_wa_qdq.onnx --dynamic         # a QAT checkpoint: its Q/DQ graph

The ``mobilevit-trt export`` command; ``python convert_to_onnx.py`` (repository root) runs the same ``main``.
"""
import os
import sys

from mobilevit_trt import cli
from mobilevit_trt.export import VERIFY_ATOL  # torch is imported lazily: --help stays fast
from mobilevit_trt.preprocess import add_preprocess_args

PROG = "convert_to_onnx.py"  # the parser's name when run as the root script; mobilevit-trt passes its own


def build_parser(prog=PROG):
    p = cli.make_parser(__doc__.splitlines()[0], prog=prog)
    m = cli.add_model_args(p)
    m.add_argument("--random-init", action="store_true",
                   help="export a deterministic random initialisation (seed 0) instead of the shipped default "
                        "weights (not with --model_path)")
    m.add_argument("--no-qdq", action="store_true",
                   help="a QAT checkpoint (from MobileViT_Pytorch/qat.py) is exported as its Q/DQ graph (INT8 "
                        "for TensorRT's explicit quantization); with --no-qdq, as a plain float graph of its "
                        "fine-tuned weights")
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
                        "LayerNormalization node (TensorRT >= 8.6); a Q/DQ export needs 13 or later")
    g.add_argument("--no-simplify", action="store_true",
                   help="skip the onnxslim cleanup (a Q/DQ export is never simplified: it would fold the weight "
                        "quantizers)")
    g.add_argument("--no-verify", action="store_true",
                   help="skip the ONNX Runtime comparison against PyTorch (onnx.checker still runs)")
    g.add_argument("--atol", type=float, default=None,
                   help="max abs diff allowed against PyTorch (default: %g; for a Q/DQ export, compared with the "
                        "fake-quant model: the tolerances of MobileViT_Pytorch/qat.py, weight-only or with "
                        "activations, plus its top-1 agreement)" % VERIFY_ATOL)
    g.add_argument("--report", default=None, help="write the export report (JSON) here")
    add_preprocess_args(p).description = (
        "default: the model's own (a checkpoint's record, timm's pretrained_cfg, a Hugging Face folder's "
        "preprocessor_config.json, Apple's for ml-cvnets files); recorded in the ONNX metadata for every later "
        "stage; each option given overrides that field")
    return p


def main(argv=None, prog=PROG):
    args = build_parser(prog).parse_args(argv)
    from mobilevit_trt.errors import UserError
    if args.dynamic and args.batch is not None:
        raise UserError("--batch sets a static batch size and cannot be combined with --dynamic")
    if not (11 <= args.opset <= 21):
        raise UserError("--opset must be between 11 and 21, got %d" % args.opset)
    if args.random_init and args.model_path:
        raise UserError("--random-init exports random weights and cannot be combined with --model_path")
    if args.random_init and args.model is None:
        args.model = "original"
    if args.atol is not None and not args.atol > 0:
        raise UserError("--atol must be positive, got %g" % args.atol)
    cli.check_outputs(files={"--save_path": args.save_path, "--report": args.report})
    from MobileViT_Pytorch.source import OfficialSource, apply_preprocess_args, open_source
    source = open_source(args.model, args.model_path, args.arch, args.num_classes, args.img_size, args.use_ema)
    apply_preprocess_args(source, args)
    if isinstance(source, OfficialSource):
        return _export_official(args, source)
    args.img_size = source.img_size
    batch = args.batch or 1
    from MobileViT_Pytorch import checkpoint as C
    from mobilevit_trt.fileio import write_json

    model_path = args.model_path
    if model_path is None and not args.random_init:
        model_path = C.default_weights()
        if not model_path:
            print("warning: the shipped default weights (%s) are missing: exporting a random initialisation; pass "
                  "--model_path, or --random-init to ask for it" % os.path.relpath(C.DEFAULT_WEIGHTS), file=sys.stderr)
    qat = None
    if model_path:
        sd, meta = C.read_checkpoint(model_path)
        if args.model_path is None:
            _check_default_weights_fit(args, meta)
            print("no --model_path: using the shipped default weights %s" % os.path.relpath(model_path))
        if C.is_qat_checkpoint(meta) and not args.no_qdq:
            from MobileViT_Pytorch.qat import load_qat_model
            if args.opset < 13:
                raise UserError("%s is a QAT checkpoint: its per-channel Q/DQ graph needs --opset 13 or later (got "
                                "%d); or pass --no-qdq for a float graph" % (model_path, args.opset))
            model, info = load_qat_model(model_path, args.img_size, opt=args.opt, checkpoint=(sd, meta),
                                         arch=args.arch, num_classes=args.num_classes)
            qat = info["qat"]
        else:
            model, info = C.model_from_checkpoint(model_path, sd, meta, args.arch, args.num_classes, args.img_size,
                                                  opt=args.opt)
    else:
        model, info = C.load_model(None, args.arch, args.num_classes, args.img_size, opt=args.opt, quiet=True)
        if not args.random_init:
            print("warning: " + C.random_init_message(info["arch"]), file=sys.stderr)
    kind = "dynamic" if args.dynamic else "static batch %d" % batch
    graph = ""
    if qat is not None:
        graph = ", Q/DQ INT8 %s" % ("weights only" if qat.get("weights_only") else "weights + activations")
    print("exporting MobileViT-%s%s (%s, %d classes, weights: %s) -> %s [%s, opset %d%s]" % (
        info["arch"].upper(), " opt" if args.opt else "", "%dx%d" % (args.img_size, args.img_size),
        info["num_classes"], info["weights"], args.save_path, kind, args.opset, graph))
    if qat is not None:
        from MobileViT_Pytorch.qat import export_qdq_onnx
        report = export_qdq_onnx(model, args.save_path, batch=batch, dynamic=args.dynamic, opset=args.opset,
                                 img_size=args.img_size, verify=not args.no_verify, atol=args.atol,
                                 preprocess=source.preprocess)
        report["nodes"] = sum(report["op_counts"].values())
        print("Q/DQ structure: %s" % ", ".join("%s %d" % kv for kv in report["qdq"].items()))
    else:
        from mobilevit_trt.export import export_onnx
        report = export_onnx(model, args.save_path, batch=batch, dynamic=args.dynamic, opset=args.opset,
                             img_size=args.img_size, do_simplify=not args.no_simplify, verify=not args.no_verify,
                             atol=VERIFY_ATOL if args.atol is None else args.atol, preprocess=source.preprocess)
    report["model"] = info
    if args.report:
        write_json(args.report, report)
    print("saved %s (%d nodes, %.1f MB)" % (args.save_path, report["nodes"], os.path.getsize(args.save_path) / 1e6))
    return 0


def _export_official(args, source):
    """Apple's official MobileViT (timm's code; weights from timm, Hugging Face or ml-cvnets) to ONNX."""
    from mobilevit_trt.errors import UserError
    from mobilevit_trt.export import export_onnx
    from mobilevit_trt.fileio import write_json
    if args.no_qdq:
        raise UserError("--no-qdq is for QAT checkpoints of the original project's model")
    if source.state_dict is None and not args.random_init:
        print("warning: no --model_path: exporting a deterministic random initialisation of %s" % source.name,
              file=sys.stderr)
    model, info = source.load(opt=args.opt)
    batch = args.batch or 1
    kind = "dynamic" if args.dynamic else "static batch %d" % batch
    print("exporting %s -> %s [%s%s, opset %d]" % (source.describe(), args.save_path, kind, ", opt" if args.opt
                                                    else "", args.opset))
    report = export_onnx(model, args.save_path, batch=batch, dynamic=args.dynamic, opset=args.opset,
                         img_size=source.img_size, do_simplify=not args.no_simplify, verify=not args.no_verify,
                         atol=VERIFY_ATOL if args.atol is None else args.atol, preprocess=source.preprocess)
    report["model"] = info
    if args.report:
        write_json(args.report, report)
    print("saved %s (%d nodes, %.1f MB)" % (args.save_path, report["nodes"], os.path.getsize(args.save_path) / 1e6))
    return 0


def _check_default_weights_fit(args, meta):
    """--arch / --num-classes without --model_path: the shipped default weights must be that model."""
    from mobilevit_trt.errors import UserError
    for option, want, have in (("--arch", args.arch, meta.get("arch")),
                               ("--num-classes", args.num_classes, meta.get("num_classes"))):
        if want is not None and have is not None and want != have:
            raise UserError("%s %s given without --model_path, but the shipped default weights are %s %s: give the "
                            "checkpoint with --model_path, or pass --random-init for random weights"
                            % (option, want, option, have))

