"""Shared command-line plumbing: option groups written once, and the entry-point wrapper.

Every script's ``main`` is wrapped by :func:`run_main`: a :class:`UserError` prints ``error: <message>`` on one
line and exits 1 (no traceback); anything else is a bug and raises.
"""
import argparse
import os
import re
import sys

from .errors import UserError

ARCH_CHOICES = ("xxs", "xs", "s")


def run_main(main, argv=None):
    try:
        rc = main(argv)
    except UserError as e:
        print("error: %s" % e, file=sys.stderr)
        sys.exit(1)
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        sys.exit(130)
    sys.exit(rc or 0)


class _Parser(argparse.ArgumentParser):
    """argparse whose errors are one line + exit 1 (argparse's default is a usage dump + exit 2)."""

    def error(self, message):
        print("%s: error: %s (see --help)" % (self.prog, message), file=sys.stderr)
        sys.exit(1)


# a help text that already states its option's default: "Default: ...", "(default: ...)", "(default 1; ...)"
_STATES_DEFAULT = re.compile(r"(?i)\bdefault\b\s*[:(]|\(default\b|%\(default\)")


class _HelpFormatter(argparse.ArgumentDefaultsHelpFormatter):
    """Appends "(default: X)" only where it adds something: not when the help text already states the default,
    not for on/off flags, not for a default of None (the help says what happens then)."""

    def _get_help_string(self, action):
        text = action.help or ""
        if action.default is None or isinstance(action.default, bool) or _STATES_DEFAULT.search(text):
            return text
        return super(_HelpFormatter, self)._get_help_string(action)


def make_parser(description, prog=None):
    return _Parser(prog=prog, description=description, formatter_class=_HelpFormatter)


def check_outputs(files=None, folders=None, results_file=None, built_beside=False):
    """Fail fast, before any expensive work, on output options that cannot be written: ``files`` and
    ``folders`` map an option name to its value (unset options are skipped); ``results_file`` is a
    ``--results-file`` for ``report.write_results`` (.json or .csv); ``built_beside``: the folders are built
    next to their path and renamed into place.  The rules live in :mod:`mobilevit_trt.fileio` (which
    ``atomic_path`` applies too)."""
    from .fileio import check_output_file, check_output_folder

    if results_file:
        from .report import check_results_path
        check_results_path(results_file)
        check_output_file(results_file, "--results-file")
    for option, path in (files or {}).items():
        if path:
            check_output_file(path, option)
    for option, path in (folders or {}).items():
        if path:
            check_output_folder(path, option, built_beside=built_beside)


def add_model_args(parser, model_path_default=None):
    g = parser.add_argument_group("model")
    g.add_argument("--model_path", "--model-path", dest="model_path", default=model_path_default,
                   help="PyTorch checkpoint (.pth/.pth.tar/.pt/.safetensors; with or without a 'state_dict' "
                        "wrapper and 'module.' prefix; timm training checkpoints; ml-cvnets .pt) or a Hugging Face "
                        "model folder. Default: the shipped default weights if present, else a deterministic "
                        "random initialisation (with a warning).")
    g.add_argument("--model", default=None, metavar="KIND[:NAME]",
                   help="which model the checkpoint is (default: auto, detected from the file): original[:xxs|xs|s], "
                        "timm:<name> (Apple's official MobileViT on timm's code: mobilevit_xxs|xs|s, "
                        "mobilevitv2_050..200; without --model_path a random initialisation), hf (a Hugging Face "
                        "folder as --model_path), cvnets (an ml-cvnets .pt)")
    g.add_argument("--use-ema", action="store_true",
                   help="a timm training checkpoint: its EMA weights (state_dict_ema) instead of state_dict, as "
                        "timm's validate.py --use-ema")
    g.add_argument("--arch", choices=ARCH_CHOICES, default=None,
                   help="MobileViT size (default: read from the checkpoint's metadata, else 's'); with --model "
                        "timm, the official model of that size")
    g.add_argument("--num-classes", type=int, default=None,
                   help="classifier width (default: read from the checkpoint, else 1000)")
    g.add_argument("--img-size", type=int, default=None,
                   help="input height = width, a multiple of 32 (default: the model's own: a Hugging Face "
                        "config's image_size, else 256)")
    return g


def require_file(path, what="file"):
    if not path or not os.path.isfile(path):
        raise UserError("%s not found: %s" % (what, path))
    return path


def positive_int(text):
    try:
        v = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError("expected a positive integer, got %r" % text)
    if v <= 0:
        raise argparse.ArgumentTypeError("expected a positive integer, got %r" % text)
    return v


def add_data_args(parser):
    """Evaluation data options (accuracy scripts, reference-data generation)."""
    g = parser.add_argument_group("data")
    g.add_argument("--data_path", "--data-path", dest="data_path", default=None,
                   help="LMDB (the toolkit's format, or the original's pyarrow format where readable), image "
                        "folder with one sub-folder per class, or flat folder with --labels. Default: the default "
                        "dataset's held-out split (benchmark/data/default/val.lmdb, or val/)")
    g.add_argument("--labels", default=None,
                   help="label file for a flat image folder: '<file name> <integer label>' per line")
    g.add_argument("--workers", type=int, default=None, help="image decoding threads (default: min(4, cores))")
    return g


def add_accuracy_args(parser, backend_default=None):
    """The accuracy loop's options: backend and artifacts, batching, output."""
    g = parser.add_argument_group("accuracy")
    g.add_argument("--backend", choices=("trt", "onnxruntime", "torch"), default=backend_default,
                   help="what runs the model (default: trt with --trt_path, else onnxruntime with --onnx_path, "
                        "else torch)")
    g.add_argument("--trt_path", "--trt-path", dest="trt_path", default=None, help="serialized TensorRT engine")
    g.add_argument("--plugins", nargs="*", default=None,
                   help="plugin libraries to load with the engine (default: the runtime's own lookup)")
    g.add_argument("--onnx_path", "--onnx-path", dest="onnx_path", default=None,
                   help="ONNX file for ONNX Runtime (any variant: FP32, FP16, Q/DQ INT8, plugin graph)")
    g.add_argument("--device", default="cpu", help="torch backend device (cpu, cuda, cuda:N)")
    g.add_argument("--opt", action="store_true", help="torch backend: the optimized model variant")
    g.add_argument("--fake-quant", action="store_true",
                   help="torch backend: run a QAT checkpoint with its fake quantizers")
    g.add_argument("--batch", type=positive_int, default=None,
                   help="batch size (default: the artifact's static batch, else 8)")
    g.add_argument("--limit", type=positive_int, default=None, help="evaluate only the first N images")
    g.add_argument("--results-file", default=None, help="write the result as JSON (.json) or CSV (.csv)")
    g.add_argument("--no-progress", action="store_true", help="no progress bar")
    return g


def add_plugin_arg(group):
    """--plugin PATH (repeatable): TensorRT plugin libraries, shared by the build and run scripts."""
    group.add_argument("--plugin", action="append", default=None, metavar="PATH",
                       help="TensorRT plugin library to load (repeatable). Default: build: plugin/build/*.so when "
                            "the ONNX has plugin nodes; run: the libraries recorded in the engine's sidecar JSON")
    return group


def add_trt_build_args(parser):
    """TensorRT engine-build options (convert_to_trt.py and the pipeline)."""
    g = parser.add_argument_group("TensorRT build")
    g.add_argument("--input_path", "--input-path", dest="input_path", default=None, help="ONNX file to build")
    g.add_argument("--save_path", "--save-path", dest="save_path", default=None,
                   help="engine file to write (atomically), with <save_path>.json beside it")
    g.add_argument("--batch", type=positive_int, default=None,
                   help="batch size of a static ONNX (checked against the file; the ONNX decides)")
    g.add_argument("--dynamic", action="store_true",
                   help="the ONNX has a dynamic batch (checked; default profile 1:4:8)")
    g.add_argument("--profile", action="append", default=None, metavar="MIN:OPT:MAX",
                   help="optimization profile of batch sizes (repeatable: several profiles)")
    g.add_argument("--fp16", action="store_true",
                   help="FP16: builder flag, or an FP16 copy of the ONNX on strongly typed TensorRT")
    g.add_argument("--int8", action="store_true", help="INT8: implicit calibration or explicit Q/DQ")
    g.add_argument("--int8-mode", choices=("auto", "implicit", "qdq"), default="auto",
                   help="auto: implicit calibration where TensorRT has calibrators, else Q/DQ")
    g.add_argument("--calib-data", default=None,
                   help="calibration images: an .npz with 'input' [N,3,H,W] float32 (preprocessed), an image folder "
                        "or an LMDB (a seeded sample of --calib-limit images, default 256). Default: the default "
                        "dataset's training split (benchmark/make_default_dataset.py)")
    g.add_argument("--calib-limit", type=positive_int, default=None, help="use at most N calibration images")
    g.add_argument("--calibrator", choices=("entropy2", "minmax"), default="entropy2",
                   help="implicit: IInt8EntropyCalibrator2 / IInt8MinMaxCalibrator; Q/DQ: entropy / min-max "
                        "ranges in ONNX Runtime")
    g.add_argument("--calib-cache", default=None,
                   help="implicit calibration cache (default <engine>.calib-<calibrator>.cache; reused only for "
                        "the same ONNX sha256, calibrator and TensorRT version)")
    g.add_argument("--workspace", type=positive_int, default=None, metavar="MiB",
                   help="builder workspace limit. Default: TensorRT's (the device memory) from 8.4 on; 1 GiB "
                        "(at most half the GPU's memory) on 8.2, whose own default is 0")
    g.add_argument("--timing-cache", default=None, help="timing cache file (read if present, then written)")
    g.add_argument("--compute-capability", action="append", default=None, metavar="SM",
                   help="TensorRT-RTX: target compute capability, e.g. SM86 (repeatable; default: its own set)")
    g.add_argument("--inspect", action="store_true",
                   help="DETAILED profiling verbosity and <engine>.layers.json from the engine inspector "
                        "(needs a GPU that can load the engine)")
    g.add_argument("--cudaGraph", "--cuda-graph", dest="cuda_graph", action="store_true",
                   help="build for CUDA-graph replay (TensorRT-RTX needs REQUIRE_USER_ALLOCATION for stream capture; "
                        "other TensorRT versions capture any engine)")
    g.add_argument("--keep-intermediate", action="store_true",
                   help="keep the intermediate graphs (<engine>.qdq.onnx, <engine>.fp16.onnx) next to the engine "
                        "(default: made in a temporary folder and deleted)")
    g.add_argument("--verbose", action="store_true", help="print TensorRT's info messages")
    add_plugin_arg(g)
    return g


def add_trt_run_args(parser):
    """TensorRT benchmark options (test_trt.py and the pipeline)."""
    g = parser.add_argument_group("TensorRT run")
    g.add_argument("--trt_path", "--trt-path", dest="trt_path", default=None, help="serialized engine")
    g.add_argument("--batch", action="append", type=positive_int, default=None,
                   help="batch size(s) to run (repeatable; default: the static batch, or each profile's "
                        "MIN/OPT/MAX; with --data: filter the files)")
    g.add_argument("--dynamic", action="store_true",
                   help="accepted for the original command lines: the engine says whether it is dynamic")
    g.add_argument("--data", default=None,
                   help="reference .npz (input, logits, label) or a folder of them (benchmark/gen_test_data.py); "
                        "without it: random inputs, no diff")
    g.add_argument("--warmup", type=int, default=20, help="untimed runs before timing")
    g.add_argument("--iters", type=positive_int, default=50, help="timed runs per batch size")
    g.add_argument("--cudaGraph", "--cuda-graph", dest="cuda_graph", action="store_true",
                   help="replay a CUDA graph per input shape")
    g.add_argument("--ProfilerLayer", "--profile-layers", dest="profile_layers", action="store_true",
                   help="per-layer times (sorted, with share of total)")
    g.add_argument("--atol", type=float, default=None,
                   help="max abs diff for PASSED (default by engine precision: fp32 1e-2, fp16 0.1, int8 1.0)")
    g.add_argument("--results-file", default=None, help="write rows as JSON (.json) or CSV (.csv)")
    g.add_argument("--verbose", action="store_true", help="print TensorRT's info messages")
    add_plugin_arg(g)
    return g
