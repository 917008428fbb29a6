# Copyright (c) medfuse contributors
# Licensed under the Apache License, Version 2.0
"""Where the real data used by tests and benchmarks lives, and file names made safe."""

from __future__ import annotations

import os
import re
from pathlib import Path

__all__ = ["safe_file_name", "shared_data_dir"]

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
