# Copyright (c) medfuse contributors
# Licensed under the Apache License, Version 2.0
"""Where the real data used by tests and benchmarks lives, and file names made safe."""

from __future__ import annotations

import os
import re
from pathlib import Path

__all__ = ["checkout_env", "safe_file_name", "shared_data_dir"]

_REPO_ROOT = Path(__file__).resolve().parents[2]
_UNSAFE = re.compile(r"[^A-Za-z0-9._+-]+")


def safe_file_name(text: str) -> str:
    """``text`` as one portable file-name part: runs of other characters than ``A-Za-z0-9._+-`` become ``_``,
    leading / trailing dots and underscores are dropped, and an empty result becomes ``"x"``.

    Examples::

        >>> safe_file_name("COVID-19 / viral"), safe_file_name("..")
        ('COVID-19_viral', 'x')
    """
    return _UNSAFE.sub("_", str(text)).strip("._") or "x"


def shared_data_dir() -> Path | None:
    """The folder of real medical images beside the checkout, or ``None`` when absent.

    ``MEDFUSE_SHARED_DATA`` wins when set; otherwise ``../shared/data`` next to the
    repository root is used.
    """
    env = os.environ.get("MEDFUSE_SHARED_DATA")
    candidates = [Path(env)] if env else [_REPO_ROOT.parent / "shared" / "data"]
    for c in candidates:
        if c.is_dir():
            return c
    return None


def checkout_env(**extra: str) -> dict[str, str]:
    """``os.environ`` for a child process that must import this checkout's ``medfuse``: the repository root first
    on ``PYTHONPATH``, then whatever ``PYTHONPATH`` already held (packages installed with ``pip --target``, as on
    a GPU machine whose image lacks MONAI), then ``extra``.

    Examples::

        >>> checkout_env(OMP_NUM_THREADS="1")["PYTHONPATH"].split(os.pathsep)[0] == str(_REPO_ROOT)
        True
    """
    kept = [p for p in os.environ.get("PYTHONPATH", "").split(os.pathsep) if p and p != str(_REPO_ROOT)]
    return {**os.environ, "PYTHONPATH": os.pathsep.join([str(_REPO_ROOT), *kept]), **extra}
