# Copyright (c) medfuse contributors
# Licensed under the Apache License, Version 2.0
"""``medfuse dicom2manifest INPUT_DIR --out OUT.json``: a PACS / CD export folder -> manifest.

Every file under INPUT_DIR is read by content (no extension needed), checked, selected,
de-duplicated by SOP Instance UID, pseudonymised and split by patient. Next to ``OUT.json``
go ``OUT.report.json`` (every excluded file, and every folder that could not be read, with a reason code;
``files_seen + unreadable_folders == included + len(excluded)``), ``OUT.salt`` (the pseudonym secret, owner-readable only) and
``OUT.state.json`` (per-file scan records for ``--update``). See :mod:`medfuse.dicom.convert`
and docs/dicom2manifest.md.
"""

from __future__ import annotations

import argparse

from medfuse.cli import run_command

__all__ = ["HELP", "build_parser", "main"]

HELP = "hospital DICOM folder (PACS/CD export) -> de-identified, patient-split manifest + exclusion report"

_LABEL_KEYS = ("PatientID", "StudyInstanceUID", "AccessionNumber", "SeriesInstanceUID", "SOPInstanceUID")


def _positive_int(text: str) -> int:
    try:
        v = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a whole number, got {text!r}") from None
    if v < 1:
        raise argparse.ArgumentTypeError(f"expected 1 or more, got {v}")
    return v


def _fractions(text: str) -> str:
    from medfuse.data.splits import parse_fractions
    from medfuse.errors import DataError

    try:
        parse_fractions(text, n=3)
    except DataError as e:
        raise argparse.ArgumentTypeError(f"{e} (e.g. --split 0.7,0.15,0.15)") from None
    return text


def build_parser(prog: str = "medfuse dicom2manifest") -> argparse.ArgumentParser:
    """Options of ``medfuse dicom2manifest``."""
    p = argparse.ArgumentParser(
        prog=prog,
        description=HELP + ". Files are recognised by content, not extension; each one is either in the "
        "manifest or listed in OUT.report.json with a reason. Exit status 0 even when files are excluded; "
        "1 for an unreadable INPUT_DIR or a bad label CSV, 2 for usage errors.",
    )
    p.add_argument("input_dir", metavar="INPUT_DIR", help="the DICOM folder (nested folders, any file names)")
    p.add_argument("--out", required=True, metavar="OUT.json",
                   help="manifest to write; OUT.report.json, OUT.salt and OUT.state.json go beside it")
    g = p.add_argument_group("selection (only the modality filter is on by default)")
    g.add_argument("--modality", default="CR,DX,DR,OPT", metavar="M1,M2",
                   help="Modality values to keep (default CR,DX,DR,OPT; OPT = ophthalmic tomography / OCT)")
    g.add_argument("--body-part", default=None, metavar="P1,P2", help="keep only these BodyPartExamined values, e.g. CHEST")
    g.add_argument("--view", default=None, metavar="V1,V2", help="keep only these ViewPosition values, e.g. PA,AP")
    g.add_argument("--sop-class", default=None, metavar="UID1,UID2", help="keep only these SOP Class UIDs")
    g = p.add_argument_group("labels (without them the manifest is an inference manifest: all items in 'test')")
    g.add_argument("--labels", default=None, metavar="CSV", help="CSV with a key column and a label column")
    g.add_argument("--label-key", default="PatientID", choices=_LABEL_KEYS,
                   help="DICOM identifier the CSV's key column holds (and is named after); default PatientID")
    g.add_argument("--label-column", default="label", metavar="COL", help="label column of the CSV (default 'label')")
    g.add_argument("--classes", default=None, metavar="A,B,C",
                   help="class names in label-index order (default: sorted label values); required without labels")
    g.add_argument("--label-from-folder", type=_positive_int, default=None, metavar="DEPTH",
                   help="label = name of the folder DEPTH levels below INPUT_DIR (1 = top-level folders)")
    g = p.add_argument_group("splits (patient-level, stratified by label)")
    g.add_argument("--split", type=_fractions, default="0.7,0.15,0.15", metavar="TR,VA,TE",
                   help="training,validation,test fractions (default 0.7,0.15,0.15)")
    g.add_argument("--seed", type=int, default=0, help="split seed (default 0)")
    g.add_argument("--test-patients", default=None, metavar="FILE",
                   help="text file, one PatientID (or pseudonym) per line: these patients form the test split; "
                   "the rest is split into training/validation by the first two --split fractions")
    g = p.add_argument_group("speed and caching")
    g.add_argument("--workers", type=_positive_int, default=None, metavar="N",
                   help="processes for scanning, hashing and decoding (default: all cores)")
    g.add_argument("--cache-dir", default=None, metavar="DIR",
                   help="decode the selected images once into lossless 16-bit PNG (multi-frame: TIFF) files named "
                   "by pseudonyms, and point 'image' at them (the DICOM stays in 'source')")
    g.add_argument("--verify-pixels", action="store_true",
                   help="decode every selected image and exclude those that fail (undecodable_transfer_syntax)")
    g.add_argument("--update", default=None, metavar="OUT.json",
                   help="earlier manifest of the same INPUT_DIR: read only new or changed files (size + mtime, "
                   "then hash) and keep existing split assignments")
    g.add_argument("--no-hash", action="store_true",
                   help="skip SHA-256 (items get no sha256; for timing the header stage only)")
    g = p.add_argument_group("de-identification")
    g.add_argument("--salt", default=None, metavar="SECRET",
                   help="secret for the pseudonyms (default: a random salt kept in OUT.salt, created on the first run)")
    g.add_argument("--keep-phi", action="store_true",
                   help="keep raw PatientID, name, birth date and accession number in the manifest (off by default)")
    p.add_argument("--no-progress", action="store_true", help="no progress bar (shown only on a terminal anyway)")
    return p


def _run(args) -> int:
    from medfuse.dicom.convert import dicom_to_manifest, format_summary

    manifest, report = dicom_to_manifest(
        args.input_dir,
        args.out,
        modalities=args.modality,
        body_parts=args.body_part,
        views=args.view,
        sop_classes=args.sop_class,
        labels=args.labels,
        label_key=args.label_key,
        label_column=args.label_column,
        classes=args.classes,
        label_from_folder=args.label_from_folder,
        split=args.split,
        seed=args.seed,
        test_patients=args.test_patients,
        workers=args.workers,
        cache_dir=args.cache_dir,
        verify_pixels=args.verify_pixels,
        salt=args.salt,
        keep_phi=args.keep_phi,
        update=args.update,
        hash_files=not args.no_hash,
        progress=False if args.no_progress else None,
        arguments={k: v for k, v in vars(args).items() if k != "salt"} | {"salt": "(given)" if args.salt else None},
    )
    print(format_summary(report, manifest))
    print(f"wrote {report.outputs['manifest']} and {report.outputs['report']}")
    return 0


def main(argv=None) -> int:
    """Run ``medfuse dicom2manifest`` with ``argv`` (default: ``sys.argv[1:]``)."""
    return run_command("medfuse dicom2manifest", _run, build_parser(), argv)
