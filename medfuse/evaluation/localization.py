# Copyright (c) medfuse contributors
# Licensed under the Apache License, Version 2.0
"""Does the CAM look at the finding? Pointing game and CAM mass inside reference boxes and lungs.

Where the evaluated cases carry lesion boxes (``boxes`` / ``box_labels`` of a manifest item, as the demo phantoms
do) or an anatomy mask (the lung ``mask``), each case's class activation map of a class is compared with them:

* **pointing game** (Zhang et al. 2016, "Top-down neural attention by excitation backprop", without their
  15-pixel tolerance): a hit when the CAM's peak pixel lies inside a box of that class. A map without a peak
  (constant, e.g. all zero) is a miss: it points nowhere;
* **box mass**: the share of the map's total mass (sum of its values) inside the boxes of that class. A map that
  ignores the image would score the boxes' share of the image area (``box_area``), reported beside it as the
  chance level;
* **lung mass**: the share of the map's mass inside the lung mask (chance level: the lungs' share, ``lung_area``).

Geometry: maps, boxes and masks are in one pixel grid (the network input; :func:`box_to_input` maps boxes drawn on
the original image through the resize-and-pad of :class:`medfuse.transforms.spatial.ResizeWithPad`). A box is
``[x_min, y_min, x_max, y_max]`` in pixels, x the column; pixel ``(r, c)`` is inside when its centre
``(c + 0.5, r + 0.5)`` is.

:func:`case_localization` gives one case's numbers; :func:`localization_summary` gives the per-class means with
percentile bootstrap intervals over cases (:mod:`medfuse.evaluation.bootstrap`; none below
:data:`~medfuse.evaluation.bootstrap.MIN_CASES_PER_CLASS` cases), which the report shows and stores in
``metrics.json["localization"]``; :func:`localization_records` computes the rows for a loaded model and the items
of a manifest. :func:`medfuse.visualize.lung_cam.cam_mass_inside` is the same mass share for torch batches on the
device; the report's is numpy per case so that reading a ``localization.csv`` does not import torch.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Mapping, Sequence

import numpy as np

from medfuse.errors import DataError
from medfuse.evaluation.bootstrap import MIN_CASES_PER_CLASS, percentile_interval, stratified_indices, too_small_interval

__all__ = ["box_region", "box_to_input", "pointing_hit", "mass_fraction", "case_localization", "localization_summary",
           "localization_records", "write_localization_csv", "read_localization_csv", "COLUMNS"]

#: columns of ``localization.csv`` (one row per case and class explained)
COLUMNS = ["image", "class", "has_boxes", "hit", "box_mass", "box_area", "has_lungs", "lung_mass", "lung_area"]


def _map(cam: Any) -> np.ndarray:
    a = np.asarray(cam, dtype=np.float64)
    while a.ndim > 2 and a.shape[0] == 1:
        a = a[0]
    if a.ndim != 2:
        raise ValueError(f"a CAM must be a 2-D (H, W) map, got shape {np.shape(cam)}")
    if not np.all(np.isfinite(a)):
        raise ValueError("the CAM has non-finite values")
    if (a < 0).any():
        raise ValueError(f"a CAM must be non-negative (after ReLU or normalised), got a minimum of {a.min():.4g}")
    return a


def box_region(boxes: Sequence[Sequence[float]], shape: Sequence[int]) -> np.ndarray:
    """Boolean ``(H, W)`` mask of the pixels whose centres lie in any of ``boxes`` (``[x_min, y_min, x_max, y_max]``)."""
    h, w = int(shape[0]), int(shape[1])
    cy, cx = np.arange(h)[:, None] + 0.5, np.arange(w)[None, :] + 0.5
    region = np.zeros((h, w), dtype=bool)
    for b in boxes:
        if len(b) != 4:
            raise ValueError(f"a box is [x_min, y_min, x_max, y_max], got {list(b)}")
        x0, y0, x1, y1 = (float(v) for v in b)
        region |= (cx >= x0) & (cx <= x1) & (cy >= y0) & (cy <= y1)
    return region


def box_to_input(box: Sequence[float], original: Sequence[int], size: int | Sequence[int]) -> list[float]:
    """``box`` on an image of spatial shape ``original`` (H, W), in the pixels of the network input after
    :class:`~medfuse.transforms.spatial.ResizeWithPad` to ``size`` (aspect kept, then symmetric padding)."""
    from medfuse.transforms.spatial import fit_size

    target = (int(size), int(size)) if isinstance(size, int) else (int(size[0]), int(size[1]))
    new_h, new_w = fit_size(tuple(int(s) for s in original), target)
    sy, sx = new_h / float(original[0]), new_w / float(original[1])
    oy, ox = (target[0] - new_h) // 2, (target[1] - new_w) // 2  # SpatialPad "symmetric": the smaller half first
    x0, y0, x1, y1 = (float(v) for v in box)
    return [x0 * sx + ox, y0 * sy + oy, x1 * sx + ox, y1 * sy + oy]


def pointing_hit(cam: Any, boxes: Sequence[Sequence[float]]) -> bool:
    """Whether the peak of ``cam`` (the first maximum in row-major order) lies in one of ``boxes``; False for a
    constant map (no peak) or no boxes."""
    a = _map(cam)
    if not boxes or a.max() <= a.min():
        return False
    r, c = np.unravel_index(int(np.argmax(a)), a.shape)
    return bool(box_region(boxes, a.shape)[r, c])


def mass_fraction(cam: Any, region: Any) -> float:
    """``sum(cam inside region) / sum(cam)``; NaN for a map with no mass. ``region``: boolean (or 0/1) of the map's shape."""
    a = _map(cam)
    m = np.asarray(region)
    while m.ndim > 2 and m.shape[0] == 1:
        m = m[0]
    if m.shape != a.shape:
        raise ValueError(f"the region {m.shape} and the CAM {a.shape} differ in shape")
    total = a.sum()
    return float(a[m.astype(bool)].sum() / total) if total > 0 else float("nan")


def case_localization(cam: Any, boxes: Sequence[Sequence[float]] | None = None, lungs: Any | None = None) -> dict:
    """One case: ``hit``, ``box_mass``, ``box_area`` (when ``boxes`` are given, in the map's pixels) and ``lung_mass``,
    ``lung_area`` (when a ``lungs`` mask of the map's shape is given); absent parts are ``None``."""
    a = _map(cam)
    out: dict[str, Any] = {"has_boxes": bool(boxes), "hit": None, "box_mass": None, "box_area": None,
                           "has_lungs": lungs is not None, "lung_mass": None, "lung_area": None}
    if boxes:
        region = box_region(boxes, a.shape)
        out.update(hit=pointing_hit(a, boxes), box_mass=mass_fraction(a, region), box_area=float(region.mean()))
    if lungs is not None:
        m = np.asarray(lungs).astype(bool)
        out.update(lung_mass=mass_fraction(a, m), lung_area=float(m.reshape(a.shape).mean()))
    return out


def _mean_with_ci(values: Sequence[float], n_boot: int, seed: int, min_cases: int) -> dict:
    v = np.asarray([x for x in values if x is not None and np.isfinite(x)], dtype=np.float64)
    # a share of nothing is undefined: a CAM that is zero everywhere (Grad-CAM after ReLU of a class the network
    # does not see) gives NaN and is counted here instead of averaged
    out: dict[str, Any] = {"n": int(v.size), "mean": float(v.mean()) if v.size else None,
                           "n_no_mass": int(sum(1 for x in values if x is None or not np.isfinite(x)))}
    if v.size < min_cases:
        out["ci"] = too_small_interval(v.size, min_cases)
    elif n_boot > 0:
        idx = stratified_indices(np.zeros(v.size, dtype=np.int64), n_boot, seed)
        out["ci"] = percentile_interval(v[idx].mean(1))
    else:
        out["ci"] = None
    return out


def localization_summary(rows: Sequence[Mapping[str, Any]], classes: Sequence[str], n_boot: int = 1000, seed: int = 0,
                         min_cases: int = MIN_CASES_PER_CLASS) -> dict:
    """Per-class means over cases, with percentile bootstrap intervals (resampling cases).

    Args:
        rows: :func:`case_localization` outputs with ``class`` (the class whose CAM was measured) and ``image``.
        classes: class names, the order of the summary.
        n_boot: resamples (0: no intervals). Defaults to 1000.
        seed: seed. Defaults to 0.
        min_cases: fewest cases for an interval (below: ``n_too_small``). Defaults to
            :data:`~medfuse.evaluation.bootstrap.MIN_CASES_PER_CLASS`.

    Returns:
        ``{"per_class": {class: {"pointing_game", "box_mass", "box_area", "lung_mass", "lung_area"}}, "n_cases",
        "misses": [image, ...]}``, each metric ``{"n", "mean", "ci"}``; classes without any box or lung case are left
        out; ``misses`` lists the cases whose CAM peak falls outside their boxes.
    """
    per_class: dict[str, dict] = {}
    for name in classes:
        mine = [r for r in rows if r.get("class") == name]
        boxed = [r for r in mine if r.get("has_boxes")]
        lunged = [r for r in mine if r.get("has_lungs")]
        if not boxed and not lunged:
            continue
        entry = {}
        if boxed:
            entry["pointing_game"] = _mean_with_ci([float(bool(r["hit"])) for r in boxed], n_boot, seed, min_cases)
            entry["box_mass"] = _mean_with_ci([r["box_mass"] for r in boxed], n_boot, seed, min_cases)
            entry["box_area"] = _mean_with_ci([r["box_area"] for r in boxed], 0, seed, 0)
        if lunged:
            entry["lung_mass"] = _mean_with_ci([r["lung_mass"] for r in lunged], n_boot, seed, min_cases)
            entry["lung_area"] = _mean_with_ci([r["lung_area"] for r in lunged], 0, seed, 0)
        per_class[str(name)] = entry
    misses = sorted({str(r["image"]) for r in rows if r.get("has_boxes") and not r.get("hit")})
    return {"per_class": per_class, "n_cases": len({str(r.get("image")) for r in rows}), "misses": misses,
            "min_cases": int(min_cases), "method": "percentile bootstrap over cases"}


def _original_size(image: Any) -> tuple[int, int] | None:
    """The spatial size before :class:`~medfuse.transforms.spatial.ResizeWithPad`, from a MetaTensor's trace."""
    for op in reversed(getattr(image, "applied_operations", None) or []):
        if op.get("class") == "ResizeWithPad":
            return tuple(int(s) for s in op["orig_size"])  # type: ignore[return-value]
    return None


def localization_records(model: Any, items: Sequence[Mapping[str, Any]], class_of: Mapping[int, int] | None = None,
                         batch_size: int = 8) -> list[dict]:
    """Localization rows of the ``items`` of a manifest (``image``, optional ``boxes`` / ``box_labels`` in the pixels
    of the original image, optional lung ``mask``, ``label``) for a loaded model (:func:`medfuse.load_model`).

    For each item the CAM of each class it has boxes of, and of its labelled class, is computed at the network
    input size (:meth:`~medfuse.inference.LoadedModel.cam_images`), the boxes are mapped to that grid
    (:func:`box_to_input`) and the lung mask goes through the model's own evaluation preset with the image
    (nearest interpolation). ``class_of`` maps manifest class indices to the model's (default: the same). Items
    without boxes and mask give no rows.
    """
    from medfuse.inference import EVAL_PRESETS
    from medfuse.transforms import presets

    size = int(model.settings.get("image_size") or 224)
    with_mask = getattr(presets, EVAL_PRESETS[str(model.settings.get("bundle_name"))])(
        image_size=size, in_channels=int(model.settings.get("in_channels") or 1), mask_key="mask", optional_mask=True)
    mapping = dict(class_of or {})
    jobs: list[tuple[Any, int, list, Any, str]] = []
    for it in items:
        boxes, labels = list(it.get("boxes") or []), list(it.get("box_labels") or [])
        if not boxes and not it.get("mask"):
            continue
        data = with_mask({"image": it["image"], "mask": it["mask"]} if it.get("mask") else {"image": it["image"]}) \
            if it.get("mask") else model.transforms({"image": it["image"]})
        image = data["image"]
        lungs = np.asarray(data["mask"])[0] > 0.5 if it.get("mask") else None
        original = _original_size(image)
        if boxes and original is None:
            raise DataError(f"{it['image']}: the model's transforms do not record the original image size, so its "
                            "boxes cannot be placed on the CAM")
        wanted = {mapping.get(int(b), int(b)) for b in labels} if boxes else set()
        if isinstance(it.get("label"), int) and it["label"] >= 0:
            wanted.add(mapping.get(int(it["label"]), int(it["label"])))
        for k in sorted(wanted):
            mine = [box_to_input(b, original, size) for b, lab in zip(boxes, labels)
                    if mapping.get(int(lab), int(lab)) == k] if boxes else []
            jobs.append((image, k, mine, lungs, str(it["image"])))
    rows: list[dict] = []
    for a in range(0, len(jobs), max(int(batch_size), 1)):
        chunk = jobs[a:a + batch_size]
        cams = model.cam_images([j[0] for j in chunk], [j[1] for j in chunk])
        for (_, k, boxes, lungs, path), cam in zip(chunk, cams):
            rows.append({"image": path, "class": model.classes[k], **case_localization(cam, boxes, lungs)})
    return rows


def write_localization_csv(path: str | os.PathLike, rows: Sequence[Mapping[str, Any]]) -> Path:
    """``localization.csv``: one row per case and class (:data:`COLUMNS`)."""
    from medfuse.utils.io import atomic_write_csv

    return atomic_write_csv(Path(path), [{k: r.get(k) for k in COLUMNS} for r in rows], COLUMNS)


def read_localization_csv(path: str | os.PathLike) -> list[dict]:
    """The rows of a ``localization.csv`` (:func:`write_localization_csv`) with numbers and flags parsed back."""
    import csv

    p = Path(path)
    if not p.is_file():
        raise DataError(f"{p}: localization file not found; write it with medfuse evaluate --model or leave it out")
    flags, numbers = ("has_boxes", "hit", "has_lungs"), ("box_mass", "box_area", "lung_mass", "lung_area")
    rows = []
    with open(p, newline="", encoding="utf-8") as f:
        for k, r in enumerate(csv.DictReader(f), 2):
            try:
                row: dict[str, Any] = {"image": r["image"], "class": r["class"]}
                row.update({c: (r[c] == "True") if r.get(c) not in ("", None) else None for c in flags})
                row.update({c: float(r[c]) if r.get(c) not in ("", None) else None for c in numbers})
            except (KeyError, ValueError) as e:
                raise DataError(f"{p}, line {k}: not a localization row ({e}); columns: {', '.join(COLUMNS)}") from None
            rows.append(row)
    return rows
