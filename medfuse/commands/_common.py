# Copyright (c) medfuse contributors
# Licensed under the Apache License, Version 2.0
"""Private helpers shared by the commands: argparse types, the ``*2manifest`` options and outputs.

:func:`fractions_type` and :func:`add_common_arguments` moved here from
:mod:`medfuse.data.layouts` (which still re-exports them).
"""

from __future__ import annotations

import argparse
import os
from pathlib import Path
from typing import Any

from medfuse.data.manifest import write_manifest
from medfuse.data.splits import parse_fractions
from medfuse.errors import DataError
from medfuse.utils.io import atomic_write_json

__all__ = [
    "common_options",
    "write_outputs",
    "nonnegative_int",
    "unit_fraction",
    "fractions_type",
    "add_common_arguments",
]


def nonnegative_int(what: str, hint: str = ""):
    """argparse ``type``: a whole number >= 0; the error names ``what`` (and adds ``hint``)."""

    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            value = -1
        if value < 0:
            raise argparse.ArgumentTypeError(f"invalid {what} {text!r}: give a whole number >= 0{hint}")
        return value

    parse.__name__ = what
    return parse


def unit_fraction(text: str) -> float:
    """argparse ``type``: a number in (0, 1]."""
    try:
        value = float(text)
    except ValueError:
        value = -1.0
    if not 0.0 < value <= 1.0:
        raise argparse.ArgumentTypeError(f"invalid fraction {text!r}: give a number in (0, 1], e.g. 0.5")
    return value


def common_options(args: argparse.Namespace) -> dict[str, Any]:
    """Keyword arguments of the converters for the options of :func:`add_common_arguments`.

    ``split`` and ``patient_regex`` are included when the parser has them; ``--report`` is
    handled by :func:`write_outputs`; ``arguments`` records every parsed option.
    """
    options = dict(
        classes=args.classes,
        val_fraction=args.val_fraction,
        seed=args.seed,
        progress=False if args.no_progress else None,
        arguments=vars(args),
    )
    for name in ("split", "patient_regex"):
        if hasattr(args, name):
            options[name] = getattr(args, name)
    return options


def write_outputs(manifest: dict, report, manifest_path: str | os.PathLike, report_path: str | None) -> int:
    """Write the manifest (and the JSON report when asked), print the report and the manifest path; return 0."""
    Path(manifest_path).parent.mkdir(parents=True, exist_ok=True)  # relative paths are checked from there
    path = write_manifest(manifest, manifest_path)
    if report_path:
        atomic_write_json(report_path, report.to_dict())
    print(report.format())
    print(f"wrote {path}")
    return 0


# ---------------------------------------------------------------------------------------
# options shared by the *2manifest commands
# ---------------------------------------------------------------------------------------
def fractions_type(text: str) -> str:
    """argparse ``type`` for ``--split``: checks the fractions, keeps the text for provenance."""
    try:
        parse_fractions(text)
    except DataError as e:
        raise argparse.ArgumentTypeError(str(e)) from None
    return text


def _val_fraction_type(text: str) -> float:
    try:
        f = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"--val-fraction must be a number between 0 and 1, got {text!r}") from None
    if not 0.0 <= f < 1.0:
        raise argparse.ArgumentTypeError(f"--val-fraction must be in [0, 1), got {text!r}")
    return f


def add_common_arguments(p: argparse.ArgumentParser, split: bool = True, patients: bool = True) -> None:
    """Options shared by the converters: split, seed, classes, patient regex, progress, report."""
    from medfuse.data.layouts import DEFAULT_VAL_FRACTION  # here: the other commands need not load the converters

    if split:
        p.add_argument(
            "--split", type=fractions_type, default=None, metavar="TR,VA,TE",
            help="fractions for layouts without split folders (default 0.8,0.1,0.1; "
            "two values leave out the test split)",
        )
    p.add_argument(
        "--val-fraction", type=_val_fraction_type, default=None, metavar="F",
        help=f"carve validation from train when there is no validation split (default {DEFAULT_VAL_FRACTION}; "
        "0: none); for a layout without split folders and without --split, the split becomes 1-F,F,0",
    )
    p.add_argument("--seed", type=int, default=0, help="seed of the patient-level split (default 0)")
    p.add_argument("--classes", default=None, metavar="A,B,C", help="class names in label-index order")
    if patients:
        p.add_argument(
            "--patient-regex", default=None, metavar="REGEX",
            help="regex with a named group 'patient' searched in file stems, replacing the built-in rules "
            r"(e.g. 'person(?P<patient>\d+)_')",
        )
    p.add_argument("--report", default=None, metavar="JSON", help="also write the full report (every skipped file) here")
    p.add_argument("--no-progress", action="store_true", help="no progress bar (it is shown only on a terminal anyway)")
