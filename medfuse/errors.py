# Copyright (c) medfuse contributors
# Licensed under the Apache License, Version 2.0
"""Exceptions for problems with the user's input (as opposed to bugs in medfuse).

The command line prints these as one line (``medfuse <command>: error: ...``) and exits
with status 1; every message names the offending file or item and says how to fix it.
"""

__all__ = [
    "MedfuseError", "ManifestError", "DataError", "DicomDecodeError", "TrainingError", "CheckpointError", "input_cause",
]


class MedfuseError(Exception):
    """Base class for errors caused by the input, reported to the user as one line."""


class DataError(MedfuseError, ValueError):
    """An input file or folder is missing, unreadable or laid out unexpectedly."""


class ManifestError(MedfuseError, ValueError):
    """A manifest fails validation. ``problems`` holds every problem found, one string each."""

    def __init__(self, problems, path=None):
        if isinstance(problems, str):
            problems = [problems]
        self.problems = list(problems)
        self.path = path
        where = f"{path}: " if path else ""
        head = self.problems[0] if self.problems else "invalid manifest"
        more = f" (and {len(self.problems) - 1} more problem(s))" if len(self.problems) > 1 else ""
        super().__init__(f"{where}{head}{more}")


class DicomDecodeError(DataError):
    """A DICOM file cannot be read or its pixel data cannot be decoded."""


class TrainingError(MedfuseError, RuntimeError):
    """Training cannot go on or its result cannot be trusted (non-finite steps in a row, non-finite weights)."""


class CheckpointError(MedfuseError, RuntimeError):
    """A checkpoint (``model.pt``, ``resume.pt``, initial weights) is missing, truncated, corrupt or non-finite."""


def input_cause(exc: BaseException | None, kind: type = MedfuseError) -> BaseException | None:
    """The first ``kind`` (a :class:`MedfuseError` by default) in ``exc`` and its chain of causes, or ``None``.

    MONAI wraps what a transform or a config expression raises (``RuntimeError("applying transform ...")``,
    ``RuntimeError("Failed to evaluate ...")``); the medfuse error that names the file is further down the chain.
    """
    seen: set[int] = set()
    while exc is not None and id(exc) not in seen:
        if isinstance(exc, kind):
            return exc
        seen.add(id(exc))
        exc = exc.__cause__ or (None if exc.__suppress_context__ else exc.__context__)
    return None
