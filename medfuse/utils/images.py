# Copyright (c) medfuse contributors
# Licensed under the Apache License, Version 2.0
"""The one list of image file name endings medfuse reads, and helpers on it.

* :data:`IMAGE_EXTENSIONS`: endings of the files taken as images when a *folder* is the input (inference over a
  folder, folder converters): DICOM, PNG / JPEG / BMP / TIFF and NIfTI.
* :data:`DICOM_EXTENSIONS`, :data:`NIFTI_EXTENSIONS`, :data:`PIL_EXTENSIONS`: what the image loader
  (:mod:`medfuse.transforms.io`) routes to each reader by name when the content does not decide. These groups are
  wider than :data:`IMAGE_EXTENSIONS` (e.g. Analyze ``.hdr``/``.img`` pairs, GIF, JPEG 2000): a file of such a
  type loads when named explicitly, but is not picked up from a folder.

All endings are lower case with the leading dot; compare them against lower-cased names (multi-part endings such as
``.nii.gz`` are why :func:`has_image_extension` uses ``str.endswith`` rather than ``os.path.splitext``).
"""

from __future__ import annotations

import os
from collections.abc import Sequence

__all__ = [
    "DICOM_EXTENSIONS",
    "NIFTI_EXTENSIONS",
    "PIL_EXTENSIONS",
    "IMAGE_EXTENSIONS",
    "has_image_extension",
    "image_stem",
]

#: Endings read as DICOM by name (files without an ending are checked for the ``DICM`` preamble instead).
DICOM_EXTENSIONS: tuple[str, ...] = (".dcm", ".dicom", ".dic")
#: Endings read with nibabel (NIfTI-1/2, Analyze pairs, gzipped).
NIFTI_EXTENSIONS: tuple[str, ...] = (".nii", ".nii.gz", ".hdr", ".img", ".img.gz", ".hdr.gz")
#: Endings read with Pillow.
PIL_EXTENSIONS: tuple[str, ...] = (".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff", ".gif", ".webp", ".jp2", ".j2k")
#: Endings of the files taken as images from a folder.
IMAGE_EXTENSIONS: tuple[str, ...] = (
    ".dcm", ".dicom", ".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff", ".nii", ".nii.gz"
)


def has_image_extension(path: str | os.PathLike, extensions: Sequence[str] = IMAGE_EXTENSIONS) -> bool:
    """Whether the file name of ``path`` ends with one of ``extensions`` (case-insensitive; ``.nii.gz`` works).

    Examples::

        >>> has_image_extension("scans/CASE01.NII.GZ"), has_image_extension("notes.txt")
        (True, False)
    """
    name = os.path.basename(os.fspath(path).rstrip("/\\")).lower()
    return name.endswith(tuple(e.lower() for e in extensions))


def image_stem(path: str | os.PathLike, extensions: Sequence[str] = IMAGE_EXTENSIONS) -> str:
    """The file name of ``path`` without its image ending (the longest matching one; ``a.nii.gz`` -> ``a``).

    A name that is only an ending (``.png``) or has no image ending is returned whole.
    """
    name = os.path.basename(str(path).rstrip("/\\"))
    lower = name.lower()
    for ext in sorted(extensions, key=len, reverse=True):
        if lower.endswith(ext) and len(name) > len(ext):
            return name[: -len(ext)]
    return name
