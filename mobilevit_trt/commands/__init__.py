"""The command line: ``mobilevit-trt <command> [options]``, one command per stage script of the original project.

Each module here holds one stage's parser (``build_parser(prog)``) and ``main(argv, prog)``; the root scripts
(``convert_to_onnx.py`` ...) are shims that run the same ``main`` under their own name, so
``python convert_to_onnx.py ARGS`` and ``mobilevit-trt export ARGS`` are one command.  This is the top layer of the
package: it may import the model package (``MobileViT_Pytorch``); the rest of ``mobilevit_trt`` may not.
"""
import importlib
import sys

from .. import __version__, cli
from ..errors import UserError

PROG = "mobilevit-trt"

# (command, its module in this package, the original project's script, one line for --help)
COMMANDS = (
    ("export", "export", "convert_to_onnx.py", "stage 1: checkpoint -> ONNX (static/dynamic, --opt, Q/DQ for QAT)"),
    ("fuse", "fuse", "onnx_add_plugin.py", "stage 2: LayerNorm / attention subgraphs -> plugin nodes"),
    ("build", "build", "convert_to_trt.py", "stage 3: ONNX -> TensorRT engine (FP32/FP16/INT8, profiles, plugins)"),
    ("bench", "bench", "test_trt.py", "stage 4: engine latency per batch size, error vs reference data"),
    ("accuracy", "accuracy", "test_trt_precision.py", "stage 5: top-1/top-5 of an engine, ONNX file or checkpoint"),
    ("pipeline", "pipeline", "pipeline.py", "every stage this machine supports -> one run folder, one report"),
)


def usage(prog=PROG):
    width = max(len(c[0]) for c in COMMANDS)
    swidth = max(len(c[2]) for c in COMMANDS)
    lines = ["usage: %s <command> [options]" % prog, "",
             "MobileViT -> ONNX -> TensorRT, one command per stage; each runs the same code as the original "
             "project's", "script of that stage (python <script> [options] from the repository root).", "",
             "  %-*s  %-*s  %s" % (width, "command", swidth, "script", "what")]
    lines += ["  %-*s  %-*s  %s" % (width, name, swidth, script, text) for name, _, script, text in COMMANDS]
    lines += ["", "options:", "  -h, --help  show this message and exit", "  --version   print the version and exit",
              "", "'%s <command> --help' lists a command's options." % prog]
    return "\n".join(lines)


def command_main(name, prog=PROG):
    """The ``main(argv, prog)`` of command ``name`` (UserError for an unknown name)."""
    for command, module, _, _ in COMMANDS:
        if command == name:
            return importlib.import_module("%s.%s" % (__name__, module)).main
    raise UserError("unknown command %r (choose from %s; see %s --help)"
                    % (name, ", ".join(c[0] for c in COMMANDS), prog))


def dispatch(argv, prog=PROG):
    """Run ``argv`` = ``[command, options...]``; returns the command's exit status."""
    argv = list(argv)
    if argv and argv[0] in ("-h", "--help"):
        print(usage(prog))
        return 0
    if argv and argv[0] == "--version":
        print("%s %s" % (prog, __version__))
        return 0
    if not argv:
        raise UserError("no command given: %s <command> [options], command one of %s (see %s --help)"
                        % (prog, ", ".join(c[0] for c in COMMANDS), prog))
    if argv[0].startswith("-"):
        raise UserError("%s takes the command first, got the option %s (see %s --help)" % (prog, argv[0], prog))
    run = command_main(argv[0], prog)
    return run(argv[1:], prog="%s %s" % (prog, argv[0]))


def main(argv=None, prog=PROG):
    """The ``mobilevit-trt`` console script (and ``python -m mobilevit_trt``): one ``error:`` line and exit 1 for
    a user error, as every script."""
    cli.run_main(lambda args: dispatch(args, prog), sys.argv[1:] if argv is None else argv)
