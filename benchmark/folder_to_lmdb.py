#!/usr/bin/env python3
"""Image folder -> LMDB in the toolkit's format (raw encoded image bytes + int64 label; no pickle).

Input: a folder with one sub-folder per class (sorted class names give the label ids 0..K-1), or a flat folder
with --labels FILE ('<file name> <integer label>' per line, e.g. ImageNet's validation labels).  Every image is
decoded before it is stored; a corrupt one stops the run (exit 1, nothing written) unless --skip-bad.  The LMDB
is built in a temporary folder and renamed into place after its record count was read back and checked.

  python benchmark/folder_to_lmdb.py --input_path /data/imagenet/val --save_path /data/imagenet/val.lmdb
  python benchmark/folder_to_lmdb.py --input_path /data/val_flat --labels val_labels.txt --save_path val.lmdb
"""
from mobilevit_trt import cli


def build_parser():
    p = cli.make_parser(__doc__.splitlines()[0], prog="folder_to_lmdb.py")
    p.add_argument("--input_path", "--input-path", dest="input_path", required=True, help="image folder")
    p.add_argument("--save_path", "--save-path", dest="save_path", required=True, help="LMDB folder to create")
    p.add_argument("--labels", default=None, help="label file for a flat folder")
    p.add_argument("--skip-bad", action="store_true", help="leave corrupt images out (listed) instead of failing")
    p.add_argument("--overwrite", action="store_true", help="replace an existing --save_path")
    p.add_argument("--no-progress", action="store_true")
    return p


def main(argv=None):
    args = build_parser().parse_args(argv)
    cli.check_outputs(folders={"--save_path": args.save_path}, built_beside=True)  # built beside, then renamed
    from mobilevit_trt.data import folder_to_lmdb

    rep = folder_to_lmdb(args.input_path, args.save_path, label_file=args.labels, skip_bad=args.skip_bad,
                         show_progress=not args.no_progress, overwrite=args.overwrite)
    classes = rep["classes"]
    print("wrote %s: %d images%s; count verified (%d found, %d skipped)" % (
        args.save_path, rep["written"], ", %d classes" % len(classes) if classes else "", rep["found"],
        len(rep["skipped"])))
    for path in rep["skipped"]:
        print("  skipped corrupt image: %s" % path)
    return 0


if __name__ == "__main__":
    cli.run_main(main)
