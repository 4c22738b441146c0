#!/usr/bin/env python3
"""Run every stage this machine supports on one model, into one run folder, and write one report.

The original project's command, kept as a thin shim: the same ``main`` as ``mobilevit-trt pipeline`` (code, examples
and options in mobilevit_trt/commands/pipeline.py; ``python pipeline.py --help``).
"""
from mobilevit_trt import cli
from mobilevit_trt.commands.pipeline import main

if __name__ == "__main__":
    cli.run_main(main)
