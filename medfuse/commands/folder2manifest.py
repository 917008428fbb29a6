# Copyright (c) medfuse contributors
# Licensed under the Apache License, Version 2.0
"""``medfuse folder2manifest ROOT --out M.json``: class-per-folder datasets -> manifest.

Reads Kermany chest X-ray (``train/NORMAL``, ``test/PNEUMONIA``, optional ``val/``), Kermany
OCT2017 (``CNV/ DME/ DRUSEN/ NORMAL/`` directly or under ``train/``/``test/``) and the TB /
COVID-19 radiography databases (``COVID/images/*.png``; ``masks/`` skipped). Split folders
are kept, validation is carved from ``train`` when there is no ``val`` folder, and layouts
without split folders are split by ``--split``; always by patient and identical file. See
:func:`medfuse.data.layouts.folder_to_manifest`.
"""

from __future__ import annotations

import argparse

from medfuse.cli import run_command
from medfuse.commands._common import add_common_arguments, common_options, write_outputs
from medfuse.data.layouts import folder_to_manifest

__all__ = ["HELP", "build_parser", "main"]

HELP = "class-per-folder datasets (Kermany CXR/OCT, TB/COVID databases) -> manifest"


def build_parser(prog: str = "medfuse folder2manifest") -> argparse.ArgumentParser:
    """Options of ``medfuse folder2manifest``."""
    p = argparse.ArgumentParser(
        prog=prog,
        description=HELP + ". Existing train/val/test folders become splits; otherwise a stratified, "
        "patient-level split. Counts per split and class, and every skipped file, are reported.",
    )
    p.add_argument("root", help="dataset folder: <class>/ folders, or train/ (val/) test/ folders holding them")
    p.add_argument("--out", required=True, help="manifest JSON to write (image paths are relative to its folder)")
    add_common_arguments(p)
    p.add_argument(
        "--check", choices=("header", "decode"), default="header",
        help="how images are checked: open and verify the header (default) or decode every pixel (slower)",
    )
    p.add_argument(
        "--leakage", choices=("drop", "error"), default="drop",
        help="when split folders share a patient or an identical file: keep it only in the most held-out "
        "split and skip the other copies (default), or stop with an error",
    )
    return p


def _run(args) -> int:
    options = common_options(args)
    manifest, report = folder_to_manifest(args.root, args.out, check=args.check, leakage=args.leakage, **options)
    return write_outputs(manifest, report, args.out, args.report)


def main(argv=None) -> int:
    """Run ``medfuse folder2manifest`` with ``argv`` (default: ``sys.argv[1:]``)."""
    return run_command("medfuse folder2manifest", _run, build_parser(), argv)
