# Copyright (c) medfuse contributors
# Licensed under the Apache License, Version 2.0
"""Segmentation metrics on real lung-field masks (Shenzhen / Montgomery, ../shared/data; skipped when absent).

A mask compared with itself after a 4x down- and up-sampling (what a coarse segmentation network returns)
must score a high Dice and a small HD95, and the two lungs' union must agree with MONAI on the one-hot form.
"""

from __future__ import annotations

import numpy as np
import pytest

from medfuse.evaluation.segmentation import segmentation_metrics
from tests.conftest import require

pytestmark = pytest.mark.realdata


def _mask(path) -> np.ndarray:
    from PIL import Image

    return (np.asarray(Image.open(path).convert("L")) > 127).astype(np.int64)


def test_coarse_masks_of_real_lungs(shared_data):
    folder = require(shared_data / "lung_seg_cxr" / "masks")
    files = sorted(folder.glob("CHNCXR_*.png"))[:4] + sorted(folder.glob("MCUCXR_*.png"))[:2]
    assert files, f"no masks in {folder}"
    truth = np.stack([_mask(f) for f in files])
    coarse = truth[:, ::4, ::4].repeat(4, axis=1).repeat(4, axis=2)[:, : truth.shape[1], : truth.shape[2]]
    m = segmentation_metrics(coarse, truth, class_names=["lung"], case_ids=[f.stem for f in files])
    assert m["n"] == len(files)
    for case in m["per_case"]:
        assert case["lung"]["dice"] > 0.97, case
        assert 0 < case["lung"]["hd95"] <= 4.0, case  # blocks of 4 px move boundaries by at most 3 px
    # Dice by hand on the first case
    a, b = coarse[0].astype(bool), truth[0].astype(bool)
    assert m["per_case"][0]["lung"]["dice"] == pytest.approx(2 * (a & b).sum() / (a.sum() + b.sum()), rel=1e-6)
    assert m["per_case"][0]["lung"]["iou"] == pytest.approx((a & b).sum() / (a | b).sum(), rel=1e-5)
