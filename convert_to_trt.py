#!/usr/bin/env python3
"""Stage 3: build a TensorRT engine from an ONNX file (FP32/FP16/INT8, static or dynamic, plugins), on any TensorRT.

The original project's command, kept as a thin shim: the same ``main`` as ``mobilevit-trt build`` (code, examples
and options in mobilevit_trt/commands/build.py; ``python convert_to_trt.py --help``).
"""
from mobilevit_trt import cli
from mobilevit_trt.commands.build import main

if __name__ == "__main__":
    cli.run_main(main)
