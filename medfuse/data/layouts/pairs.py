# Copyright (c) medfuse contributors
# Licensed under the Apache License, Version 2.0
"""Image + mask folder layouts -> manifest (:func:`pairs_to_manifest`; see :mod:`medfuse.data.layouts`)."""

from __future__ import annotations

import os
import re
from collections import defaultdict
from pathlib import Path
from typing import Any, Mapping, Sequence

from medfuse.data.layouts._common import (
    _DEFAULT_PATTERN_CLASSES,
    DEFAULT_LABEL_PATTERN,
    DEFAULT_MASK_SUFFIXES,
    IMAGE_EXTENSIONS,
    _duplicate_sets,
    _finish,
    _is_hidden,
    _parse_classes,
    _progress,
    _rel_to,
    _resolve_fractions,
    _split_and_note,
)
from medfuse.data.layouts.report import ConversionReport
from medfuse.data.layouts.sniff import _image_kind, inspect_image
from medfuse.data.manifest import make_provenance, new_manifest
from medfuse.data.patients import PatientIdParser
from medfuse.errors import DataError

__all__ = ["pairs_to_manifest"]


def _label_of(stem: str, pattern: re.Pattern | None, classes: list[str] | None) -> tuple[str | None, int | None, str | None]:
    """``(raw, index, error)`` of the label in ``stem``; raw is None when the pattern misses."""
    if pattern is None:
        return None, None, None
    m = pattern.search(stem)
    if not m or m.group("label") is None:
        return None, None, None
    raw = m.group("label")
    if classes is None:
        return raw, None, None
    if raw in classes:
        return raw, classes.index(raw), None
    if raw.isdigit() and int(raw) < len(classes):
        return raw, int(raw), None
    return raw, None, f"label {raw!r} is neither a class of {classes} nor an index into them"


def pairs_to_manifest(
    images: str | os.PathLike,
    masks: str | os.PathLike,
    out: str | os.PathLike,
    mask_suffixes: Sequence[str] = DEFAULT_MASK_SUFFIXES,
    label_pattern: str | None = DEFAULT_LABEL_PATTERN,
    classes: str | Sequence[str] | None = None,
    task: str = "auto",
    missing_mask: str = "keep",
    split: str | Sequence[float] | None = None,
    val_fraction: float | None = None,
    seed: int = 0,
    patient_regex: str | None = None,
    check: str = "header",
    progress: bool | None = None,
    arguments: Mapping[str, Any] | None = None,
    tool: str = "medfuse pairs2manifest",
) -> tuple[dict, ConversionReport]:
    """Manifest of an image folder with a mask folder (Shenzhen, Montgomery, ...).

    Args:
        images: folder of images (not searched recursively).
        masks: folder of masks; may be the image folder itself, in which case files whose
            stem is another file's stem plus a non-empty suffix are the masks.
        out: path the manifest will be written to (paths are relative to its folder).
        mask_suffixes: mask stems tried for an image stem ``s``, in order: ``s + suffix``.
            Defaults to ``("", "_mask", "-mask")``. Extensions may differ (``1.jpg`` / ``1-mask.png``).
        label_pattern: regex with a group ``label`` searched in the image stem. Defaults to
            ``_(?P<label>[01])$`` (Shenzhen/Montgomery: ``_0`` normal, ``_1`` tuberculosis).
            ``None`` or ``""``: no labels.
        classes: class names. Default for the default pattern: ``normal,tuberculosis``;
            otherwise the sorted label strings found. A label is the index of its class name,
            or a number used as the index.
        task: ``"auto"`` (default: ``segmentation_classification`` when labels are found, else
            ``segmentation``), ``"segmentation"`` (labels dropped) or ``"segmentation_classification"``.
        missing_mask: ``"keep"`` (default) keeps an image without mask as a labelled,
            mask-less item; ``"skip"`` skips it. Either way it is reported.
        split, val_fraction, seed, patient_regex, check, progress, arguments, tool: as for
            :func:`folder_to_manifest` (there are no split folders here).

    Returns:
        ``(manifest, report)``.

    Raises:
        DataError: missing folders, no images, invalid pattern or classes, no labels found
            when ``task="segmentation_classification"``.
    """
    images, masks = Path(images), Path(masks)
    out_dir = Path(out).parent
    report = ConversionReport(tool=tool)
    if task not in ("auto", "segmentation", "segmentation_classification"):
        raise DataError(f"--task {task!r}: use auto, segmentation or segmentation_classification")
    if missing_mask not in ("keep", "skip"):
        raise ValueError(f"missing_mask must be 'keep' or 'skip', got {missing_mask!r}")
    for what, folder in (("image", images), ("mask", masks)):
        if not folder.is_dir():
            raise DataError(f"{folder}: {what} folder not found; pass IMAGES and MASKS folders (e.g. cxr/ masks/)")
    parser = PatientIdParser(patient_regex)
    pattern = None
    if label_pattern:
        try:
            pattern = re.compile(label_pattern)
        except re.error as e:
            raise DataError(f"--label-pattern {label_pattern!r} is not a valid regular expression ({e})") from e
        if "label" not in pattern.groupindex:
            raise DataError(f"--label-pattern {label_pattern!r} has no named group 'label'; e.g. '_(?P<label>[01])$'")
    class_list = _parse_classes(classes)
    if class_list is None and label_pattern == DEFAULT_LABEL_PATTERN:
        class_list = list(_DEFAULT_PATTERN_CLASSES)
    suffixes = list(dict.fromkeys(mask_suffixes)) or [""]
    same_folder = images.resolve() == masks.resolve()
    base = images.parent if same_folder else Path(os.path.commonpath([images.resolve(), masks.resolve()]))

    def listing(folder: Path) -> list[Path]:
        files = []
        for p in sorted(folder.iterdir()):
            if p.is_file():
                files.append(p)
            elif p.is_dir():
                report.notes.append(f"subfolder {_rel_to(p, base)} not searched (pairs2manifest is not recursive)")
        return files

    def usable(files: list[Path]) -> list[Path]:
        report.found += len(files)
        keep = []
        for p in files:
            if _is_hidden(p.name):
                report.skip(_rel_to(p, base), "hidden or system file")
            elif _image_kind(p) is None:
                report.skip(_rel_to(p, base), "not an image file", p.suffix.lower() or "no extension")
            else:
                keep.append(p)
        return keep

    if same_folder:
        files = usable(listing(images))
        stems = {p.stem for p in files}
        image_files, mask_files = [], []
        for p in files:
            is_mask = any(s and p.stem.endswith(s) and p.stem[: -len(s)] in stems for s in suffixes)
            (mask_files if is_mask else image_files).append(p)
    else:
        image_files = usable(listing(images))
        mask_files = usable(listing(masks))
    if not image_files:
        raise DataError(f"{images}: no image files ({', '.join(e.lstrip('.') for e in IMAGE_EXTENSIONS)}) found")

    # -- masks: readable ones, indexed by stem ---------------------------------------------
    mask_by_stem: dict[str, list[Path]] = defaultdict(list)
    for m in _progress(mask_files, len(mask_files), "masks", progress):
        _, error = inspect_image(m, check=check)
        if error is not None:
            report.skip(_rel_to(m, base), "unreadable mask", error)
            continue
        mask_by_stem[m.stem].append(m)
    used_masks: set[Path] = set()

    items: list[dict] = []
    item_src: list[str] = []
    unlabelled = 0
    no_mask_kept: list[str] = []
    labels_raw: list[str | None] = []
    for img in _progress(image_files, len(image_files), "images", progress):
        rel_src = _rel_to(img, base)
        digest, error = inspect_image(img, check=check)
        if error is not None:
            report.skip(rel_src, "unreadable image", error)
            continue
        mask = None
        for s in suffixes:
            found = mask_by_stem.get(img.stem + s)
            if found:
                mask = found[0]
                break
        raw, idx, lab_error = _label_of(img.stem, pattern, class_list)
        if lab_error is not None:
            report.skip(rel_src, "label not in --classes", lab_error)
            continue
        has_label = raw is not None and task != "segmentation"
        if mask is None and (missing_mask == "skip" or not has_label):
            why = "image without mask (--missing-mask skip)" if missing_mask == "skip" else "image without mask and without label"
            report.skip(rel_src, why)
            continue
        item: dict[str, Any] = {"image": _rel_to(img, out_dir)}
        if mask is not None:
            item["mask"] = _rel_to(mask, out_dir)
            used_masks.add(mask)
            report.paired += 1
        else:
            no_mask_kept.append(rel_src)
        if has_label:
            item["label"] = idx  # None for now when classes are derived below
        elif task != "segmentation":
            unlabelled += 1
        pid = parser(img.name)
        if pid is not None:
            item["patient_id"] = pid
        item["sha256"] = digest
        items.append(item)
        item_src.append(rel_src)
        labels_raw.append(raw if has_label else None)

    for stem, ms in sorted(mask_by_stem.items()):
        for m in ms:
            if m not in used_masks:
                why = "mask without image" if ms[0] not in used_masks else "second mask for one image (another extension)"
                report.skip(_rel_to(m, base), why)

    any_label = any(r is not None for r in labels_raw)
    if task == "segmentation_classification" and not any_label:
        raise DataError(
            f"{images}: --label-pattern {label_pattern!r} found no label in any file name; "
            "fix the pattern or use --task segmentation"
        )
    final_task = "segmentation" if task == "segmentation" or not any_label else "segmentation_classification"
    if final_task == "segmentation_classification":
        if class_list is None:
            class_list = sorted({r for r in labels_raw if r is not None})
            for item, raw in zip(items, labels_raw):
                if raw is not None:
                    item["label"] = class_list.index(raw)
        if unlabelled:
            report.notes.append(f"{unlabelled} images have no label (--label-pattern did not match their names)")
    else:
        class_list = []
        for item in items:
            item.pop("label", None)
    report.duplicate_sets = _duplicate_sets(items, item_src)
    report.missing_patient_ids = sum(1 for it in items if "patient_id" not in it)
    if no_mask_kept:
        more = f" ... and {len(no_mask_kept) - 3} more" if len(no_mask_kept) > 3 else ""
        report.notes.append(
            f"{len(no_mask_kept)} images have no mask and are kept as label-only items "
            f"(--missing-mask skip leaves them out): {', '.join(no_mask_kept[:3])}{more}"
        )

    fractions = _resolve_fractions(split, val_fraction, report)
    parts = _split_and_note(items, fractions, seed, report, "image/mask pairs")
    provenance = make_provenance(
        tool, images, dict(arguments or {}),
        masks_root=str(masks.resolve()),
        layout="image folder + mask folder, matched by file stem" + (" (one folder)" if same_folder else ""),
        mask_suffixes=suffixes,
        label_pattern=label_pattern or None,
        patient_ids=parser.describe(),
        duplicates="byte-identical images (sha256) are grouped with each other and kept in one split",
        seed=seed,
    )
    manifest = new_manifest(final_task, class_list, provenance, parts["training"], parts["validation"], parts["test"])
    return _finish(manifest, report)
