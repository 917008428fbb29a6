# Copyright (c) medfuse contributors
# Licensed under the Apache License, Version 2.0
"""Chest-X-ray-like phantoms with lung masks (see :mod:`medfuse.data.demo`)."""

from __future__ import annotations

import math
from typing import Any, Sequence

import numpy as np

from medfuse.data.demo._common import _quantize, _rng, _shape, _sig, _smooth_noise, gaussian_blur

__all__ = ["cxr_anatomy", "cxr_phantom"]


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
