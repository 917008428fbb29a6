# Copyright (c) medfuse contributors
# Licensed under the Apache License, Version 2.0
"""``medfuse coco2manifest JSON IMAGES --out M.json``: COCO detection annotations (e.g. TBX11K) -> manifest.

``bbox`` ``[x, y, w, h]`` becomes ``[x, y, x + w, y + h]``; ``iscrowd`` annotations are skipped and counted;
images without annotations are negatives. See :func:`medfuse.data.layouts.detection.coco_to_manifest`.
"""

from __future__ import annotations

import argparse

from medfuse.cli import run_command
from medfuse.commands._common import common_options, write_outputs
from medfuse.data.layouts.detection import coco_to_manifest
from medfuse.commands._common import add_common_arguments

__all__ = ["HELP", "build_parser", "main"]

HELP = "COCO detection JSON (TBX11K ...) + images -> detection manifest"


def build_parser(prog: str = "medfuse coco2manifest") -> argparse.ArgumentParser:
    """Options of ``medfuse coco2manifest``."""
    p = argparse.ArgumentParser(
        prog=prog,
        description=HELP + ". Classes follow the category ids unless --classes gives their order.",
    )
    p.add_argument("json", help="COCO annotation file (images, annotations, categories)")
    p.add_argument("images", help="folder that the images' file_name is relative to")
    p.add_argument("--out", required=True, help="manifest JSON to write (paths are relative to its folder)")
    add_common_arguments(p, split=True, patients=False)
    return p


def _run(args) -> int:
    manifest, report = coco_to_manifest(args.json, args.images, args.out, **common_options(args))
    return write_outputs(manifest, report, args.out, args.report)


def main(argv=None) -> int:
    """Run ``medfuse coco2manifest`` with ``argv`` (default: ``sys.argv[1:]``)."""
    return run_command("medfuse coco2manifest", _run, build_parser(), argv)
