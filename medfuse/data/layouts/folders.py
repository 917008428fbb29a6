# Copyright (c) medfuse contributors
# Licensed under the Apache License, Version 2.0
"""Class-folder layouts -> manifest (:func:`folder_to_manifest`; see :mod:`medfuse.data.layouts`)."""

from __future__ import annotations

import os
from collections import Counter
from pathlib import Path
from typing import Any, Mapping, Sequence

from medfuse.data.layouts._common import (
    _HOLDOUT_PRIORITY,
    _MASK_FOLDERS,
    DEFAULT_VAL_FRACTION,
    SPLIT_FOLDERS,
    _duplicate_sets,
    _finish,
    _is_hidden,
    _parse_classes,
    _progress,
    _rel_to,
    _resolve_fractions,
    _split_and_note,
    _subdirs,
    _walk_files,
)
from medfuse.data.layouts.report import ConversionReport
from medfuse.data.layouts.sniff import _image_kind, inspect_image
from medfuse.data.manifest import make_provenance, new_manifest
from medfuse.data.patients import PatientIdParser
from medfuse.data.splits import carve_validation, group_indices
from medfuse.errors import DataError

__all__ = ["folder_to_manifest"]


def _class_folder_files(class_dir: Path, report: ConversionReport, root: Path) -> list[Path]:
    """Image candidates of one class folder; masks and files beside ``images/`` are skipped."""
    subdirs = {p.name.lower(): p for p in _subdirs(class_dir)}
    images_dir = subdirs.get("images")
    out = []
    for f in _walk_files(class_dir):
        rel_parts = [p.lower() for p in f.relative_to(class_dir).parts[:-1]]
        if any(p in _MASK_FOLDERS for p in rel_parts):
            report.skip(_rel_to(f, root), "mask file (folder2manifest reads images only; use pairs2manifest for masks)")
        elif images_dir is not None and (not rel_parts or rel_parts[0] != "images"):
            report.skip(_rel_to(f, root), "outside the class folder's images/ folder")
        else:
            out.append(f)
    return out


def folder_to_manifest(
    root: str | os.PathLike,
    out: str | os.PathLike,
    classes: str | Sequence[str] | None = None,
    split: str | Sequence[float] | None = None,
    val_fraction: float | None = None,
    seed: int = 0,
    patient_regex: str | None = None,
    check: str = "header",
    leakage: str = "drop",
    progress: bool | None = None,
    arguments: Mapping[str, Any] | None = None,
    tool: str = "medfuse folder2manifest",
) -> tuple[dict, ConversionReport]:
    """Manifest of a class-per-folder dataset (Kermany CXR / OCT2017, TB and COVID databases).

    Args:
        root: dataset folder holding class folders, or ``train``/``val``/``test`` folders that
            hold class folders. A class folder with an ``images/`` subfolder contributes only
            that subfolder (``masks/`` is skipped).
        out: path the manifest will be written to; image paths are made relative to its folder.
        classes: class folder names in label-index order (list or ``"a,b,c"``). Defaults to
            the sorted folder names. A name without a folder raises; a folder not named is
            skipped and reported.
        split: ``"0.8,0.1,0.1"`` fractions, used when there are no split folders. Defaults to
            :data:`DEFAULT_FRACTIONS` (or ``1-f, f, 0`` when only ``val_fraction`` is given).
        val_fraction: share of ``train`` carved into validation when split folders exist but
            none is a validation folder. Defaults to :data:`DEFAULT_VAL_FRACTION`; 0 carves none.
        seed: seed of the split. Defaults to 0.
        patient_regex: regex with a ``patient`` group replacing the built-in file-name rules.
        check: ``"header"`` (open and verify) or ``"decode"`` (also decode pixels).
        leakage: what to do when split folders put one patient or one file in two splits:
            ``"drop"`` (default) keeps the copies in the most held-out split and skips the
            others; ``"error"`` raises.
        progress: show a progress bar on stderr; ``None`` (default) when stderr is a terminal.
        arguments: recorded in the provenance (the command passes ``vars(args)``).
        tool: name recorded in the provenance.

    Returns:
        ``(manifest, report)``; write the manifest with ``write_manifest(manifest, out)``.

    Raises:
        DataError: missing root, no class folders, an empty class folder, a ``classes`` name
            with no folder, invalid fractions, or (with ``leakage="error"``) leakage.
    """
    root = Path(root)
    out_dir = Path(out).parent
    report = ConversionReport(tool=tool)
    if leakage not in ("drop", "error"):
        raise ValueError(f"leakage must be 'drop' or 'error', got {leakage!r}")
    if not root.is_dir():
        raise DataError(f"{root}: folder not found; pass the dataset folder that holds the class (or train/test) folders")
    wanted = _parse_classes(classes)
    parser = PatientIdParser(patient_regex)

    # -- layout: split folders or class folders -----------------------------------------
    top_dirs = _subdirs(root)
    split_dirs = [(SPLIT_FOLDERS[d.name.lower()], d) for d in top_dirs if d.name.lower() in SPLIT_FOLDERS]
    seen_splits = Counter(s for s, _ in split_dirs)
    clash = [s for s, k in seen_splits.items() if k > 1]
    if clash:
        names = [d.name for s, d in split_dirs if s in clash]
        raise DataError(f"{root}: folders {names} are all {clash[0]} splits; keep one of them (or merge them)")
    for f in sorted(p for p in root.iterdir() if p.is_file()):
        report.found += 1
        report.skip(f.name, "hidden or system file" if _is_hidden(f.name) else "outside the class folders")
    units: list[tuple[str | None, Path]]
    if split_dirs:
        units = [(s, d) for s, d in split_dirs]
        for d in top_dirs:
            if d.name.lower() not in SPLIT_FOLDERS:
                for f in _walk_files(d):
                    report.found += 1
                    report.skip(_rel_to(f, root), "folder beside the split folders (not train/val/test)", d.name)
        report.notes.append("split folders: " + ", ".join(f"{d.name} -> {s}" for s, d in split_dirs))
    else:
        units = [(None, root)]

    # -- class folders -------------------------------------------------------------------
    class_dirs: list[tuple[str | None, Path]] = []  # (manifest split, class folder)
    for split_name, unit_dir in units:
        if split_name is not None:
            for f in sorted(p for p in unit_dir.iterdir() if p.is_file()):
                report.found += 1
                report.skip(_rel_to(f, root), "hidden or system file" if _is_hidden(f.name) else "outside the class folders")
        subs = _subdirs(unit_dir)
        if not subs:
            where = unit_dir if split_name is not None else root
            raise DataError(
                f"{where}: no class folders; expected {where}/<class>/<image files> "
                "(e.g. NORMAL/, PNEUMONIA/) or train/<class>/ and test/<class>/ folders"
            )
        for d in subs:
            nested = [s.name for s in _subdirs(d) if s.name.lower() in SPLIT_FOLDERS]
            if nested and split_name is None:
                raise DataError(f"{d}: holds split folders {nested}; pass {d} as the root folder instead of {root}")
            class_dirs.append((split_name, d))
    found_classes = sorted({d.name for _, d in class_dirs})
    if wanted is not None:
        missing = [c for c in wanted if c not in found_classes]
        if missing:
            raise DataError(
                f"{root}: class {missing[0]!r} from --classes has no folder (folders found: {', '.join(found_classes)}); "
                "fix --classes or the folder name (names are case-sensitive)"
            )
        class_list = wanted
    else:
        class_list = found_classes
    index = {c: i for i, c in enumerate(class_list)}

    candidates: list[tuple[str | None, str | None, Path, int, Path]] = []  # split, source folder, file, label, class dir
    for split_name, d in class_dirs:
        if d.name not in index:
            for f in _walk_files(d):
                report.found += 1
                report.skip(_rel_to(f, root), "class folder not in --classes", d.name)
            continue
        n_skipped_before = len(report.skipped)
        files = _class_folder_files(d, report, root)
        report.found += len(files) + (len(report.skipped) - n_skipped_before)
        source = d.parent.name if split_name is not None else None
        candidates.extend((split_name, source, f, index[d.name], d) for f in files)

    # -- read, hash, verify ---------------------------------------------------------------
    items: list[dict] = []
    item_split: list[str | None] = []
    item_src: list[str] = []
    per_dir_ok: Counter = Counter()
    for split_name, source, f, label, d in _progress(candidates, len(candidates), "folder2manifest", progress):
        rel_src = _rel_to(f, root)
        if _is_hidden(f.name):
            report.skip(rel_src, "hidden or system file")
            continue
        kind = _image_kind(f)
        if kind is None:
            report.skip(rel_src, "not an image file", f.suffix.lower() or "no extension, no DICOM magic")
            continue
        digest, error = inspect_image(f, check=check, kind=kind)
        if error is not None:
            report.skip(rel_src, "unreadable image", error)
            continue
        item = {"image": _rel_to(f, out_dir), "label": label}
        pid = parser(f.name)
        if pid is not None:
            item["patient_id"] = pid
        item["sha256"] = digest
        if source is not None:
            item["source_split"] = source
        items.append(item)
        item_split.append(split_name)
        item_src.append(rel_src)
        per_dir_ok[d] += 1
    for _, d in class_dirs:
        if d.name in index and per_dir_ok[d] == 0:
            why = Counter(r for p, r, _ in report.skipped if p.startswith(_rel_to(d, root) + "/"))
            detail = f" ({', '.join(f'{n} {r}' for r, n in why.items())})" if why else ""
            raise DataError(
                f"{d}: class folder holds no readable images{detail}; add images, remove the folder, "
                "or leave the class out with --classes"
            )

    # -- leakage between split folders ----------------------------------------------------
    keep = [True] * len(items)
    if split_dirs:
        for members in group_indices(items):
            present = {item_split[i] for i in members}
            if len(present) < 2:
                continue
            if leakage == "error":
                ex = [item_src[i] for i in members]
                raise DataError(
                    f"{root}: one patient or identical file spans split folders {sorted(present)}: {', '.join(ex[:4])}; "
                    "fix the folders or use --leakage drop"
                )
            target = next(s for s in _HOLDOUT_PRIORITY if s in present)
            for i in members:
                if item_split[i] != target:
                    keep[i] = False
                    report.skip(
                        item_src[i], "same patient or identical file also in a more held-out split folder (leakage)",
                        f"kept in {target}",
                    )
    kept = [i for i in range(len(items)) if keep[i]]
    items_k = [items[i] for i in kept]
    split_k = [item_split[i] for i in kept]
    src_k = [item_src[i] for i in kept]
    report.duplicate_sets = _duplicate_sets(items_k, src_k)
    report.missing_patient_ids = sum(1 for it in items_k if "patient_id" not in it)

    # -- splits ---------------------------------------------------------------------------
    parts: dict[str, list] = {"training": [], "validation": [], "test": []}
    if split_dirs:
        if split is not None:
            report.notes.append("--split ignored: the dataset has split folders (use --val-fraction to carve validation)")
        for it, s in zip(items_k, split_k):
            parts[s].append(it)
        if not any(s == "validation" for s, _ in split_dirs) and parts["training"]:
            f = DEFAULT_VAL_FRACTION if val_fraction is None else val_fraction
            if float(f) > 0:
                parts["training"], parts["validation"] = carve_validation(parts["training"], f, seed=seed)
                report.notes.append(
                    f"no validation folder: validation carved from training with --val-fraction {float(f):g} "
                    f"by patient and identical file, stratified by label, seed {seed} "
                    f"({len(parts['validation'])} of {len(parts['validation']) + len(parts['training'])} items)"
                )
        elif val_fraction is not None:
            report.notes.append("--val-fraction ignored: the dataset has a validation folder")
        layout = "split folders / class folders"
    else:
        fractions = _resolve_fractions(split, val_fraction, report)
        parts = _split_and_note(items_k, fractions, seed, report, "no split folders")
        layout = "class folders"

    has_images_dirs = any((d / "images").is_dir() for _, d in class_dirs)
    provenance = make_provenance(
        tool, root, dict(arguments or {}),
        layout=layout + (" with images/ subfolders" if has_images_dirs else ""),
        patient_ids=parser.describe(),
        duplicates="byte-identical files (sha256) are grouped with each other and kept in one split",
        seed=seed,
    )
    manifest = new_manifest("classification", class_list, provenance, parts["training"], parts["validation"], parts["test"])
    return _finish(manifest, report)
