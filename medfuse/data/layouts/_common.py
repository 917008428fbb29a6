# Copyright (c) medfuse contributors
# Licensed under the Apache License, Version 2.0
"""Constants and helpers shared by the layout converters of :mod:`medfuse.data.layouts`.

The list of image file extensions lives here, in one place, for every converter.
"""

from __future__ import annotations

import os
import sys
from collections import Counter, defaultdict
from pathlib import Path
from typing import Any, Iterable, Mapping, Sequence

from medfuse.data.layouts.report import ConversionReport
from medfuse.data.manifest import summarize_manifest
from medfuse.data.splits import group_indices, parse_fractions, split_items
from medfuse.errors import DataError
from medfuse.utils.images import DICOM_EXTENSIONS, NIFTI_EXTENSIONS, PIL_EXTENSIONS
from medfuse.utils.images import IMAGE_EXTENSIONS as _ALL_IMAGE_EXTENSIONS

#: File extensions the 2-D converters take as images (lower case): the folder-listing endings of
#: :data:`medfuse.utils.images.IMAGE_EXTENSIONS` less NIfTI (volumes go through ``nifti2manifest``).
#: Files without an extension are taken when they carry the DICOM magic ``DICM`` at byte 128.
IMAGE_EXTENSIONS = tuple(e for e in _ALL_IMAGE_EXTENSIONS if e not in NIFTI_EXTENSIONS)
_PIL_EXTENSIONS = tuple(e for e in IMAGE_EXTENSIONS if e in PIL_EXTENSIONS)
_DICOM_EXTENSIONS = tuple(e for e in IMAGE_EXTENSIONS if e in DICOM_EXTENSIONS)
#: Folder names (case-insensitive) taken as split folders -> manifest split.
SPLIT_FOLDERS = {
    "train": "training",
    "training": "training",
    "val": "validation",
    "valid": "validation",
    "validation": "validation",
    "test": "test",
    "testing": "test",
}
#: Held-out order: a patient spread over split folders is kept in the first of these it has.
_HOLDOUT_PRIORITY = ("test", "validation", "training")
#: Split fractions used when a layout has no split folders.
DEFAULT_FRACTIONS = (0.8, 0.1, 0.1)
#: Share of ``train`` carved into validation when there is no validation folder / array.
DEFAULT_VAL_FRACTION = 0.1
#: Label of Shenzhen / Montgomery file names: ``CHNCXR_0001_0`` normal, ``..._1`` tuberculosis.
DEFAULT_LABEL_PATTERN = r"_(?P<label>[01])$"
_DEFAULT_PATTERN_CLASSES = ("normal", "tuberculosis")
#: Mask file stems tried for an image stem ``s``: ``s``, ``s_mask``, ``s-mask``.
DEFAULT_MASK_SUFFIXES = ("", "_mask", "-mask")
_MASK_FOLDERS = ("masks", "mask")
_IGNORED_DIRS = ("__MACOSX",)


def _is_hidden(name: str) -> bool:
    return name.startswith(".") or name in ("Thumbs.db", "desktop.ini")


def _rel_to(path: Path, base_dir: Path) -> str:
    """``path`` relative to ``base_dir`` (may contain ``..``), absolute when impossible."""
    try:
        return Path(os.path.relpath(os.path.abspath(path), os.path.abspath(base_dir))).as_posix()
    except ValueError:  # different drives on Windows
        return Path(os.path.abspath(path)).as_posix()


def _walk_files(folder: Path) -> Iterable[Path]:
    """All files under ``folder`` in sorted order, hidden and system folders left out."""
    for dirpath, dirnames, filenames in os.walk(folder):
        dirnames[:] = sorted(d for d in dirnames if not _is_hidden(d) and d not in _IGNORED_DIRS)
        for name in sorted(filenames):
            yield Path(dirpath) / name


def _subdirs(folder: Path) -> list[Path]:
    return sorted(p for p in folder.iterdir() if p.is_dir() and not _is_hidden(p.name) and p.name not in _IGNORED_DIRS)


def _progress(iterable, total: int, desc: str, progress: bool | None):
    if progress is None:
        progress = sys.stderr.isatty()
    if not progress:
        return iterable
    from tqdm import tqdm

    return tqdm(iterable, total=total, desc=desc, unit="file", file=sys.stderr, leave=False)


def _parse_classes(classes: str | Sequence[str] | None) -> list[str] | None:
    if classes is None:
        return None
    if isinstance(classes, str):
        classes = [c.strip() for c in classes.split(",")]
    out = [str(c) for c in classes]
    if not out or any(not c for c in out):
        raise DataError(f"--classes {','.join(out)!r} has an empty name; write e.g. --classes NORMAL,PNEUMONIA")
    dup = [c for c, k in Counter(out).items() if k > 1]
    if dup:
        raise DataError(f"--classes repeats {dup}; give each class once")
    return out


def _resolve_fractions(split, val_fraction, report: ConversionReport) -> tuple[float, ...]:
    """Fractions for a layout without split folders (see ``--split`` / ``--val-fraction``)."""
    if split is not None:
        if val_fraction is not None:
            report.notes.append("--val-fraction ignored: --split gives the fractions of every split")
        return parse_fractions(split)
    if val_fraction is not None:
        f = float(val_fraction)
        return parse_fractions((1.0 - f, f, 0.0), what="--val-fraction")
    return DEFAULT_FRACTIONS


def _duplicate_sets(items: Sequence[Mapping[str, Any]], sources: Sequence[str]) -> list[list[str]]:
    by_hash: dict[str, list[str]] = defaultdict(list)
    for item, src in zip(items, sources):
        if item.get("sha256"):
            by_hash[item["sha256"]].append(src)
    return [paths for paths in by_hash.values() if len(paths) > 1]


def _split_and_note(items, fractions, seed, report, what: str) -> dict[str, list]:
    parts = split_items(items, fractions, seed=seed)
    n_groups = len(group_indices(items))
    report.notes.append(
        f"{what}: split {', '.join(f'{f:g}' for f in fractions)} (training, validation, test) by patient and "
        f"identical file: {n_groups} groups of {len(items)} items, stratified by label, seed {seed}"
    )
    return parts


def _finish(manifest: dict, report: ConversionReport) -> tuple[dict, ConversionReport]:
    report.summary = summarize_manifest(manifest)
    report.check_counts()
    manifest["provenance"]["counts"] = {
        "found": report.found,
        "written": report.written,
        "paired": report.paired,
        "skipped": len(report.skipped),
        "skipped_by_reason": {k: len(v) for k, v in report.skipped_by_reason().items()},
        "duplicate_sets": len(report.duplicate_sets),
    }
    return manifest, report
