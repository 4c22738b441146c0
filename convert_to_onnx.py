#!/usr/bin/env python3
"""Stage 1: export a MobileViT checkpoint to ONNX (static or dynamic batch, base or --opt), cleaned and verified.

The original project's command, kept as a thin shim: the same ``main`` as ``mobilevit-trt export`` (code, examples
and options in mobilevit_trt/commands/export.py; ``python convert_to_onnx.py --help``).
"""
from mobilevit_trt import cli
from mobilevit_trt.commands.export import main

if __name__ == "__main__":
    cli.run_main(main)
