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
"""

from __future__ import annotations

import functools
import hashlib
import io
import json
import math
import os
import shutil
from pathlib import Path
from typing import Any, Sequence

import numpy as np

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
    "demo_data_is_current",
]

#: Classes of the chest phantoms, in label order.
CXR_CLASSES = ("normal", "opacity")
#: Classes of the OCT B-scans, in label order (Kermany OCT2017 names).
OCT_CLASSES = ("CNV", "DME", "DRUSEN", "NORMAL")
#: Bumped whenever the generated images change, so stale demo folders are rebuilt.
DEMO_GENERATOR_VERSION = 1
#: Name of the stamp file that :func:`make_demo_data` writes last into its output folder.
STAMP_NAME = "demo_data.json"
#: Manifest file names written by :func:`make_demo_data`, by key.
MANIFEST_NAMES = {
    "cxr": "cxr_manifest.json",
    "cxr_dicom": "cxr_dicom_manifest.json",
    "oct": "oct_manifest.json",
    "oct_dicom": "oct_dicom_manifest.json",
}
# Sub-folders owned by the generator (removed before a rebuild of a demo folder).
_DATA_DIRS = ("cxr", "oct")

# Random streams: one per kind of draw, so that items never share random numbers.
_S_CXR_PATIENT, _S_CXR_IMAGE, _S_OCT_PATIENT, _S_OCT_IMAGE, _S_LAYOUT, _S_META = range(6)
_UID_NAMESPACE = "medfuse-demo-data"
_MIN_SIZE = 32


# ----------------------------------------------------------------------------- helpers
def _rng(rng: np.random.Generator | int | None) -> np.random.Generator:
    if isinstance(rng, np.random.Generator):
        return rng
    if rng is None or isinstance(rng, (int, np.integer)):
        return np.random.default_rng(rng)
    raise TypeError(f"rng must be a numpy Generator or an int seed, got {type(rng).__name__}")


def _shape(size: int | Sequence[int]) -> tuple[int, int]:
    if isinstance(size, (int, np.integer)):
        shape = (int(size), int(size))
    else:
        shape = tuple(int(s) for s in size)
        if len(shape) != 2:
            raise ValueError(f"size must be an int or (rows, columns), got {size!r}")
    if min(shape) < _MIN_SIZE:
        raise ValueError(f"size {shape} is too small; use at least {_MIN_SIZE} pixels per side")
    return shape  # type: ignore[return-value]


@functools.lru_cache(maxsize=64)
def _gaussian_kernel(sigma: float) -> np.ndarray:
    radius = max(1, int(math.ceil(3.0 * sigma)))
    offsets = np.arange(-radius, radius + 1)
    weights = np.exp(-0.5 * (offsets / sigma) ** 2)
    weights /= weights.sum()
    weights.setflags(write=False)
    return weights


def _blur_axis(image: np.ndarray, sigma: float, axis: int) -> np.ndarray:
    weights = _gaussian_kernel(round(float(sigma), 3))
    radius = weights.size // 2
    pad = [(0, 0), (0, 0)]
    pad[axis] = (radius, radius)
    padded = np.pad(image, pad, mode="symmetric")
    n = image.shape[axis]
    out = np.zeros_like(image)
    for k, w in enumerate(weights):
        out += w * (padded[k : k + n] if axis == 0 else padded[:, k : k + n])
    return out


def gaussian_blur(image: np.ndarray, sigma: float, sigma_x: float | None = None) -> np.ndarray:
    """Separable Gaussian blur of a 2-D array (``sigma`` rows, ``sigma_x`` columns, in pixels).

    Shifted, weighted sums over a symmetrically padded copy: plain numpy, no BLAS threads
    (which oversubscribe small images on busy machines). A sigma of 0 leaves that axis as is.
    """
    sigma_x = sigma if sigma_x is None else sigma_x
    out = np.asarray(image, dtype=np.float64)
    if sigma > 0:
        out = _blur_axis(out, sigma, 0)
    if sigma_x > 0:
        out = _blur_axis(out, sigma_x, 1)
    return out


def _smooth_noise(
    rng: np.random.Generator, shape: tuple[int, int], sigma: float, sigma_x: float | None = None
) -> np.ndarray:
    """Gaussian-blurred white noise rescaled to zero mean and unit standard deviation."""
    n = gaussian_blur(rng.standard_normal(shape), sigma, sigma_x)
    return (n - n.mean()) / (n.std() + 1e-12)


def _sig(z: np.ndarray | float) -> np.ndarray:
    """Logistic function, written with tanh so it never overflows."""
    return 0.5 * (1.0 + np.tanh(0.5 * np.asarray(z)))


def _quantize(image: np.ndarray, bits: int) -> np.ndarray:
    """Quantise [0, 1] floats: first to 12 bits (the phantom "detector"), then to ``bits``.

    Going through 12 bits makes every bit depth a rounding of the 12-bit values, so the
    8-bit PNG of an image is exactly ``round(v12 * 255 / 4095)`` of its 12-bit DICOM copy.
    """
    if not 1 <= bits <= 16:
        raise ValueError(f"bits must be 1..16, got {bits}")
    q = np.rint(np.clip(image, 0.0, 1.0) * 4095.0)
    if bits != 12:
        q = np.rint(q * (((1 << bits) - 1) / 4095.0))
    return q.astype(np.uint8 if bits <= 8 else np.uint16)


def _class_index(cls: int | str, classes: Sequence[str]) -> int:
    if isinstance(cls, (int, np.integer)) and not isinstance(cls, bool):
        if 0 <= int(cls) < len(classes):
            return int(cls)
    elif isinstance(cls, str):
        for i, c in enumerate(classes):
            if c.lower() == cls.lower():
                return i
    raise ValueError(f"unknown class {cls!r}; use one of {list(classes)} or its index")


# ----------------------------------------------------------------------- chest phantoms
def cxr_anatomy(rng: np.random.Generator | int | None = None, sex: str | None = None) -> dict[str, Any]:
    """Draw the patient-specific anatomy of a chest phantom (shared by a patient's images).

    Lengths are fractions of the image side. Returns a dict of plain floats (plus ``sex``
    "F"/"M" and ``age`` in years) that :func:`cxr_phantom` accepts as ``anatomy``.
    """
    rng = _rng(rng)
    if sex is None:
        sex = "F" if rng.random() < 0.5 else "M"
    male = sex == "M"
    n = rng.normal
    return {
        "sex": sex,
        "age": int(rng.integers(18, 90)),
        "mid": 0.5 + n(0, 0.008),
        "body_w": (0.455 if male else 0.43) + n(0, 0.012),
        "lung_w": (0.315 if male else 0.3) + n(0, 0.012),
        "med_w": 0.058 + n(0, 0.005),
        "apex_v": 0.15 + n(0, 0.012),
        "diaph_v": 0.8 + n(0, 0.018),
        "dome": 0.06 + n(0, 0.008),
        "right_higher": 0.022 + n(0, 0.006),
        "heart_dx": 0.07 + n(0, 0.008),
        "heart_cy": 0.685 + n(0, 0.012),
        "heart_rx": 0.17 + n(0, 0.01),
        "heart_ry": 0.12 + n(0, 0.008),
        "heart_tilt": math.radians(25.0 + n(0, 4.0)),
        "rib_spacing": 0.067 + n(0, 0.003),
        "rib_phase": float(rng.uniform(-0.012, 0.012)),
        "tissue": 0.42 + n(0, 0.02),
    }


def _cxr_float(
    rng: np.random.Generator, shape: tuple[int, int], positive: bool, anatomy: dict | None, view: str
) -> tuple[np.ndarray, np.ndarray, dict]:
    """The phantom as floats in [0, 1], its boolean lung mask, and drawing details."""
    rows, cols = shape
    a = anatomy if anatomy is not None else cxr_anatomy(rng)
    ap = view.upper() == "AP"
    # Per-image pose (rotation, scale, shift) and exposure.
    theta = math.radians(float(np.clip(rng.normal(0.0, 2.5), -6.0, 6.0)))
    scale = float(rng.uniform(0.92, 1.06))
    tx, ty = (float(t) for t in np.clip(rng.normal(0.0, 0.02, 2), -0.05, 0.05))
    u = (np.arange(cols) + 0.5) / cols
    v = (np.arange(rows) + 0.5) / rows
    du, dv = u[None, :] - 0.5 - tx, v[:, None] - 0.5 - ty
    c, s = math.cos(theta), math.sin(theta)
    x = 0.5 + (c * du + s * dv) / scale  # anatomy coordinates of every pixel
    y = 0.5 + (-s * du + c * dv) / scale
    e = max(0.004, 0.6 / min(rows, cols) / scale)  # edge softness: about 0.6 pixel
    xm = x - a["mid"]
    ax = np.abs(xm)

    body = np.maximum(
        _sig((1.0 - ((ax / a["body_w"]) ** 4 + (np.abs(y - 0.66) / 0.58) ** 4)) / (4 * e / a["body_w"])),
        _sig((0.085 - ax) / e) * _sig((0.2 - y) / e),  # neck
    )
    heart_scale = 1.1 if ap else 1.0
    hx, hy = a["mid"] + a["heart_dx"], a["heart_cy"]
    hrx, hry = a["heart_rx"] * heart_scale, a["heart_ry"] * heart_scale
    hc, hs = math.cos(a["heart_tilt"]), math.sin(a["heart_tilt"])
    hu, hv = hc * (x - hx) + hs * (y - hy), -hs * (x - hx) + hc * (y - hy)  # long axis to the lower right
    heart = _sig((1.0 - np.sqrt((hu / hrx) ** 2 + (hv / hry) ** 2)) * hry / e)
    mediastinum = _sig((a["med_w"] - ax) / e) * _sig((y - 0.05) / e) * _sig((hy - y) / e)
    dense = np.maximum(heart, mediastinum)

    lungs = np.zeros_like(x)
    below = np.zeros_like(x)  # abdomen under each hemidiaphragm
    hilum = np.zeros_like(x)
    for sgn, offset in ((-1.0, -a["right_higher"]), (1.0, 0.0)):  # image left = patient's right
        t = sgn * xm
        side = _sig(t / e)
        f = np.clip((y - a["apex_v"]) / 0.2, 0.0, 1.0)
        g = 1.0 - (1.0 - f) ** 2
        t_apex = a["med_w"] + 0.4 * (a["lung_w"] - a["med_w"])
        t_med = t_apex - (t_apex - a["med_w"]) * g
        t_lat = t_apex + (a["lung_w"] - t_apex) * g + 0.025 * np.clip((y - a["apex_v"] - 0.2) / 0.4, 0.0, 1.0)
        q = np.clip((t - a["med_w"]) / (a["lung_w"] - a["med_w"]), 0.0, 1.0)
        v_bot = a["diaph_v"] + offset - a["dome"] * 4.0 * q * (1.0 - q) + 0.03 * q
        lungs += _sig((t - t_med) / e) * _sig((t_lat - t) / e) * _sig((y - a["apex_v"]) / e) * _sig((v_bot - y) / e)
        below += side * _sig((y - v_bot) / e)
        hilum += side * np.exp(-((t - 0.1) ** 2) / 0.004 - (y - 0.46) ** 2 / 0.012)
    lung_field = np.clip(lungs, 0.0, 1.0) * (1.0 - dense)

    # Attenuation: soft tissue, abdomen, mediastinum and heart, then air in the lungs.
    att = body * (a["tissue"] + 0.06 * np.clip(ax / a["body_w"], 0.0, 1.0) ** 4)
    att += body * np.maximum(0.22 * np.clip(below, 0.0, 1.0) * (1.0 - lung_field), 0.25 * dense)
    att += 0.07 * body * _sig((0.032 - ax) / e)  # spine
    att -= 0.12 * body * _sig((0.018 - ax) / e) * _sig((y - 0.04) / e) * _sig((0.36 - y) / e)  # trachea
    vessels = _smooth_noise(rng, shape, 1.2)
    att += lung_field * (-0.27 + 0.05 * hilum + (0.015 + 0.03 * hilum) * vessels)

    # Ribs: posterior arcs (rising slightly, then falling laterally) and fainter anterior ones.
    t = ax
    lateral = _sig((t - 0.03) / e) * _sig((a["lung_w"] + 0.06 - t) / e)
    ribs = np.zeros_like(x)
    half = 0.26 * a["rib_spacing"]
    for k in range(10):
        v0 = a["apex_v"] - 0.04 + k * a["rib_spacing"] + a["rib_phase"]
        centre = v0 - 0.1 * t + 1.5 * t**2
        ribs += _sig((half - np.abs(y - centre)) / e)
    anterior = np.zeros_like(x)
    for k in range(6):
        v1 = a["apex_v"] + 0.03 + k * a["rib_spacing"] * 1.15 + a["rib_phase"]
        centre = v1 + 0.3 * (a["lung_w"] - t)
        anterior += _sig((0.55 * half - np.abs(y - centre)) / e) * _sig((t - 0.1) / e)
    bones = 0.085 * np.clip(ribs, 0.0, 1.0) + 0.035 * np.clip(anterior, 0.0, 1.0)
    att += body * lateral * (1.0 - 0.6 * dense) * bones
    # Clavicles: S-shaped bands from the manubrium out to the shoulders.
    cv = a["apex_v"] - (0.045 if ap else 0.02)
    tt = np.clip(t / 0.3, 0.0, 1.0)
    centre = cv + 0.045 * (1.0 - tt) + 0.01 * np.sin(2 * np.pi * tt)
    clav = _sig((0.012 - np.abs(y - centre)) / e) * _sig((t - 0.025) / e) * _sig((0.33 - t) / e)
    att += 0.15 * body * clav

    mask = lung_field > 0.5
    info: dict[str, Any] = {"view": "AP" if ap else "PA", "boxes": [], "opacities": []}
    if positive:
        lung_soft = gaussian_blur(lung_field, 1.5)
        ys, xs = np.nonzero(mask)
        if ys.size == 0:  # degenerate anatomy: put the opacity at the centre
            ys, xs = np.array([rows // 2]), np.array([cols // 2])
        rr, cc = np.arange(rows)[:, None], np.arange(cols)[None, :]
        for _ in range(int(rng.integers(1, 4))):
            i = int(rng.integers(ys.size))
            cy, cx = float(ys[i]), float(xs[i])
            sig_px = float(rng.uniform(0.05, 0.085)) * min(rows, cols)
            sy, sx = sig_px * float(rng.uniform(0.75, 1.3)), sig_px * float(rng.uniform(0.75, 1.3))
            amp = float(rng.uniform(0.4, 0.55))
            blob = np.exp(-0.5 * (((rr - cy) / sy) ** 2 + ((cc - cx) / sx) ** 2))
            texture = np.clip(1.0 + 0.35 * _smooth_noise(rng, shape, 2.0), 0.0, None)
            add = amp * blob * texture * lung_soft
            att += add
            big = np.nonzero(add > 0.25 * add.max())
            if big[0].size:
                info["boxes"].append(
                    [float(big[1].min()), float(big[0].min()), float(big[1].max() + 1), float(big[0].max() + 1)]
                )
            info["opacities"].append({"row": cy, "col": cx, "sigma_rows": sy, "sigma_cols": sx, "amplitude": amp})

    # Acquisition: slight blur, smooth and fine noise, exposure (brightness, contrast, gamma).
    img = gaussian_blur(att, 0.5) + 0.03
    img += 0.015 * _smooth_noise(rng, shape, 3.0) + 0.01 * rng.standard_normal(shape)
    contrast = float(rng.uniform(0.85, 1.15))
    brightness = float(rng.uniform(-0.06, 0.06))
    gamma = float(np.exp(rng.uniform(math.log(0.8), math.log(1.25))))
    img = np.clip((img - 0.5) * contrast + 0.5 + brightness, 0.0, 1.0) ** gamma
    info.update(rotation_deg=math.degrees(theta), scale=scale, shift=(tx, ty))
    info.update(contrast=contrast, brightness=brightness, gamma=gamma)
    return img, mask, info


def cxr_phantom(
    rng: np.random.Generator | int | None,
    size: int | Sequence[int] = 128,
    positive: bool = False,
    *,
    bits: int = 8,
    anatomy: dict | None = None,
    view: str = "PA",
    return_info: bool = False,
):
    """One frontal chest radiograph phantom and its lung mask.

    Dark lung fields (two rounded shapes with domed bases), a bright mediastinum and heart
    shadow right of the image centre (the patient's left), curved ribs crossing the lungs,
    clavicles, soft tissue, smooth noise, and per-image pose and exposure. A positive
    ("opacity") phantom has one to three blurred bright opacities inside the lung fields.

    Args:
        rng: numpy Generator (or int seed) that every random draw comes from.
        size: side in pixels, or ``(rows, columns)``. Defaults to 128.
        positive: draw opacities. Defaults to False.
        bits: quantisation; ``8`` gives ``uint8`` 0..255, 9..16 give ``uint16`` up to
            ``2**bits - 1``. Every depth is rounded from the 12-bit values (``bits=12``),
            as the demo's DICOM copies store them. Defaults to 8.
        anatomy: patient anatomy from :func:`cxr_anatomy` (drawn from ``rng`` when None),
            so that several images of one patient share it.
        view: ``"PA"`` or ``"AP"`` (AP: larger heart shadow, clavicles higher). Defaults to "PA".
        return_info: also return a dict with the opacity ``boxes`` (``[x_min, y_min, x_max,
            y_max]`` in pixels, x the column) and the pose and exposure drawn.

    Returns:
        ``(image, mask)``, or ``(image, mask, info)``: image ``(rows, columns)`` of the
        requested bit depth, mask ``uint8`` with 0 outside and 255 inside the lung fields.

    Raises:
        ValueError: when ``size`` is below 32 pixels, or ``bits`` or ``view`` is unknown.
    """
    if view.upper() not in ("PA", "AP"):
        raise ValueError(f"view must be 'PA' or 'AP', got {view!r}")
    img, mask, info = _cxr_float(_rng(rng), _shape(size), bool(positive), anatomy, view)
    out = (_quantize(img, bits), mask.astype(np.uint8) * 255)
    return out + (info,) if return_info else out


# --------------------------------------------------------------------------- OCT B-scans
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


def _png_bytes(array: np.ndarray) -> bytes:
    from PIL import Image

    buf = io.BytesIO()
    Image.fromarray(array).save(buf, format="PNG")
    return buf.getvalue()


def _write(path: Path, data: bytes) -> str:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)
    return hashlib.sha256(data).hexdigest()


# ------------------------------------------------------------------------------- DICOM
def _uid(seed: int, *parts: Any) -> str:
    from pydicom.uid import generate_uid

    return str(generate_uid(entropy_srcs=[_UID_NAMESPACE, str(seed)] + [str(p) for p in parts]))


def _date(days: int) -> str:
    import datetime as dt

    return (dt.date(2024, 1, 1) + dt.timedelta(days=int(days))).strftime("%Y%m%d")


def _base_dataset(sop_class: str, sop_uid: str, transfer_syntax: str):
    from pydicom import __version__ as pydicom_version
    from pydicom.dataset import Dataset, FileMetaDataset
    from pydicom.uid import PYDICOM_IMPLEMENTATION_UID

    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = sop_class
    meta.MediaStorageSOPInstanceUID = sop_uid
    meta.TransferSyntaxUID = transfer_syntax
    meta.ImplementationClassUID = PYDICOM_IMPLEMENTATION_UID
    meta.ImplementationVersionName = f"PYDICOM {pydicom_version}"[:16]
    ds = Dataset()
    ds.file_meta = meta
    ds.SpecificCharacterSet = "ISO_IR 100"
    ds.SOPClassUID = sop_class
    ds.SOPInstanceUID = sop_uid
    return ds


def _patient_study(
    ds, seed: int, kind: str, patient: dict, pid: str, study_key: Any, days: int, age: int | None, sex: str | None
):
    ds.PatientName = f"DEMO^{pid}"
    ds.PatientID = pid
    ds.PatientBirthDate = ""
    ds.PatientSex = sex or "O"
    if age is not None:
        ds.PatientAge = f"{age:03d}Y"
    ds.PatientIdentityRemoved = "YES"
    ds.DeidentificationMethod = "synthetic phantom: no real patient"
    ds.StudyInstanceUID = _uid(seed, kind, "study", patient["number"], study_key)
    ds.StudyDate = ds.SeriesDate = ds.ContentDate = _date(days)
    ds.StudyTime = ds.SeriesTime = ds.ContentTime = f"{9 + (patient['number'] % 8):02d}{(days * 7) % 60:02d}00"
    ds.StudyID = f"{patient['number']:04d}"
    ds.AccessionNumber = f"DEMO{patient['number']:05d}{study_key}"[:16]
    ds.ReferringPhysicianName = ""
    ds.Manufacturer = "medfuse synthetic"
    ds.ManufacturerModelName = "medfuse.data.demo"
    ds.InstitutionName = "medfuse synthetic demo data"
    ds.SoftwareVersions = f"demo generator {DEMO_GENERATOR_VERSION}"
    ds.ImageComments = "Synthetic phantom generated by medfuse; not a patient image."
    ds.BurnedInAnnotation = "NO"
    ds.LossyImageCompression = "00"


def _pixel_sha256(pixels: np.ndarray, bits_allocated: int) -> str:
    """SHA-256 of the stored pixel values (C order, little endian): equal after any lossless decode."""
    dtype = "<u2" if bits_allocated == 16 else "u1"
    return hashlib.sha256(np.ascontiguousarray(pixels, dtype=dtype).tobytes()).hexdigest()


def _save_dicom(ds, pixels: np.ndarray, transfer_syntax: str, path: Path) -> str:
    """Set the pixel data (compressing when asked), write a DICOM file, return its sha256."""
    from pydicom.uid import ExplicitVRLittleEndian, JPEG2000Lossless, RLELossless

    dtype = "<u2" if ds.BitsAllocated == 16 else "u1"
    ds.PixelData = np.ascontiguousarray(pixels, dtype=dtype).tobytes()
    ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
    if transfer_syntax == JPEG2000Lossless:
        ds.compress(JPEG2000Lossless, pixels, encoding_plugin="pylibjpeg", generate_instance_uid=False)
    elif transfer_syntax == RLELossless:
        ds.compress(RLELossless, pixels, encoding_plugin="pydicom", generate_instance_uid=False)
    elif transfer_syntax != ExplicitVRLittleEndian:
        raise ValueError(f"unsupported transfer syntax {transfer_syntax}")
    buf = io.BytesIO()
    ds.save_as(buf, enforce_file_format=True)
    return _write(path, buf.getvalue())


def _cr_dicom(seed: int, patient: dict, pid: str, image_no: int, pixels12: np.ndarray, view: str, anatomy: dict,
              photometric: str, transfer_syntax: str, path: Path) -> dict:
    from pydicom.uid import ComputedRadiographyImageStorage

    sop_uid = _uid(seed, "cxr", "sop", patient["number"], image_no)
    ds = _base_dataset(ComputedRadiographyImageStorage, sop_uid, transfer_syntax)
    days = patient["number"] * 3 + image_no * 41
    _patient_study(ds, seed, "cxr", patient, pid, image_no, days, anatomy["age"], anatomy["sex"])
    ds.SeriesInstanceUID = _uid(seed, "cxr", "series", patient["number"], image_no)
    ds.Modality = "CR"
    ds.SeriesNumber = 1
    ds.InstanceNumber = 1
    ds.SeriesDescription = f"CHEST {view}"
    ds.StudyDescription = "XR CHEST 1 VIEW"
    ds.BodyPartExamined = "CHEST"
    ds.ViewPosition = view
    ds.PatientOrientation = ["L", "F"]  # displayed as facing the patient for PA and AP alike
    ds.ImageType = ["ORIGINAL", "PRIMARY"]
    rows, cols = pixels12.shape
    spacing = round(400.0 / max(rows, cols), 4)  # a 40 cm detector
    ds.ImagerPixelSpacing = [spacing, spacing]
    ds.SamplesPerPixel = 1
    ds.PhotometricInterpretation = photometric
    ds.Rows, ds.Columns = rows, cols
    ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 16, 12, 11, 0
    ds.RescaleIntercept, ds.RescaleSlope, ds.RescaleType = 0, 1, "US"
    ds.WindowCenter, ds.WindowWidth = 2048, 4096
    stored = (4095 - pixels12.astype(np.int32)).astype(np.uint16) if photometric == "MONOCHROME1" else pixels12
    digest = _save_dicom(ds, stored, transfer_syntax, path)
    return {
        "sha256": digest,
        "pixel_sha256": _pixel_sha256(stored, 16),
        "study_uid": ds.StudyInstanceUID,
        "series_uid": ds.SeriesInstanceUID,
        "sop_uid": sop_uid,
    }


def _opt_dicom(seed: int, patient: dict, pid: str, volume: np.ndarray, laterality: str, path: Path) -> dict:
    """A multi-frame Ophthalmic Tomography image (8-bit, uncompressed) of a B-scan raster."""
    from pydicom.dataset import Dataset
    from pydicom.sequence import Sequence as DicomSequence
    from pydicom.uid import ExplicitVRLittleEndian, OphthalmicTomographyImageStorage

    sop_uid = _uid(seed, "oct", "sop", patient["number"])
    ds = _base_dataset(OphthalmicTomographyImageStorage, sop_uid, ExplicitVRLittleEndian)
    days = patient["number"] * 5
    _patient_study(ds, seed, "oct", patient, pid, 0, days, None, None)
    ds.SeriesInstanceUID = _uid(seed, "oct", "series", patient["number"])
    ds.FrameOfReferenceUID = _uid(seed, "oct", "frame_of_reference", patient["number"])
    ds.PositionReferenceIndicator = ""
    ds.Modality = "OPT"
    ds.SeriesNumber = 1
    ds.InstanceNumber = 1
    ds.StudyDescription = "OCT MACULA"
    ds.SeriesDescription = "Macular raster"
    ds.ImageType = ["ORIGINAL", "PRIMARY"]
    ds.ImageLaterality = laterality
    region = Dataset()
    region.CodeValue, region.CodingSchemeDesignator, region.CodeMeaning = "5665001", "SCT", "Retina"
    ds.AnatomicRegionSequence = DicomSequence([region])
    ds.AcquisitionContextSequence = DicomSequence([])
    ds.AcquisitionDateTime = f"{ds.StudyDate}{ds.StudyTime}"
    ds.AcquisitionDuration = 1.0
    ds.AcquisitionNumber = 1
    ds.DetectorType = "CCD"
    ds.IlluminationWaveLength = 840.0
    n, rows, cols = volume.shape
    ds.NumberOfFrames = n
    ds.SamplesPerPixel = 1
    ds.PhotometricInterpretation = "MONOCHROME2"
    ds.Rows, ds.Columns = rows, cols
    ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 8, 8, 7, 0
    ds.PresentationLUTShape = "IDENTITY"
    depth_mm, width_mm, gap_mm = 2.0 / rows, 6.0 / cols, 0.25
    dim_uid = _uid(seed, "oct", "dimension", patient["number"])
    org = Dataset()
    org.DimensionOrganizationUID = dim_uid
    ds.DimensionOrganizationSequence = DicomSequence([org])
    indices = []
    for tag, desc in ((0x00209056, "Stack ID"), (0x00209057, "In-Stack Position Number")):
        item = Dataset()
        item.DimensionOrganizationUID = dim_uid
        item.DimensionIndexPointer = tag
        item.FunctionalGroupPointer = 0x00209111  # FrameContentSequence
        item.DimensionDescriptionLabel = desc
        indices.append(item)
    ds.DimensionIndexSequence = DicomSequence(indices)
    shared = Dataset()
    measures = Dataset()
    measures.PixelSpacing = [round(depth_mm, 6), round(width_mm, 6)]
    measures.SliceThickness = gap_mm
    shared.PixelMeasuresSequence = DicomSequence([measures])
    ds.SharedFunctionalGroupsSequence = DicomSequence([shared])
    per_frame = []
    for k in range(n):
        frame = Dataset()
        content = Dataset()
        content.StackID = "1"
        content.InStackPositionNumber = k + 1
        content.DimensionIndexValues = [1, k + 1]
        frame.FrameContentSequence = DicomSequence([content])
        per_frame.append(frame)
    ds.PerFrameFunctionalGroupsSequence = DicomSequence(per_frame)
    digest = _save_dicom(ds, volume, ExplicitVRLittleEndian, path)
    return {
        "sha256": digest,
        "pixel_sha256": _pixel_sha256(volume, 8),
        "study_uid": ds.StudyInstanceUID,
        "series_uid": ds.SeriesInstanceUID,
        "sop_uid": sop_uid,
    }


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
    unknown = set(parameters) - set(defaults)
    if unknown:
        raise TypeError(f"unknown demo data parameters {sorted(unknown)}; use {sorted(defaults)}")
    defaults.update(parameters)
    stamp = read_demo_stamp(out_dir)
    if not stamp or not stamp.get("complete") or stamp.get("generator_version") != DEMO_GENERATOR_VERSION:
        return False
    if stamp.get("parameters") != _parameters(**defaults):
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
        for name in list(MANIFEST_NAMES.values()) + [STAMP_NAME]:
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

    for name, value in (("n_cxr", n_cxr), ("n_oct", n_oct), ("seed", seed)):
        if int(value) < 0:
            raise ValueError(f"{name} must be >= 0, got {value}")
    if n_cxr == 0 and n_oct == 0:
        raise ValueError("n_cxr and n_oct are both 0: nothing to generate")
    for name, value in (("n_cxr_patients", n_cxr_patients), ("n_oct_patients", n_oct_patients)):
        if value is not None and int(value) < 1:
            raise ValueError(f"{name} must be >= 1 (or None for the default), got {value}")
    if not 0.0 < float(dicom_fraction) <= 1.0:
        raise ValueError(f"dicom_fraction must be in (0, 1], got {dicom_fraction}")
    shape = _shape(image_size)
    params = _parameters(n_cxr, n_oct, shape, seed, dicom, n_cxr_patients, n_oct_patients, dicom_fraction)
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

    stamp.update(complete=True, manifests={k: p.name for k, p in written.items()})
    atomic_write_json(out / STAMP_NAME, stamp)
    return written
