#!/usr/bin/env python3
"""Stage 3: build a TensorRT engine from an ONNX file (FP32/FP16/INT8, static or dynamic, plugins), on any TensorRT.

Examples:
  python convert_to_trt.py --input_path target/MobileViT_b4.onnx --save_path target/MobileViT_b4.trt --batch 4
  python convert_to_trt.py --input_path target/MobileViT_dynamic_opt_plugin.onnx \
      --save_path target/MobileViT_dynamic_opt_plugin_int8.trt --dynamic --fp16 --int8 --calib-data calib.npz
  python convert_to_trt.py --input_path target/MobileViT_dynamic.onnx --save_path target/dyn.trt --dynamic \
      --profile 1:1:1 --profile 2:4:8 --profile 16:32:32
  python convert_to_trt.py --input_path target/MobileViT_dynamic.onnx --save_path target/dyn_int8.trt --dynamic \
      --fp16 --int8            # no --calib-data: calibrates on the default dataset's training split

The same command as ``mobilevit-trt build``: its code is mobilevit_trt/commands/build.py.
"""
from mobilevit_trt import cli
from mobilevit_trt.commands.build import main

if __name__ == "__main__":
    cli.run_main(main)
