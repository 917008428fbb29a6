# Copyright (c) medfuse contributors
# Licensed under the Apache License, Version 2.0
"""IntensityNormalize on MONAI's NormalizeIntensity: the same output as the hand-written version it replaced, and
the MONAI transforms it does not use really differ (see its docstring and
``benchmarks/compare_intensity_normalize.py``)."""

from __future__ import annotations

import warnings

import numpy as np
import pytest
import torch
from monai.transforms import ScaleIntensityRangePercentiles

from medfuse.data.demo import cxr_phantom, oct_bscan
from medfuse.transforms import IntensityNormalize, IntensityNormalized, LoadXray
from tests.conftest import require


def _reference(img: np.ndarray, percentiles=(0.5, 99.5), mean=None, std=None, standardize=False, channel_wise=False):
    """The hand-written IntensityNormalize before the mean/std step went to MONAI (numpy only)."""

    def scale(x):
        if percentiles is not None:
            finite = x[np.isfinite(x)]
            if finite.size == 0:
                return np.zeros_like(x)
            lo, hi = np.percentile(finite, percentiles)
            x = np.clip(x, lo, hi)
            x = (x - lo) / (hi - lo) if hi > lo else np.zeros_like(x)
        if standardize:
            m, s = float(np.mean(x)), float(np.std(x))
            x = (x - m) / s if s > 0 else x - m
        return x

    x = np.asarray(img, dtype=np.float32)
    out = (np.stack([scale(c) for c in x]) if x.ndim > 1 else scale(x)) if channel_wise else scale(x)
    shape = (-1,) + (1,) * (x.ndim - 1)
    if mean is not None:
        out = out - np.asarray(mean, dtype=np.float32).reshape(shape if np.ndim(mean) else ())
    if std is not None:
        out = out / np.asarray(std, dtype=np.float32).reshape(shape if np.ndim(std) else ())
    return out.astype(np.float32)


def _arrays():
    rng = np.random.default_rng(1)
    cxr, _lungs = cxr_phantom(0, 96)  # (H, W) image and lung mask
    return {
        "demo cxr": np.asarray(cxr, np.float32)[None],
        "demo oct": np.asarray(oct_bscan(1, 96), np.float32)[None],
        "random 3-channel": rng.normal(size=(3, 40, 32)).astype(np.float32) * 50 + 7,
        "random 1-channel": rng.uniform(-3, 900, size=(1, 33, 65)).astype(np.float32),
    }


SETTINGS = [
    dict(),
    dict(percentiles=(1, 99), channel_wise=True),
    dict(percentiles=(0.5, 99.5), standardize=True),
    dict(percentiles=None, mean=0.5),
    dict(percentiles=None, std=0.25),
    dict(percentiles=(0, 100), mean=0.5, std=0.25),
    dict(percentiles=(0.5, 99.5), mean=(0.485, 0.456, 0.406), std=(0.229, 0.224, 0.225)),
    dict(percentiles=None, mean=(0.5,), std=(0.2,)),
]


@pytest.mark.parametrize("kwargs", SETTINGS, ids=lambda k: ",".join(f"{a}={b}" for a, b in k.items()) or "default")
@pytest.mark.parametrize("name", list(_arrays()))
def test_same_as_the_hand_written_version(name, kwargs):
    img = _arrays()[name]
    if np.ndim(kwargs.get("mean")) and len(kwargs["mean"]) == 3 and img.shape[0] != 3:
        img = np.repeat(img[:1], 3, axis=0)
    before = img.copy()
    new = IntensityNormalize(**kwargs)(img)
    assert isinstance(new, np.ndarray) and new.dtype == np.float32 and new.shape == img.shape
    np.testing.assert_allclose(new, _reference(img, **kwargs), rtol=0, atol=1e-6)
    np.testing.assert_array_equal(img, before)  # the input is never written (NormalizeIntensity can do that)
    t = torch.as_tensor(img.copy())
    out_t = IntensityNormalize(**kwargs)(t)
    assert isinstance(out_t, torch.Tensor) and out_t.dtype == torch.float32
    np.testing.assert_allclose(out_t.numpy(), new, rtol=0, atol=1e-6)
    np.testing.assert_array_equal(t.numpy(), img)


def test_dictionary_version_same_keys_and_values():
    img = _arrays()["random 3-channel"]
    d = {"image": img, "label": 1}
    out = IntensityNormalized("image", percentiles=(1, 99), mean=(0.485, 0.456, 0.406), std=(0.229, 0.224, 0.225))(d)
    assert set(out) == {"image", "label"} and out["label"] == 1
    np.testing.assert_allclose(
        out["image"], _reference(img, (1, 99), (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)), rtol=0, atol=1e-6
    )


@pytest.mark.realdata
@pytest.mark.parametrize("rel", ["dicom_cxr/RG1_UNCR.dcm", "oct_kermany_samples/NORMAL/NORMAL-5246808-1.jpeg"])
def test_same_on_real_images(shared_data, rel):
    img = np.asarray(LoadXray()(require(str(shared_data / rel))), np.float32)
    for kwargs in SETTINGS[:3] + [dict(percentiles=(0.5, 99.5), mean=0.5, std=0.25)]:
        np.testing.assert_allclose(IntensityNormalize(**kwargs)(img), _reference(img, **kwargs), rtol=0, atol=1e-6)


@pytest.mark.parametrize(
    "img",
    [np.pad(np.full((1, 2, 2), 5.0, np.float32), ((0, 0), (0, 30), (0, 30))),  # percentiles equal: 0 and 0
     np.array([[[0.1, np.nan], [0.5, 0.9]]], np.float32)],
    ids=["equal-percentiles", "nan-pixel"],
)
def test_scale_intensity_range_percentiles_differs_where_documented(img):
    """Why the percentile step is not ScaleIntensityRangePercentiles (see IntensityNormalize's docstring)."""
    ours = IntensityNormalize((0.5, 99.5))(img)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        theirs = np.asarray(ScaleIntensityRangePercentiles(0.5, 99.5, 0.0, 1.0, clip=True)(torch.as_tensor(img)))
    assert np.nanmax(ours) <= 1.0 and np.isfinite(ours[np.isfinite(img)]).all()
    assert np.isnan(theirs).all() or np.nanmax(theirs) > 1.0
