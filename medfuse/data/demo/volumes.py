# Copyright (c) medfuse contributors
# Licensed under the Apache License, Version 2.0
"""Synthetic cardiac cine MRI volumes in the ACDC layout, for demos and tests (no real data).

:func:`make_demo_volumes` writes ``volumes/patientNNN/patientNNN_frameXX.nii.gz`` with ``_gt`` labels and
``Info.cfg`` (ED / ES frames, group), exactly as ACDC lays out its data, and then builds ``vol_manifest.json``
with :func:`medfuse.data.layouts.nifti.nifti_to_manifest` (``layout="acdc"``), so the demo exercises the real
converter. Each phantom is a short-axis stack: a left-ventricle blood pool (disc, label 3), a myocardium ring
around it (label 2) and a right-ventricle crescent beside it (label 1), shrinking towards the apex; end-systole
has a smaller cavity and a thicker wall than end-diastole. 64 x 64 pixels of 1.5 x 1.5 mm, 8-12 slices 8 mm
apart, an oblique, not-RAS affine (as scanners write short-axis stacks), smooth noise and a coil-shading bias.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np

__all__ = ["DEMO_VOLUME_SPACING", "DEMO_VOLUME_SIZE", "cardiac_phantom", "demo_volume_affine", "make_demo_volumes"]

#: (x, y, z) spacing in mm of the phantoms.
DEMO_VOLUME_SPACING = (1.5, 1.5, 8.0)
#: In-plane size in pixels.
DEMO_VOLUME_SIZE = 64
_GROUPS = ("NOR", "DCM", "HCM", "MINF", "RV")


def demo_volume_affine(spacing=DEMO_VOLUME_SPACING, angle_deg: float = 30.0) -> np.ndarray:
    """A short-axis-like affine: axes flipped (x to the left, y to the back: not RAS) and tilted by ``angle_deg``."""
    a = np.deg2rad(angle_deg)
    rot = np.array([[np.cos(a), 0.0, np.sin(a)], [0.0, 1.0, 0.0], [-np.sin(a), 0.0, np.cos(a)]])
    flip = np.diag([-1.0, -1.0, 1.0])
    affine = np.eye(4)
    affine[:3, :3] = rot @ flip @ np.diag(spacing)
    affine[:3, 3] = (-40.0, 60.0, -20.0)
    return affine


def cardiac_phantom(
    rng: np.random.Generator, n_slices: int, phase: str = "ED", size: int = DEMO_VOLUME_SIZE
) -> tuple[np.ndarray, np.ndarray]:
    """One ``(size, size, n_slices)`` image in [0, 1] (float32) and its label (uint8: 1 RV, 2 MYO, 3 LV).

    Args:
        rng: random generator (shape, position, noise).
        n_slices: slices from base (index 0) to apex.
        phase: ``"ED"`` (large cavity) or ``"ES"`` (small cavity, thick wall).
        size: in-plane pixels.
    """
    yy, xx = np.mgrid[:size, :size].astype(np.float32)
    cy, cx = size * (0.5 + rng.uniform(-0.05, 0.05)), size * (0.55 + rng.uniform(-0.05, 0.05))
    lv_r = size * (0.17 if phase == "ED" else 0.11) * rng.uniform(0.9, 1.1)
    wall = size * (0.07 if phase == "ED" else 0.1) * rng.uniform(0.9, 1.1)
    image = np.empty((size, size, n_slices), np.float32)
    label = np.zeros((size, size, n_slices), np.uint8)
    bias = 0.85 + 0.3 * (xx / size)
    for k in range(n_slices):
        taper = 1.0 - 0.6 * (k / max(n_slices - 1, 1)) ** 1.5  # smaller towards the apex
        r_lv, r_myo = lv_r * taper, (lv_r + wall) * taper
        d = np.hypot(yy - cy, xx - cx)
        lab = np.zeros((size, size), np.uint8)
        # right ventricle: a crescent on the septal side, missing in the apical slices
        if k < n_slices - 2:
            rv_c = cx - (r_myo + 0.4 * r_lv)
            d_rv = np.hypot((yy - cy) / 1.3, xx - rv_c)
            lab[(d_rv < 0.9 * r_myo) & (d >= r_myo)] = 1
        lab[(d < r_myo)] = 2
        lab[d < r_lv] = 3
        img = np.full((size, size), 0.15, np.float32)
        img += 0.25 * np.exp(-(((yy - cy) / (0.45 * size)) ** 2 + ((xx - cx) / (0.45 * size)) ** 2))  # chest wall
        img[lab == 1] = 0.7
        img[lab == 2] = 0.3
        img[lab == 3] = 0.8
        img = img * bias + 0.03 * rng.standard_normal((size, size)).astype(np.float32)
        image[..., k] = np.clip(img, 0.0, 1.0)
        label[..., k] = lab
    return image, label


def make_demo_volumes(out_dir: str | os.PathLike, n_volumes: int, seed: int = 0) -> Path:
    """Write ``n_volumes`` ACDC-layout phantom frames under ``out_dir/volumes`` and their manifest.

    Patients get two frames each (ED = frame 01, ES = a later frame, as in ACDC; the last patient has only ED when
    ``n_volumes`` is odd) and an ``Info.cfg``; 8-12 slices per patient.

    Args:
        out_dir: output folder (created).
        n_volumes: labelled frames to write (>= 1).
        seed: seed of everything random. Defaults to 0.

    Returns:
        the path of ``out_dir/vol_manifest.json``, made by
        :func:`~medfuse.data.layouts.nifti.nifti_to_manifest` (``layout="acdc"``, patient-level 0.8/0.1/0.1
        split); its report is ``vol_manifest.report.json``.

    Raises:
        ValueError: ``n_volumes < 1``.
    """
    import nibabel as nib

    from medfuse.data.manifest import write_manifest
    from medfuse.data.layouts.nifti import nifti_to_manifest
    from medfuse.utils.io import atomic_write_json

    if isinstance(n_volumes, bool) or int(n_volumes) < 1:
        raise ValueError(f"n_volumes must be >= 1, got {n_volumes!r}")
    out_dir = Path(out_dir)
    root = out_dir / "volumes"
    rng = np.random.default_rng(seed)
    affine = demo_volume_affine()
    n_patients = (int(n_volumes) + 1) // 2
    written = 0
    for p in range(n_patients):
        pid = f"patient{p + 1:03d}"
        folder = root / pid
        folder.mkdir(parents=True, exist_ok=True)
        n_slices = int(rng.integers(8, 13))
        n_frames = int(rng.integers(12, 31))
        es = int(rng.integers(8, min(n_frames, 16) + 1))
        group = _GROUPS[p % len(_GROUPS)]
        frames = [(1, "ED")] + ([(es, "ES")] if written + 1 < n_volumes else [])
        for frame, phase in frames:
            image, label = cardiac_phantom(rng, n_slices, phase)
            img = nib.Nifti1Image(image, affine)
            img.header.set_xyzt_units("mm", "sec")
            nib.save(img, str(folder / f"{pid}_frame{frame:02d}.nii.gz"))
            lab = nib.Nifti1Image(label, affine)
            lab.header.set_xyzt_units("mm", "sec")
            nib.save(lab, str(folder / f"{pid}_frame{frame:02d}_gt.nii.gz"))
            written += 1
        height, weight = float(rng.uniform(150, 195)), float(rng.uniform(50, 110))
        (folder / "Info.cfg").write_text(
            f"ED: 1\nES: {es}\nGroup: {group}\nHeight: {height:.1f}\nNbFrame: {n_frames}\nWeight: {weight:.1f}\n",
            encoding="utf-8",
        )
    manifest_path = out_dir / "vol_manifest.json"
    manifest, report = nifti_to_manifest(
        root, manifest_path, layout="acdc", seed=seed, arguments={"n_volumes": int(n_volumes), "seed": seed},
        tool="medfuse demo-data (make_demo_volumes)",
    )
    manifest["provenance"]["synthetic"] = "ACDC-layout cardiac phantoms made by medfuse.data.demo.volumes (no real data)"
    write_manifest(manifest, manifest_path)
    atomic_write_json(out_dir / "vol_manifest.report.json", report.to_dict())
    return manifest_path
