"""Stage 2: rewrite the LayerNorm and self-attention subgraphs of an ONNX model for the target TensorRT.

Targets (--target): plugin (the toolkit's MVT_LayerNorm / MVT_Attention plugin nodes; TensorRT 8.2-8.5),
fusable (TensorRT's own MHA fusion pattern + LayerNormalization; TensorRT 8.6-10.13), native (ONNX Attention,
opset 23, + LayerNormalization: IAttention in TensorRT >= 10.14, 11.x and TensorRT-RTX), none (unchanged), auto
(chosen from the TensorRT installed here, or --trt-version / --trt-flavour for another machine).  The target is
recorded in the ONNX metadata (and later in the engine sidecar).

Examples:
  python onnx_add_plugin.py --input_path target/MobileViT_b4.onnx --save_path target/MobileViT_b4_plugin.onnx
  python onnx_add_plugin.py --input_path target/MobileViT_dynamic_opt.onnx \
      --save_path target/MobileViT_dynamic_opt_plugin.onnx --plugins attention --report target/surgery.json
  python onnx_add_plugin.py --input_path target/MobileViT_dynamic_opt.onnx --target auto --trt-version 10.8 \
      --save_path target/MobileViT_dynamic_opt_fusable.onnx

The ``mobilevit-trt fuse`` command; ``python onnx_add_plugin.py`` (repository root) runs the same ``main``.
"""
import os

from mobilevit_trt import cli

PROG = "onnx_add_plugin.py"  # the parser's name when run as the root script; mobilevit-trt passes its own


def build_parser(prog=PROG):
    p = cli.make_parser(__doc__.splitlines()[0], prog=prog)
    g = p.add_argument_group("graph surgery")
    g.add_argument("--input_path", "--input-path", dest="input_path", default="./target/MobileViT.onnx",
                   help="ONNX model from convert_to_onnx.py (any opset 11-21, static or dynamic batch)")
    g.add_argument("--save_path", "--save-path", dest="save_path", default="./target/MobileViT_plugin.onnx",
                   help="output ONNX file with plugin nodes (written atomically, only after verification)")
    g.add_argument("--target", default="plugin", choices=("plugin", "native", "fusable", "none", "auto"),
                   help="what replaces the subgraphs (see above; default: plugin, the original project's)")
    g.add_argument("--trt-version", dest="trt_version", default=None,
                   help="--target auto for this TensorRT version (e.g. 8.6, 10.14) instead of the installed one")
    g.add_argument("--trt-flavour", dest="trt_flavour", default=None, choices=("tensorrt", "tensorrt_rtx"),
                   help="--target auto for this TensorRT flavour (default: tensorrt with --trt-version, else the "
                        "installed one)")
    g.add_argument("--plugins", default="layernorm,attention",
                   help="comma-separated kinds to rewrite: layernorm, attention")
    g.add_argument("--allow-missing", action="store_true",
                   help="do not fail when a requested kind has no matching subgraph")
    g.add_argument("--report", default=None,
                   help="write a JSON report here: every fusion (node, inputs/outputs, eps/scale/num_heads), "
                        "counts per kind, the candidates rejected and why, verification results; written also "
                        "when nothing was fused or verification failed")
    v = p.add_argument_group("verification")
    v.add_argument("--no-verify", action="store_true",
                   help="skip onnx.checker and the ONNX Runtime comparison (fused graph with NumPy reference "
                        "plugin ops vs the input graph)")
    v.add_argument("--atol", type=float, default=1e-4, help="max abs output diff allowed against the input graph")
    return p


def main(argv=None, prog=PROG):
    args = build_parser(prog).parse_args(argv)
    from mobilevit_trt import surgery
    from mobilevit_trt.errors import UserError
    from mobilevit_trt.fileio import atomic_path, write_json

    kinds = surgery.parse_kinds(args.plugins)
    if not args.atol > 0:
        raise UserError("--atol must be positive, got %g" % args.atol)
    if os.path.abspath(args.input_path) == os.path.abspath(args.save_path):
        raise UserError("--save_path must differ from --input_path")
    cli.check_outputs(files={"--save_path": args.save_path, "--report": args.report})
    flavour, version = args.trt_flavour, args.trt_version
    if args.target == "auto" and version is None and flavour != "tensorrt_rtx":
        from mobilevit_trt import trt_compat
        try:
            api = trt_compat.load("--target auto")
        except Exception as e:  # noqa: BLE001 - Unavailable: no TensorRT here
            raise UserError("--target auto: %s; give the target machine's --trt-version (and --trt-flavour)"
                            % str(e).splitlines()[0])
        flavour, version = api.flavour, api.version
    target = surgery.resolve_target(args.target, flavour, version)
    if args.target == "auto":
        print("--target auto: %s for %s %s" % (target, flavour or "tensorrt", version or ""))
    model = surgery.load_onnx(args.input_path)
    print("rewriting %s in %s for the %s target" % (", ".join(k for k in kinds), args.input_path, target))

    def write_report(report, error=None):
        if not args.report or report is None:
            return
        report["input"] = os.path.abspath(args.input_path)
        report["output"] = None if error else os.path.abspath(args.save_path)
        if error:
            report["error"] = error
        write_json(args.report, report)

    try:
        fused, report = surgery.fuse(model, target, kinds, allow_missing=args.allow_missing)
    except UserError as e:
        # nothing (of a requested kind) fused: the report says which candidates were rejected and why
        write_report(getattr(e, "report", None), str(e))
        raise
    for op, n in report["counts"].items():
        print("  %-10s %3d fused" % (op, n))
    report["input"] = os.path.abspath(args.input_path)
    report["output"] = os.path.abspath(args.save_path)

    import onnx
    with atomic_path(args.save_path) as tmp:
        onnx.save(fused, tmp)
        if not args.no_verify:
            res = surgery.verify_fused(args.input_path, tmp, atol=args.atol)
            report["verify"] = res
            if not res["passed"]:
                msg = "fused graph failed verification (%s); %s not written" % (
                    "checker: " + res["checker"] if res["checker"] != "passed" else
                    "max abs diff %.3g > %g" % (res["max_abs"], args.atol), args.save_path)
                write_report(report, msg)
                raise UserError(msg)
    write_report(report)
    print("saved %s (%d -> %d nodes)" % (args.save_path, report["nodes_before"], report["nodes_after"]))
    return 0

