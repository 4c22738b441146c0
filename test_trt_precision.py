#!/usr/bin/env python3
"""Stage 5: top-1/top-5 accuracy of an engine, an ONNX file or a checkpoint on a labelled dataset.

The same loop measures every artifact, so their numbers compare directly:
  python test_trt_precision.py --trt_path target/MobileViT_dynamic_opt_plugin_int8.trt --data_path val.lmdb --batch 4
  python test_trt_precision.py --backend onnxruntime --onnx_path target/MobileViT_b4.onnx
  python test_trt_precision.py --backend torch --model_path MobileViT_Pytorch/weights-file/mobilevit_default.pth.tar
Without --data_path the default dataset's held-out split is used (python benchmark/make_default_dataset.py).

The same command as ``mobilevit-trt accuracy``: its code is mobilevit_trt/commands/accuracy.py.
"""
from mobilevit_trt import cli
from mobilevit_trt.commands.accuracy import main

if __name__ == "__main__":
    cli.run_main(main)
