"""Stage 5: top-1/top-5 accuracy of an engine, an ONNX file or a checkpoint on a labelled dataset.

The same loop measures every artifact, so their numbers compare directly:
  python test_trt_precision.py --trt_path target/MobileViT_dynamic_opt_plugin_int8.trt --data_path val.lmdb --batch 4
  python test_trt_precision.py --backend onnxruntime --onnx_path target/MobileViT_b4.onnx
  python test_trt_precision.py --backend torch --model_path MobileViT_Pytorch/weights-file/mobilevit_default.pth.tar
Without --data_path the default dataset's held-out split is used (python benchmark/make_default_dataset.py).

Preprocessing is the model's own: an ONNX file's metadata, an engine's sidecar, a checkpoint's record (this
project's checkpoints: the original transform); unknown -> one WARNING line and the original project's default.
--mean/--std/--crop-pct/--crop-mode/--interpolation/--channel-order override it (printed).  The input size is the
model's (a static ONNX/engine input; --img-size must agree with it).  --limit N evaluates a class-stratified
seeded subset of N images and says which classes it covers.

The ``mobilevit-trt accuracy`` command; ``python test_trt_precision.py`` (repository root) runs the same ``main``.
"""
from mobilevit_trt import cli
from mobilevit_trt.preprocess import add_preprocess_args

PROG = "test_trt_precision.py"  # the parser's name when run as the root script; mobilevit-trt passes its own


def build_parser(prog=PROG):
    p = cli.make_parser(__doc__.splitlines()[0], prog=prog)
    cli.add_accuracy_args(p)
    cli.add_model_args(p)
    cli.add_data_args(p)
    add_preprocess_args(p)
    return p


def main(argv=None, prog=PROG):
    args = build_parser(prog).parse_args(argv)
    cli.check_outputs(results_file=args.results_file)
    if args.backend is None:
        args.backend = "trt" if args.trt_path else "onnxruntime" if args.onnx_path else "torch"
    run_accuracy(args)
    return 0


def run_accuracy(args, log=print):
    """Shared body of ``test_trt_precision.py`` and ``benchmark/test_torch_precision.py`` (args from
    ``cli.add_accuracy_args``): build the backend, open the data, evaluate, print, write ``--results-file``."""
    from mobilevit_trt.accuracy import evaluate, format_result
    from mobilevit_trt.backends import make_backend
    from mobilevit_trt.data import default_eval_data, open_dataset

    data_path = args.data_path or default_eval_data()
    kind = getattr(args, "backend", None) or "torch"
    img_size = getattr(args, "img_size", None)
    if kind == "torch":  # a checkpoint of this project (or the shipped default weights): the model package loads it
        from MobileViT_Pytorch.source import torch_backend
        backend = torch_backend(getattr(args, "model_path", None), getattr(args, "arch", None),
                                getattr(args, "num_classes", None), img_size, opt=getattr(args, "opt", False),
                                device=getattr(args, "device", "cpu") or "cpu",
                                fake_quant=getattr(args, "fake_quant", False),
                                model=getattr(args, "model", None), use_ema=getattr(args, "use_ema", False))
    else:
        backend = make_backend(kind, trt_path=getattr(args, "trt_path", None),
                               onnx_path=getattr(args, "onnx_path", None), plugins=getattr(args, "plugins", None))
    try:
        pp = model_preprocessing(backend, args, log)
        ds = open_dataset(data_path, label_file=getattr(args, "labels", None), preprocess=pp)
        log("backend %s; data %s" % (backend.describe(), ds.describe()))
        res = evaluate(backend, ds, batch=args.batch, limit=args.limit, show_progress=not args.no_progress,
                       workers=args.workers)
    finally:
        backend.close()
    if res.get("subset") and args.limit:
        log("--limit %d: %s" % (args.limit, res["subset"]))
    log(format_result(res))
    log("preprocessing used: %s" % res["preprocess"])
    if args.results_file:
        from mobilevit_trt.report import write_results
        write_results(args.results_file, [res], meta={"data_path": data_path, "preprocess": res["preprocess"],
                                                      "preprocess_origin": res["preprocess_origin"]})
        log("results: %s" % args.results_file)
    return res


def model_input_size(backend, img_size=None):
    """The input size to preprocess to: a static input of the artifact (UserError when ``--img-size``
    contradicts it), else ``img_size``, else None (the model's preprocessing decides)."""
    from mobilevit_trt.accuracy import static_input_size
    from mobilevit_trt.errors import UserError

    fixed = static_input_size(backend)
    if fixed is not None:
        if fixed[0] != fixed[1]:
            raise UserError("%s takes %dx%d inputs; this toolkit evaluates square inputs" % (backend.source,
                                                                                          fixed[0], fixed[1]))
        if img_size and int(img_size) != fixed[0]:
            raise UserError("--img-size %d contradicts %s, whose input is %dx%d: leave --img-size out (the model's "
                            "input size is used)" % (int(img_size), backend.source, fixed[0], fixed[1]))
        return fixed[0]
    return int(img_size) if img_size else None


def model_preprocessing(backend, args, log=print):
    """The model's preprocessing (``accuracy.model_preprocess``) at the model's input size, with the command
    line's overrides, printed (``preprocess.resolve``)."""
    from mobilevit_trt.accuracy import model_preprocess
    from mobilevit_trt.preprocess import resolve

    size = model_input_size(backend, getattr(args, "img_size", None))
    known, origin = model_preprocess(backend)
    return resolve(known, origin, img_size=size, args=args, log=log)
