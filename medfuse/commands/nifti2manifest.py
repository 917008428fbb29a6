# Copyright (c) medfuse contributors
# Licensed under the Apache License, Version 2.0
"""``medfuse nifti2manifest ROOT --out M.json --layout acdc|synapse|pairs|acdc_h5``: volumes -> manifest.

ACDC (``patientNNN/patientNNN_frameXX.nii.gz`` + ``_gt``, ``Info.cfg``), Synapse/BTCV (``img/``, ``label/``),
image + label NIfTI pairs, or the ACDC HDF5 volumes (written out as NIfTI with an assumed spacing). Every volume
found is accounted for in ``OUT.report.json`` (beside the manifest), skipped ones with a reason. See
:func:`medfuse.data.layouts.nifti.nifti_to_manifest`.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from medfuse.cli import run_command
from medfuse.data.manifest import write_manifest
from medfuse.data.layouts.nifti import ACDC_H5_SPACING, NIFTI_LAYOUTS, nifti_to_manifest
from medfuse.data.splits import parse_fractions
from medfuse.errors import DataError
from medfuse.utils.io import atomic_write_json

__all__ = ["HELP", "build_parser", "main"]

HELP = "NIfTI volumes (ACDC, Synapse/BTCV, image+label pairs) or ACDC HDF5 -> segmentation manifest"


def _split_type(text: str) -> str:
    if text.strip().lower() == "official":
        return "official"
    try:
        parse_fractions(text)
    except DataError as e:
        raise argparse.ArgumentTypeError(f"{e}, or 'official'") from None
    return text


def _val_fraction(text: str) -> float:
    try:
        f = float(text)
    except ValueError:
        f = -1.0
    if not 0.0 <= f < 1.0:
        raise argparse.ArgumentTypeError(f"--val-fraction must be a number in [0, 1), got {text!r}")
    return f


def build_parser(prog: str = "medfuse nifti2manifest") -> argparse.ArgumentParser:
    """Options of ``medfuse nifti2manifest``."""
    p = argparse.ArgumentParser(
        prog=prog,
        description=HELP + ". Paths in the manifest are relative to it; the report goes to OUT.report.json.",
    )
    p.add_argument("root", help="dataset folder (ACDC database/, BTCV folder with img/ and label/, a folder of pairs, "
                                "or the folder of patientNNN_frameXX.h5 files)")
    p.add_argument("--out", required=True, help="manifest JSON to write")
    p.add_argument("--layout", choices=NIFTI_LAYOUTS, required=True, help="dataset layout")
    p.add_argument(
        "--label-map", default=None, metavar="S:T,...",
        help="remap label values, e.g. 8:1,4:2,5:0; every value found must be listed (0:0 implied); the masks "
        "become remapped copies beside the manifest (synapse default: the 8 TransUNet organs)",
    )
    p.add_argument("--classes", default=None, metavar="A,B,C", help="foreground class names for labels 1..K")
    p.add_argument(
        "--split", type=_split_type, default=None, metavar="official|TR,VA,TE",
        help="'official' (acdc training/ + testing/, synapse TransUNet test cases) or fractions such as "
        "0.75,0.125,0.125 (default: official where there is one, acdc_h5 0.75,0.125,0.125, else 0.8,0.1,0.1)",
    )
    p.add_argument(
        "--val-fraction", type=_val_fraction, default=None, metavar="F",
        help="official split: share of training patients carved into validation (default 0.1)",
    )
    p.add_argument("--seed", type=int, default=0, help="seed of the patient-level split (default 0)")
    p.add_argument(
        "--spacing", default=None, metavar="X,Y,Z",
        help="acdc_h5: assumed voxel spacing in mm (default %s; the HDF5 files carry none)"
        % ",".join(f"{v:g}" for v in ACDC_H5_SPACING),
    )
    p.add_argument("--patient-regex", default=None, metavar="REGEX",
                   help="pairs: regex with a named group 'patient' searched in file names")
    p.add_argument("--report", default=None, metavar="JSON", help="report path (default OUT.report.json)")
    return p


def _run(args) -> int:
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    manifest, report = nifti_to_manifest(
        args.root, out, layout=args.layout, label_map=args.label_map, classes=args.classes, split=args.split,
        val_fraction=args.val_fraction, seed=args.seed, spacing=args.spacing, patient_regex=args.patient_regex,
        arguments=vars(args),
    )
    path = write_manifest(manifest, out)
    stem = out.name[:-5] if out.name.lower().endswith(".json") else out.name
    report_path = Path(args.report) if args.report else out.with_name(stem + ".report.json")
    atomic_write_json(report_path, report.to_dict())
    print(report.format())
    print(f"wrote {path} (report: {report_path})")
    return 0


def main(argv=None) -> int:
    """Run ``medfuse nifti2manifest`` with ``argv`` (default: ``sys.argv[1:]``)."""
    return run_command("medfuse nifti2manifest", _run, build_parser(), argv)
