# Copyright (c) medfuse contributors
# Licensed under the Apache License, Version 2.0
"""Public lesion-detection layouts -> medfuse detection manifests.

* **VinDr-CXR** (:func:`vindr_to_manifest`): a CSV with one row per reader and finding. Columns are read by
  name, so both releases work: Kaggle ``image_id,class_name,class_id,rad_id,x_min,y_min,x_max,y_max`` and
  PhysioNet ``image_id,rad_id,class_name,x_min,...``. "No finding" rows (empty coordinates) make negatives.
  Several readers annotate each image; their boxes are merged per class (``merge``): ``"wbf"`` clusters the
  readers' boxes that overlap (IoU >= ``merge_iou``) and averages each cluster (weighted box fusion without
  scores), keeping clusters drawn by at least ``min_readers`` readers; ``"keep_all"`` keeps every box;
  ``"first_reader"`` keeps the boxes of the image's first reader in the CSV.
* **COCO** (:func:`coco_to_manifest`, e.g. TBX11K): ``bbox`` ``[x, y, w, h]`` becomes
  ``[x, y, x + w, y + h]``; ``iscrowd`` annotations are skipped and counted; images without annotations are
  negatives.

Boxes are ``[x_min, y_min, x_max, y_max]`` in pixels of the stored image (x = column), clipped to the image
(rows x columns from the DICOM header, or the image size); boxes with no area left are dropped; both are
counted in the report. Items carry ``boxes``, ``box_labels`` (indices into ``classes``, which never holds
"No finding"), ``sha256`` and, for VinDr, ``readers``. Neither dataset gives patient ids, so the split is per
image, with byte-identical files kept in one split (:mod:`medfuse.data.splits`), stratified by positive /
negative.

Each converter returns ``(manifest, report)`` like the converters of :mod:`medfuse.data.layouts`.
"""

from __future__ import annotations

import csv
import json
import os
from collections import Counter, defaultdict
from pathlib import Path
from typing import Any, Iterable, Sequence

import numpy as np

from medfuse.data.layouts._common import _finish as _finish_counts
from medfuse.data.layouts.report import ConversionReport
from medfuse.data.manifest import make_provenance, new_manifest, summarize_manifest
from medfuse.data.splits import group_indices, parse_fractions, split_items
from medfuse.errors import DataError
from medfuse.utils.io import sha256_file

__all__ = [
    "MERGE_MODES",
    "NO_FINDING",
    "VINDR_COLUMNS",
    "box_iou_xyxy",
    "fuse_reader_boxes",
    "vindr_to_manifest",
    "coco_to_manifest",
]

#: Values of ``vindr_to_manifest(merge=...)``.
MERGE_MODES = ("wbf", "keep_all", "first_reader")
#: VinDr-CXR's class name of a reader's "no lesion" row.
NO_FINDING = "No finding"
#: Columns a VinDr-CXR CSV must have (``rad_id`` and ``class_id`` are used when present).
VINDR_COLUMNS = ("image_id", "class_name", "x_min", "y_min", "x_max", "y_max")
_DEFAULT_FRACTIONS = (0.8, 0.1, 0.1)


# ---------------------------------------------------------------------------------------------------------
# boxes
def box_iou_xyxy(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """IoU matrix ``(N, M)`` of boxes ``[x_min, y_min, x_max, y_max]`` (0 where the union is empty)."""
    a = np.asarray(a, dtype=np.float64).reshape(-1, 4)
    b = np.asarray(b, dtype=np.float64).reshape(-1, 4)
    lt = np.maximum(a[:, None, :2], b[None, :, :2])
    rb = np.minimum(a[:, None, 2:], b[None, :, 2:])
    inter = np.prod(np.clip(rb - lt, 0.0, None), axis=2)
    area_a = np.prod(a[:, 2:] - a[:, :2], axis=1)
    area_b = np.prod(b[:, 2:] - b[:, :2], axis=1)
    union = area_a[:, None] + area_b[None, :] - inter
    return np.where(union > 0, inter / np.where(union > 0, union, 1.0), 0.0)


def fuse_reader_boxes(
    boxes: Sequence[Sequence[float]], readers: Sequence[str], iou: float = 0.4, min_readers: int = 1
) -> list[tuple[list[float], list[str]]]:
    """Score-free weighted box fusion of one class's boxes from several readers.

    Boxes are taken in the given order; each joins the cluster whose fused box (the mean of its members)
    overlaps it most with IoU >= ``iou``, or starts a new cluster. Clusters drawn by fewer than
    ``min_readers`` distinct readers are dropped.

    Args:
        boxes: ``[x_min, y_min, x_max, y_max]`` per box.
        readers: the reader of each box.
        iou: IoU needed to join a cluster. Defaults to 0.4.
        min_readers: distinct readers a kept cluster needs. Defaults to 1.

    Returns:
        ``[(fused box, sorted readers of the cluster), ...]`` in the order the clusters were started.

    Examples::

        >>> fuse_reader_boxes([[0, 0, 10, 10], [1, 1, 11, 11], [50, 50, 60, 60]], ["R1", "R2", "R1"], min_readers=2)
        [([0.5, 0.5, 10.5, 10.5], ['R1', 'R2'])]
    """
    members: list[list[int]] = []
    fused: list[np.ndarray] = []
    arr = np.asarray(boxes, dtype=np.float64).reshape(-1, 4)
    for i, box in enumerate(arr):
        best, best_iou = -1, -1.0
        if fused:
            ious = box_iou_xyxy(box[None], np.stack(fused))[0]
            best = int(np.argmax(ious))
            best_iou = float(ious[best])
        if best >= 0 and best_iou >= iou:
            members[best].append(i)
            fused[best] = arr[members[best]].mean(axis=0)
        else:
            members.append([i])
            fused.append(box.copy())
    out = []
    for m, f in zip(members, fused):
        who = sorted({str(readers[i]) for i in m})
        if len(who) >= min_readers:
            out.append(([float(v) for v in f], who))
    return out


def _clip(box: Sequence[float], rows: int | None, cols: int | None) -> tuple[list[float], bool]:
    x0, y0, x1, y1 = (float(v) for v in box)
    x0, x1 = min(x0, x1), max(x0, x1)
    y0, y1 = min(y0, y1), max(y0, y1)
    hi_x = float(cols) if cols else float("inf")
    hi_y = float(rows) if rows else float("inf")
    out = [min(max(x0, 0.0), hi_x), min(max(y0, 0.0), hi_y), min(max(x1, 0.0), hi_x), min(max(y1, 0.0), hi_y)]
    return out, out != [x0, y0, x1, y1]


class _BoxCounts:
    """Box bookkeeping shown in the report."""

    def __init__(self) -> None:
        self.c: Counter = Counter()

    def add(self, box: Sequence[float], rows: int | None, cols: int | None) -> list[float] | None:
        """The clipped box, or None when it has no area left."""
        self.c["boxes read"] += 1
        clipped, changed = _clip(box, rows, cols)
        if changed:
            self.c["clipped to the image"] += 1
        if clipped[2] <= clipped[0] or clipped[3] <= clipped[1]:
            self.c["dropped: no area (after clipping)"] += 1
            return None
        return clipped

    def note(self) -> str:
        return "boxes: " + ", ".join(f"{k} {v}" for k, v in self.c.items()) if self.c else "boxes: none read"


# ---------------------------------------------------------------------------------------------------------
# files
def _rel(path: Path, base: Path) -> str:
    try:
        return Path(os.path.relpath(os.path.abspath(path), os.path.abspath(base))).as_posix()
    except ValueError:  # other drive (Windows)
        return Path(os.path.abspath(path)).as_posix()


def _image_size(path: Path) -> tuple[int | None, int | None, str | None]:
    """``(rows, columns, error)`` from the DICOM header (no pixel decoding) or the image header."""
    try:
        with open(path, "rb") as f:
            head = f.read(132)
        if head[128:132] == b"DICM" or path.suffix.lower() in (".dcm", ".dicom"):
            import pydicom

            ds = pydicom.dcmread(str(path), stop_before_pixels=True, force=True)
            rows, cols = ds.get("Rows"), ds.get("Columns")
            if rows is None or cols is None:
                return None, None, "DICOM header without Rows / Columns"
            return int(rows), int(cols), None
        from PIL import Image

        with Image.open(path) as im:
            return int(im.size[1]), int(im.size[0]), None
    except Exception as e:  # pydicom / Pillow raise many types on bad files
        return None, None, f"{type(e).__name__}: {e}".splitlines()[0][:200]


def _parse_classes(classes: str | Sequence[str] | None) -> list[str] | None:
    if classes is None:
        return None
    names = [c.strip() for c in classes.split(",")] if isinstance(classes, str) else [str(c) for c in classes]
    if not names or any(not c for c in names):
        raise DataError(f"--classes {','.join(names)!r} has an empty name; write e.g. --classes 'Nodule/Mass,Pleural effusion'")
    dup = sorted(c for c, k in Counter(names).items() if k > 1)
    if dup:
        raise DataError(f"--classes repeats {dup}; give each class once")
    if NO_FINDING in names:
        raise DataError(f"--classes must not list {NO_FINDING!r}: its rows make negatives (images without boxes)")
    return names


def _fractions(split, val_fraction, report: ConversionReport) -> tuple[float, ...]:
    if split is not None:
        if val_fraction is not None:
            report.notes.append("--val-fraction ignored: --split gives the fractions of every split")
        return parse_fractions(split)
    if val_fraction is not None:
        return parse_fractions((1.0 - float(val_fraction), float(val_fraction), 0.0), what="--val-fraction")
    return _DEFAULT_FRACTIONS


def _split_per_image(items: list[dict], fractions, seed: int, report: ConversionReport, what: str) -> dict:
    for it in items:
        it["_stratum"] = "positive" if it["boxes"] else "negative"
    parts = split_items(items, fractions, seed=seed, label_key="_stratum", group_keys=("sha256",))
    for it in items:
        del it["_stratum"]
    groups = group_indices(items, ("sha256",))
    dup_sets = [[items[i]["image"] for i in g] for g in groups if len(g) > 1]
    report.duplicate_sets = dup_sets
    report.notes.append(
        f"{what} has no patient ids: split {', '.join(f'{f:g}' for f in fractions)} (training, validation, "
        f"test) per image, byte-identical files kept together ({len(groups)} groups of {len(items)} images), "
        f"stratified by positive / negative, seed {seed}"
    )
    return parts


def _finish(manifest: dict, report: ConversionReport, counts: _BoxCounts) -> tuple[dict, ConversionReport]:
    manifest, report = _finish_counts(manifest, report)
    manifest["provenance"]["counts"]["boxes"] = dict(counts.c)
    return manifest, report


def _unknown_classes_error(unknown: Iterable[str], classes: Sequence[str], where: str) -> DataError:
    names = sorted(set(unknown))
    return DataError(
        f"{where}: class name(s) {names} not in --classes {list(classes)}; add them to --classes "
        f"(or leave --classes out to take every class of the file)"
    )


# ---------------------------------------------------------------------------------------------------------
# VinDr-CXR
def _read_vindr_csv(csv_path: Path) -> list[dict]:
    if not csv_path.is_file():
        raise DataError(f"VinDr-CXR CSV not found: {csv_path}")
    with open(csv_path, newline="", encoding="utf-8-sig") as f:
        reader = csv.DictReader(f)
        fields = [c.strip() for c in (reader.fieldnames or [])]
        missing = [c for c in VINDR_COLUMNS if c not in fields]
        if missing:
            raise DataError(
                f"{csv_path}: missing column(s) {missing} (found {fields}); a VinDr-CXR annotation CSV has "
                f"{', '.join(VINDR_COLUMNS)} and usually rad_id, class_id"
            )
        return [{(k or "").strip(): (v or "").strip() for k, v in row.items()} for row in reader]


def _number(text: str) -> float | None:
    if text == "" or text.lower() == "nan":
        return None
    try:
        v = float(text)
    except ValueError:
        return None
    return v if np.isfinite(v) else None


def vindr_to_manifest(
    csv_path: str | os.PathLike,
    images_dir: str | os.PathLike,
    out_path: str | os.PathLike,
    merge: str = "wbf",
    merge_iou: float = 0.4,
    min_readers: int = 1,
    image_ext: str = ".dicom",
    classes: str | Sequence[str] | None = None,
    split: str | Sequence[float] | None = None,
    val_fraction: float | None = None,
    seed: int = 0,
    progress: bool | None = None,
    arguments: Any = None,
) -> tuple[dict, ConversionReport]:
    """VinDr-CXR annotation CSV + image folder -> detection manifest (see the module docstring).

    Args:
        csv_path: ``annotations_train.csv`` (Kaggle ``train.csv`` or PhysioNet ``annotations/*.csv``).
        images_dir: folder of ``<image_id><image_ext>`` files.
        out_path: the manifest's future path (image paths are written relative to its folder).
        merge: ``"wbf"``, ``"keep_all"`` or ``"first_reader"``. Defaults to ``"wbf"``.
        merge_iou: IoU that joins readers' boxes (``wbf``). Defaults to 0.4.
        min_readers: readers a fused box needs (``wbf``). Defaults to 1.
        image_ext: image file extension (``.dicom``, ``.dcm``, ``.png`` ...). Defaults to ``".dicom"``.
        classes: lesion classes in label order (names or ``"A,B"``); default: the CSV's, by ``class_id``
            when present, else alphabetical. "No finding" is never a class.
        split: ``"0.8,0.1,0.1"`` or fractions. Defaults to 0.8, 0.1, 0.1.
        val_fraction: with no ``split``: ``1 - f, f, 0``. Defaults to None.
        seed: split seed. Defaults to 0.
        progress: unused (kept for the converters' common options). Defaults to None.
        arguments: recorded in the provenance. Defaults to None.

    Returns:
        ``(manifest, report)``; ``found`` counts the CSV's images, missing or unreadable files are skipped.

    Raises:
        DataError: missing CSV columns, unknown class names (one line naming them), bad options.
    """
    del progress
    if merge not in MERGE_MODES:
        raise DataError(f"--merge must be one of {list(MERGE_MODES)}, got {merge!r}")
    if not 0.0 < float(merge_iou) <= 1.0:
        raise DataError(f"--merge-iou must be in (0, 1], got {merge_iou!r}")
    if isinstance(min_readers, bool) or int(min_readers) < 1:
        raise DataError(f"--min-readers must be a whole number >= 1, got {min_readers!r}")
    csv_path, images_dir, out_path = Path(csv_path), Path(images_dir), Path(out_path)
    if not images_dir.is_dir():
        raise DataError(f"image folder not found: {images_dir}")
    ext = image_ext if image_ext.startswith(".") or not image_ext else "." + image_ext
    rows = _read_vindr_csv(csv_path)
    report = ConversionReport(tool="medfuse vindr2manifest")

    given = _parse_classes(classes)
    names_in_csv = [r["class_name"] for r in rows if r["class_name"] and r["class_name"] != NO_FINDING]
    if given is not None:
        unknown = [n for n in names_in_csv if n not in given]
        if unknown:
            raise _unknown_classes_error(unknown, given, str(csv_path))
        class_list = given
    elif rows and "class_id" in rows[0]:
        ids: dict[str, float] = {}
        wanted = set(names_in_csv)
        for r in rows:
            name = r["class_name"]
            if name in wanted and name not in ids:
                number = _number(r.get("class_id", ""))
                ids[name] = number if number is not None else float("inf")  # no id: after the numbered ones
        class_list = sorted(ids, key=lambda n: (ids[n], n))
    else:
        class_list = sorted(set(names_in_csv))
    index = {c: i for i, c in enumerate(class_list)}
    if merge != "wbf" and int(min_readers) > 1:
        report.notes.append(f"--min-readers {min_readers} ignored: it applies to --merge wbf only")

    by_image: dict[str, list[dict]] = defaultdict(list)
    for r in rows:
        if r["image_id"]:
            by_image[r["image_id"]].append(r)
    counts = _BoxCounts()
    base = out_path.parent
    items: list[dict] = []
    for image_id, image_rows in by_image.items():
        report.found += 1
        path = images_dir / f"{image_id}{ext}"
        if not path.is_file():
            report.skip(_rel(path, base), "image file not found", f"image_id {image_id} of the CSV")
            continue
        n_rows, n_cols, err = _image_size(path)
        if err:
            report.skip(_rel(path, base), "unreadable image", err)
            continue
        readers: list[str] = []
        per_class: dict[int, list[tuple[list[float], str]]] = defaultdict(list)
        for r in image_rows:
            reader = r.get("rad_id") or "unknown"
            if reader not in readers:
                readers.append(reader)
            name = r["class_name"]
            if name == NO_FINDING:
                continue
            coords = [_number(r[k]) for k in ("x_min", "y_min", "x_max", "y_max")]
            if any(v is None for v in coords):
                counts.c["dropped: finding row without coordinates"] += 1
                continue
            box = counts.add(coords, n_rows, n_cols)
            if box is not None:
                per_class[index[name]].append((box, reader))
        boxes: list[list[float]] = []
        labels: list[int] = []
        for k in sorted(per_class):
            entries = per_class[k]
            if merge == "keep_all":
                chosen = [b for b, _ in entries]
            elif merge == "first_reader":
                chosen = [b for b, who in entries if who == readers[0]]
            else:
                fused = fuse_reader_boxes([b for b, _ in entries], [w for _, w in entries], merge_iou, int(min_readers))
                chosen = [b for b, _ in fused]
            for b in chosen:
                boxes.append([round(v, 2) for v in b])
                labels.append(k)
        counts.c["boxes written"] += len(boxes)
        items.append({
            "image": _rel(path, base), "boxes": boxes, "box_labels": labels, "readers": readers,
            "image_id": image_id, "rows": n_rows, "columns": n_cols, "sha256": sha256_file(path),
        })
    if not items:
        raise DataError(f"no image of {csv_path} was found in {images_dir} as <image_id>{ext}; check --image-ext")
    fractions = _fractions(split, val_fraction, report)
    parts = _split_per_image(items, fractions, seed, report, "VinDr-CXR")
    report.notes.append(
        f"readers merged with {merge}" + (f" (IoU >= {merge_iou:g}, >= {int(min_readers)} reader(s))" if merge == "wbf" else "")
    )
    report.notes.append(counts.note())
    report.notes.append(f"negatives (no box kept): {sum(1 for it in items if not it['boxes'])} of {len(items)} images")
    provenance = make_provenance(
        "medfuse vindr2manifest", images_dir, arguments,
        source_csv=str(csv_path.resolve()), merge=merge, merge_iou=float(merge_iou), min_readers=int(min_readers),
        box_format="[x_min, y_min, x_max, y_max] pixels, x = column",
    )
    manifest = new_manifest("detection", class_list, provenance, **parts)
    return _finish(manifest, report, counts)


# ---------------------------------------------------------------------------------------------------------
# COCO
def coco_to_manifest(
    json_path: str | os.PathLike,
    images_dir: str | os.PathLike,
    out_path: str | os.PathLike,
    classes: str | Sequence[str] | None = None,
    split: str | Sequence[float] | None = None,
    val_fraction: float | None = None,
    seed: int = 0,
    progress: bool | None = None,
    arguments: Any = None,
) -> tuple[dict, ConversionReport]:
    """COCO detection JSON + image folder -> detection manifest (see the module docstring).

    Args:
        json_path: the COCO annotation file (``images``, ``annotations``, ``categories``).
        images_dir: folder that the images' ``file_name`` is relative to.
        out_path: the manifest's future path.
        classes: class names in label order; default the categories by ``id``. Every category that has
            annotations must be listed.
        split, val_fraction, seed, progress, arguments: as :func:`vindr_to_manifest`.

    Returns:
        ``(manifest, report)``; ``found`` counts the JSON's images.

    Raises:
        DataError: unreadable JSON, missing keys, categories not in ``classes`` (one line naming them).
    """
    del progress
    json_path, images_dir, out_path = Path(json_path), Path(images_dir), Path(out_path)
    if not json_path.is_file():
        raise DataError(f"COCO annotation file not found: {json_path}")
    if not images_dir.is_dir():
        raise DataError(f"image folder not found: {images_dir}")
    try:
        coco = json.loads(json_path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise DataError(f"{json_path}: not valid JSON ({e})") from e
    if not isinstance(coco, dict) or not all(isinstance(coco.get(k), list) for k in ("images", "categories")):
        raise DataError(f"{json_path}: a COCO file has 'images' and 'categories' lists (and 'annotations')")
    report = ConversionReport(tool="medfuse coco2manifest")
    cat_name = {int(c["id"]): str(c["name"]) for c in coco["categories"]}
    annotations = coco.get("annotations") or []
    given = _parse_classes(classes)
    if given is not None:
        used = {cat_name.get(int(a["category_id"]), f"category_id {a['category_id']}") for a in annotations}
        unknown = [n for n in used if n not in given]
        if unknown:
            raise _unknown_classes_error(unknown, given, str(json_path))
        class_list = given
    else:
        class_list = [cat_name[i] for i in sorted(cat_name)]
    index = {c: i for i, c in enumerate(class_list)}

    by_image: dict[int, list[dict]] = defaultdict(list)
    for a in annotations:
        by_image[int(a["image_id"])].append(a)
    counts = _BoxCounts()
    base = out_path.parent
    items: list[dict] = []
    for im in coco["images"]:
        report.found += 1
        path = images_dir / str(im["file_name"])
        if not path.is_file():
            report.skip(_rel(path, base), "image file not found", f"COCO image id {im.get('id')}")
            continue
        rows, cols = im.get("height"), im.get("width")
        if not rows or not cols:
            rows, cols, err = _image_size(path)
            if err:
                report.skip(_rel(path, base), "unreadable image", err)
                continue
        boxes: list[list[float]] = []
        labels: list[int] = []
        for a in by_image.get(int(im["id"]), []):
            if int(a.get("iscrowd", 0) or 0):
                counts.c["skipped: iscrowd"] += 1
                continue
            bbox = a.get("bbox")
            if not isinstance(bbox, list) or len(bbox) != 4:
                counts.c["dropped: annotation without bbox"] += 1
                continue
            x, y, w, h = (float(v) for v in bbox)
            box = counts.add([x, y, x + w, y + h], int(rows), int(cols))
            if box is None:
                continue
            boxes.append([round(v, 2) for v in box])
            labels.append(index[cat_name[int(a["category_id"])]])
        counts.c["boxes written"] += len(boxes)
        items.append({
            "image": _rel(path, base), "boxes": boxes, "box_labels": labels, "coco_id": im["id"],
            "rows": int(rows), "columns": int(cols), "sha256": sha256_file(path),
        })
    if not items:
        raise DataError(f"no image of {json_path} was found under {images_dir}; check the folder")
    fractions = _fractions(split, val_fraction, report)
    parts = _split_per_image(items, fractions, seed, report, "the COCO file")
    report.notes.append(counts.note())
    report.notes.append(f"negatives (no annotation kept): {sum(1 for it in items if not it['boxes'])} of {len(items)} images")
    provenance = make_provenance(
        "medfuse coco2manifest", images_dir, arguments, source_json=str(json_path.resolve()),
        box_format="[x_min, y_min, x_max, y_max] pixels, x = column (COCO [x, y, w, h] converted)",
    )
    manifest = new_manifest("detection", class_list, provenance, **parts)
    return _finish(manifest, report, counts)
