# Copyright (c) medfuse contributors
# Licensed under the Apache License, Version 2.0
"""Fixtures of the bundle tests: ``demo_data`` comes from ``tests/conftest.py`` (one session-wide set)."""

from __future__ import annotations

import pytest


@pytest.fixture(scope="session")
def det_data(tmp_path_factory):
    """Manifest of a tiny synthetic detection demo (24 images of 64 px, classes opacity / nodule)."""
    from medfuse.data.demo.detection import make_demo_detection

    return make_demo_detection(tmp_path_factory.mktemp("det_demo"), 24, image_size=64)
