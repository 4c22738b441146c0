#!/usr/bin/env python3
"""Stage 2: replace LayerNorm and self-attention subgraphs of an ONNX model with LayerNorm / Attention plugin nodes.

The original project's command, kept as a thin shim: the same ``main`` as ``mobilevit-trt fuse`` (code, examples
and options in mobilevit_trt/commands/fuse.py; ``python onnx_add_plugin.py --help``).
"""
from mobilevit_trt import cli
from mobilevit_trt.commands.fuse import main

if __name__ == "__main__":
    cli.run_main(main)
