#!/usr/bin/env python3
"""Stage 5: top-1/top-5 accuracy of an engine, an ONNX file or a checkpoint on a labelled dataset.

The original project's command, kept as a thin shim: the same ``main`` as ``mobilevit-trt accuracy`` (code, examples
and options in mobilevit_trt/commands/accuracy.py; ``python test_trt_precision.py --help``).
"""
from mobilevit_trt import cli
from mobilevit_trt.commands.accuracy import main

if __name__ == "__main__":
    cli.run_main(main)
