# Copyright (c) medfuse contributors
# Licensed under the Apache License, Version 2.0
"""``medfuse pairs2manifest IMAGES MASKS --out M.json``: image + mask folders -> manifest.

Masks are matched to images by file stem (``cxr/CHNCXR_0001_0.png`` with
``masks/CHNCXR_0001_0.png``; ``--mask-suffix`` adds stems such as ``1-mask`` for ``1.jpg``).
The label is read from the image stem with ``--label-pattern`` (default ``_0`` normal /
``_1`` tuberculosis, the Shenzhen and Montgomery naming). See
:func:`medfuse.data.layouts.pairs_to_manifest`.
"""

from __future__ import annotations

import argparse

from medfuse.cli import run_command
from medfuse.commands._common import add_common_arguments, common_options, write_outputs
from medfuse.data.layouts import DEFAULT_LABEL_PATTERN, DEFAULT_MASK_SUFFIXES, pairs_to_manifest

__all__ = ["HELP", "build_parser", "main"]

HELP = "image + mask folders (Shenzhen/Montgomery lungs) -> segmentation manifest"


def build_parser(prog: str = "medfuse pairs2manifest") -> argparse.ArgumentParser:
    """Options of ``medfuse pairs2manifest``."""
    p = argparse.ArgumentParser(
        prog=prog,
        description=HELP + ". Masks are matched by file stem; labels come from the file name.",
    )
    p.add_argument("images", help="folder of images (e.g. lung_seg_cxr/cxr)")
    p.add_argument("masks", help="folder of masks (e.g. lung_seg_cxr/masks); may be the image folder")
    p.add_argument("--out", required=True, help="manifest JSON to write (paths are relative to its folder)")
    add_common_arguments(p)
    p.add_argument(
        "--mask-suffix", action="append", default=None, metavar="SUFFIX",
        help="mask stem = image stem + SUFFIX; repeat to try several in order "
        f"(default: {', '.join(repr(s) for s in DEFAULT_MASK_SUFFIXES)})",
    )
    p.add_argument(
        "--label-pattern", default=DEFAULT_LABEL_PATTERN, metavar="REGEX",
        help="regex with a group 'label' searched in the image stem; '' for no labels "
        f"(default {DEFAULT_LABEL_PATTERN!r} with classes normal,tuberculosis)",
    )
    p.add_argument(
        "--task", choices=("auto", "segmentation", "segmentation_classification"), default="auto",
        help="auto (default): segmentation_classification when labels are found, else segmentation",
    )
    p.add_argument(
        "--missing-mask", choices=("keep", "skip"), default="keep",
        help="an image without mask: keep it as a label-only item (default) or skip it; reported either way",
    )
    p.add_argument("--check", choices=("header", "decode"), default="header", help="image check (default header)")
    return p


def _run(args) -> int:
    manifest, report = pairs_to_manifest(
        args.images, args.masks, args.out,
        mask_suffixes=tuple(args.mask_suffix) if args.mask_suffix else DEFAULT_MASK_SUFFIXES,
        label_pattern=args.label_pattern, task=args.task, missing_mask=args.missing_mask, check=args.check,
        **common_options(args),
    )
    return write_outputs(manifest, report, args.out, args.report)


def main(argv=None) -> int:
    """Run ``medfuse pairs2manifest`` with ``argv`` (default: ``sys.argv[1:]``)."""
    return run_command("medfuse pairs2manifest", _run, build_parser(), argv)
