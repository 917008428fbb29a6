# Copyright (c) medfuse contributors
# Licensed under the Apache License, Version 2.0
"""What a bundle accepts: DICOM tags checked before an input is scored.

A bundle's ``configs/metadata.json`` declares, under ``"accepts"``, the DICOM attribute values its model was
trained for, keyword -> allowed values::

    "accepts": {
        "Modality": ["CR", "DX", "DR"],
        "BodyPartExamined": ["CHEST", null],
        "SOPClassUID": "image",
        "PhotometricInterpretation": ["MONOCHROME1", "MONOCHROME2"]
    }

``null`` in a list allows the attribute to be absent (or empty); ``"image"`` for ``SOPClassUID`` means any
image storage class (:func:`medfuse.dicom.sniff.is_image_sop_class`). Values compare case-insensitively, with
surrounding spaces stripped. Inputs that are not DICOM (PNG, JPEG, NIfTI) carry no tags: they pass this check,
and the out-of-distribution score is what can still flag them.

:func:`check_accepts` answers ``"ok"`` or the first reason an input is refused, as ``<what>_not_accepted:<value>``
(``modality_not_accepted:MR``, ``body_part_not_accepted:HIP``, ``sop_class_not_accepted:<uid>``,
``photometric_not_accepted:RGB``; ``absent`` when the attribute is missing), or ``unreadable_dicom:<error>`` when
the header cannot be parsed. Only the header is read (``stop_before_pixels``).
"""

from __future__ import annotations

import os
from typing import Any, Mapping

from medfuse.dicom.sniff import is_image_sop_class, sniff_dicom

__all__ = ["ACCEPT_REASONS", "OK", "check_accepts", "validate_accepts", "accepts_text"]

OK = "ok"
#: reason prefix of each DICOM keyword a bundle may restrict (other keywords use their own name, lower case)
ACCEPT_REASONS = {
    "Modality": "modality",
    "BodyPartExamined": "body_part",
    "SOPClassUID": "sop_class",
    "PhotometricInterpretation": "photometric",
}
_HEAD = 132 + 256


def validate_accepts(accepts: Any, where: str = "accepts") -> dict:
    """``accepts`` checked and normalised: keyword -> tuple of upper-case allowed values (``None``: absent ok),
    or the string ``"image"`` for ``SOPClassUID``.

    Raises:
        ValueError: for a keyword pydicom does not know, or a value that is neither a list nor ``"image"``.
    """
    if accepts is None:
        return {}
    if not isinstance(accepts, Mapping):
        raise ValueError(f"{where} must be a mapping of DICOM keyword -> allowed values, got {type(accepts).__name__}")
    from pydicom.datadict import tag_for_keyword

    out: dict = {}
    for keyword, allowed in accepts.items():
        if tag_for_keyword(str(keyword)) is None:
            raise ValueError(f"{where}: {keyword!r} is not a DICOM keyword (e.g. Modality, BodyPartExamined)")
        if keyword == "SOPClassUID" and allowed == "image":
            out[keyword] = "image"
        elif isinstance(allowed, (list, tuple)) and allowed:
            out[keyword] = tuple(None if v is None else str(v).strip().upper() for v in allowed)
        else:
            raise ValueError(f"{where}#{keyword}: give a non-empty list of allowed values (null: absent), got {allowed!r}")
    return out


def accepts_text(accepts: Any) -> str:
    """One line naming what ``accepts`` allows (for messages and docs)."""
    parts = []
    for keyword, allowed in validate_accepts(accepts).items():
        if allowed == "image":
            parts.append(f"{keyword} an image storage class")
        else:
            parts.append(f"{keyword} in {'/'.join('absent' if v is None else v for v in allowed)}")
    return "; ".join(parts) or "anything"


def _value(ds: Any, keyword: str) -> str | None:
    value = ds.get(keyword, None)
    if value is None:
        return None
    if not isinstance(value, (str, bytes)) and hasattr(value, "__iter__"):  # multi-valued: the first value decides
        value = next(iter(value), "")
    text = value.decode("ascii", "replace") if isinstance(value, bytes) else str(value)
    return text.strip().upper() or None


def _reason(keyword: str, value: str | None) -> str:
    what = ACCEPT_REASONS.get(keyword, keyword.lower())
    shown = (value or "absent").replace(",", " ").replace("\n", " ")
    return f"{what}_not_accepted:{shown}"


def check_accepts(path_or_dataset: Any, accepts: Any) -> str:
    """``"ok"`` when ``path_or_dataset`` is accepted by ``accepts`` (see the module docstring), else why not.

    Args:
        path_or_dataset: a file path (DICOM or not: a file that is not DICOM by content passes, it has no tags),
            or a ``pydicom`` data set.
        accepts: the bundle's ``"accepts"`` mapping; ``None`` or empty accepts everything.

    Returns:
        ``"ok"``, ``"<what>_not_accepted:<value>"`` (the first attribute that fails, in ``accepts`` order) or
        ``"unreadable_dicom:<error type>"``.

    Examples::

        >>> check_accepts("mr_head.dcm", {"Modality": ["CR", "DX", "DR"]})
        'modality_not_accepted:MR'
    """
    rules = validate_accepts(accepts)
    if not rules:
        return OK
    ds = path_or_dataset
    if isinstance(path_or_dataset, (str, bytes, os.PathLike)):
        path = os.fsdecode(path_or_dataset)
        try:
            size = os.path.getsize(path)
            with open(path, "rb") as f:
                head = f.read(_HEAD)
        except OSError as e:
            return f"unreadable:{type(e).__name__}"
        if sniff_dicom(head, size) is None:
            return OK
        import pydicom

        try:
            ds = pydicom.dcmread(path, stop_before_pixels=True, force=True)
        except Exception as e:  # noqa: BLE001 - any parse failure means the header cannot be trusted
            return f"unreadable_dicom:{type(e).__name__}"
    for keyword, allowed in rules.items():
        value = _value(ds, keyword)
        if allowed == "image":
            if value is None or not is_image_sop_class(value):
                return _reason(keyword, value)
        elif value not in allowed:
            return _reason(keyword, value)
    return OK
