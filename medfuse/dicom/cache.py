# Copyright (c) medfuse contributors
# Licensed under the Apache License, Version 2.0
"""Pre-decoded image cache: DICOM decoded once, stored as lossless 16-bit PNG (or TIFF).

Decoding a JPEG 2000 chest X-ray costs far more than reading a PNG, and a training run
decodes every image every epoch. ``--cache-dir`` therefore decodes each selected DICOM once,
with the same function training uses (:func:`medfuse.transforms.dicom.read_dicom_image`:
modality LUT, BitsStored scaling, MONOCHROME1 inverted, padding masked, no VOI), and stores
``round(value * 65535)`` as a 16-bit grayscale PNG; multi-frame images (OCT volumes) become a
multi-page 16-bit TIFF. :func:`medfuse.transforms.io.read_pil_image` (used by ``LoadXray``)
divides 16-bit images by 65535, so a cached image loads to the DICOM's values within
``1 / 131070``. Each manifest item records this in its ``preprocessing`` entry.
"""

from __future__ import annotations

import io
import os
from typing import Any

import numpy as np

from medfuse.utils.io import atomic_write_bytes

__all__ = ["PREPROCESSING", "cache_name", "encode_image", "write_cached_image", "preprocessing_record"]

#: How cached images are made (stored in each cached item's ``preprocessing``).
PREPROCESSING: dict[str, Any] = {
    "decoder": "medfuse.transforms.dicom.read_dicom_image",
    "frame": "first frame (PNG); all frames (multi-page TIFF) for multi-frame files",
    "modality_lut": True,
    "voi_applied": False,
    "monochrome1_inverted": True,
    "padding_masked": True,
    "value_range": "[0, 1] by BitsStored (mapped through the modality LUT), not by the data maximum",
    "encoding": "uint16 = round(value * 65535); read back as value / 65535 by medfuse.transforms.LoadXray",
    "resized": False,
}


def cache_name(patient: str, sop_key: str, frames: int) -> str:
    """Relative cache path of one image: ``<patient pseudonym>/<sop pseudonym>.png`` (``.tiff`` multi-frame)."""
    return f"{patient}/{sop_key}{'.tiff' if frames > 1 else '.png'}"


def encode_image(arr: np.ndarray, multi_page: bool) -> bytes:
    """``(F, H, W)`` float in [0, 1] -> PNG (first frame) or multi-page TIFF bytes, 16-bit."""
    from PIL import Image

    u16 = np.round(np.clip(np.asarray(arr, dtype=np.float64), 0.0, 1.0) * 65535.0).astype(np.uint16)
    buf = io.BytesIO()
    if multi_page:
        pages = [Image.fromarray(np.ascontiguousarray(p)) for p in u16]
        pages[0].save(buf, format="TIFF", save_all=True, append_images=pages[1:], compression="tiff_adobe_deflate")
    else:
        Image.fromarray(np.ascontiguousarray(u16[0])).save(buf, format="PNG", compress_level=1)
    return buf.getvalue()


def write_cached_image(arr: np.ndarray, path: str | os.PathLike) -> str:
    """Write ``arr`` (``(F, H, W)`` in [0, 1]) to ``path`` atomically; return the file's SHA-256."""
    import hashlib

    data = encode_image(arr, multi_page=str(path).endswith(".tiff"))
    atomic_write_bytes(path, data)
    return hashlib.sha256(data).hexdigest()


def preprocessing_record(frames: int) -> dict[str, Any]:
    """The ``preprocessing`` entry of a cached item."""
    rec = dict(PREPROCESSING)
    rec["frame"] = "all" if frames > 1 else 0
    rec["format"] = "tiff16" if frames > 1 else "png16"
    return rec
