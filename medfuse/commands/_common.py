# Copyright (c) medfuse contributors
# Licensed under the Apache License, Version 2.0
"""Private helpers shared by the ``*2manifest`` converter commands."""

from __future__ import annotations

import argparse
import os
from pathlib import Path
from typing import Any

from medfuse.data.manifest import write_manifest
from medfuse.utils.io import atomic_write_json

__all__ = ["common_options", "write_outputs"]


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
