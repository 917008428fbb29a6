# Copyright (c) medfuse contributors
# Licensed under the Apache License, Version 2.0
"""Boxes: coordinate order, letterboxing of boxes and its inverse, detection presets (synthetic and real DICOM)."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from monai.transforms import Compose
from PIL import Image

from medfuse.transforms.boxes import (
    BoxesToMonaid,
    ResizeWithPadBoxd,
    detection_eval_transforms,
    detection_train_transforms,
    monai_to_xyxy,
    xyxy_to_monai,
)
from medfuse.transforms.dicom import LoadDicomXrayd
from medfuse.transforms.spatial import ResizeWithPadd
from tests.conftest import require


def test_coordinate_order():
    xyxy = [[10, 20, 30, 60]]
    m = xyxy_to_monai(xyxy)
    np.testing.assert_array_equal(m, [[20, 10, 60, 30]])
    np.testing.assert_array_equal(monai_to_xyxy(m), xyxy)
    assert xyxy_to_monai([]).shape == (0, 4)
    t = xyxy_to_monai(torch.tensor([[1.0, 2.0, 3.0, 4.0]]))
    assert t.tolist() == [[2.0, 1.0, 4.0, 3.0]]
    with pytest.raises(ValueError, match="boxes must be"):
        xyxy_to_monai([[1, 2, 3]])


def test_resize_with_pad_boxes_and_inverse():
    # 200 rows x 100 columns -> 64 x 32, 16 columns of padding on the left
    xf = Compose([BoxesToMonaid("boxes", "box_labels"), ResizeWithPadd("image", 64), ResizeWithPadBoxd("boxes")])
    item = {"image": torch.rand(1, 200, 100), "boxes": [[50.0, 0.0, 100.0, 200.0], [0, 10, 10, 30]], "box_labels": [0, 1]}
    out = xf(item)
    torch.testing.assert_close(out["boxes"].as_tensor(), torch.tensor([[0.0, 32.0, 64.0, 48.0], [3.2, 16.0, 9.6, 19.2]]))
    back = ResizeWithPadBoxd("boxes").inverse(out)
    torch.testing.assert_close(back["boxes"], torch.tensor([[0.0, 50.0, 200.0, 100.0], [10.0, 0.0, 30.0, 10.0]]))
    with pytest.raises(ValueError, match="no ResizeWithPad trace"):
        ResizeWithPadBoxd("boxes")({"image": torch.rand(1, 8, 8), "boxes": torch.zeros(0, 4)})


@pytest.fixture(scope="module")
def png_items(tmp_path_factory):
    root = tmp_path_factory.mktemp("det")
    rng = np.random.default_rng(0)
    img = (rng.random((120, 90)) * 255).astype(np.uint8)
    Image.fromarray(img).save(root / "a.png")
    return [
        {"image": str(root / "a.png"), "boxes": [[10, 20, 50, 70], [60, 80, 90, 120]], "box_labels": [0, 1]},
        {"image": str(root / "a.png"), "boxes": [], "box_labels": []},
    ]


def test_presets(png_items):
    ev = detection_eval_transforms(image_size=64)
    tr = detection_train_transforms(image_size=64, affine_prob=1.0, in_channels=3)
    tr.set_random_state(0)
    for item in png_items:
        e = ev(dict(item))
        assert e["image"].shape == (1, 64, 64)
        assert e["boxes"].shape == (len(item["boxes"]), 4) and e["box_labels"].dtype == torch.int64
        t = tr(dict(item))
        assert t["image"].shape == (3, 64, 64) and "boxes_mask" not in t
        assert t["boxes"].shape[0] == t["box_labels"].shape[0] <= len(item["boxes"])
        if t["boxes"].numel():
            assert bool((t["boxes"] >= 0).all() and (t["boxes"] <= 64).all())
            assert bool((t["boxes"][:, 2:] > t["boxes"][:, :2]).all())
        assert float(t["image"].min()) >= 0.0 and float(t["image"].max()) <= 1.0
    # eval boxes: 120 rows x 90 columns -> 64 x 48, 8 columns of padding; row = y, column = x + pad
    e = ev(dict(png_items[0]))
    s = 64 / 120
    torch.testing.assert_close(e["boxes"][0], torch.tensor([20 * s, 10 * s + 8, 70 * s, 50 * s + 8]))
    with pytest.raises(ValueError, match="image_size must be a positive int, got 0"):
        detection_eval_transforms(image_size=0)


@pytest.mark.realdata
def test_dicom_right_edge_box_survives(shared_data):
    path = require(shared_data / "dicom_cxr" / "RG1_UNCR.dcm")
    item = {"image": str(path), "boxes": [[1700.0, 900.0, 1841.0, 1100.0]], "box_labels": [0]}
    load = Compose([LoadDicomXrayd("image"), BoxesToMonaid()])
    loaded = load(item)
    rows, cols = loaded["image"].shape[1:]
    assert (rows, cols) == (1955, 1841)  # rows first, not transposed
    boxes = loaded["boxes"]
    assert boxes.tolist() == [[900.0, 1700.0, 1100.0, 1841.0]]
    xf = Compose([ResizeWithPadd("image", 64), ResizeWithPadBoxd("boxes")])
    out = xf(loaded)
    b = out["boxes"][0]
    content_cols = round(1841 * 64 / 1955)
    pad = (64 - content_cols) // 2
    assert float(b[3]) == pytest.approx(pad + content_cols, abs=1e-3)  # still on the right edge of the content
    assert float(b[1]) > 32  # right half of the image
    back = xf.inverse(out)
    np.testing.assert_allclose(monai_to_xyxy(back["boxes"]).numpy(), [[1700.0, 900.0, 1841.0, 1100.0]], atol=1.0)
    assert tuple(back["image"].shape[1:]) == (1955, 1841)
