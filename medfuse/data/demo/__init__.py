# Copyright (c) medfuse contributors
# Licensed under the Apache License, Version 2.0
"""Synthetic demo data: chest-X-ray-like phantoms with lung masks, OCT-like B-scans, DICOM copies.

Nothing here is a patient image. The generators draw simple anatomy (lung fields, heart
shadow, ribs, clavicles; retinal layers, foveal pit) with per-patient and per-image
variation, so that a pipeline can be exercised end to end, quickly, on a machine without
any real data:

- :func:`cxr_phantom` draws one frontal chest radiograph phantom and its lung mask. The
  positive class ("opacity") has one to three blurred bright opacities inside the lungs.
- :func:`oct_bscan` draws one retinal OCT B-scan of class CNV, DME, DRUSEN or NORMAL.
- :func:`make_demo_data` writes a whole data set (PNG files, DICOM copies of part of the
  chest phantoms, multi-frame OCT DICOM volumes) and its manifests.

Everything is deterministic: one seed gives byte-identical files. Each item draws from its
own ``numpy.random.Generator`` seeded with ``[seed, stream, patient, image]``, so an item
does not depend on the items generated before it.

Image conventions: arrays are ``(rows, columns)``; on the chest phantoms the patient's left
is the image's right (a PA film seen from the front), so the heart shadow lies right of the
image centre; bright means dense (MONOCHROME2 display). Intensities are drawn as floats in
[0, 1] and quantised at the end (``bits=8`` gives ``uint8``, ``bits=12`` gives ``uint16``
values up to 4095), so the 8-bit PNG and the 12-bit DICOM copy of an image agree within
rounding.

Examples::

    import numpy as np
    from medfuse.data.demo import cxr_phantom, oct_bscan, make_demo_data

    image, mask = cxr_phantom(np.random.default_rng(0), 128, positive=True)
    bscan = oct_bscan(np.random.default_rng(1), 128, "DME")
    manifests = make_demo_data("runs/demo/data")   # {"cxr": Path(...), ...}

The package is split by concern: :mod:`~medfuse.data.demo.cxr` (chest phantoms),
:mod:`~medfuse.data.demo.oct` (OCT B-scans), :mod:`~medfuse.data.demo.dicom` (DICOM
writers) and this module (data set layout, stamp, :func:`make_demo_data`); every public
name is importable from ``medfuse.data.demo``.
"""

from __future__ import annotations

import json
import math
import os
import shutil
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from medfuse.data.demo._common import (
    _DATA_DIRS,
    _S_CXR_IMAGE,
    _S_CXR_PATIENT,
    _S_LAYOUT,
    _S_META,
    _S_OCT_IMAGE,
    _S_OCT_PATIENT,
    CXR_CLASSES,
    DEMO_GENERATOR_VERSION,
    MANIFEST_NAMES,
    OPTIONAL_MANIFEST_NAMES,
    OCT_CLASSES,
    STAMP_NAME,
    _png_bytes,
    _quantize,
    _shape,
    _write,
    gaussian_blur,
)
from medfuse.data.demo.cxr import _cxr_float, cxr_anatomy, cxr_phantom
from medfuse.data.demo.dicom import _cr_dicom, _opt_dicom
from medfuse.data.demo.oct import _oct_float, oct_bscan, oct_eye, oct_volume
from medfuse.errors import DataError


__all__ = [
    "CXR_CLASSES",
    "OCT_CLASSES",
    "DEMO_GENERATOR_VERSION",
    "STAMP_NAME",
    "MANIFEST_NAMES",
    "cxr_anatomy",
    "cxr_phantom",
    "oct_eye",
    "oct_bscan",
    "oct_volume",
    "gaussian_blur",
    "make_demo_data",
    "read_demo_stamp",
    "OPTIONAL_MANIFEST_NAMES",
    "demo_data_is_current",
]



# ------------------------------------------------------------------- data set layout
def _layout(seed: int, tag: int, n_items: int, n_patients: int | None, n_classes: int) -> list[dict]:
    """Patients of one data set: class, number of images, split, in patient-number order.

    Items are split evenly over the classes; each class gets its share of patients (at least
    one when it has items), every patient at least one image and the rest spread at random,
    so some patients have several. Patient numbers are shuffled so they do not give the class
    away. Splits (60/20/20 % of each class's patients) are patient-level and stratified.
    """
    rng = np.random.default_rng([seed, _S_LAYOUT, tag])
    if n_patients is None:
        n_patients = max(1, n_items // 2)
    items_c = [n_items // n_classes + (1 if c < n_items % n_classes else 0) for c in range(n_classes)]
    pats_c = [n_patients // n_classes + (1 if c < n_patients % n_classes else 0) for c in range(n_classes)]
    patients: list[dict] = []
    for c in range(n_classes):
        k = min(max(pats_c[c], 1 if items_c[c] else 0), items_c[c])
        if k == 0:
            continue
        counts = 1 + rng.multinomial(items_c[c] - k, [1.0 / k] * k)
        order = list(rng.permutation(k))
        n_val = n_test = int(round(0.2 * k))
        if k >= 3:
            n_val, n_test = max(1, n_val), max(1, n_test)
        elif k == 2:
            n_val, n_test = 0, 1
        for j, pos in enumerate(order):
            split = "test" if pos < n_test else "validation" if pos < n_test + n_val else "training"
            patients.append({"cls": c, "n_images": int(counts[j]), "split": split})
    for number, j in enumerate(rng.permutation(len(patients))):
        patients[j]["number"] = number
    return sorted(patients, key=lambda p: p["number"])


def _dicom_patients(patients: list[dict], fraction: float) -> set[int]:
    """Numbers of the patients that also get DICOM files: a share of every (class, split) group."""
    groups: dict[tuple, list[int]] = {}
    for p in patients:
        groups.setdefault((p["cls"], p["split"]), []).append(p["number"])
    chosen: set[int] = set()
    for numbers in groups.values():
        chosen.update(sorted(numbers)[: int(math.ceil(fraction * len(numbers)))])
    return chosen


# ---------------------------------------------------------------------------- writer
def read_demo_stamp(out_dir: str | os.PathLike) -> dict | None:
    """The stamp :func:`make_demo_data` left in ``out_dir``, or None when there is none."""
    path = Path(out_dir) / STAMP_NAME
    try:
        with open(path, encoding="utf-8") as f:
            stamp = json.load(f)
    except (OSError, ValueError):
        return None
    return stamp if isinstance(stamp, dict) and stamp.get("generator") == __name__ else None


def _parameters(n_cxr, n_oct, image_size, seed, dicom, n_cxr_patients, n_oct_patients, dicom_fraction) -> dict:
    return {
        "n_cxr": int(n_cxr),
        "n_oct": int(n_oct),
        "image_size": list(_shape(image_size)),
        "seed": int(seed),
        "dicom": bool(dicom),
        "n_cxr_patients": None if n_cxr_patients is None else int(n_cxr_patients),
        "n_oct_patients": None if n_oct_patients is None else int(n_oct_patients),
        "dicom_fraction": float(dicom_fraction),
    }


def demo_data_is_current(out_dir: str | os.PathLike, **parameters: Any) -> bool:
    """True when ``out_dir`` holds a complete demo data set made with these parameters.

    ``parameters`` are the keyword arguments of :func:`make_demo_data` (defaults apply to
    those left out). The generator version must match too.
    """
    defaults = dict(n_cxr=96, n_oct=80, image_size=128, seed=0, dicom=True, n_cxr_patients=None,
                    n_oct_patients=None, dicom_fraction=0.5)
    extra = {k: int(parameters.pop(k)) for k in ("n_volumes", "n_detection") if k in parameters}
    unknown = set(parameters) - set(defaults)
    if unknown:
        raise TypeError(f"unknown demo data parameters {sorted(unknown)}; use {sorted(defaults) + ['n_detection', 'n_volumes']}")
    defaults.update(parameters)
    stamp = read_demo_stamp(out_dir)
    if not stamp or not stamp.get("complete") or stamp.get("generator_version") != DEMO_GENERATOR_VERSION:
        return False
    expected = _parameters(**defaults)
    if any(extra.values()):
        expected.update(n_volumes=extra.get("n_volumes", 0), n_detection=extra.get("n_detection", 0))
    if stamp.get("parameters") != expected:
        return False
    return all((Path(out_dir) / name).is_file() for name in (stamp.get("manifests") or {}).values())


def _prepare_out_dir(out: Path) -> None:
    if out.exists() and not out.is_dir():
        raise DataError(f"{out} exists and is not a folder; choose a folder for the demo data")
    if out.is_dir() and any(out.iterdir()):
        if read_demo_stamp(out) is None:
            raise DataError(
                f"{out} is not empty and holds no {STAMP_NAME}, so it is not a medfuse demo data folder; "
                "choose a new or empty folder (medfuse only rebuilds folders it made)"
            )
        for name in _DATA_DIRS:
            if (out / name).is_dir():
                shutil.rmtree(out / name)
        for name in list(MANIFEST_NAMES.values()) + list(OPTIONAL_MANIFEST_NAMES.values()) + [STAMP_NAME]:
            if (out / name).is_file():
                (out / name).unlink()
    out.mkdir(parents=True, exist_ok=True)


def make_demo_data(
    out_dir: str | os.PathLike,
    n_cxr: int = 96,
    n_oct: int = 80,
    image_size: int | Sequence[int] = 128,
    seed: int = 0,
    dicom: bool = True,
    *,
    n_cxr_patients: int | None = None,
    n_oct_patients: int | None = None,
    dicom_fraction: float = 0.5,
    n_volumes: int = 0,
    n_detection: int = 0,
) -> dict[str, Path]:
    """Write the synthetic demo data set and its manifests into ``out_dir``.

    Files (paths in the manifests are relative to ``out_dir``, where the manifests live):

    - ``cxr/images/CXR####_k.png`` chest phantoms (8-bit), ``cxr/masks/CXR####_k.png`` lung
      masks (0/255); ``cxr_manifest.json``, task ``segmentation_classification``, classes
      ``normal``/``opacity``, items with ``image``, ``mask``, ``label``, ``patient_id``,
      ``sha256``, ``view``, ``sex`` and the opacity ``boxes`` / ``box_labels``.
    - ``cxr/dicom/CXR####_k.dcm`` CR DICOM copies (12 bits stored in 16) of the images of
      ``dicom_fraction`` of the patients: mostly MONOCHROME2, every third MONOCHROME1
      (stored values inverted), transfer syntaxes cycling explicit VR little endian, JPEG 2000
      lossless, explicit VR little endian, RLE lossless; ``cxr_dicom_manifest.json``
      (classification; items add the DICOM UIDs, ``photometric``, ``transfer_syntax`` and
      ``png``, the path of the 8-bit copy, and ``pixel_sha256``, the SHA-256 of the stored
      pixel values as little-endian ``uint16`` in C order, which any lossless decode must
      reproduce).
    - ``oct/<CLASS>/<CLASS>-OCT####-k.png`` B-scans in class folders (Kermany layout);
      ``oct_manifest.json`` (classification, CNV/DME/DRUSEN/NORMAL).
    - ``oct/dicom/OCT####.dcm`` multi-frame Ophthalmic Tomography volumes (5 B-scans) for
      ``dicom_fraction`` of the OCT patients; ``oct_dicom_manifest.json`` (classification of
      volumes: 3-D images, not for 2-D loaders).
    - with ``n_volumes``: ``volumes/patientNNN/patientNNN_frameXX.nii.gz`` (+ ``_gt``, ``Info.cfg``) cardiac
      phantoms in the ACDC layout and ``vol_manifest.json`` (task ``segmentation``, classes RV / MYO / LV), made
      by ``nifti2manifest`` (:mod:`medfuse.data.demo.volumes`).
    - with ``n_detection``: ``cxr_detection/DET####.png`` chest phantoms with opacity / nodule boxes, a third of
      them negative, and ``cxr_detection_manifest.json`` (task ``detection``; :mod:`medfuse.data.demo.detection`).
    - ``demo_data.json``: the parameters and manifest names (written last; see
      :func:`demo_data_is_current`).

    Splits are patient-level (60/20/20 % of each class's patients); patients have one or
    more images. ``n_cxr`` or ``n_oct`` of 0 leaves that modality out; ``dicom=False``
    writes no DICOM at all. An existing demo folder is rebuilt; any other non-empty folder
    is refused.

    Args:
        out_dir: output folder (created).
        n_cxr: number of chest phantoms, split evenly over the two classes. Defaults to 96.
        n_oct: number of OCT B-scans, split evenly over the four classes. Defaults to 80.
        image_size: side of every image in pixels, or ``(rows, columns)``. Defaults to 128.
        seed: non-negative seed; the same seed gives byte-identical images. Defaults to 0.
        dicom: also write DICOM copies. Defaults to True.
        n_cxr_patients: number of chest patients (default ``n_cxr // 2``).
        n_oct_patients: number of OCT patients (default ``n_oct // 2``).
        dicom_fraction: share of each class's patients (per split) that get DICOM files.
        n_volumes: number of ACDC-layout cardiac phantom frames (0: none). Defaults to 0.
        n_detection: number of chest phantoms with lesion boxes for detection (0: none). Defaults to 0.

    Returns:
        ``{"cxr": ..., "cxr_dicom": ..., "oct": ..., "oct_dicom": ...}``: paths of the
        manifests written (keys of modalities left out are absent).

    Raises:
        ValueError: for negative counts or seed, a size below 32 pixels, or a fraction
            outside (0, 1].
        DataError: when ``out_dir`` is a non-empty folder that this function did not make.
    """
    from medfuse import __version__
    from medfuse.data.manifest import make_provenance, new_manifest, write_manifest
    from medfuse.utils.io import atomic_write_json

    for name, value in (("n_cxr", n_cxr), ("n_oct", n_oct), ("seed", seed), ("n_volumes", n_volumes),
                        ("n_detection", n_detection)):
        if int(value) < 0:
            raise ValueError(f"{name} must be >= 0, got {value}")
    if n_cxr == 0 and n_oct == 0 and n_volumes == 0 and n_detection == 0:
        raise ValueError("n_cxr, n_oct, n_volumes and n_detection are all 0: nothing to generate")
    for name, value in (("n_cxr_patients", n_cxr_patients), ("n_oct_patients", n_oct_patients)):
        if value is not None and int(value) < 1:
            raise ValueError(f"{name} must be >= 1 (or None for the default), got {value}")
    if not 0.0 < float(dicom_fraction) <= 1.0:
        raise ValueError(f"dicom_fraction must be in (0, 1], got {dicom_fraction}")
    shape = _shape(image_size)
    params = _parameters(n_cxr, n_oct, shape, seed, dicom, n_cxr_patients, n_oct_patients, dicom_fraction)
    if n_volumes or n_detection:  # only when asked: the default demo folder's stamp stays as it was
        params.update(n_volumes=int(n_volumes), n_detection=int(n_detection))
    out = Path(out_dir)
    _prepare_out_dir(out)
    stamp = {"generator": __name__, "generator_version": DEMO_GENERATOR_VERSION, "medfuse_version": __version__,
             "complete": False, "parameters": params, "manifests": {}}
    atomic_write_json(out / STAMP_NAME, stamp)
    provenance = make_provenance("medfuse demo-data", None, params, generator=__name__,
                                 generator_version=DEMO_GENERATOR_VERSION, synthetic=True)
    written: dict[str, Path] = {}
    splits = ("training", "validation", "test")

    if n_cxr:
        from pydicom.uid import ExplicitVRLittleEndian, JPEG2000Lossless, RLELossless

        syntaxes = (ExplicitVRLittleEndian, JPEG2000Lossless, ExplicitVRLittleEndian, RLELossless)
        patients = _layout(seed, 0, n_cxr, n_cxr_patients, len(CXR_CLASSES))
        with_dicom = _dicom_patients(patients, dicom_fraction) if dicom else set()
        png_items: dict[str, list] = {s: [] for s in splits}
        dcm_items: dict[str, list] = {s: [] for s in splits}
        n_dicom = 0
        for p in patients:
            pid = f"CXR{p['number']:04d}"
            anatomy = cxr_anatomy(np.random.default_rng([seed, _S_CXR_PATIENT, p["number"]]))
            for k in range(1, p["n_images"] + 1):
                meta_rng = np.random.default_rng([seed, _S_META, 0, p["number"], k])
                view = "AP" if meta_rng.random() < 0.2 else "PA"
                rng = np.random.default_rng([seed, _S_CXR_IMAGE, p["number"], k])
                img, mask, info = _cxr_float(rng, shape, p["cls"] == 1, anatomy, view)
                name = f"{pid}_{k}"
                item = {
                    "image": f"cxr/images/{name}.png",
                    "mask": f"cxr/masks/{name}.png",
                    "label": p["cls"],
                    "patient_id": pid,
                }
                item["sha256"] = _write(out / item["image"], _png_bytes(_quantize(img, 8)))
                _write(out / item["mask"], _png_bytes(mask.astype(np.uint8) * 255))
                item.update(view=view, sex=anatomy["sex"], boxes=[[round(b, 1) for b in box] for box in info["boxes"]])
                item["box_labels"] = [1] * len(item["boxes"])
                png_items[p["split"]].append(item)
                if p["number"] in with_dicom:
                    photometric = "MONOCHROME1" if n_dicom % 3 == 1 else "MONOCHROME2"
                    syntax = syntaxes[n_dicom % len(syntaxes)]
                    n_dicom += 1
                    dcm = {"image": f"cxr/dicom/{name}.dcm", "label": p["cls"], "patient_id": pid}
                    dcm.update(_cr_dicom(seed, p, pid, k, _quantize(img, 12), view, anatomy, photometric, syntax,
                                         out / dcm["image"]))
                    dcm.update(view=view, sex=anatomy["sex"], photometric=photometric, transfer_syntax=str(syntax),
                               png=item["image"])
                    dcm_items[p["split"]].append(dcm)
        manifest = new_manifest("segmentation_classification", CXR_CLASSES, provenance,
                                box_format="xyxy: [x_min, y_min, x_max, y_max] in pixels, x = column",
                                **{s: png_items[s] for s in splits})
        written["cxr"] = write_manifest(manifest, out / MANIFEST_NAMES["cxr"])
        if n_dicom:
            manifest = new_manifest("classification", CXR_CLASSES, provenance, **{s: dcm_items[s] for s in splits})
            written["cxr_dicom"] = write_manifest(manifest, out / MANIFEST_NAMES["cxr_dicom"])

    if n_oct:
        patients = _layout(seed, 1, n_oct, n_oct_patients, len(OCT_CLASSES))
        with_dicom = _dicom_patients(patients, dicom_fraction) if dicom else set()
        png_items = {s: [] for s in splits}
        vol_items: dict[str, list] = {s: [] for s in splits}
        for p in patients:
            pid = f"OCT{p['number']:04d}"
            cls = OCT_CLASSES[p["cls"]]
            eye = oct_eye(np.random.default_rng([seed, _S_OCT_PATIENT, p["number"]]))
            for k in range(1, p["n_images"] + 1):
                rng = np.random.default_rng([seed, _S_OCT_IMAGE, p["number"], k])
                img, _ = _oct_float(rng, shape, p["cls"], eye)
                item = {"image": f"oct/{cls}/{cls}-{pid}-{k}.png", "label": p["cls"], "patient_id": pid}
                item["sha256"] = _write(out / item["image"], _png_bytes(_quantize(img, 8)))
                png_items[p["split"]].append(item)
            if p["number"] in with_dicom:
                rng = np.random.default_rng([seed, _S_OCT_IMAGE, p["number"], 0])
                volume = oct_volume(rng, shape, p["cls"], 5, eye=eye)
                laterality = "OD" if p["number"] % 2 == 0 else "OS"
                vol = {"image": f"oct/dicom/{pid}.dcm", "label": p["cls"], "patient_id": pid}
                vol.update(_opt_dicom(seed, p, pid, volume, laterality, out / vol["image"]))
                vol.update(frames=int(volume.shape[0]), laterality=laterality)
                vol_items[p["split"]].append(vol)
        manifest = new_manifest("classification", OCT_CLASSES, provenance, **{s: png_items[s] for s in splits})
        written["oct"] = write_manifest(manifest, out / MANIFEST_NAMES["oct"])
        if any(vol_items.values()):
            manifest = new_manifest("classification", OCT_CLASSES, provenance,
                                    note="multi-frame Ophthalmic Tomography DICOM volumes (frames, rows, columns)",
                                    **{s: vol_items[s] for s in splits})
            written["oct_dicom"] = write_manifest(manifest, out / MANIFEST_NAMES["oct_dicom"])

    if n_volumes:
        from medfuse.data.demo.volumes import make_demo_volumes

        written["volumes"] = make_demo_volumes(out, int(n_volumes), seed=seed)
    if n_detection:
        from medfuse.data.demo.detection import make_demo_detection

        written["cxr_detection"] = make_demo_detection(out, int(n_detection), seed=seed, image_size=shape[0])

    stamp.update(complete=True, manifests={k: p.name for k, p in written.items()})
    atomic_write_json(out / STAMP_NAME, stamp)
    return written
