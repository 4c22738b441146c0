#!/usr/bin/env python3
"""Stage 4: latency/throughput of a TensorRT engine per batch size, and its output error against reference data.

The original project's command, kept as a thin shim: the same ``main`` as ``mobilevit-trt bench`` (code, examples
and options in mobilevit_trt/commands/bench.py; ``python test_trt.py --help``).
"""
from mobilevit_trt import cli
from mobilevit_trt.commands.bench import main

if __name__ == "__main__":
    cli.run_main(main)
