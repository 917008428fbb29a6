# Copyright (c) medfuse contributors
# Licensed under the Apache License, Version 2.0
"""OCT-like retinal B-scans and small B-scan rasters (see :mod:`medfuse.data.demo`)."""

from __future__ import annotations

import math
from typing import Any, Sequence

import numpy as np

from medfuse.data.demo._common import OCT_CLASSES, _class_index, _quantize, _rng, _shape, _sig, _smooth_noise, gaussian_blur

__all__ = ["oct_eye", "oct_bscan", "oct_volume"]


def oct_eye(rng: np.random.Generator | int | None = None) -> dict[str, Any]:
    """Draw the eye-specific parameters of OCT B-scans (shared by one patient's scans)."""
    rng = _rng(rng)
    return {
        "base": float(rng.uniform(0.55, 0.66)),  # depth of Bruch's membrane (fraction of rows)
        "curvature": float(rng.uniform(-0.15, 0.35)),
        "fovea": 0.5 + float(rng.normal(0.0, 0.05)),
        "pit_width": float(rng.uniform(0.07, 0.1)),
        "nasal": 1.0 if rng.random() < 0.5 else -1.0,  # side of the thicker nerve fibre layer
        "thickness": float(rng.uniform(1.2, 1.45)),
        "reflectivity": float(rng.uniform(0.9, 1.1)),
        "pit_scale": 1.0,  # 1 through the fovea; smaller for B-scans above or below it
    }


# (name, thickness as a fraction of the rows, reflectivity) from Bruch's membrane upwards.
_OCT_LAYERS = (
    ("sub_rpe", 0.0, 0.45),
    ("rpe", 0.02, 1.0),
    ("subretinal_fluid", 0.0, 0.03),
    ("interdigitation", 0.01, 0.45),
    ("ellipsoid", 0.012, 0.8),
    ("myoid", 0.011, 0.16),
    ("elm", 0.006, 0.42),
    ("onl", 0.055, 0.12),
    ("opl", 0.02, 0.5),
    ("inl", 0.03, 0.22),
    ("ipl", 0.03, 0.5),
    ("gcl", 0.035, 0.35),
    ("rnfl", 0.02, 0.68),
)
_VITREOUS = 0.02


def _bump(u: np.ndarray, centre: float, width: float, power: float = 2.0) -> np.ndarray:
    return np.exp(-(np.abs((u - centre) / width) ** power))


def _oct_float(rng: np.random.Generator, shape: tuple[int, int], cls: int, eye: dict | None) -> tuple[np.ndarray, dict]:
    rows, cols = shape
    ey = eye if eye is not None else oct_eye(rng)
    name = OCT_CLASSES[cls]
    u = (np.arange(cols) + 0.5) / cols
    depth = (np.arange(rows) + 0.5) / rows
    # Per-image geometry: Bruch's membrane depth along the scan, foveal pit.
    bm = ey["base"] + rng.normal(0.0, 0.02) + (ey["curvature"] + rng.normal(0.0, 0.05)) * (u - 0.5) ** 2
    bm = bm + rng.normal(0.0, 0.05) * (u - 0.5)
    xf = ey["fovea"] + float(rng.normal(0.0, 0.03))
    pit = ey.get("pit_scale", 1.0) * _bump(u, xf, ey["pit_width"] * float(rng.uniform(0.9, 1.1)))
    k = ey["thickness"]
    thick = {n: np.full(cols, t * k) for n, t, _ in _OCT_LAYERS}
    refl = {n: r * ey["reflectivity"] * float(rng.uniform(0.88, 1.12)) for n, _, r in _OCT_LAYERS}
    refl["rpe"] = min(refl["rpe"], 1.0)
    pit_depth = 1.0
    info: dict[str, Any] = {"class": name, "lesions": []}

    if name == "DRUSEN":
        bumps = np.zeros(cols)
        for _ in range(int(rng.integers(3, 8))):
            c = xf + float(rng.uniform(-0.35, 0.35))
            h, w = float(rng.uniform(0.04, 0.07)), float(rng.uniform(0.03, 0.055))
            bumps = np.maximum(bumps, h * _bump(u, c, w))
            info["lesions"].append({"kind": "druse", "col": c * cols, "height": h * rows, "width": w * cols})
        thick["sub_rpe"] = bumps
        thick["onl"] = np.maximum(thick["onl"] - 0.35 * bumps, 0.012)
        refl["sub_rpe"] = 0.42 * ey["reflectivity"]
    elif name == "CNV":
        c = xf + float(rng.normal(0.0, 0.08))
        w, h = float(rng.uniform(0.08, 0.16)), float(rng.uniform(0.06, 0.11))
        wobble = 1.0 + 0.25 * _smooth_noise(rng, (1, cols), 0.0, cols * 0.03)[0]
        lesion = h * _bump(u, c, w, 2.5) * np.clip(wobble, 0.5, 1.6)
        thick["sub_rpe"] = lesion
        thick["rpe"] = thick["rpe"] * (1.0 + 0.8 * _bump(u, c, w, 2.5))
        if rng.random() < 0.7:  # subretinal fluid over the lesion
            fluid_centre = c + float(rng.normal(0, 0.03))
            thick["subretinal_fluid"] = float(rng.uniform(0.02, 0.05)) * _bump(u, fluid_centre, w * 1.4)
        thick["onl"] = np.maximum(thick["onl"] - 0.5 * lesion, 0.015)
        pit_depth = 0.5
        info["lesions"].append({"kind": "cnv", "col": c * cols, "height": h * rows, "width": w * cols})
    elif name == "DME":
        pit_depth = 0.35
        thick["onl"] = thick["onl"] * (1.0 + 0.4 * _bump(u, xf, 0.2))
        thick["inl"] = thick["inl"] * (1.0 + 0.3 * _bump(u, xf, 0.2))

    # Foveal pit: the inner layers thin out, the outer nuclear layer thickens.
    for n, f in (("rnfl", 0.97), ("gcl", 0.95), ("ipl", 0.95), ("inl", 0.9), ("opl", 0.8)):
        thick[n] = thick[n] * (1.0 - f * pit_depth * pit)
    thick["onl"] = thick["onl"] * (1.0 + 0.45 * pit)
    thick["rnfl"] = thick["rnfl"] + 0.02 * k * np.clip(ey["nasal"] * (u - xf) * 3.0, 0.0, 1.0) * (1.0 - pit)

    cysts = []
    if name == "DME":  # cysts swell the inner nuclear and outer nuclear layers
        for _ in range(int(rng.integers(2, 7))):
            layer = "onl" if rng.random() < 0.6 else "inl"
            c = xf + float(rng.uniform(-0.22, 0.22))
            ru, rv = float(rng.uniform(0.025, 0.06)), float(rng.uniform(0.018, 0.036))
            thick[layer] = thick[layer] + 1.7 * rv * _bump(u, c, ru * 2.5)
            cysts.append((layer, c, ru, rv))

    names = [n for n, _, _ in _OCT_LAYERS]
    tops = bm[None, :] - np.cumsum(np.stack([thick[n] for n in names]), axis=0)  # (layers, cols)
    dd = depth[:, None]
    index = (dd[None, :, :] < tops[:, None, :]).sum(axis=0)  # 0..len(names); len = vitreous
    values = np.array([refl[n] for n in names] + [_VITREOUS])
    layer_lateral = 1.0 + 0.12 * _smooth_noise(rng, (1, cols), 0.0, cols * 0.08)
    img = values[index] * layer_lateral
    sub = (index == 0) & (dd < bm[None, :])
    if name == "CNV":  # heterogeneous, bright fibrovascular tissue under the lifted RPE
        tex = 0.75 + 0.3 * _smooth_noise(rng, shape, 1.2)
        img = np.where(sub, np.clip(tex, 0.3, 1.0), img)
    # Choroid (vessels as dark lumens) and sclera below Bruch's membrane.
    below = dd - bm[None, :]
    vessels = np.clip(1.0 + 0.6 * _smooth_noise(rng, shape, 1.5, 3.0), 0.1, 1.5)
    choroid = 0.36 * np.exp(-np.maximum(below, 0.0) / 0.07) * vessels * _sig((below - 0.008) * rows)
    img = np.where(below >= 0.0, choroid + 0.03, img)
    ilm = tops[-1]
    for layer, c, ru, rv in cysts:
        li = names.index(layer)
        centre_v = 0.5 * (tops[li] + (tops[li - 1] if li else bm))
        cv = float(np.interp(c, u, centre_v))
        cyst = ((u[None, :] - c) / ru) ** 2 + ((dd - cv) / rv) ** 2 < 1.0
        img = np.where(cyst, 0.03, img)
        info["lesions"].append(
            {"kind": "cyst", "col": c * cols, "row": cv * rows, "width": 2 * ru * cols, "height": 2 * rv * rows}
        )
    if name == "DME":  # hyperreflective foci in the inner retina
        for _ in range(int(rng.integers(2, 7))):
            c = xf + float(rng.uniform(-0.25, 0.25))
            li = names.index("inl")
            rv_ = float(np.interp(c, u, tops[li]))
            dot = ((u[None, :] - c) * cols) ** 2 + ((dd - rv_) * rows) ** 2 < 1.0
            img = np.where(dot, 0.85, img)

    # Retinal vessels in the nerve fibre layer cast vertical shadows.
    for _ in range(int(rng.integers(2, 5))):
        c = float(rng.uniform(0.05, 0.95))
        if abs(c - xf) < 0.1:
            continue
        w = float(rng.uniform(0.006, 0.012))
        vd = float(np.interp(c, u, ilm)) + 0.012
        shadow = 1.0 - 0.55 * _bump(u, c, w)[None, :] * _sig((dd - vd) * rows)
        img = img * shadow
        vessel = ((u[None, :] - c) / (1.3 * w)) ** 2 + ((dd - vd) / 0.01) ** 2 < 1.0
        img = np.where(vessel, 0.8, img)

    # Depth attenuation, optical blur, multiplicative speckle, noise floor, display gamma.
    img = img * np.exp(-0.6 * np.maximum(dd - ilm[None, :], 0.0))
    img = gaussian_blur(img, 0.7, 0.9)
    speckle = rng.gamma(3.0, 1.0 / 3.0, shape)
    img = gaussian_blur(img * speckle, 0.5, 0.8)
    img = img + 0.025 * rng.gamma(1.5, 1.0, shape)
    gain = float(rng.uniform(0.9, 1.15))
    img = np.clip(img * gain, 0.0, 1.0) ** 0.75
    info.update(bruch=bm * rows, ilm=ilm * rows, fovea_col=xf * cols)
    return img, info


def oct_bscan(
    rng: np.random.Generator | int | None,
    size: int | Sequence[int] = 128,
    cls: int | str = "NORMAL",
    *,
    bits: int = 8,
    eye: dict | None = None,
    return_info: bool = False,
):
    """One OCT-like retinal B-scan of class CNV, DME, DRUSEN or NORMAL.

    Horizontal retinal layers (nerve fibre, ganglion cell, plexiform and nuclear layers,
    photoreceptor bands, RPE) stacked on a curved Bruch's membrane, a foveal pit, choroid,
    vessel shadows and multiplicative speckle. Class features: **CNV** a lifted, thickened RPE
    over a bright irregular sub-RPE mass, often with dark subretinal fluid; **DME** dark
    intraretinal cysts in the nuclear layers, a thickened retina with a shallow pit and
    bright foci; **DRUSEN** small dome-shaped elevations of the RPE line; **NORMAL** plain layers.

    Args:
        rng: numpy Generator (or int seed).
        size: side in pixels, or ``(rows, columns)`` (rows are depth). Defaults to 128.
        cls: class name (case-insensitive) or index into :data:`OCT_CLASSES`. Defaults to "NORMAL".
        bits: quantisation as in :func:`cxr_phantom`. Defaults to 8.
        eye: parameters from :func:`oct_eye` shared by one patient's scans (drawn when None).
        return_info: also return a dict with ``bruch`` and ``ilm`` (row of Bruch's membrane
            and of the inner retinal surface for every column) and the ``lesions`` drawn.

    Returns:
        ``image`` (``(rows, columns)``), or ``(image, info)``.

    Raises:
        ValueError: for an unknown class, a size below 32 pixels or bad ``bits``.
    """
    index = _class_index(cls, OCT_CLASSES)
    img, info = _oct_float(_rng(rng), _shape(size), index, eye)
    return (_quantize(img, bits), info) if return_info else _quantize(img, bits)


def oct_volume(
    rng: np.random.Generator | int | None,
    size: int | Sequence[int] = 128,
    cls: int | str = "NORMAL",
    n_frames: int = 5,
    *,
    bits: int = 8,
    eye: dict | None = None,
) -> np.ndarray:
    """A small raster of ``n_frames`` B-scans of one eye, ``(frames, rows, columns)``.

    The middle frame passes through the fovea; the pit fades in the frames above and below.
    Lesions are drawn per frame (a sparse raster, not a coherent 3-D lesion).
    """
    if n_frames < 1:
        raise ValueError(f"n_frames must be at least 1, got {n_frames}")
    rng = _rng(rng)
    eye = dict(eye) if eye is not None else oct_eye(rng)
    frames = []
    for k in range(n_frames):
        offset = k - (n_frames - 1) / 2.0
        eye["pit_scale"] = math.exp(-((offset / 1.2) ** 2))
        frames.append(oct_bscan(rng, size, cls, bits=bits, eye=eye))
    return np.stack(frames)
