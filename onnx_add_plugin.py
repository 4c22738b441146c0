#!/usr/bin/env python3
"""Stage 2: replace LayerNorm and self-attention subgraphs of an ONNX model with LayerNorm / Attention plugin nodes.

Examples:
  python onnx_add_plugin.py --input_path target/MobileViT_b4.onnx --save_path target/MobileViT_b4_plugin.onnx
  python onnx_add_plugin.py --input_path target/MobileViT_dynamic_opt.onnx \
      --save_path target/MobileViT_dynamic_opt_plugin.onnx --plugins attention --report target/surgery.json

The same command as ``mobilevit-trt fuse``: its code is mobilevit_trt/commands/fuse.py.
"""
from mobilevit_trt import cli
from mobilevit_trt.commands.fuse import main

if __name__ == "__main__":
    cli.run_main(main)
