# Copyright (c) medfuse contributors
# Licensed under the Apache License, Version 2.0
"""``medfuse vindr2manifest CSV IMAGES --out M.json``: VinDr-CXR annotations -> detection manifest.

Columns are read by name (Kaggle and PhysioNet releases); "No finding" rows make negatives; the readers'
boxes are merged per class (``--merge wbf``: overlapping boxes averaged, kept with ``--min-readers``). See
:func:`medfuse.data.layouts.detection.vindr_to_manifest`.
"""

from __future__ import annotations

import argparse

from medfuse.cli import run_command
from medfuse.commands._common import common_options, unit_fraction, write_outputs
from medfuse.data.layouts.detection import MERGE_MODES, vindr_to_manifest
from medfuse.commands._common import add_common_arguments

__all__ = ["HELP", "build_parser", "main"]

HELP = "VinDr-CXR annotation CSV + images -> detection manifest (readers' boxes merged)"


def _min_readers(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        value = 0
    if value < 1:
        raise argparse.ArgumentTypeError(f"invalid --min-readers {text!r}: give a whole number >= 1, e.g. 2")
    return value


def build_parser(prog: str = "medfuse vindr2manifest") -> argparse.ArgumentParser:
    """Options of ``medfuse vindr2manifest``."""
    p = argparse.ArgumentParser(
        prog=prog,
        description=HELP + ". Boxes stay [x_min, y_min, x_max, y_max] in pixels (x = column), clipped to the image.",
    )
    p.add_argument("csv", help="annotation CSV (Kaggle train.csv or PhysioNet annotations_train.csv)")
    p.add_argument("images", help="folder of <image_id><ext> images")
    p.add_argument("--out", required=True, help="manifest JSON to write (paths are relative to its folder)")
    p.add_argument("--merge", choices=MERGE_MODES, default="wbf",
                   help="how the readers' boxes are combined (default wbf: overlapping boxes of a class averaged)")
    p.add_argument("--merge-iou", type=unit_fraction, default=0.4, metavar="IOU",
                   help="IoU that joins two readers' boxes for --merge wbf (default 0.4)")
    p.add_argument("--min-readers", type=_min_readers, default=1, metavar="N",
                   help="readers a fused box needs for --merge wbf (default 1)")
    p.add_argument("--image-ext", default=".dicom", metavar="EXT", help="image file extension (default .dicom)")
    add_common_arguments(p, split=True, patients=False)
    return p


def _run(args) -> int:
    options = common_options(args)
    manifest, report = vindr_to_manifest(
        args.csv, args.images, args.out, merge=args.merge, merge_iou=args.merge_iou, min_readers=args.min_readers,
        image_ext=args.image_ext, **options,
    )
    return write_outputs(manifest, report, args.out, args.report)


def main(argv=None) -> int:
    """Run ``medfuse vindr2manifest`` with ``argv`` (default: ``sys.argv[1:]``)."""
    return run_command("medfuse vindr2manifest", _run, build_parser(), argv)
