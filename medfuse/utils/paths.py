# Copyright (c) medfuse contributors
# Licensed under the Apache License, Version 2.0
"""Where the real data used by tests and benchmarks lives."""

from __future__ import annotations

import os
from pathlib import Path

__all__ = ["shared_data_dir"]

_REPO_ROOT = Path(__file__).resolve().parents[2]


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
