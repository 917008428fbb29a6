# Copyright (c) medfuse contributors
# Licensed under the Apache License, Version 2.0
"""Private helpers shared by the commands: argparse types, the ``*2manifest`` options and outputs."""

from __future__ import annotations

import argparse
import os
from pathlib import Path
from typing import Any

from medfuse.data.manifest import write_manifest
from medfuse.utils.io import atomic_write_json

__all__ = ["common_options", "write_outputs", "nonnegative_int", "unit_fraction"]


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
    """Keyword arguments of the converters for the options of :func:`medfuse.data.layouts.add_common_arguments`.

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
