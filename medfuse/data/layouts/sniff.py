# Copyright (c) medfuse contributors
# Licensed under the Apache License, Version 2.0
"""Format sniffing of candidate image files: DICOM magic, extension, and a read check.

See :mod:`medfuse.data.layouts`.
"""

from __future__ import annotations

import hashlib
import io
import os
from pathlib import Path

from medfuse.data.layouts._common import _DICOM_EXTENSIONS, _PIL_EXTENSIONS

__all__ = ["is_dicom_bytes", "inspect_image"]


def is_dicom_bytes(data: bytes) -> bool:
    """True when ``data`` has the DICOM preamble magic ``DICM`` at offset 128."""
    return len(data) >= 132 and data[128:132] == b"DICM"



def _image_kind(path: Path) -> str | None:
    """``"pil"``, ``"dicom"`` or ``None`` (not an image) from the extension / DICOM magic."""
    ext = path.suffix.lower()
    if ext in _PIL_EXTENSIONS:
        return "pil"
    if ext in _DICOM_EXTENSIONS:
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
