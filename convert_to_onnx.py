#!/usr/bin/env python3
"""Stage 1: export a MobileViT checkpoint to ONNX (static or dynamic batch, base or --opt), cleaned and verified.

Examples:
  python convert_to_onnx.py --model_path MobileViT_Pytorch/weights-file/model_best.pth.tar \
      --save_path target/MobileViT_b4.onnx --batch 4
  python convert_to_onnx.py --model_path ckpt.pth.tar --save_path target/MobileViT_dynamic_opt.onnx --opt --dynamic
  python convert_to_onnx.py --model_path MobileViT_Pytorch/weights-file/mobilevit_default_qat_wa.pth.tar \
      --save_path target/MobileViT_qat_wa_qdq.onnx --dynamic         # a QAT checkpoint: its Q/DQ graph

The same command as ``mobilevit-trt export``: its code is mobilevit_trt/commands/export.py.
"""
from mobilevit_trt import cli
from mobilevit_trt.commands.export import main

if __name__ == "__main__":
    cli.run_main(main)
