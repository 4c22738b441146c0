#!/usr/bin/env python3
"""Stage 5: top-1/top-5 accuracy of an engine, an ONNX file or a checkpoint on a labelled dataset.

The same loop measures every artifact, so their numbers compare directly:
  python test_trt_precision.py --trt_path target/MobileViT_dynamic_opt_plugin_int8.trt --data_path val.lmdb --batch 4
  python test_trt_precision.py --backend onnxruntime --onnx_path target/MobileViT_b4.onnx
  python test_trt_precision.py --backend torch --model_path MobileViT_Pytorch/weights-file/mobilevit_default.pth.tar
Without --data_path the default dataset's held-out split is used (python benchmark/make_default_dataset.py).
"""
import os
import sys

from mobilevit_trt import cli


def build_parser():
    p = cli.make_parser(__doc__.splitlines()[0], prog="test_trt_precision.py")
    cli.add_accuracy_args(p)
    cli.add_model_args(p)
    cli.add_data_args(p)
    return p


def main(argv=None):
    args = build_parser().parse_args(argv)
    cli.check_outputs(results_file=args.results_file)
    from mobilevit_trt.accuracy import run_accuracy

    if args.backend is None:
        args.backend = "trt" if args.trt_path else "onnxruntime" if args.onnx_path else "torch"
    run_accuracy(args)
    return 0


if __name__ == "__main__":
    sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
    cli.run_main(main)
