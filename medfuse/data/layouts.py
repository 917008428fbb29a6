# Copyright (c) medfuse contributors
# Licensed under the Apache License, Version 2.0
"""Public dataset layouts -> medfuse manifests.

Three layouts cover the public chest X-ray and OCT datasets medfuse uses:

* **class folders** (:func:`folder_to_manifest`): one folder per class, optionally under
  ``train`` / ``val`` / ``test`` folders. Kermany chest X-ray (``train/NORMAL``,
  ``test/PNEUMONIA``), Kermany OCT2017 (``CNV``, ``DME``, ``DRUSEN``, ``NORMAL``, directly or
  under ``train``/``test``), and the TB / COVID-19 radiography databases, whose class folders
  hold an ``images/`` folder beside a ``masks/`` folder (``COVID/images/COVID-1.png``).
* **image + mask folders** (:func:`pairs_to_manifest`): Shenzhen and Montgomery
  (``cxr/CHNCXR_0001_0.png`` with ``masks/CHNCXR_0001_0.png``), masks matched by file stem,
  optionally with a suffix (``1.jpg`` with ``1-mask.png``), labels read from the stem.
* **MedMNIST npz** (:func:`medmnist_to_manifest`): ``train_images`` / ``train_labels`` /
  ``val_*`` / ``test_*`` arrays, written out as PNG files with the official splits kept.

Each converter returns ``(manifest, report)``: the manifest dictionary (not yet written; use
:func:`medfuse.data.manifest.write_manifest`) and a :class:`ConversionReport` that accounts
for every file found: ``found == written + skipped``, each skipped file with its reason.

Splits are patient-level and duplicate-safe (:mod:`medfuse.data.splits`): items sharing a
patient id (:mod:`medfuse.data.patients`) or identical bytes (``sha256``) always land in one
split. Existing split folders are kept; a group that the folders themselves spread over two
splits keeps only its copies in the most held-out split (test, then validation) and the
others are skipped and reported, unless ``leakage="error"``.
"""

from __future__ import annotations

import argparse
import hashlib
import io
import os
import re
import sys
import urllib.error
import urllib.request
import zipfile
import zlib
from collections import Counter, defaultdict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable, Mapping, Sequence

import numpy as np

from medfuse.data.manifest import format_summary, make_provenance, new_manifest, summarize_manifest
from medfuse.data.patients import PatientIdParser
from medfuse.data.splits import carve_validation, group_indices, parse_fractions, split_items
from medfuse.errors import DataError

__all__ = [
    "IMAGE_EXTENSIONS",
    "SPLIT_FOLDERS",
    "DEFAULT_FRACTIONS",
    "DEFAULT_VAL_FRACTION",
    "DEFAULT_LABEL_PATTERN",
    "DEFAULT_MASK_SUFFIXES",
    "MEDMNIST_CLASSES",
    "ConversionReport",
    "is_dicom_bytes",
    "inspect_image",
    "folder_to_manifest",
    "pairs_to_manifest",
    "medmnist_to_manifest",
    "medmnist_url",
    "download_medmnist",
    "fractions_type",
    "add_common_arguments",
]

#: File extensions taken as images (lower case). Files without an extension are taken when
#: they carry the DICOM magic ``DICM`` at byte 128.
IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff", ".dcm")
_PIL_EXTENSIONS = (".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff")
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

_ORGANS = (
    "bladder", "femur-left", "femur-right", "heart", "kidney-left", "kidney-right", "liver",
    "lung-left", "lung-right", "pancreas", "spleen",
)
#: Class names of the 2-D MedMNIST v2 datasets (label index order of the official files).
MEDMNIST_CLASSES: dict[str, tuple[str, ...]] = {
    "pneumoniamnist": ("normal", "pneumonia"),
    "chestmnist": (
        "atelectasis", "cardiomegaly", "effusion", "infiltration", "mass", "nodule", "pneumonia",
        "pneumothorax", "consolidation", "edema", "emphysema", "fibrosis", "pleural", "hernia",
    ),
    "octmnist": ("choroidal neovascularization", "diabetic macular edema", "drusen", "normal"),
    "breastmnist": ("malignant", "normal, benign"),
    "retinamnist": ("0", "1", "2", "3", "4"),
    "pathmnist": (
        "adipose", "background", "debris", "lymphocytes", "mucus", "smooth muscle",
        "normal colon mucosa", "cancer-associated stroma", "colorectal adenocarcinoma epithelium",
    ),
    "dermamnist": (
        "actinic keratoses and intraepithelial carcinoma", "basal cell carcinoma",
        "benign keratosis-like lesions", "dermatofibroma", "melanoma", "melanocytic nevi", "vascular lesions",
    ),
    "bloodmnist": ("basophil", "eosinophil", "erythroblast", "ig", "lymphocyte", "monocyte", "neutrophil", "platelet"),
    "organamnist": _ORGANS,
    "organcmnist": _ORGANS,
    "organsmnist": _ORGANS,
}
#: MD5 of the official 28x28 files, checked after a download.
_MEDMNIST_MD5 = {
    "pneumoniamnist": "28209eda62fecd6e6a2d98b1501bb15f",
    "chestmnist": "02c8a6516a18b556561a56cbdd36c4a8",
    "octmnist": "c68d92d5b585d8d81f7112f81e2d0842",
    "breastmnist": "750601b1f35ba3300ea97c75c52ff8f6",
    "retinamnist": "bd4c0672f1bba3e3a89f0e4e876791e4",
    "pathmnist": "a8b06965200029087d5bd730944a56c1",
    "dermamnist": "0744692d530f8e62ec473284d019b0c7",
    "bloodmnist": "7053d0359d879ad8a5505303e11de1dc",
    "organamnist": "866b832ed4eeba67bfb9edee1d5544e6",
    "organcmnist": "0afa5834fb105f7705a7d93372119a21",
    "organsmnist": "e5c39f1af030238290b9557d9503af9d",
}
_MEDMNIST_URL = "https://zenodo.org/record/5208230/files/{name}.npz?download=1"
_MEDMNIST_SPLITS = (("train", "training"), ("val", "validation"), ("test", "test"))


# ---------------------------------------------------------------------------------------
# report
# ---------------------------------------------------------------------------------------
@dataclass
class ConversionReport:
    """What a converter found, wrote and skipped, and why.

    Attributes:
        tool: the command that made the manifest.
        found: files (or array rows) looked at.
        skipped: ``(path, reason, detail)`` per file not written; ``reason`` is a short
            category (counts are grouped by it), ``detail`` the specific cause.
        duplicate_sets: sets of byte-identical files (paths), each kept in one split.
        notes: decisions worth telling the user (carved validation, ignored options ...).
        missing_patient_ids: written items whose patient id is unknown (own patient each).
        paired: files used as part of a written item rather than as one (masks).
        duplicates_policy: what happened to ``duplicate_sets`` (shown with them).
        summary: :func:`medfuse.data.manifest.summarize_manifest` of the result.
    """

    tool: str
    found: int = 0
    skipped: list[tuple[str, str, str]] = field(default_factory=list)
    duplicate_sets: list[list[str]] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    missing_patient_ids: int = 0
    paired: int = 0
    duplicates_policy: str = "each set kept in one split"
    summary: dict = field(default_factory=dict)

    def skip(self, path: str | os.PathLike, reason: str, detail: str = "") -> None:
        """Record one file that is not written."""
        self.skipped.append((str(path), reason, detail))

    @property
    def written(self) -> int:
        """Items in the manifest."""
        return int(self.summary.get("total", 0))

    def skipped_by_reason(self) -> dict[str, list[tuple[str, str]]]:
        """``{reason: [(path, detail), ...]}`` in first-seen order."""
        out: dict[str, list[tuple[str, str]]] = {}
        for path, reason, detail in self.skipped:
            out.setdefault(reason, []).append((path, detail))
        return out

    def check_counts(self) -> None:
        """Assert ``found == written + paired + skipped`` (a failure is a medfuse bug, not bad input)."""
        if self.found != self.written + self.paired + len(self.skipped):
            raise RuntimeError(
                f"internal error in {self.tool}: found {self.found} != written {self.written} + "
                f"paired {self.paired} + skipped {len(self.skipped)}; please report this"
            )

    def to_dict(self) -> dict:
        """JSON-ready form (for ``--report``), listing every skipped file and duplicate set."""
        return {
            "tool": self.tool,
            "found": self.found,
            "written": self.written,
            "paired": self.paired,
            "skipped_count": len(self.skipped),
            "skipped_by_reason": {k: len(v) for k, v in self.skipped_by_reason().items()},
            "skipped": [{"path": p, "reason": r, "detail": d} for p, r, d in self.skipped],
            "duplicate_sets": self.duplicate_sets,
            "missing_patient_ids": self.missing_patient_ids,
            "notes": self.notes,
            "summary": self.summary,
        }

    def format(self, max_examples: int = 3) -> str:
        """Counts per split and class, skipped files by reason, duplicates and notes."""
        lines = [format_summary(self.summary)] if self.summary else []
        paired = f" + masks paired with them {self.paired}" if self.paired else ""
        lines.append(f"found {self.found} = written {self.written}{paired} + skipped {len(self.skipped)}")
        for reason, entries in self.skipped_by_reason().items():
            lines.append(f"  skipped {len(entries)}: {reason}")
            for path, detail in entries[:max_examples]:
                lines.append(f"    {path}" + (f" ({detail})" if detail else ""))
            if len(entries) > max_examples:
                lines.append(f"    ... and {len(entries) - max_examples} more")
        if self.duplicate_sets:
            n_files = sum(len(s) for s in self.duplicate_sets)
            lines.append(
                f"byte-identical files: {len(self.duplicate_sets)} sets ({n_files} files), {self.duplicates_policy}"
            )
            for s in self.duplicate_sets[:max_examples]:
                lines.append("    " + " = ".join(s))
        if self.missing_patient_ids:
            lines.append(f"no patient id in the file name: {self.missing_patient_ids} items (each its own patient)")
        for note in self.notes:
            lines.append(f"note: {note}")
        return "\n".join(lines)


# ---------------------------------------------------------------------------------------
# files
# ---------------------------------------------------------------------------------------
def is_dicom_bytes(data: bytes) -> bool:
    """True when ``data`` has the DICOM preamble magic ``DICM`` at offset 128."""
    return len(data) >= 132 and data[128:132] == b"DICM"


def _is_hidden(name: str) -> bool:
    return name.startswith(".") or name in ("Thumbs.db", "desktop.ini")


def _image_kind(path: Path) -> str | None:
    """``"pil"``, ``"dicom"`` or ``None`` (not an image) from the extension / DICOM magic."""
    ext = path.suffix.lower()
    if ext in _PIL_EXTENSIONS:
        return "pil"
    if ext == ".dcm":
        return "dicom"
    if ext == "":
        try:
            with open(path, "rb") as f:
                head = f.read(132)
        except OSError:
            return None
        return "dicom" if is_dicom_bytes(head) else None
    return None


def inspect_image(path: str | os.PathLike, check: str = "header", kind: str | None = None) -> tuple[str | None, str | None]:
    """Hash a file and check that it opens as an image.

    The file is read once; its SHA-256 is computed and the bytes are opened with Pillow
    (``verify()``, which checks PNG chunk CRCs) or pydicom (the dataset must hold pixel data).
    ``check="decode"`` also decodes the pixels, which catches truncated JPEGs at a cost.

    Returns:
        ``(sha256, None)`` for a readable image, ``(sha256 or None, error message)`` otherwise.
    """
    if check not in ("header", "decode"):
        raise ValueError(f"check must be 'header' or 'decode', got {check!r}")
    path = Path(path)
    kind = kind or _image_kind(path)
    try:
        data = path.read_bytes()
    except OSError as e:
        return None, f"cannot read: {e.strerror or e}"
    digest = hashlib.sha256(data).hexdigest()
    if not data:
        return digest, "empty file"
    if kind == "dicom":
        try:
            import pydicom

            ds = pydicom.dcmread(io.BytesIO(data), force=True)
            if not any(k in ds for k in ("PixelData", "FloatPixelData", "DoubleFloatPixelData")):
                return digest, "DICOM file without pixel data"
            if check == "decode":
                ds.pixel_array  # noqa: B018  (decodes)
        except Exception as e:  # pydicom raises many types on bad input
            return digest, f"DICOM: {type(e).__name__}: {e}".splitlines()[0][:200]
        return digest, None
    try:
        from PIL import Image

        with Image.open(io.BytesIO(data)) as im:
            im.verify()
        if check == "decode":
            with Image.open(io.BytesIO(data)) as im:
                im.load()
    except Exception as e:  # Pillow raises OSError, SyntaxError, ValueError ... on bad files
        return digest, f"{type(e).__name__}: {e}".splitlines()[0][:200]
    return digest, None


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


# ---------------------------------------------------------------------------------------
# class folders
# ---------------------------------------------------------------------------------------
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


# ---------------------------------------------------------------------------------------
# image + mask folders
# ---------------------------------------------------------------------------------------
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


# ---------------------------------------------------------------------------------------
# MedMNIST
# ---------------------------------------------------------------------------------------
def _medmnist_name(path: Path) -> str | None:
    stem = path.stem.lower()
    for name in sorted(MEDMNIST_CLASSES, key=len, reverse=True):
        if stem == name or stem.startswith(name + "_") or stem.startswith(name + "-"):
            return name
    return None


def _load_npz(path: Path) -> dict[str, np.ndarray]:
    """Arrays of a MedMNIST npz, with one-line :class:`DataError` for every way it can be bad."""
    if not path.is_file():
        raise DataError(f"{path}: file not found; pass a MedMNIST .npz (e.g. pneumoniamnist.npz) or use --download NAME")
    with open(path, "rb") as f:
        magic = f.read(6)
    if magic == b"\x93NUMPY":
        raise DataError(f"{path}: holds a single .npy array, not a MedMNIST .npz archive with train_images, train_labels, ...")
    if not magic.startswith(b"PK"):
        raise DataError(f"{path}: not an .npz file (no zip header); pass a MedMNIST .npz such as pneumoniamnist.npz")
    try:
        data = np.load(path, allow_pickle=False)
    except (OSError, ValueError, EOFError, zipfile.BadZipFile, zlib.error) as e:
        raise DataError(f"{path}: not a readable .npz file ({type(e).__name__}: {e}); download it again") from e
    if not isinstance(data, np.lib.npyio.NpzFile):
        raise DataError(f"{path}: holds a single array, not a MedMNIST .npz archive with train_images, train_labels, ...")
    with data:
        keys = list(data.files)
        prefixes = [p for p, _ in _MEDMNIST_SPLITS if f"{p}_images" in keys]
        if not prefixes:
            raise DataError(
                f"{path}: no '*_images' arrays (keys: {', '.join(keys) or 'none'}); a MedMNIST npz holds "
                "train_images, train_labels, val_images, val_labels, test_images, test_labels"
            )
        arrays = {}
        for p in prefixes:
            if f"{p}_labels" not in keys:
                raise DataError(f"{path}: has {p}_images but no {p}_labels; the file is incomplete, download it again")
            for k in (f"{p}_images", f"{p}_labels"):
                try:
                    arrays[k] = data[k]
                except (OSError, ValueError, EOFError, zipfile.BadZipFile, zlib.error) as e:
                    raise DataError(f"{path}: array {k} is corrupt ({type(e).__name__}: {e}); download the file again") from e
            n_img, n_lab = len(arrays[f"{p}_images"]), len(arrays[f"{p}_labels"])
            if n_img != n_lab:
                raise DataError(f"{path}: {p}_images has {n_img} rows but {p}_labels has {n_lab}; the file is damaged")
    return arrays


def _to_pil(arr: np.ndarray, path: Path, key: str):
    from PIL import Image

    if arr.ndim == 3 and arr.shape[-1] == 1:
        arr = arr[..., 0]
    if not (arr.ndim == 2 or (arr.ndim == 3 and arr.shape[-1] == 3)):
        raise DataError(
            f"{path}: {key} rows have shape {arr.shape}; medmnist2manifest writes 2-D gray (H, W) or RGB (H, W, 3) "
            "images (3-D MedMNIST volumes are not supported)"
        )
    if arr.dtype != np.uint8:
        if np.issubdtype(arr.dtype, np.integer) and arr.min() >= 0 and arr.max() <= 255:
            arr = arr.astype(np.uint8)
        else:
            raise DataError(f"{path}: {key} has dtype {arr.dtype}; expected uint8 pixels 0..255 as MedMNIST publishes")
    return Image.fromarray(np.ascontiguousarray(arr))


def medmnist_to_manifest(
    npz: str | os.PathLike,
    out_dir: str | os.PathLike,
    manifest_name: str = "manifest.json",
    classes: str | Sequence[str] | None = None,
    dataset: str | None = None,
    task: str = "auto",
    val_fraction: float | None = None,
    seed: int = 0,
    cross_split_duplicates: str = "keep",
    progress: bool | None = None,
    arguments: Mapping[str, Any] | None = None,
    tool: str = "medfuse medmnist2manifest",
    val_as_test: bool = False,
) -> tuple[dict, ConversionReport]:
    """Write a MedMNIST npz as PNG files and build its manifest.

    Images go to ``out_dir/images/<split>/<split>_<index>.png`` (``<split>`` is the npz prefix
    ``train``/``val``/``test``, ``<index>`` the row in the official array). Official splits are
    kept (``val`` becomes ``validation``). Gray arrays give 8-bit gray PNGs, RGB arrays RGB PNGs.

    Args:
        npz: the MedMNIST file.
        out_dir: output folder; the manifest is meant for ``out_dir/manifest_name``.
        manifest_name: file name of the manifest inside ``out_dir``. Defaults to ``manifest.json``.
        classes: class names in label order. Defaults to the names of the known dataset
            (from ``dataset`` or the file name, e.g. ``pneumoniamnist_trainval.npz``), else
            ``class_0, class_1, ...`` (noted in the report).
        dataset: MedMNIST dataset name (e.g. ``chestmnist``) when the file name does not say.
        task: ``"auto"`` (default: ``multilabel`` for labels with several columns, e.g.
            ChestMNIST's (N, 14), else ``classification``), ``"classification"`` or ``"multilabel"``.
        val_fraction: share of train carved into validation, used only when the file has no
            ``val_*`` arrays. Defaults to :data:`DEFAULT_VAL_FRACTION`; 0 carves none.
        seed: seed of that carve. Defaults to 0.
        cross_split_duplicates: the official splits contain some byte-identical images in two
            splits (PneumoniaMNIST: 8 in both train and val). ``"keep"`` (default) keeps the official
            splits; those items carry ``cross_split_duplicate: true`` and no ``sha256`` (the
            manifest validator would reject them as leakage) and are listed in the report.
            ``"drop"`` removes the copies in the later split (val after train, test after both)
            and records ``sha256`` for every item.
        progress, arguments, tool: as for :func:`folder_to_manifest`.
        val_as_test: the official ``val`` split becomes ``test`` and validation is carved from the
            official ``train`` split (``val_fraction``, per image, stratified by label, seeded; identical
            images kept together); the official ``test`` split is left out of the manifest (no PNGs
            written), kept for a final check. For model selection that never sees the reported split.
            Defaults to False.

    Returns:
        ``(manifest, report)``; ``report.found`` counts array rows.

    Raises:
        DataError: a missing, corrupt or non-npz file, missing ``*_images`` / ``*_labels``
            arrays, unsupported shapes, or classes that do not fit the labels.
    """
    npz, out_dir = Path(npz), Path(out_dir)
    report = ConversionReport(tool=tool)
    if task not in ("auto", "classification", "multilabel"):
        raise DataError(f"--task {task!r}: use auto, classification or multilabel")
    if cross_split_duplicates not in ("keep", "drop"):
        raise ValueError(f"cross_split_duplicates must be 'keep' or 'drop', got {cross_split_duplicates!r}")
    arrays = _load_npz(npz)
    prefixes = [p for p, _ in _MEDMNIST_SPLITS if f"{p}_images" in arrays]
    name = (dataset or "").lower() or _medmnist_name(npz)
    split_of = dict(_MEDMNIST_SPLITS)
    if val_as_test:
        if "val" not in prefixes:
            raise DataError(f"{npz}: --val-as-test needs the official val_* arrays, and the file has none")
        if "test" in prefixes:
            report.notes.append(
                f"--val-as-test: the official test split ({len(arrays['test_images'])} images) is left out of the "
                "manifest, the official val split is the test split"
            )
        prefixes = [p for p in prefixes if p != "test"]
        split_of["val"] = "test"

    # -- labels and task ---------------------------------------------------------------------
    label_arrays = {p: np.asarray(arrays[f"{p}_labels"]) for p in prefixes}
    widths = {p: (a.shape[1] if a.ndim == 2 else 1) for p, a in label_arrays.items()}
    if len(set(widths.values())) > 1:
        raise DataError(f"{npz}: label arrays differ in width {widths}; the file is inconsistent")
    width = next(iter(widths.values()))
    if task == "auto":
        task = "multilabel" if width > 1 else "classification"
    if task == "classification" and width > 1:
        raise DataError(f"{npz}: labels have {width} columns (multi-label); use --task multilabel")
    all_labels = np.concatenate([a.reshape(len(a), -1) for a in label_arrays.values()]) if label_arrays else np.zeros((0, 1))
    if all_labels.size and (all_labels.min() < 0 or not np.all(np.equal(np.mod(all_labels, 1), 0))):
        raise DataError(f"{npz}: labels must be non-negative integers")
    if task == "multilabel" and all_labels.size and all_labels.max() > 1:
        raise DataError(f"{npz}: multi-label labels must be 0 or 1, found {int(all_labels.max())}")
    n_classes = width if task == "multilabel" else (int(all_labels.max()) + 1 if all_labels.size else 1)
    class_list = _parse_classes(classes)
    if class_list is None:
        known = MEDMNIST_CLASSES.get(name) if name else None
        if known is not None and (len(known) == width if task == "multilabel" else len(known) >= n_classes):
            class_list = list(known)
        else:
            class_list = [f"class_{i}" for i in range(n_classes)]
            report.notes.append(
                f"dataset {'not recognised' if known is None else name + ' does not fit these labels'}: "
                f"classes named {', '.join(class_list)}; pass --classes (or --dataset) to name them"
            )
    if task == "multilabel" and len(class_list) != width:
        raise DataError(f"--classes has {len(class_list)} names but the labels have {width} columns")
    if task == "classification" and len(class_list) < n_classes:
        raise DataError(
            f"--classes has {len(class_list)} names but labels go up to {n_classes - 1}; give {n_classes} names"
        )

    # -- write PNGs ------------------------------------------------------------------------------
    items: dict[str, list[dict]] = {s: [] for _, s in _MEDMNIST_SPLITS}
    total = sum(len(arrays[f"{p}_images"]) for p in prefixes)
    report.found = total
    modes = set()

    def rows():
        for p, _ in _MEDMNIST_SPLITS:
            if p in prefixes:
                for i in range(len(arrays[f"{p}_images"])):
                    yield p, split_of[p], i

    for p, split_name, i in _progress(rows(), total, "medmnist2manifest", progress):
        img = _to_pil(arrays[f"{p}_images"][i], npz, f"{p}_images")
        modes.add(img.mode)
        buf = io.BytesIO()
        img.save(buf, format="PNG")
        data = buf.getvalue()
        rel = f"images/{p}/{p}_{i}.png"
        target = out_dir / rel
        target.parent.mkdir(parents=True, exist_ok=True)
        with open(target, "wb") as f:
            f.write(data)
        lab = label_arrays[p][i]
        label: Any = [int(v) for v in np.ravel(lab)] if task == "multilabel" else int(np.ravel(lab)[0])
        items[split_name].append(
            {"image": rel, "label": label, "sha256": hashlib.sha256(data).hexdigest(), "source_split": p, "source_index": i}
        )

    # -- identical images across official splits ---------------------------------------------
    order = [s for _, s in _MEDMNIST_SPLITS]
    first_split: dict[str, str] = {}
    where: dict[str, list[tuple[str, dict]]] = defaultdict(list)
    for s in order:
        for it in items[s]:
            where[it["sha256"]].append((s, it))
            first_split.setdefault(it["sha256"], s)
    cross = {h: v for h, v in where.items() if len({s for s, _ in v}) > 1}
    report.duplicate_sets = [[it["image"] for _, it in v] for v in where.values() if len(v) > 1]
    if cross:
        if cross_split_duplicates == "drop":
            for h, v in cross.items():
                for s, it in v:
                    if s != first_split[h]:
                        items[s].remove(it)
                        report.skip(
                            it["image"],
                            "identical image already in an earlier official split (--cross-split-duplicates drop)",
                            f"kept in {first_split[h]}",
                        )
            report.notes.append(
                f"{len(cross)} images of the official splits also occur in an earlier split: later copies dropped"
            )
            report.duplicates_policy = f"{len(cross)} sets spanned two official splits: their later copies dropped"
        else:
            for v in cross.values():
                for _, it in v:
                    del it["sha256"]
                    it["cross_split_duplicate"] = True
            report.duplicates_policy = f"{len(cross)} sets span two official splits (kept as published, see note)"
            report.notes.append(
                f"the official splits share {len(cross)} byte-identical images between splits (kept as published; "
                "those items are marked cross_split_duplicate and carry no sha256; "
                "--cross-split-duplicates drop removes the later copies)"
            )

    if (val_as_test or "val" not in prefixes) and items["training"]:
        f = DEFAULT_VAL_FRACTION if val_fraction is None else float(val_fraction)
        if f > 0:
            items["training"], items["validation"] = carve_validation(items["training"], f, seed=seed)
            report.notes.append(
                f"{'--val-as-test' if val_as_test else 'no val_* arrays'}: validation carved from train with "
                f"--val-fraction {f:g} (per image, stratified by label, identical images kept together), seed {seed}"
            )
    elif val_fraction is not None:
        report.notes.append("--val-fraction ignored: the file has official val_* arrays")

    provenance = make_provenance(
        tool, npz, dict(arguments or {}),
        dataset=name or None,
        source_file=str(npz.resolve()),
        layout="MedMNIST npz: official train/val/test arrays written as PNG files"
        + ("; --val-as-test: official val -> test, validation carved from train, official test left out" if val_as_test else ""),
        image_modes=sorted(modes),
        patient_ids=(
            "MedMNIST publishes no patient identifiers: items carry no patient_id and patient-level "
            "separation of the official splits cannot be checked"
        ),
        cross_split_duplicates=[[it["image"] for _, it in v] for v in cross.values()],
        seed=seed,
    )
    manifest = new_manifest(task, class_list, provenance, items["training"], items["validation"], items["test"])
    return _finish(manifest, report)


def medmnist_url(name: str) -> str:
    """Download address of a MedMNIST file: ``medmnist.INFO`` when installed, else Zenodo."""
    from monai.utils import optional_import

    info, has = optional_import("medmnist", name="INFO")
    if has and isinstance(info, Mapping) and name in info and info[name].get("url"):
        return str(info[name]["url"])
    return _MEDMNIST_URL.format(name=name)


def download_medmnist(
    name: str, dest_dir: str | os.PathLike, url: str | None = None, timeout: float = 10.0
) -> Path:
    """Download ``<name>.npz`` into ``dest_dir`` (kept when already there) and return its path.

    Uses only ``urllib`` with a short timeout; the MD5 of known official files is checked.

    Raises:
        DataError: when the download fails (offline machine, refused connection, HTTP error)
            with instructions to fetch the file by hand and pass it as FILE, or when the MD5
            does not match.
    """
    name = name.strip().lower()
    if not re.fullmatch(r"[a-z0-9_]+", name):
        raise DataError(f"--download {name!r}: not a MedMNIST name such as pneumoniamnist or chestmnist")
    dest = Path(dest_dir) / f"{name}.npz"
    if dest.is_file():
        return dest
    official = url is None
    url = url or medmnist_url(name)
    tmp = dest.with_name(f".{dest.name}.part")
    try:
        md5 = hashlib.md5()
        with urllib.request.urlopen(url, timeout=timeout) as resp:
            dest.parent.mkdir(parents=True, exist_ok=True)
            with open(tmp, "wb") as f:
                for chunk in iter(lambda: resp.read(1 << 20), b""):
                    f.write(chunk)
                    md5.update(chunk)
    except (urllib.error.URLError, OSError, ValueError) as e:
        if tmp.exists():
            tmp.unlink()
        reason = getattr(e, "reason", None) or e
        raise DataError(
            f"could not download {name} from {url} ({reason}); this machine may be offline: download {name}.npz by "
            f"hand (https://medmnist.com/ or {url}) and pass it as FILE: medfuse medmnist2manifest {name}.npz --out DIR"
        ) from e
    expected = _MEDMNIST_MD5.get(name)
    if expected and official and md5.hexdigest() != expected:
        tmp.unlink()
        raise DataError(f"{url}: downloaded file has MD5 {md5.hexdigest()}, expected {expected}; try again")
    os.replace(tmp, dest)
    return dest


# ---------------------------------------------------------------------------------------
# command-line helpers shared by the *2manifest commands
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
