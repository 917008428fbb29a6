# Copyright (c) medfuse contributors
# Licensed under the Apache License, Version 2.0
"""Fixtures of the bundle tests: tiny synthetic demo data, made once per session."""

from __future__ import annotations

import pytest


@pytest.fixture(scope="session")
def demo_data(tmp_path_factory):
    """Manifests of a tiny demo data set (64 px; PNG and a few CXR DICOM files): ``{"cxr": Path, ...}``."""
    from medfuse.data.demo import make_demo_data

    out = tmp_path_factory.mktemp("bundle_demo") / "data"
    return make_demo_data(out, n_cxr=24, n_oct=24, image_size=64, seed=0, dicom=True)


@pytest.fixture(scope="session")
def det_data(tmp_path_factory):
    """Manifest of a tiny synthetic detection demo (24 images of 64 px, classes opacity / nodule)."""
    from medfuse.data.demo_detection import make_demo_detection

    return make_demo_detection(tmp_path_factory.mktemp("det_demo"), n=24, image_size=64)
