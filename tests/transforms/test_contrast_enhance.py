# Copyright (c) medfuse contributors
# Licensed under the Apache License, Version 2.0
"""clahe / ContrastEnhance / ContrastEnhanced: local contrast up, no seams, no NaNs, new key for DIFM."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from monai.data import MetaTensor

from medfuse.transforms import ContrastEnhance, ContrastEnhanced, clahe


def _low_contrast(size=128, seed=0):
    rng = np.random.default_rng(seed)
    xx = np.mgrid[:size, :size][1]
    return (0.5 + 0.03 * rng.standard_normal((size, size)) + 0.05 * xx / size).astype(np.float32)


def _local_std(img, block=16):
    h, w = img.shape
    return float(img[: h // block * block, : w // block * block].reshape(h // block, block, w // block, block).std(axis=(1, 3)).mean())


@pytest.mark.parametrize("tiles, clip_limit", [(8, 2.0), (4, 3.0), ((8, 4), 2.0), (8, None)])
def test_local_contrast_increases(tiles, clip_limit):
    img = _low_contrast()
    out = clahe(img, tiles=tiles, clip_limit=clip_limit)
    assert out.shape == img.shape and out.dtype == np.float32
    assert np.isfinite(out).all() and 0.0 <= out.min() and out.max() <= 1.0
    assert _local_std(out) > 1.5 * _local_std(img)


def test_clip_limit_limits_enhancement():
    img = _low_contrast()
    weak, strong, unlimited = clahe(img, clip_limit=1.2), clahe(img, clip_limit=4.0), clahe(img, clip_limit=None)
    assert _local_std(weak) < _local_std(strong) <= _local_std(unlimited) + 1e-6


def test_single_tile_without_clip_is_histogram_equalisation():
    rng = np.random.default_rng(1)
    img = (rng.random((64, 64)) ** 3).astype(np.float32)  # skewed histogram
    out = clahe(img, tiles=1, clip_limit=None, nbins=1024)
    order = np.argsort(img.ravel())
    assert np.all(np.diff(out.ravel()[order]) >= -1e-6)  # monotonic mapping
    assert abs(float(out.mean()) - 0.5) < 0.02  # roughly uniform output
    assert abs(float(img.mean()) - 0.5) > 0.2


def test_no_seams_between_tiles():
    ramp = np.tile(np.linspace(0.3, 0.7, 128, dtype=np.float32), (128, 1))
    out = clahe(ramp, tiles=8, clip_limit=2.0)
    assert np.abs(np.diff(out, axis=1)).max() < 0.02  # bilinear blending of tile mappings
    assert np.abs(np.diff(out, axis=0)).max() < 1e-6  # rows are identical in, identical out


@pytest.mark.parametrize("shape", [(1, 1), (3, 5), (7, 9), (37, 61)])
def test_small_and_odd_shapes(shape):
    img = np.random.default_rng(2).random(shape).astype(np.float32)
    out = clahe(img, tiles=8)
    assert out.shape == shape and np.isfinite(out).all()


def test_constant_image_stays_constant():
    out = clahe(np.full((40, 50), 0.3, np.float32))
    assert np.isfinite(out).all() and float(out.max() - out.min()) == 0.0


def test_nan_input_gives_finite_output():
    img = _low_contrast(32)
    img[3, 4] = np.nan
    assert np.isfinite(clahe(img)).all()


def test_value_range():
    img = _low_contrast()
    out = clahe(img * 1000, value_range=(0, 1000))
    np.testing.assert_allclose(out, clahe(img) * 1000, rtol=1e-4, atol=1e-2)  # same mapping, other units
    assert 0 <= out.min() and out.max() <= 1000


def test_array_transform_per_channel_and_types():
    img = MetaTensor(torch.from_numpy(np.stack([_low_contrast(64, 0), _low_contrast(64, 1)])), meta={"filename_or_obj": "a"})
    out = ContrastEnhance(tiles=4)(img)
    assert isinstance(out, MetaTensor) and tuple(out.shape) == (2, 64, 64) and out.meta["filename_or_obj"] == "a"
    np.testing.assert_allclose(out[1].numpy(), clahe(img[1].numpy(), tiles=4), atol=1e-6)
    assert isinstance(ContrastEnhance()(img.numpy()), np.ndarray)


def test_dictionary_writes_new_key():
    image = torch.from_numpy(_low_contrast(64))[None]
    d = {"image": image.clone(), "label": 0}
    out = ContrastEnhanced("image", output_keys="image_enhanced")(d)
    assert torch.equal(out["image"], image)  # the original is kept
    assert out["image_enhanced"].shape == image.shape and not torch.equal(out["image_enhanced"], image)
    in_place = ContrastEnhanced("image")({"image": image.clone()})
    assert torch.allclose(in_place["image"], out["image_enhanced"])


@pytest.mark.parametrize(
    "kwargs", [dict(clip_limit=0), dict(clip_limit=-1.0), dict(tiles=0), dict(tiles=(2, 2, 2)), dict(nbins=1), dict(value_range=(1, 0))]
)
def test_bad_arguments(kwargs):
    with pytest.raises(ValueError):
        ContrastEnhance(**kwargs)


def test_bad_shapes():
    with pytest.raises(ValueError, match=r"\(C, H, W\)"):
        ContrastEnhance()(np.zeros((8, 8), np.float32))
    with pytest.raises(ValueError, match=r"\(C, H, W, D\).*\(1, 4, 4, 4, 2\)"):
        ContrastEnhance()(np.zeros((1, 4, 4, 4, 2), np.float32))
    with pytest.raises(ValueError, match="output_keys"):
        ContrastEnhanced(["a", "b"], output_keys=["c"])


def test_volume_slice_by_slice():
    # (C, H, W, D): each channel's (H, W) slice along the last axis is enhanced on its own
    slices = [_low_contrast(32, seed) for seed in range(3)]
    vol = np.stack([np.stack(slices, axis=-1), np.stack(slices[::-1], axis=-1)])  # (2, 32, 32, 3)
    out = ContrastEnhance(tiles=4)(torch.from_numpy(vol))
    assert isinstance(out, torch.Tensor) and tuple(out.shape) == (2, 32, 32, 3) and out.dtype == torch.float32
    for c in range(2):
        for k in range(3):
            np.testing.assert_allclose(out[c, ..., k].numpy(), clahe(vol[c, ..., k], tiles=4), atol=1e-6)
    d = ContrastEnhanced("image", output_keys="image_enhanced", tiles=4)({"image": MetaTensor(torch.from_numpy(vol))})
    assert torch.allclose(d["image_enhanced"], out) and torch.equal(d["image"], torch.from_numpy(vol))
