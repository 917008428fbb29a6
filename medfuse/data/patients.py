# Copyright (c) medfuse contributors
# Licensed under the Apache License, Version 2.0
"""Patient identifiers from the file names of public chest X-ray and OCT datasets.

Public datasets rarely ship a patient table, but several encode the patient in the file
name. Splitting by patient needs that identifier, so :func:`patient_id_from_name` knows the
naming of the datasets medfuse converts (rules are tried in order on the file name without
its extension):

==========================  ==================================  =================
dataset                     file name                           patient id
==========================  ==================================  =================
Kermany CXR, pneumonia      ``person123_bacteria_456.jpeg``     ``"123"``
                            ``person1_virus_6.jpeg``            ``"1"``
                            ``person447_virus_921_1.jpeg``      ``"447"``
Kermany CXR, normal         ``IM-0115-0001.jpeg``               ``"0115"``
                            ``NORMAL2-IM-0587-0001-0002.jpeg``  ``"0587"``
Kermany OCT2017             ``CNV-1016042-1.jpeg``              ``"1016042"``
Shenzhen                    ``CHNCXR_0001_0.png``               ``"CHNCXR_0001"``
Montgomery                  ``MCUCXR_0001_0.png``               ``"MCUCXR_0001"``
NIH ChestX-ray14            ``00000001_000.png``                ``"00000001"``
anything else               ``COVID-1.png``                     ``None``
==========================  ==================================  =================

Decisions:

* ``NORMAL2-IM-0587-...`` and ``IM-0587-...`` are given the same patient id ``"0587"``.
  Kermany's normal images come in two numbered series and nothing published says whether
  the numbers are shared; 211 numbers occur in both series of the training folder. Grouping
  them can only make a split coarser, never leaky, so it is the safe choice.
* The pneumonia series (``person<N>``) and the normal series (``IM-<NNNN>``) are kept apart:
  ``person115`` gives ``"115"`` while ``IM-0115`` gives ``"0115"`` (the zero padding is kept).
* In OCT2017 the number is the patient: ``CNV-1016042-1`` and ``DRUSEN-1016042-1`` are one
  patient, so the disease prefix is not part of the id.
* ``None`` means "unknown": callers treat each such file as its own patient (grouping by
  identical bytes still applies) and report how many files had no id.

A dataset with another naming scheme can give its own regular expression with a named group
``patient`` (``--patient-regex`` on the command line); it replaces the built-in rules.
"""

from __future__ import annotations

import os
import re
from typing import Pattern

from medfuse.errors import DataError

__all__ = ["PATIENT_RULES", "compile_patient_regex", "patient_id_from_name", "PatientIdParser"]

#: ``(dataset, regex)`` tried in order on the file stem; each has a named group ``patient``.
PATIENT_RULES: tuple[tuple[str, Pattern[str]], ...] = (
    ("kermany_cxr_pneumonia", re.compile(r"^person(?P<patient>\d+)_(?:bacteria|virus)_\d+(?:_\d+)*$", re.IGNORECASE)),
    ("kermany_cxr_normal", re.compile(r"^(?:NORMAL\d*-)?IM-(?P<patient>\d+)(?:-\d+)+$", re.IGNORECASE)),
    ("kermany_oct", re.compile(r"^(?:CNV|DME|DRUSEN|NORMAL)-(?P<patient>\d+)-\d+$", re.IGNORECASE)),
    ("shenzhen_montgomery", re.compile(r"^(?P<patient>(?:CHN|MCU)CXR_\d+)_[01]$", re.IGNORECASE)),
    ("nih_chestxray14", re.compile(r"^(?P<patient>\d{8})_\d{3}$")),
)


def _stem(name: str | os.PathLike) -> str:
    base = os.path.basename(os.fspath(name))
    stem, _ = os.path.splitext(base)
    return stem


def compile_patient_regex(regex: str | Pattern[str]) -> Pattern[str]:
    """Compile a user's patient regular expression and check it has a ``patient`` group.

    Raises:
        DataError: when the expression does not compile or has no ``(?P<patient>...)`` group.
    """
    if isinstance(regex, re.Pattern):
        pattern = regex
    else:
        try:
            pattern = re.compile(regex)
        except re.error as e:
            raise DataError(f"--patient-regex {regex!r} is not a valid regular expression ({e})") from e
    if "patient" not in pattern.groupindex:
        raise DataError(
            f"--patient-regex {pattern.pattern!r} has no named group 'patient'; "
            r"write it like 'person(?P<patient>\d+)_'"
        )
    return pattern


def patient_id_from_name(name: str | os.PathLike, regex: str | Pattern[str] | None = None) -> str | None:
    """Patient id encoded in a file name, or ``None`` when the naming is not recognised.

    Args:
        name: a file name or path; only the base name without its extension is looked at.
        regex: optional expression with a named group ``patient``, searched in the stem
            (``re.search``); when given, it replaces the built-in rules of this module.

    Examples::

        >>> patient_id_from_name("train/PNEUMONIA/person123_bacteria_456.jpeg")
        '123'
        >>> patient_id_from_name("NORMAL2-IM-0587-0001-0002.jpeg")
        '0587'
        >>> patient_id_from_name("CHNCXR_0001_0.png")
        'CHNCXR_0001'
        >>> patient_id_from_name("COVID-17.png") is None
        True
    """
    stem = _stem(name)
    if regex is not None:
        m = compile_patient_regex(regex).search(stem)
        return m.group("patient") if m and m.group("patient") else None
    for _, rule in PATIENT_RULES:
        m = rule.match(stem)
        if m:
            return m.group("patient")
    return None


class PatientIdParser:
    """Callable ``path -> patient id or None`` with either the built-in rules or one regex.

    Args:
        regex: expression with a named group ``patient`` (searched in the file stem), or
            ``None`` (default) for the built-in rules of :data:`PATIENT_RULES`.

    Raises:
        DataError: when ``regex`` is invalid or lacks the ``patient`` group.
    """

    def __init__(self, regex: str | Pattern[str] | None = None):
        self.pattern = None if regex is None or regex == "" else compile_patient_regex(regex)

    def __call__(self, name: str | os.PathLike) -> str | None:
        return patient_id_from_name(name, self.pattern)

    def describe(self) -> str:
        """One line for provenance: which rule set is used."""
        if self.pattern is not None:
            return f"regex {self.pattern.pattern!r} on the file stem"
        return "built-in rules: " + ", ".join(name for name, _ in PATIENT_RULES) + " (else one patient per file)"
