#!/usr/bin/env python3
"""Run every stage this machine supports on one model, into one run folder, and write one report.

Stages: export (base and --opt, static and dynamic) -> graph surgery -> FP16 and INT8 variants (each checked in
ONNX Runtime) -> engine builds (TensorRT if present, else TensorRT-RTX ahead-of-time on the CPU) -> with TensorRT
and a GPU, engine benchmarks -> accuracy of every variant -> ONNX Runtime CPU latency -> summary.md, JSON, CSV,
PNG plots.  Stages this machine cannot run are listed as skipped with the reason.  Re-running skips stages whose
inputs did not change (content hash) unless --force.

The same command as ``mobilevit-trt pipeline``: its code is mobilevit_trt/commands/pipeline.py.
"""
from mobilevit_trt import cli
from mobilevit_trt.commands.pipeline import main

if __name__ == "__main__":
    cli.run_main(main)
