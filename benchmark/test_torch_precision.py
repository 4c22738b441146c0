#!/usr/bin/env python3
"""PyTorch baseline accuracy: a checkpoint's top-1/top-5 on a labelled dataset (same loop as test_trt_precision.py).

  python benchmark/test_torch_precision.py                      # shipped default model, default held-out split
  python benchmark/test_torch_precision.py --model_path MobileViT_Pytorch/weights-file/model_best.pth.tar \\
      --data_path /target/test_data/val/val.lmdb --batch 8 --device cuda
"""
from mobilevit_trt import cli


def build_parser():
    p = cli.make_parser(__doc__.splitlines()[0], prog="test_torch_precision.py")
    cli.add_model_args(p)
    cli.add_data_args(p)
    g = p.add_argument_group("accuracy")
    g.add_argument("--device", default="cpu", help="cpu, cuda, cuda:N")
    g.add_argument("--opt", action="store_true", help="the optimized model variant")
    g.add_argument("--fake-quant", action="store_true", help="run a QAT checkpoint with its fake quantizers")
    g.add_argument("--batch", type=cli.positive_int, default=8)
    g.add_argument("--limit", type=cli.positive_int, default=None, help="evaluate only the first N images")
    g.add_argument("--results-file", default=None, help="write the result as JSON (.json) or CSV (.csv)")
    g.add_argument("--no-progress", action="store_true", help="no progress bar")
    return p


def main(argv=None):
    args = build_parser().parse_args(argv)
    cli.check_outputs(results_file=args.results_file)
    from mobilevit_trt.commands.accuracy import run_accuracy

    args.backend = "torch"
    run_accuracy(args)
    return 0


if __name__ == "__main__":
    cli.run_main(main)
