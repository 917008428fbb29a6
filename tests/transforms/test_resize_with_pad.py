# Copyright (c) medfuse contributors
# Licensed under the Apache License, Version 2.0
"""ResizeWithPad / ResizeWithPadd: aspect kept, content centred, masks nearest, invertible."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from monai.data import MetaTensor

from medfuse.transforms import ResizeWithPad, ResizeWithPadd, fit_size


@pytest.mark.parametrize(
    "shape, size, expected",
    [((100, 50), 224, (224, 112)), ((50, 100), 224, (112, 224)), ((224, 224), 224, (224, 224)),
     ((1955, 1841), 224, (224, 211)), ((28, 28), 224, (224, 224)), ((100, 100), (64, 128), (64, 64)),
     ((1000, 3), 10, (10, 1))],
)
def test_fit_size(shape, size, expected):
    assert fit_size(shape, size) == expected


def _content_box(img: torch.Tensor) -> tuple[int, int, int, int]:
    nz = torch.nonzero(img[0] > 0)
    return int(nz[:, 0].min()), int(nz[:, 0].max()), int(nz[:, 1].min()), int(nz[:, 1].max())


@pytest.mark.parametrize("mode", ["auto", "bilinear", "area", "nearest"])
def test_tall_image_centred(mode):
    out = ResizeWithPad(224, mode=mode)(torch.ones(1, 100, 50))
    assert tuple(out.shape) == (1, 224, 224)
    assert _content_box(out) == (0, 223, 56, 167)  # 112 columns of content, 56 padded on each side
    assert float(out[0, :, 56:168].min()) == pytest.approx(1.0)


def test_wide_image_and_pad_value():
    out = ResizeWithPad(64, pad_value=-1.0)(torch.ones(2, 30, 60))
    assert tuple(out.shape) == (2, 64, 64)
    assert torch.all(out[:, :16] == -1) and torch.all(out[:, 48:] == -1) and torch.all(out[:, 16:48] == 1)


def test_non_square_target():
    out = ResizeWithPad((64, 128))(torch.ones(1, 100, 100))
    assert tuple(out.shape) == (1, 64, 128)
    assert _content_box(out) == (0, 63, 32, 95)


def test_aspect_ratio_of_a_disc_is_kept():
    yy, xx = np.mgrid[:120, :60]
    disc = ((yy - 60) ** 2 + (xx - 30) ** 2 <= 25**2).astype(np.float32)  # circle of radius 25
    out = ResizeWithPad(240, mode="nearest")(torch.from_numpy(disc)[None])[0]
    rows = torch.nonzero(out.sum(1)).flatten()
    cols = torch.nonzero(out.sum(0)).flatten()
    height, width = rows.max() - rows.min() + 1, cols.max() - cols.min() + 1
    assert abs(int(height) - int(width)) <= 2  # still a circle, not an ellipse


def test_numpy_input_and_metatensor_affine():
    out = ResizeWithPad(32)(np.ones((1, 16, 8), np.float32))
    assert isinstance(out, torch.Tensor) and tuple(out.shape) == (1, 32, 32) and out.dtype == torch.float32
    img = MetaTensor(torch.ones(1, 16, 8))
    out = ResizeWithPad(32)(img)
    assert out.affine[0, 0].item() == pytest.approx(0.5)  # each output pixel is half an input pixel


def test_inverse_restores_shape():
    img = MetaTensor(torch.rand(1, 90, 40))
    t = ResizeWithPad(64)
    out = t(img)
    assert out.applied_operations[-1]["class"] == "ResizeWithPad"
    back = t.inverse(out)
    assert tuple(back.shape) == (1, 90, 40) and not back.applied_operations
    assert torch.allclose(back.affine, img.affine, atol=1e-5)


class TestDictionary:
    @pytest.fixture
    def item(self):
        image = torch.zeros(1, 120, 80)
        image[0, 30:90, 20:60] = torch.linspace(0.2, 1.0, 40)
        mask = torch.zeros(1, 120, 80)
        mask[0, 30:90, 20:60] = 1.0
        return {"image": MetaTensor(image), "mask": MetaTensor(mask), "label": 4}

    def test_mask_nearest_and_aligned(self, item):
        out = ResizeWithPadd(["image", "mask"], size=96, mode=["bilinear", "nearest"])(item)
        assert out["image"].shape == out["mask"].shape == (1, 96, 96)
        assert set(torch.unique(out["mask"]).tolist()) == {0.0, 1.0}
        inside = out["mask"][0] > 0
        assert float(out["image"][0][inside].min()) > 0.1  # the mask covers the bright rectangle
        assert float(out["image"][0][~inside].max()) < 0.6  # only blurred edges outside it
        assert out["label"] == 4

    def test_inverse(self, item):
        t = ResizeWithPadd(["image", "mask"], size=96, mode=("auto", "nearest"))
        back = t.inverse(t(item))
        assert back["image"].shape == (1, 120, 80)
        assert torch.equal(back["mask"], item["mask"])

    def test_per_key_pad_value(self, item):
        out = ResizeWithPadd(["image", "mask"], size=96, pad_value=(0.0, 255.0), mode="nearest")(item)
        assert float(out["mask"][0, 0, 0]) == 255.0 and float(out["image"][0, 0, 0]) == 0.0


@pytest.mark.parametrize("size", [0, -3, (10,), (10, 0), True])
def test_bad_size(size):
    with pytest.raises(ValueError, match="size"):
        ResizeWithPad(size)


def test_bad_input_rank():
    with pytest.raises(ValueError, match=r"\(C, H, W\)"):
        ResizeWithPad(32)(torch.ones(1, 8, 8, 8))
