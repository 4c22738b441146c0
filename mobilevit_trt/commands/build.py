"""Stage 3: build a TensorRT engine from an ONNX file (FP32/FP16/INT8, static or dynamic, plugins), on any TensorRT.

Examples:
  python convert_to_trt.py --input_path target/MobileViT_b4.onnx --save_path target/MobileViT_b4.trt --batch 4
  python convert_to_trt.py --input_path target/MobileViT_dynamic_opt_plugin.onnx \
      --save_path target/MobileViT_dynamic_opt_plugin_int8.trt --dynamic --fp16 --int8 --calib-data calib.npz
  python convert_to_trt.py --input_path target/MobileViT_dynamic.onnx --save_path target/dyn.trt --dynamic \
      --profile 1:1:1 --profile 2:4:8 --profile 16:32:32
  python convert_to_trt.py --input_path target/MobileViT_dynamic.onnx --save_path target/dyn_int8.trt --dynamic \
      --fp16 --int8            # no --calib-data: calibrates on the default dataset's training split
  python convert_to_trt.py --input_path target/MobileViT_dynamic.onnx --save_path target/dyn.trt --dynamic \
      --export-triton triton_models   # + a Triton model repository: the engine and its ONNX as a fallback

The ``mobilevit-trt build`` command; ``python convert_to_trt.py`` (repository root) runs the same ``main``.
"""
from mobilevit_trt import cli

PROG = "convert_to_trt.py"  # the parser's name when run as the root script; mobilevit-trt passes its own


def add_triton_args(parser):
    """--export-triton and its model options (mobilevit_trt.triton)."""
    g = parser.add_argument_group("Triton model repository")
    g.add_argument("--export-triton", default=None, metavar="DIR",
                   help="after the build, write a Triton Inference Server model repository to DIR: <name>/ "
                        "(tensorrt_plan: the engine, config.pbtxt from its sidecar) and <name>_onnx/ (the ONNX for "
                        "the onnxruntime backend, as a fallback; not for plugin graphs)")
    g.add_argument("--triton-name", default="mobilevit", help="model name in the repository")
    g.add_argument("--triton-max-batch-size", type=int, default=None, metavar="N",
                   help="max_batch_size (default: the largest N with every batch 1..N in a profile; a static "
                        "batch: 0 and the full input shape)")
    g.add_argument("--triton-instances", type=cli.positive_int, default=1, metavar="N",
                   help="instance_group count (model instances per GPU)")
    g.add_argument("--triton-overwrite", action="store_true", help="replace existing model folders in DIR")
    return g


def build_parser(prog=PROG):
    p = cli.make_parser(__doc__.splitlines()[0], prog=prog)
    cli.add_trt_build_args(p)
    add_triton_args(p)
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
    if args.export_triton:
        from mobilevit_trt import triton
        triton.check_repository(args.export_triton, triton.model_names(args.triton_name), args.triton_overwrite,
                                "--export-triton")
    facts = onnx_facts(args.input_path)
    if args.dynamic and not facts["dynamic"]:
        raise UserError("--dynamic given but %s has a static batch of %s" % (args.input_path, facts["dims"][0]))
    if args.batch is not None and (facts["dynamic"] or facts["dims"][0] != args.batch):
        raise UserError("--batch %d given but %s has %s batch %s" % (
            args.batch, args.input_path, "a dynamic" if facts["dynamic"] else "a static", facts["dims"][0]))
    profiles = [parse_profile(t) for t in args.profile] if args.profile else None
    if args.export_triton:  # the batching the engine will allow, checked before the build
        from mobilevit_trt.build import DEFAULT_DYNAMIC_PROFILE
        triton.batching(facts["dynamic"], facts["dims"][0], profiles or [DEFAULT_DYNAMIC_PROFILE],
                        args.triton_max_batch_size, what=args.input_path)
    build_engine(args.input_path, args.save_path, profiles=profiles, fp16=args.fp16, int8=args.int8,
                 int8_mode=args.int8_mode, calib_data=args.calib_data, calibrator=args.calibrator,
                 calib_cache=args.calib_cache, calib_limit=args.calib_limit, workspace_mib=args.workspace,
                 plugins=args.plugin, timing_cache=args.timing_cache, verbose=args.verbose, inspect=args.inspect,
                 compute_capabilities=args.compute_capability, cuda_graph=args.cuda_graph,
                 keep_intermediate=args.keep_intermediate)
    if args.export_triton:
        res = triton.repository_for_engine(args.save_path, args.export_triton, model_name=args.triton_name,
                                           onnx_path=args.input_path, max_batch_size=args.triton_max_batch_size,
                                           instances=args.triton_instances, overwrite=args.triton_overwrite, log=print)
        print("Triton repository: %s (tritonserver --model-repository=%s%s)" % (
            res["root"], res["root"], " --backend-config=" + res["backend_config"] if res["backend_config"] else ""))
    return 0

