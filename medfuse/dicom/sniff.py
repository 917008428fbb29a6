# Copyright (c) medfuse contributors
# Licensed under the Apache License, Version 2.0
"""Content sniffing and classification of DICOM files, without trusting file names.

``pydicom.dcmread(..., force=True)`` "reads" almost anything (a PNG, a text file) into a
data set of garbage elements, so the scanner decides from the first bytes whether a file is
DICOM at all: the ``DICM`` marker at byte 128 (PS3.10 file), or, for files written without
the preamble and file meta group, a first element that is a valid group 0002 or 0008 tag in
implicit or explicit VR, little or big endian, with a plausible length.

Also here: which SOP classes are images (SR, KO, PR, RT plans, SEG, encapsulated PDF and
DICOMDIRs are not), and which transfer syntaxes are lossy (for choosing among duplicates).
"""

from __future__ import annotations

import struct

__all__ = [
    "DICOM_MAGIC_OFFSET",
    "sniff_dicom",
    "is_image_sop_class",
    "sop_class_name",
    "is_lossy_transfer_syntax",
    "is_native_transfer_syntax",
    "DEFLATED",
]

DICOM_MAGIC_OFFSET = 128
# explicit-VR value representations (PS3.5 6.2)
_VRS = frozenset(
    b"AE AS AT CS DA DS DT FD FL IS LO LT OB OD OF OL OV OW PN SH SL SQ SS ST SV TM UC UI UL UN UR US UT UV".split()
)
_NATIVE = frozenset(("1.2.840.10008.1.2", "1.2.840.10008.1.2.1", "1.2.840.10008.1.2.2"))
DEFLATED = frozenset(("1.2.840.10008.1.2.1.99", "1.2.840.10008.1.2.8.1"))
# lossy compression: JPEG baseline/extended, JPEG-LS near-lossless, JPEG 2000 (lossy allowed),
# MPEG/HEVC video, HTJ2K (lossy allowed), JPEG XL
_LOSSY = frozenset(
    (
        "1.2.840.10008.1.2.4.50", "1.2.840.10008.1.2.4.51", "1.2.840.10008.1.2.4.81", "1.2.840.10008.1.2.4.91",
        "1.2.840.10008.1.2.4.93", "1.2.840.10008.1.2.4.100", "1.2.840.10008.1.2.4.101", "1.2.840.10008.1.2.4.102",
        "1.2.840.10008.1.2.4.103", "1.2.840.10008.1.2.4.104", "1.2.840.10008.1.2.4.105", "1.2.840.10008.1.2.4.106",
        "1.2.840.10008.1.2.4.107", "1.2.840.10008.1.2.4.108", "1.2.840.10008.1.2.4.203", "1.2.840.10008.1.2.4.111",
        "1.2.840.10008.1.2.4.112",
    )
)
# image storage classes whose pydicom name lacks the words "Image Storage"
_IMAGE_CLASSES_EXTRA = frozenset(
    (
        "1.2.840.10008.5.1.4.1.1.7.1",  # Multi-frame Single Bit Secondary Capture
        "1.2.840.10008.5.1.4.1.1.7.2",
        "1.2.840.10008.5.1.4.1.1.7.3",
        "1.2.840.10008.5.1.4.1.1.7.4",
    )
)


def sniff_dicom(head: bytes, size: int) -> str | None:
    """How a file starts: ``"part10"`` (preamble + ``DICM``), ``"raw"`` (a bare data set) or ``None``.

    Args:
        head: at least the first 132 bytes of the file (fewer when the file is shorter).
        size: the file size in bytes (element lengths must fit in it).

    Returns:
        ``"part10"`` for a PS3.10 file, ``"raw"`` for a data set without preamble whose first
        element is a group 0002/0008 tag with a valid VR or a plausible implicit-VR length,
        ``None`` for anything else (PNG, text, ZIP, a DICOM file cut before its first element).
    """
    if len(head) >= DICOM_MAGIC_OFFSET + 4 and head[DICOM_MAGIC_OFFSET : DICOM_MAGIC_OFFSET + 4] == b"DICM":
        return "part10"
    if len(head) < 8:
        return None
    for order in ("<", ">"):
        group, element = struct.unpack(order + "HH", head[:4])
        if group not in (0x0002, 0x0008):
            continue
        if head[4:6] in _VRS:  # explicit VR: a two-letter VR follows the tag
            return "raw"
        (length,) = struct.unpack(order + "I", head[4:8])  # implicit VR: a 4-byte length
        if element <= 0x1FFF and length < size:
            return "raw"
    return None


def sop_class_name(uid: str) -> str:
    """pydicom's name of a SOP class UID, or the UID itself when unknown."""
    from pydicom.uid import UID

    name = UID(uid).name if uid else ""
    return name if name and name != uid else uid


def is_image_sop_class(uid: str | None) -> bool:
    """True for image storage SOP classes and for unknown (private) classes; False for SR, KO, PR, RT, SEG, PDF...

    Decided from pydicom's UID dictionary: a known storage class is an image when its name
    says "Image Storage" (CR, DX, secondary capture, OPT, RT Image, ...). RT Dose, RT Plan,
    structured reports, key objects, presentation states, segmentations, encapsulated
    documents, waveforms and the media storage directory (DICOMDIR) are not. A missing or
    unknown UID is not held against the file (the pixel-data check decides).
    """
    if not uid:
        return True
    if uid in _IMAGE_CLASSES_EXTRA:
        return True
    from pydicom.uid import UID

    name = UID(uid).name
    if not name or name == uid:
        return True
    return "Image Storage" in name


def is_native_transfer_syntax(uid: str | None) -> bool:
    """Uncompressed (native) little/big endian, implicit or explicit VR."""
    return (uid or "1.2.840.10008.1.2") in _NATIVE


def is_lossy_transfer_syntax(uid: str | None) -> bool:
    """True for transfer syntaxes that allow lossy compression (JPEG baseline, JPEG 2000 .91, ...)."""
    return bool(uid) and uid in _LOSSY
