"""Shared command-line plumbing: option groups written once, and the entry-point wrapper.

Every script's ``main`` is wrapped by :func:`run_main`: a :class:`UserError` prints ``error: <message>`` on one
line and exits 1 (no traceback); anything else is a bug and raises.
"""
import argparse
import os
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


def make_parser(description, prog=None):
    return _Parser(prog=prog, description=description,
                   formatter_class=argparse.ArgumentDefaultsHelpFormatter)


def add_model_args(parser, model_path_default=None):
    g = parser.add_argument_group("model")
    g.add_argument("--model_path", "--model-path", dest="model_path", default=model_path_default,
                   help="PyTorch checkpoint (.pth/.pth.tar; with or without a 'state_dict' wrapper and "
                        "'module.' prefix). Default: the shipped default weights if present, else a "
                        "deterministic random initialisation (with a warning).")
    g.add_argument("--arch", choices=ARCH_CHOICES, default=None,
                   help="MobileViT size (default: read from the checkpoint's metadata, else 's')")
    g.add_argument("--num-classes", type=int, default=None,
                   help="classifier width (default: read from the checkpoint, else 1000)")
    g.add_argument("--img-size", type=int, default=256, help="input height = width (multiple of 32)")
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
