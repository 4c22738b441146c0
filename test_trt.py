#!/usr/bin/env python3
"""Stage 4: latency/throughput of a TensorRT engine per batch size, and its output error against reference data.

Examples:
  python test_trt.py --trt_path target/MobileViT_b4.trt --batch 4 --data benchmark/data
  python test_trt.py --trt_path target/MobileViT_dynamic_opt_plugin_int8.trt --dynamic --cudaGraph --ProfilerLayer
  python test_trt.py --trt_path target/dyn.trt --data benchmark/data --results-file runs/trt.csv

The same command as ``mobilevit-trt bench``: its code is mobilevit_trt/commands/bench.py.
"""
from mobilevit_trt import cli
from mobilevit_trt.commands.bench import main

if __name__ == "__main__":
    cli.run_main(main)
