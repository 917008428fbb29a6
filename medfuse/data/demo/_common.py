# Copyright (c) medfuse contributors
# Licensed under the Apache License, Version 2.0
"""Shared pieces of the demo data generators: class names, file names, random streams,
the Gaussian blur, quantisation and file writing (see :mod:`medfuse.data.demo`)."""

from __future__ import annotations

import functools
import hashlib
import io
import math
from pathlib import Path
from typing import Sequence

import numpy as np

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
#: Manifests written only on request (``n_volumes``, ``n_detection``).
OPTIONAL_MANIFEST_NAMES = {
    "volumes": "vol_manifest.json",
    "cxr_detection": "cxr_detection_manifest.json",
}
# Sub-folders owned by the generator (removed before a rebuild of a demo folder).
_DATA_DIRS = ("cxr", "oct", "volumes", "cxr_detection")

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

    Kept on purpose instead of ``scipy.ndimage.gaussian_filter(image, sigma, truncate=3.0)``:
    that function agrees with this blur only to about 5e-4 at sigma 0.7, so the demo data
    (and every number computed from it) would change.
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



def _png_bytes(array: np.ndarray) -> bytes:
    from PIL import Image

    buf = io.BytesIO()
    Image.fromarray(array).save(buf, format="PNG")
    return buf.getvalue()


def _write(path: Path, data: bytes) -> str:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)
    return hashlib.sha256(data).hexdigest()
