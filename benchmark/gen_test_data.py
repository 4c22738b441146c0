#!/usr/bin/env python3
"""Reference data for test_trt.py and INT8 calibration: batch<N>.npz (input, PyTorch logits, label), calibration.npz.

  batch1.npz, batch2.npz, batch4.npz, batch8.npz   'input' [N,3,S,S] float32, 'logits' [N,C] float32 (the PyTorch
                                                   model run on that batch), 'label' [N] int64, 'index' [N]
  calibration.npz                                  'input' [M,3,S,S] float32 (default M = 100, as the original)

Images are a seeded random pick (so a dataset stored class by class still gives mixed classes); reference and
calibration images never overlap.  Calibration images come from --calib_path, by default the default dataset's
train split when --data_path is the default, else --data_path itself.  Files are plain .npz (no pickle); each
also holds 'preprocess' (the JSON of the preprocessing used: the model's own, as the checkpoint records it, with
--mean/--std/... overrides; printed at the start).

  python benchmark/gen_test_data.py                                    # default model and dataset
  python benchmark/gen_test_data.py --model_path model_best.pth.tar --data_path /target/test_data/val/val.lmdb
"""
import os

from mobilevit_trt import cli
from mobilevit_trt.preprocess import add_preprocess_args

DEFAULT_OUT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "data")


def build_parser():
    p = cli.make_parser(__doc__.splitlines()[0], prog="gen_test_data.py")
    cli.add_model_args(p)
    cli.add_data_args(p)
    add_preprocess_args(p)
    g = p.add_argument_group("output")
    g.add_argument("--calib_path", "--calib-path", dest="calib_path", default=None,
                   help="calibration source (default: see above)")
    g.add_argument("--batches", default="1,2,4,8", help="reference batch sizes, comma separated")
    g.add_argument("--calib-count", type=int, default=100, help="calibration images (0: no calibration.npz)")
    g.add_argument("--seed", type=int, default=0, help="seed of the image pick")
    g.add_argument("--device", default="cpu", help="where PyTorch computes the reference logits")
    g.add_argument("--save_path", "--save-path", dest="save_path", default=DEFAULT_OUT, help="output folder")
    return p


def main(argv=None):
    args = build_parser().parse_args(argv)
    from MobileViT_Pytorch.source import torch_backend
    from mobilevit_trt.accuracy import model_preprocess
    from mobilevit_trt.data import default_split, open_dataset, write_reference_data
    from mobilevit_trt.errors import UserError
    from mobilevit_trt.preprocess import resolve

    try:
        batches = tuple(int(b) for b in args.batches.split(",") if b.strip())
    except ValueError:
        raise UserError("--batches must be comma-separated integers, got %r" % args.batches)
    if not batches or min(batches) < 1:
        raise UserError("--batches must list positive batch sizes")
    cli.check_outputs(folders={"--save_path": args.save_path})
    backend = torch_backend(args.model_path, args.arch, args.num_classes, args.img_size, device=args.device,
                            model=args.model, use_ema=args.use_ema)
    known, origin = model_preprocess(backend)
    pp = resolve(known, origin, img_size=args.img_size, args=args)
    ds = open_dataset(args.data_path or default_split("val"), label_file=args.labels, preprocess=pp)
    calib_path = args.calib_path or (None if args.data_path else default_split("train"))
    calib_ds = open_dataset(calib_path, preprocess=pp) if calib_path else None
    print("reference logits: %s; data: %s; calibration: %s" % (
        backend.describe(), ds.describe(), calib_ds.describe() if calib_ds else "the same dataset"))
    write_reference_data(backend, ds, args.save_path, batches, calib_ds, args.calib_count, args.seed)
    return 0


if __name__ == "__main__":
    cli.run_main(main)
