# Copyright (c) medfuse contributors
# Licensed under the Apache License, Version 2.0
"""IntensityNormalize / IntensityNormalized: percentile clip + [0, 1], mean/std, standardisation."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from monai.data import MetaTensor

from medfuse.transforms import IntensityNormalize, IntensityNormalized


def _with_outliers():
    rng = np.random.default_rng(0)
    img = rng.uniform(0.3, 0.5, size=(1, 64, 64)).astype(np.float32)
    img[0, 0, 0] = 50.0  # a burnt-in marker
    img[0, 0, 1] = -20.0
    return img


def test_percentiles_clip_outliers():
    img = _with_outliers()
    out = IntensityNormalize((1, 99))(img)
    assert isinstance(out, np.ndarray) and out.dtype == np.float32
    assert out.min() == 0.0 and out.max() == 1.0
    bulk = out[0].ravel()[2:]
    assert np.percentile(bulk, 90) - np.percentile(bulk, 10) > 0.6  # the bulk uses the range
    plain_minmax = (img - img.min()) / (img.max() - img.min())
    assert np.percentile(plain_minmax[0].ravel()[2:], 90) - np.percentile(plain_minmax[0].ravel()[2:], 10) < 0.01


@pytest.mark.parametrize("img", [np.full((1, 8, 8), 0.7, np.float32), np.zeros((2, 4, 4), np.float32)])
def test_constant_image_no_nan(img):
    out = IntensityNormalize()(img)
    assert np.isfinite(out).all() and np.all(out == 0)


def test_tensor_and_metatensor_types_kept():
    t = MetaTensor(torch.rand(1, 16, 16) * 100, meta={"filename_or_obj": "x"})
    out = IntensityNormalize((0, 100))(t)
    assert isinstance(out, MetaTensor) and out.meta["filename_or_obj"] == "x" and out.dtype == torch.float32
    assert torch.isclose(out.min(), torch.tensor(0.0)) and torch.isclose(out.max(), torch.tensor(1.0))


def test_mean_std_per_channel():
    img = np.stack([np.full((4, 4), 0.5), np.full((4, 4), 0.25), np.full((4, 4), 1.0)]).astype(np.float32)
    out = IntensityNormalize(None, mean=(0.5, 0.25, 0.5), std=(0.5, 0.25, 0.25))(img)
    np.testing.assert_allclose(out[:, 0, 0], [0.0, 0.0, 2.0], atol=1e-6)


def test_standardize():
    out = IntensityNormalize((0.5, 99.5), standardize=True)(_with_outliers())
    assert abs(float(out.mean())) < 1e-5 and abs(float(out.std()) - 1.0) < 1e-4


def test_channel_wise():
    img = np.stack([np.linspace(0, 1, 16), np.linspace(10, 20, 16)]).reshape(2, 4, 4).astype(np.float32)
    out = IntensityNormalize((0, 100), channel_wise=True)(img)
    np.testing.assert_allclose(out[0], out[1], atol=1e-6)
    joint = IntensityNormalize((0, 100))(img)
    assert joint[0].max() < 0.1


def test_dictionary_version():
    d = {"image": _with_outliers(), "label": 1}
    out = IntensityNormalized("image", percentiles=(1, 99))(d)
    assert out["image"].max() == 1.0 and out["label"] == 1


@pytest.mark.parametrize(
    "kwargs",
    [dict(percentiles=(50, 10)), dict(percentiles=(-1, 99)), dict(percentiles=(1, 101)), dict(std=0.0),
     dict(standardize=True, mean=0.5)],
)
def test_bad_arguments(kwargs):
    with pytest.raises(ValueError):
        IntensityNormalize(**kwargs)
