# Copyright (c) medfuse contributors
# Licensed under the Apache License, Version 2.0
"""NIfTI volume layouts (ACDC, Synapse/BTCV, image + label pairs) and ACDC HDF5 volumes -> segmentation manifests.

:func:`nifti_to_manifest` reads one of four layouts:

* ``acdc``: ``patientNNN/patientNNN_frameXX.nii.gz`` with ``patientNNN_frameXX_gt.nii.gz`` and ``Info.cfg``
  (ED / ES frame numbers, pathology group), optionally under ``training/`` and ``testing/``; ``_4d`` cines are
  not used. Labels 1 RV, 2 MYO, 3 LV.
* ``synapse``: BTCV ``img/imgNNNN.nii.gz`` with ``label/labelNNNN.nii.gz`` (also under ``Training/`` or
  ``RawData/Training/``). By default the eight TransUNet organs are kept (BTCV 8, 4, 1, 3, 2, 6, 11, 7 -> 1..8:
  aorta, gallbladder, spleen, left kidney, right kidney, liver, pancreas, stomach) and the other organs become
  background.
* ``pairs``: any NIfTI image with a label of the same stem plus ``_gt``, ``_seg`` or ``_label`` beside it (or of the
  same stem in a folder whose name starts with ``label``, ``mask`` or ``seg``, e.g. ``imagesTr`` / ``labelsTr``).
* ``acdc_h5``: ACDC volumes published as HDF5 (``patientNNN_frameXX.h5`` with ``image`` float32 (Z, Y, X) in
  [0, 1] and ``label`` uint8), e.g. ``shared/data/acdc_volumes``. They carry no spacing or orientation: NIfTI
  copies are written beside the manifest with the voxel order of the original ACDC NIfTI files (x, y, z = the
  HDF5 arrays transposed) and a diagonal affine of an *assumed* spacing (default 1.5 x 1.5 x 8 mm, within the
  published ACDC ranges of 1.37-1.68 mm in-plane and 5-10 mm between slices), recorded in the provenance.

Items carry ``image``, ``mask``, ``patient_id``, ``spacing`` (mm, from the NIfTI header), ``shape`` and, for ACDC,
``frame`` (``"ED"`` / ``"ES"``) and ``group`` (pathology, from ``Info.cfg``). When a label map is in effect (given,
or Synapse's default), the masks written are remapped label NIfTI copies in ``<manifest stem>_labels/`` beside
the manifest (images are not copied). A label whose grid (shape, or affine beyond 1e-3) differs from its image's
is skipped with the reason in the report; label values the map does not cover are an error listing them.

Splits are by patient (:mod:`medfuse.data.splits`). ``split="official"``: ACDC ``training/`` -> training with
10 % of its patients carved into validation (stratified by group), ``testing/`` -> test; Synapse: the 12
TransUNet test cases -> test, the others -> training with validation carved by patient.
"""

from __future__ import annotations

import hashlib
import os
import re
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping, Sequence

import numpy as np

from medfuse.data.layouts._common import _finish
from medfuse.data.layouts.report import ConversionReport
from medfuse.data.manifest import make_provenance, new_manifest
from medfuse.data.splits import carve_validation, parse_fractions, split_items
from medfuse.errors import DataError

__all__ = [
    "NIFTI_LAYOUTS",
    "ACDC_CLASSES",
    "SYNAPSE_CLASSES",
    "SYNAPSE_LABEL_MAP",
    "SYNAPSE_TEST_CASES",
    "ACDC_H5_SPACING",
    "ACDC_H5_FRACTIONS",
    "NIFTI_MASK_SUFFIXES",
    "AFFINE_TOLERANCE",
    "parse_label_map",
    "parse_spacing",
    "nifti_to_manifest",
]

#: Values of ``nifti_to_manifest(layout=...)``.
NIFTI_LAYOUTS = ("acdc", "synapse", "pairs", "acdc_h5")
#: ACDC foreground classes, labels 1, 2, 3.
ACDC_CLASSES = ("RV", "MYO", "LV")
#: The eight TransUNet organs, labels 1..8 after :data:`SYNAPSE_LABEL_MAP`.
SYNAPSE_CLASSES = (
    "aorta", "gallbladder", "spleen", "left kidney", "right kidney", "liver", "pancreas", "stomach",
)
#: BTCV label -> Synapse label: the eight organs to 1..8; esophagus (5), IVC (9), portal/splenic veins (10) and the
#: adrenal glands (12, 13) to background.
SYNAPSE_LABEL_MAP = {0: 0, 8: 1, 4: 2, 1: 3, 3: 4, 2: 5, 6: 6, 11: 7, 7: 8, 5: 0, 9: 0, 10: 0, 12: 0, 13: 0}
#: The 12 BTCV cases TransUNet tests on (its other 18 train).
SYNAPSE_TEST_CASES = ("0001", "0002", "0003", "0004", "0008", "0022", "0025", "0029", "0032", "0035", "0036", "0038")
#: Assumed (x, y, z) spacing in mm of the ACDC HDF5 volumes, which lost theirs.
ACDC_H5_SPACING = (1.5, 1.5, 8.0)
#: Default split of ``acdc_h5`` (80 patients -> 60 / 10 / 10).
ACDC_H5_FRACTIONS = (0.75, 0.125, 0.125)
#: Label stem = image stem + one of these (``pairs``).
NIFTI_MASK_SUFFIXES = ("_gt", "_seg", "_label")
#: Largest absolute difference between an image's and its label's affine still taken as one grid.
AFFINE_TOLERANCE = 1e-3

_DEFAULT_FRACTIONS = (0.8, 0.1, 0.1)
_DEFAULT_VAL_FRACTION = 0.1
_NIFTI_RE = re.compile(r"\.nii(\.gz)?$", re.IGNORECASE)
_ACDC_RE = re.compile(r"^(?P<patient>patient\d+)_(?:frame(?P<frame>\d+)(?P<gt>_gt)?|(?P<cine>4d))$", re.IGNORECASE)
_ACDC_DIR_RE = re.compile(r"^patient\d+$", re.IGNORECASE)
_BTCV_RE = re.compile(r"^(?P<kind>img|label)(?P<case>\d+)$", re.IGNORECASE)
_H5_RE = re.compile(r"^(?P<patient>patient\d+)_frame(?P<frame>\d+)$", re.IGNORECASE)


# ---------------------------------------------------------------------------------------------------------------
# options
# ---------------------------------------------------------------------------------------------------------------
def parse_label_map(value: str | Mapping[int, int] | None) -> dict[int, int] | None:
    """``"8:1,4:2,5:0"`` (or a mapping) -> ``{8: 1, 4: 2, 5: 0}``; 0 maps to 0 unless given.

    Raises:
        DataError: on a malformed entry, a negative value or a source value given twice.
    """
    if value is None:
        return None
    if isinstance(value, Mapping):
        pairs = [(k, v) for k, v in value.items()]
    else:
        pairs = []
        for part in str(value).replace(";", ",").split(","):
            part = part.strip()
            if not part:
                continue
            src, sep, dst = part.partition(":")
            if not sep:
                raise DataError(f"--label-map entry {part!r} is not SOURCE:TARGET; write e.g. --label-map 8:1,4:2,5:0")
            pairs.append((src.strip(), dst.strip()))
    out: dict[int, int] = {}
    for src, dst in pairs:
        try:
            s, d = int(src), int(dst)
        except (TypeError, ValueError):
            raise DataError(f"--label-map entry {src}:{dst} is not two whole numbers; write e.g. 8:1") from None
        if s < 0 or d < 0:
            raise DataError(f"--label-map entry {s}:{d} has a negative label; labels are whole numbers >= 0")
        if s in out and out[s] != d:
            raise DataError(f"--label-map maps {s} twice ({s}:{out[s]} and {s}:{d}); give each source value once")
        out[s] = d
    if not out:
        raise DataError(f"--label-map {value!r} is empty; write e.g. --label-map 8:1,4:2,5:0")
    out.setdefault(0, 0)
    return out


def parse_spacing(value: str | Sequence[float] | None) -> tuple[float, float, float] | None:
    """``"1.5,1.5,8"`` -> ``(1.5, 1.5, 8.0)`` (x, y, z in mm).

    Raises:
        DataError: unless three positive numbers are given.
    """
    if value is None:
        return None
    parts = [p for p in str(value).replace(";", ",").split(",") if p.strip()] if isinstance(value, str) else list(value)
    try:
        out = tuple(float(p) for p in parts)
    except (TypeError, ValueError):
        out = ()
    if len(out) != 3 or not all(np.isfinite(v) and v > 0 for v in out):
        raise DataError(f"--spacing {value!r}: give three positive numbers in mm (x, y, z), e.g. 1.5,1.5,8")
    return out  # type: ignore[return-value]


# ---------------------------------------------------------------------------------------------------------------
# discovery
# ---------------------------------------------------------------------------------------------------------------
@dataclass
class _Case:
    image: Path
    label: Path
    patient_id: str
    origin: str | None = None  # "training" / "test" from the layout's folders
    extra: dict = field(default_factory=dict)


def _nifti_stem(path: Path) -> str | None:
    m = _NIFTI_RE.search(path.name)
    return path.name[: m.start()] if m else None


def _hidden(name: str) -> bool:
    return name.startswith(".") or name in ("__MACOSX", "Thumbs.db", "desktop.ini")


def _walk(root: Path):
    for dirpath, dirnames, filenames in os.walk(root):
        dirnames[:] = sorted(d for d in dirnames if not _hidden(d))
        yield Path(dirpath), sorted(f for f in filenames if not _hidden(f))


def _rel(path: Path, base: Path) -> str:
    try:
        return Path(os.path.relpath(os.path.abspath(path), os.path.abspath(base))).as_posix()
    except ValueError:  # another drive (Windows)
        return Path(os.path.abspath(path)).as_posix()


def _read_info_cfg(path: Path) -> dict[str, str]:
    info: dict[str, str] = {}
    try:
        for line in path.read_text(encoding="utf-8", errors="replace").splitlines():
            key, sep, value = line.partition(":")
            if sep:
                info[key.strip().lower()] = value.strip()
    except OSError:
        pass
    return info


def _origin_of(folder: Path, root: Path) -> str | None:
    for part in folder.relative_to(root).parts:
        name = part.lower()
        if name in ("training", "train"):
            return "training"
        if name in ("testing", "test"):
            return "test"
    return None


def _discover_acdc(root: Path, report: ConversionReport) -> list[_Case]:
    cases: list[_Case] = []
    for folder, files in _walk(root):
        if not _ACDC_DIR_RE.match(folder.name):
            continue
        info = _read_info_cfg(folder / "Info.cfg") if "Info.cfg" in files else {}
        frames: dict[str, Path] = {}
        gts: dict[str, Path] = {}
        for name in files:
            path = folder / name
            stem = _nifti_stem(path)
            if stem is None:
                continue
            report.found += 1
            m = _ACDC_RE.match(stem)
            if m is None or m.group("patient").lower() != folder.name.lower():
                report.skip(_rel(path, root), "not an ACDC frame file name", "expected patientNNN_frameXX[_gt].nii.gz")
            elif m.group("cine"):
                report.skip(_rel(path, root), "4D cine (ACDC _4d, not used)")
            else:
                (gts if m.group("gt") else frames)[m.group("frame")] = path
        ed, es = info.get("ed"), info.get("es")
        for frame, image in sorted(frames.items()):
            label = gts.pop(frame, None)
            if label is None:
                report.skip(_rel(image, root), "image without label", f"no {image.name.split('.')[0]}_gt.nii.gz")
                continue
            extra: dict[str, Any] = {}
            if ed is not None and ed.isdigit() and int(ed) == int(frame):
                extra["frame"] = "ED"
            elif es is not None and es.isdigit() and int(es) == int(frame):
                extra["frame"] = "ES"
            if info.get("group"):
                extra["group"] = info["group"]
            cases.append(_Case(image, label, folder.name, _origin_of(folder, root), extra))
        for label in gts.values():
            report.skip(_rel(label, root), "label without image")
        if not info:
            report.notes.append(f"{_rel(folder, root)}: no Info.cfg, so no ED/ES frame and no group for its items")
    return cases


def _btcv_folders(root: Path) -> tuple[Path, Path]:
    for base in (root, root / "Training", root / "RawData" / "Training", root / "RawData"):
        if (base / "img").is_dir() and (base / "label").is_dir():
            return base / "img", base / "label"
    raise DataError(
        f"{root}: no img/ and label/ folders (BTCV layout img/imgNNNN.nii.gz, label/labelNNNN.nii.gz, also under "
        "Training/ or RawData/Training/); pass the folder that holds them"
    )


def _discover_synapse(root: Path, report: ConversionReport) -> list[_Case]:
    img_dir, label_dir = _btcv_folders(root)
    found: dict[str, dict[str, Path]] = {"img": {}, "label": {}}
    for folder, kind in ((img_dir, "img"), (label_dir, "label")):
        for name in sorted(os.listdir(folder)):
            path = folder / name
            stem = _nifti_stem(path)
            if stem is None or _hidden(name) or not path.is_file():
                continue
            report.found += 1
            m = _BTCV_RE.match(stem)
            if m is None or m.group("kind").lower() != kind:
                report.skip(_rel(path, root), "not a BTCV file name", f"expected {kind}NNNN.nii.gz")
                continue
            found[kind][m.group("case").zfill(4)] = path
    cases = []
    for case, image in sorted(found["img"].items()):
        label = found["label"].pop(case, None)
        if label is None:
            report.skip(_rel(image, root), "image without label", f"no label{case}.nii.gz")
            continue
        cases.append(_Case(image, label, case, "test" if case in SYNAPSE_TEST_CASES else "training"))
    for label in found["label"].values():
        report.skip(_rel(label, root), "label without image")
    return cases


def _discover_pairs(root: Path, report: ConversionReport, patient_regex: str | None) -> list[_Case]:
    from medfuse.data.patients import PatientIdParser

    parser = PatientIdParser(patient_regex)
    files: list[tuple[Path, str]] = []
    for folder, names in _walk(root):
        for name in names:
            stem = _nifti_stem(folder / name)
            if stem is not None:
                files.append((folder / name, stem))
    report.found += len(files)
    by_dir_stem = {(p.parent, s) for p, s in files}

    def mask_of(path: Path, stem: str) -> str | None:  # the image stem this file is the mask of, or None
        for suffix in NIFTI_MASK_SUFFIXES:
            if stem.endswith(suffix) and (path.parent, stem[: -len(suffix)]) in by_dir_stem:
                return stem[: -len(suffix)]
        if path.parent.name.lower().startswith(("label", "mask", "seg")):
            return stem
        return None

    images: dict[str, list[Path]] = defaultdict(list)
    masks: dict[tuple[Path | None, str], Path] = {}
    for path, stem in files:
        base = mask_of(path, stem)
        if base is None:
            images[stem].append(path)
        elif base != stem:
            masks[(path.parent, base)] = path
        else:  # same stem, in a label folder: matched by stem anywhere
            masks[(None, stem)] = path
    cases = []
    used: set[Path] = set()
    for stem, paths in sorted(images.items()):
        for image in paths:
            label = masks.get((image.parent, stem)) or masks.get((None, stem))
            if label is None or label in used:
                report.skip(_rel(image, root), "image without label", f"no {stem}{{_gt,_seg,_label}}.nii.gz")
                continue
            used.add(label)
            cases.append(_Case(image, label, parser(image.name) or stem))
    for label in masks.values():
        if label not in used:
            report.skip(_rel(label, root), "label without image")
    return cases


# ---------------------------------------------------------------------------------------------------------------
# checks, remapping, writing
# ---------------------------------------------------------------------------------------------------------------
def _nib():
    try:
        import nibabel
    except ImportError as e:  # a dependency of medfuse; only a broken install lacks it
        raise DataError(f"reading NIfTI needs nibabel ({e}); pip install nibabel") from e
    return nibabel


def _h5py():
    try:
        import h5py
    except ImportError as e:
        raise DataError(f"--layout acdc_h5 needs h5py ({e}); pip install h5py") from e
    return h5py


def _label_values(data: np.ndarray, where: str) -> np.ndarray:
    values = np.unique(data)
    if values.dtype.kind == "f":
        if not np.all(np.isfinite(values)) or not np.all(values == np.round(values)):
            bad = [float(v) for v in values if not np.isfinite(v) or v != round(float(v))][:5]
            raise DataError(f"{where}: label values {bad} are not whole numbers; a label image holds class indices")
    return values.astype(np.int64)


def _lut(label_map: Mapping[int, int], max_value: int) -> np.ndarray:
    lut = np.zeros(max(max_value, max(label_map)) + 1, dtype=np.uint8)
    for s, d in label_map.items():
        lut[s] = d
    return lut


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def _grid_problem(image, label) -> str | None:
    ishape, lshape = tuple(image.shape), tuple(label.shape)
    if ishape != lshape:
        return f"label shape {lshape} != image shape {ishape}"
    diff = float(np.max(np.abs(np.asarray(image.affine) - np.asarray(label.affine))))
    if diff > AFFINE_TOLERANCE:
        return f"label affine differs from the image's by up to {diff:.4g} (> {AFFINE_TOLERANCE:g})"
    return None


def _squeeze3(shape: Sequence[int]) -> tuple[int, ...] | None:
    shape = tuple(int(s) for s in shape)
    if len(shape) == 3:
        return shape
    if len(shape) > 3 and all(s == 1 for s in shape[3:]):
        return shape[:3]
    return None


def _unmapped_error(unmapped: Mapping[int, list[str]], allowed: str, fix: str) -> DataError:
    values = sorted(unmapped)
    examples = "; ".join(f"{v} in {', '.join(unmapped[v][:2])}" + (" ..." if len(unmapped[v]) > 2 else "") for v in values)
    return DataError(f"label values {values} are not {allowed} ({examples}); {fix}")


# ---------------------------------------------------------------------------------------------------------------
# splits
# ---------------------------------------------------------------------------------------------------------------
def _official(items: list[dict], origins: list[str | None], val_fraction: float, seed: int, layout: str,
              report: ConversionReport) -> dict[str, list]:
    train = [it for it, o in zip(items, origins) if o != "test"]
    test = [it for it, o in zip(items, origins) if o == "test"]
    if layout == "acdc" and any(o is None for o in origins):
        raise DataError(
            "--split official needs the ACDC folders training/ and testing/ above the patient folders; "
            "give fractions instead, e.g. --split 0.8,0.1,0.1"
        )
    training, validation = carve_validation(train, val_fraction, seed=seed, label_key="group")
    if layout == "acdc":
        what = "training/ -> training and validation, testing/ -> test"
    else:
        what = f"the TransUNet test cases {', '.join(SYNAPSE_TEST_CASES)} -> test, the others -> training and validation"
    report.notes.append(
        f"official split: {what}; validation carved by patient ({val_fraction:g} of the training patients, "
        f"{'stratified by group, ' if layout == 'acdc' else ''}seed {seed})"
    )
    return {"training": training, "validation": validation, "test": test}


def _by_fractions(items: list[dict], fractions: tuple[float, ...], seed: int, report: ConversionReport) -> dict[str, list]:
    parts = split_items(items, fractions, seed=seed, label_key="group", group_keys=("patient_id", "sha256"))
    n_patients = {s: len({it["patient_id"] for it in v}) for s, v in parts.items()}
    report.notes.append(
        f"split {', '.join(f'{f:g}' for f in fractions)} (training, validation, test) by patient, seed {seed}: "
        + ", ".join(f"{n_patients[s]} patients in {s}" for s in parts)
    )
    return parts


# ---------------------------------------------------------------------------------------------------------------
# the converter
# ---------------------------------------------------------------------------------------------------------------
def nifti_to_manifest(
    root: str | os.PathLike,
    out: str | os.PathLike,
    layout: str = "acdc",
    label_map: str | Mapping[int, int] | None = None,
    classes: str | Sequence[str] | None = None,
    split: str | Sequence[float] | None = None,
    val_fraction: float | None = None,
    seed: int = 0,
    spacing: str | Sequence[float] | None = None,
    patient_regex: str | None = None,
    arguments: Mapping[str, Any] | None = None,
    tool: str = "medfuse nifti2manifest",
) -> tuple[dict, ConversionReport]:
    """Segmentation manifest of a NIfTI volume layout (or of ACDC HDF5 volumes); see the module docstring.

    Args:
        root: the dataset folder.
        out: path the manifest will be written to (item paths are relative to its folder; label copies and, for
            ``acdc_h5``, the NIfTI volumes are written beside it now).
        layout: ``"acdc"``, ``"synapse"``, ``"pairs"`` or ``"acdc_h5"``. Defaults to ``"acdc"``.
        label_map: ``"SRC:DST,..."`` or a mapping; every label value found must be listed (0 maps to 0 unless
            given). Synapse's default is :data:`SYNAPSE_LABEL_MAP`; the others default to no remapping.
        classes: foreground class names (labels 1..K). Defaults: ACDC ``RV, MYO, LV``; Synapse (default map) the
            eight organs; otherwise ``label_1 .. label_K``.
        split: ``"official"`` (ACDC with ``training/``/``testing/``, Synapse), or fractions ``"0.8,0.1,0.1"``.
            Defaults: official for Synapse and for ACDC when both folders exist, :data:`ACDC_H5_FRACTIONS` for
            ``acdc_h5``, 0.8,0.1,0.1 otherwise.
        val_fraction: with the official split, the share of training patients carved into validation (default
            0.1); without ``split``, fractions ``1 - f, f, 0``.
        seed: seed of the patient-level split. Defaults to 0.
        spacing: ``acdc_h5`` only: the assumed (x, y, z) spacing in mm. Defaults to :data:`ACDC_H5_SPACING`.
        patient_regex: ``pairs`` only: regex with a group ``patient`` in file names (default: built-in rules,
            else the image stem).
        arguments: recorded in the provenance.
        tool: recorded in the provenance and the report.

    Returns:
        ``(manifest, report)``: write the manifest with :func:`medfuse.data.manifest.write_manifest`.

    Raises:
        DataError: a missing folder, no usable volume, bad options, label values outside the map.
    """
    if layout not in NIFTI_LAYOUTS:
        raise DataError(f"--layout {layout!r}: use one of {', '.join(NIFTI_LAYOUTS)}")
    root, out = Path(root), Path(out)
    if not root.is_dir():
        raise DataError(f"{root}: folder not found; pass the dataset folder as ROOT")
    out_dir = out.parent
    out_stem = out.name[:-5] if out.name.lower().endswith(".json") else out.name
    report = ConversionReport(tool=tool)
    user_map = parse_label_map(label_map)
    spacing_t = parse_spacing(spacing)
    if spacing_t is not None and layout != "acdc_h5":
        report.notes.append("--spacing ignored: NIfTI headers carry the spacing (it is for --layout acdc_h5)")
    if patient_regex and layout != "pairs":
        report.notes.append("--patient-regex ignored: the layout names its patients")

    # -- options: split ------------------------------------------------------------------------------------
    split_mode: str
    fractions: tuple[float, ...] = ()
    if isinstance(split, str) and split.strip().lower() == "official":
        if layout not in ("acdc", "synapse"):
            raise DataError(f"--split official: --layout {layout} has no official split; give fractions, e.g. 0.8,0.1,0.1")
        split_mode = "official"
    elif split is not None:
        split_mode, fractions = "fractions", parse_fractions(split)
    elif layout == "synapse" or (layout == "acdc" and (root / "training").is_dir() and (root / "testing").is_dir()):
        split_mode = "official"
    else:
        split_mode = "fractions"
        if val_fraction is not None:
            fractions = parse_fractions((1.0 - float(val_fraction), float(val_fraction), 0.0), what="--val-fraction")
        else:
            fractions = ACDC_H5_FRACTIONS if layout == "acdc_h5" else _DEFAULT_FRACTIONS
    if split_mode == "fractions" and split is not None and val_fraction is not None:
        report.notes.append("--val-fraction ignored: --split gives the fractions of every split")

    # -- label map and classes -----------------------------------------------------------------------------
    effective_map = user_map
    if effective_map is None and layout == "synapse":
        effective_map = dict(SYNAPSE_LABEL_MAP)
    default_classes: tuple[str, ...] | None = None
    if user_map is None and layout in ("acdc", "acdc_h5"):
        default_classes = ACDC_CLASSES
    elif layout == "synapse" and (user_map is None or user_map == SYNAPSE_LABEL_MAP):
        default_classes = SYNAPSE_CLASSES
    class_list = None
    if classes is not None:
        class_list = [c.strip() for c in classes.split(",")] if isinstance(classes, str) else [str(c) for c in classes]
        if not class_list or any(not c for c in class_list) or len(set(class_list)) != len(class_list):
            raise DataError(f"--classes {','.join(class_list)!r}: give distinct, non-empty foreground names, e.g. RV,MYO,LV")

    # -- discovery -----------------------------------------------------------------------------------------
    h5_files: list[tuple[Path, str, int]] = []
    if layout == "acdc":
        cases = _discover_acdc(root, report)
        expected = "patientNNN/patientNNN_frameXX.nii.gz with patientNNN_frameXX_gt.nii.gz"
    elif layout == "synapse":
        cases = _discover_synapse(root, report)
        expected = "img/imgNNNN.nii.gz with label/labelNNNN.nii.gz"
    elif layout == "pairs":
        cases = _discover_pairs(root, report, patient_regex)
        expected = "NIfTI images with a label of the same stem + _gt, _seg or _label"
    else:
        cases = []
        for name in sorted(os.listdir(root)):
            path = root / name
            if not name.lower().endswith(".h5") or _hidden(name) or not path.is_file():
                continue
            report.found += 1
            m = _H5_RE.match(name[:-3])
            if m is None:
                report.skip(name, "not an ACDC HDF5 file name", "expected patientNNN_frameXX.h5")
                continue
            h5_files.append((path, m.group("patient"), int(m.group("frame"))))
        expected = "patientNNN_frameXX.h5 files"
    if not cases and not h5_files:
        raise DataError(f"{root}: no volumes found for --layout {layout} (expected {expected})")

    nib = _nib()
    allowed_values: set[int] | None
    if effective_map is not None:
        allowed_values = set(effective_map)
    elif layout in ("acdc", "acdc_h5"):
        allowed_values = {0, 1, 2, 3}
    else:
        allowed_values = None  # pairs without a map: 0..max found

    # -- pass 1: grids and label values --------------------------------------------------------------------
    unmapped: dict[int, list[str]] = defaultdict(list)
    max_found = 0
    good: list[dict[str, Any]] = []
    if layout == "acdc_h5":
        h5py = _h5py()
        frames_of: dict[str, list[int]] = defaultdict(list)
        for _, patient, frame in h5_files:
            frames_of[patient].append(frame)
        for path, patient, frame in h5_files:
            try:
                with h5py.File(path, "r") as f:
                    if "image" not in f or "label" not in f:
                        report.skip(path.name, "HDF5 without 'image' and 'label'", ", ".join(sorted(f.keys())))
                        continue
                    ishape, lshape = tuple(f["image"].shape), tuple(f["label"].shape)
                    if len(ishape) != 3 or ishape != lshape:
                        report.skip(
                            path.name, "label grid unlike its image",
                            f"image {ishape}, label {lshape}: both must be one (Z, Y, X) grid; re-export the volume",
                        )
                        continue
                    values = _label_values(np.asarray(f["label"]), path.name)
            except OSError as e:
                report.skip(path.name, "unreadable HDF5", str(e).splitlines()[0][:200])
                continue
            for v in values.tolist():
                max_found = max(max_found, v)
                if allowed_values is not None and v not in allowed_values:
                    unmapped[v].append(path.name)
            frames = sorted(frames_of[patient])
            extra: dict[str, Any] = {}
            if len(frames) == 2:
                extra["frame"] = "ED" if frame == frames[0] else "ES"
            elif frame == 1:
                extra["frame"] = "ED"
            good.append({"source": path, "patient_id": patient, "extra": extra, "shape": ishape})
    else:
        for case in cases:
            src = _rel(case.image, root)
            try:
                image, label = nib.load(str(case.image)), nib.load(str(case.label))
            except Exception as e:  # nibabel raises ImageFileError, OSError, EOFError ... on bad files
                report.skip(src, "unreadable NIfTI", f"{type(e).__name__}: {e}".splitlines()[0][:200])
                report.skip(_rel(case.label, root), "label of a skipped image")
                continue
            shape = _squeeze3(image.shape)
            if shape is None:
                report.skip(src, "not a 3-D volume", f"shape {tuple(image.shape)}")
                report.skip(_rel(case.label, root), "label of a skipped image")
                continue
            problem = _grid_problem(image, label)
            if problem is not None:
                report.skip(
                    src, "label grid unlike its image",
                    f"{problem} ({_rel(case.label, root)}); resample the label onto the image grid "
                    "(nearest neighbour) or fix its header",
                )
                report.skip(_rel(case.label, root), "label of a skipped image")
                continue
            values = _label_values(np.asarray(label.dataobj), _rel(case.label, root))
            for v in values.tolist():
                max_found = max(max_found, v)
                if allowed_values is not None and v not in allowed_values:
                    unmapped[v].append(_rel(case.label, root))
            zooms = [round(float(z), 6) for z in image.header.get_zooms()[:3]]
            good.append({"case": case, "shape": shape, "spacing": zooms})
    if unmapped:
        if effective_map is not None:
            raise _unmapped_error(
                unmapped, f"in the label map {sorted(effective_map)}",
                "add them to --label-map (SOURCE:TARGET, e.g. 14:0 to make one background)",
            )
        raise _unmapped_error(
            unmapped, "ACDC labels 0-3 (background, RV, MYO, LV)", "give a --label-map that maps them (e.g. 4:0)"
        )
    if not good:
        first = report.skipped[0] if report.skipped else ("", "", "")
        raise DataError(
            f"{root}: no usable volume: every case was skipped (first: {first[0]}: {first[1]}"
            + (f", {first[2]}" if first[2] else "") + ")"
        )

    # -- classes -------------------------------------------------------------------------------------------
    n_fg = max(effective_map.values()) if effective_map is not None else (3 if layout in ("acdc", "acdc_h5") else max_found)
    if n_fg < 1:
        raise DataError(f"{root}: the labels hold no foreground (all 0 after the label map); check --label-map")
    if class_list is None:
        class_list = list(default_classes) if default_classes is not None else [f"label_{k}" for k in range(1, n_fg + 1)]
    if len(class_list) != n_fg:
        raise DataError(
            f"--classes names {len(class_list)} classes ({', '.join(class_list)}) but the labels run 1..{n_fg}; "
            f"give {n_fg} foreground names in label order"
        )

    # -- pass 2: items (and copies) ------------------------------------------------------------------------
    labels_dir = out_dir / f"{out_stem}_labels"
    volumes_dir = out_dir / f"{out_stem}_nifti"
    lut = _lut(effective_map, max_found) if effective_map is not None else None
    items: list[dict] = []
    origins: list[str | None] = []
    if layout == "acdc_h5":
        sp = spacing_t or ACDC_H5_SPACING
        affine = np.diag([sp[0], sp[1], sp[2], 1.0])
        for entry in good:
            path, patient = entry["source"], entry["patient_id"]
            with h5py.File(path, "r") as f:
                image = np.ascontiguousarray(np.transpose(np.asarray(f["image"], dtype=np.float32), (2, 1, 0)))
                label = np.transpose(np.asarray(f["label"]), (2, 1, 0)).astype(np.int64)
            label = (lut[label] if lut is not None else label).astype(np.uint8)
            target = volumes_dir / patient
            target.mkdir(parents=True, exist_ok=True)
            stem = path.name[:-3]
            img_path, lab_path = target / f"{stem}.nii.gz", target / f"{stem}_gt.nii.gz"
            nib.save(nib.Nifti1Image(image, affine), str(img_path))
            nib.save(nib.Nifti1Image(np.ascontiguousarray(label), affine), str(lab_path))
            item = {
                "image": _rel(img_path, out_dir), "mask": _rel(lab_path, out_dir), "patient_id": patient,
                "spacing": [float(v) for v in sp], "shape": [int(s) for s in image.shape], **entry["extra"],
            }
            items.append(item)
            origins.append(None)
        report.notes.append(
            f"HDF5 volumes written as NIfTI under {_rel(volumes_dir, out_dir)}/ beside the manifest, voxel order "
            f"(x, y, z) = the HDF5 (Z, Y, X) arrays transposed, with an ASSUMED spacing of "
            f"{' x '.join(f'{v:g}' for v in sp)} mm (the HDF5 files carry none) and no orientation"
        )
        report.notes.append("ED/ES: of a patient's two labelled frames the earlier is taken as ED (ACDC cines start at ED)")
    else:
        for entry in good:
            case = entry["case"]
            mask_path = case.label
            if lut is not None:
                label_img = nib.load(str(case.label))
                data = np.asarray(label_img.dataobj)
                data = np.rint(data).astype(np.int64) if data.dtype.kind == "f" else data.astype(np.int64)
                mapped = np.ascontiguousarray(lut[data].astype(np.uint8))
                mask_path = labels_dir / Path(_rel(case.label, root))
                mask_path.parent.mkdir(parents=True, exist_ok=True)
                copy = nib.Nifti1Image(mapped, label_img.affine, header=label_img.header)
                copy.set_data_dtype(np.uint8)
                copy.header.set_slope_inter(1.0, 0.0)
                nib.save(copy, str(mask_path))
            item = {
                "image": _rel(case.image, out_dir), "mask": _rel(mask_path, out_dir), "patient_id": case.patient_id,
                "spacing": entry["spacing"], "shape": list(entry["shape"]), **case.extra,
                "sha256": _sha256(case.image),
            }
            items.append(item)
            origins.append(case.origin)
            report.paired += 1
        if lut is not None:
            report.notes.append(
                f"label map {', '.join(f'{s}:{d}' for s, d in sorted(effective_map.items()))} applied: the masks are "
                f"remapped label NIfTI copies written under {_rel(labels_dir, out_dir)}/ beside the manifest"
            )

    # -- splits, manifest ----------------------------------------------------------------------------------
    if split_mode == "official":
        vf = _DEFAULT_VAL_FRACTION if val_fraction is None else float(val_fraction)
        parts = _official(items, origins, vf, seed, layout, report)
    else:
        parts = _by_fractions(items, fractions, seed, report)
    provenance = make_provenance(
        tool, root, dict(arguments or {}),
        layout=layout,
        split="official" if split_mode == "official" else list(fractions),
        seed=seed,
        label_map=None if effective_map is None else {str(k): v for k, v in sorted(effective_map.items())},
    )
    if lut is not None and layout != "acdc_h5":
        provenance["label_copies"] = f"{_rel(labels_dir, out_dir)}/ (remapped label NIfTI copies beside the manifest)"
    if layout == "acdc_h5":
        provenance["assumed_spacing_mm"] = [float(v) for v in (spacing_t or ACDC_H5_SPACING)]
        provenance["volume_copies"] = f"{_rel(volumes_dir, out_dir)}/ (NIfTI written from the HDF5 files)"
        provenance["notes"] = [
            "voxel spacing and orientation were lost in the HDF5 publication: the spacing is assumed, the affine "
            "is diagonal; Dice is unaffected, distances (HD95) are in assumed millimetres",
            "voxel order (x, y, z) = HDF5 (Z, Y, X) transposed, as in the original ACDC NIfTI files",
            "frame ED = the earlier of a patient's two labelled frames",
        ]
    manifest = new_manifest("segmentation", class_list, provenance, parts["training"], parts["validation"], parts["test"])
    return _finish(manifest, report)
