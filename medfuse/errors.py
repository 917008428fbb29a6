# Copyright (c) medfuse contributors
# Licensed under the Apache License, Version 2.0
"""Exceptions for problems with the user's input (as opposed to bugs in medfuse).

The command line prints these as one line (``medfuse <command>: error: ...``) and exits
with status 1; every message names the offending file or item and says how to fix it.
"""

__all__ = [
    "MedfuseError", "ManifestError", "DataError", "DicomDecodeError", "TrainingError", "CheckpointError", "input_cause",
    "input_error_line", "install_error_hook",
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


def input_error_line(exc: BaseException) -> str | None:
    """The one line that reports ``exc`` when an input error caused it, else ``None``.

    Found in the chain of causes (:func:`input_cause`) or, for an error re-raised from a ``DataLoader`` worker
    (torch re-raises it by type and message, the cause object is lost), in the worker's traceback text.
    """
    cause = input_cause(exc)
    if cause is not None:
        return " ".join(str(cause).split())
    import re

    seen: set[int] = set()
    while exc is not None and id(exc) not in seen:
        seen.add(id(exc))
        found = re.findall(r"medfuse\.errors\.\w+: (.+)", str(exc))
        if found:
            return found[-1].strip()
        exc = exc.__cause__ or exc.__context__
    return None


def install_error_hook() -> None:
    """Make an uncaught medfuse input error end the process with ONE line on stderr, the last thing printed.

    ``python -m monai.bundle run`` lets an error of a config expression escape wrapped in MONAI's
    ``RuntimeError("Failed to evaluate ...")`` with hundreds of lines of traceback. The task base configs call
    this from their first ``initialize`` step (:func:`medfuse.workflows.setup_run`); other exceptions keep the
    full traceback, and ``MEDFUSE_TRACEBACK=1`` keeps it for input errors too (printed before the line).
    """
    import os
    import sys

    previous = sys.excepthook
    if getattr(previous, "_medfuse", False):
        return

    def hook(kind, value, tb):
        line = input_error_line(value) if isinstance(value, BaseException) else None
        if line is None:
            return previous(kind, value, tb)
        if os.environ.get("MEDFUSE_TRACEBACK"):
            previous(kind, value, tb)
        sys.stdout.flush()
        print(f"error: {line}", file=sys.stderr, flush=True)

    hook._medfuse = True  # type: ignore[attr-defined]
    sys.excepthook = hook
