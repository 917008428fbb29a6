# Copyright (c) medfuse contributors
# Licensed under the Apache License, Version 2.0
"""Shared fixtures: the real-data folder (skipped with a reason when absent), the tiny demo data, thread limits."""

from __future__ import annotations

import os

import pytest
import torch

from medfuse.utils.paths import shared_data_dir

# Two cores, two pytest workers: one intra-op thread per worker avoids oversubscription.
torch.set_num_threads(int(os.environ.get("MEDFUSE_TEST_THREADS", "1")))


@pytest.fixture(scope="session")
def shared_data():
    """Path to ``../shared/data`` (or ``$MEDFUSE_SHARED_DATA``); skips the test when absent."""
    root = shared_data_dir()
    if root is None:
        pytest.skip("real data not found: set MEDFUSE_SHARED_DATA or place shared/data beside the checkout")
    return root


def require(path):
    """Skip with a reason when a specific real-data file or folder is missing."""
    if not os.path.exists(path):
        pytest.skip(f"real data file missing: {path}")
    return path


@pytest.fixture(scope="session")
def demo_data(tmp_path_factory):
    """Manifests of a tiny demo data set (64 px; PNG and a few CXR DICOM files): ``{"cxr": Path, ...}``.

    Made once per session and shared by every test folder; tests must not write into it.
    """
    from medfuse.data.demo import make_demo_data

    out = tmp_path_factory.mktemp("demo") / "data"
    return make_demo_data(out, n_cxr=24, n_oct=24, image_size=64, seed=0, dicom=True)
