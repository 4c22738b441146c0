"""Stage 3: build a TensorRT engine from an ONNX file (FP32/FP16/INT8, static or dynamic, plugins), on any TensorRT.

Examples:
  python convert_to_trt.py --input_path target/MobileViT_b4.onnx --save_path target/MobileViT_b4.trt --batch 4
  python convert_to_trt.py --input_path target/MobileViT_dynamic_opt_plugin.onnx \
      --save_path target/MobileViT_dynamic_opt_plugin_int8.trt --dynamic --fp16 --int8 --calib-data calib.npz
  python convert_to_trt.py --input_path target/MobileViT_dynamic.onnx --save_path target/dyn.trt --dynamic \
      --profile 1:1:1 --profile 2:4:8 --profile 16:32:32
  python convert_to_trt.py --input_path target/MobileViT_dynamic.onnx --save_path target/dyn_int8.trt --dynamic \
      --fp16 --int8            # no --calib-data: calibrates on the default dataset's training split

The ``mobilevit-trt build`` command; ``python convert_to_trt.py`` (repository root) runs the same ``main``.
"""
from mobilevit_trt import cli

PROG = "convert_to_trt.py"  # the parser's name when run as the root script; mobilevit-trt passes its own


def build_parser(prog=PROG):
    p = cli.make_parser(__doc__.splitlines()[0], prog=prog)
    cli.add_trt_build_args(p)
    return p


def main(argv=None, prog=PROG):
    args = build_parser(prog).parse_args(argv)
    from mobilevit_trt.build import build_engine, onnx_facts, parse_profile
    from mobilevit_trt.errors import UserError
    if not args.input_path or not args.save_path:
        raise UserError("--input_path and --save_path are required")
    cli.require_file(args.input_path, "ONNX file")
    cli.check_outputs(files={"--save_path": args.save_path, "--calib-cache": args.calib_cache,
                             "--timing-cache": args.timing_cache})
    facts = onnx_facts(args.input_path)
    if args.dynamic and not facts["dynamic"]:
        raise UserError("--dynamic given but %s has a static batch of %s" % (args.input_path, facts["dims"][0]))
    if args.batch is not None and (facts["dynamic"] or facts["dims"][0] != args.batch):
        raise UserError("--batch %d given but %s has %s batch %s" % (
            args.batch, args.input_path, "a dynamic" if facts["dynamic"] else "a static", facts["dims"][0]))
    profiles = [parse_profile(t) for t in args.profile] if args.profile else None
    build_engine(args.input_path, args.save_path, profiles=profiles, fp16=args.fp16, int8=args.int8,
                 int8_mode=args.int8_mode, calib_data=args.calib_data, calibrator=args.calibrator,
                 calib_cache=args.calib_cache, calib_limit=args.calib_limit, workspace_mib=args.workspace,
                 plugins=args.plugin, timing_cache=args.timing_cache, verbose=args.verbose, inspect=args.inspect,
                 compute_capabilities=args.compute_capability, cuda_graph=args.cuda_graph,
                 keep_intermediate=args.keep_intermediate)
    return 0

