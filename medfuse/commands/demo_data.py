# Copyright (c) medfuse contributors
# Licensed under the Apache License, Version 2.0
"""``medfuse demo-data OUT``: write the synthetic demo data set and its manifests.

Chest-X-ray-like phantoms with lung masks (PNG, and CR DICOM copies of part of them),
OCT-like B-scans of four classes (PNG, and multi-frame OCT DICOM volumes), and the manifests
``cxr_manifest.json``, ``cxr_dicom_manifest.json``, ``oct_manifest.json`` and
``oct_dicom_manifest.json``. See :mod:`medfuse.data.demo`.
"""

from __future__ import annotations

import argparse
import sys
import time

from medfuse.cli import run_command
from medfuse.commands._common import nonnegative_int, unit_fraction

__all__ = ["HELP", "build_parser", "main", "parse_count", "parse_fraction", "parse_seed", "parse_size"]

HELP = "write synthetic chest X-ray / OCT demo data (PNG + DICOM) and its manifests"


def parse_size(text: str) -> int | tuple[int, int]:
    """``"128"`` -> 128, ``"160x128"`` -> (160, 128) (rows x columns); argparse type."""
    parts = text.lower().replace("*", "x").split("x")
    try:
        values = [int(p) for p in parts]
    except ValueError:
        values = []
    if len(values) not in (1, 2) or min(values) < 32:
        raise argparse.ArgumentTypeError(
            f"invalid size {text!r}: give one side in pixels (e.g. 128) or ROWSxCOLUMNS (e.g. 160x128), "
            "each at least 32"
        )
    return values[0] if len(values) == 1 else (values[0], values[1])


parse_count = nonnegative_int("count", " (0 leaves the modality out)")
parse_seed = nonnegative_int("seed")
parse_fraction = unit_fraction


def build_parser(prog: str = "medfuse demo-data") -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog=prog,
        description=HELP + ". Deterministic: the same options give byte-identical images.",
        epilog="An existing demo-data folder is rebuilt; any other non-empty folder is refused.",
    )
    p.add_argument("out", help="output folder (created; the manifests are written at its top)")
    p.add_argument("--n-cxr", type=parse_count, default=96, metavar="N",
                   help="chest phantoms, half of them with opacities (default 96; 0: none)")
    p.add_argument("--n-oct", type=parse_count, default=80, metavar="N",
                   help="OCT B-scans over CNV/DME/DRUSEN/NORMAL (default 80; 0: none)")
    p.add_argument("--size", type=parse_size, default=128, metavar="S",
                   help="image side in pixels, or ROWSxCOLUMNS (default 128)")
    p.add_argument("--seed", type=parse_seed, default=0, help="random seed (default 0)")
    p.add_argument("--no-dicom", action="store_true", help="write PNG only, no DICOM copies")
    p.add_argument("--dicom-fraction", type=parse_fraction, default=0.5, metavar="F",
                   help="share of patients that also get DICOM files (default 0.5)")
    p.add_argument("--n-volumes", type=parse_count, default=0, metavar="N",
                   help="ACDC-layout cardiac MRI phantom frames (NIfTI) and vol_manifest.json (default 0: none)")
    p.add_argument("--n-detection", type=parse_count, default=0, metavar="N",
                   help="chest phantoms with opacity / nodule boxes and cxr_detection_manifest.json (default 0: none)")
    return p


def _run(args) -> int:
    from medfuse.data.demo import make_demo_data
    from medfuse.data.manifest import format_summary, read_manifest, summarize_manifest

    if args.n_cxr == 0 and args.n_oct == 0 and args.n_volumes == 0 and args.n_detection == 0:
        print("medfuse demo-data: error: --n-cxr, --n-oct, --n-volumes and --n-detection are all 0, so there is "
              "nothing to generate; give at least one of them a count above 0", file=sys.stderr)
        return 2
    start = time.perf_counter()
    manifests = make_demo_data(
        args.out,
        n_cxr=args.n_cxr,
        n_oct=args.n_oct,
        image_size=args.size,
        seed=args.seed,
        dicom=not args.no_dicom,
        dicom_fraction=args.dicom_fraction,
        n_volumes=args.n_volumes,
        n_detection=args.n_detection,
    )
    seconds = time.perf_counter() - start
    print(f"wrote demo data to {args.out} in {seconds:.1f} s:")
    for key, path in manifests.items():
        print(f"  {key:<10} {path}")
    for path in manifests.values():
        print()
        print(format_summary(summarize_manifest(read_manifest(path)), title=f"== {path}"))
    return 0


def main(argv=None) -> int:
    return run_command("medfuse demo-data", _run, build_parser(), argv)
