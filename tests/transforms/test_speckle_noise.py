# Copyright (c) medfuse contributors
# Licensed under the Apache License, Version 2.0
"""RandSpeckleNoise / RandSpeckleNoised: multiplicative noise, randomness only through self.R."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from medfuse.transforms import RandSpeckleNoise, RandSpeckleNoised


def test_deterministic_with_seed():
    img = torch.rand(1, 16, 16)
    a = RandSpeckleNoise(prob=1.0, std=0.2).set_random_state(7)(img)
    b = RandSpeckleNoise(prob=1.0, std=0.2).set_random_state(7)(img)
    c = RandSpeckleNoise(prob=1.0, std=0.2).set_random_state(8)(img)
    assert torch.equal(a, b) and not torch.equal(a, c)


def test_multiplicative():
    img = torch.zeros(1, 8, 8)
    img[0, :4] = 0.8
    out = RandSpeckleNoise(prob=1.0, std=0.3, sample_std=False).set_random_state(0)(img)
    assert torch.all(out[0, 4:] == 0)  # dark background stays dark
    rel = out[0, :4] / 0.8 - 1
    assert 0.15 < float(rel.std()) < 0.45


def test_prob_zero_is_identity_and_numpy_supported():
    img = np.random.default_rng(0).random((1, 8, 8)).astype(np.float32)
    np.testing.assert_array_equal(RandSpeckleNoise(prob=0.0)(img), img)
    out = RandSpeckleNoise(prob=1.0).set_random_state(1)(img)
    assert isinstance(out, np.ndarray) and out.shape == img.shape


def test_dictionary_same_noise_for_all_keys():
    img = torch.rand(1, 8, 8)
    out = RandSpeckleNoised(["a", "b"], prob=1.0, std=0.2).set_random_state(3)({"a": img, "b": img.clone(), "label": 1})
    assert torch.equal(out["a"], out["b"]) and not torch.equal(out["a"], img) and out["label"] == 1
    same = RandSpeckleNoised(["a", "b"], prob=1.0, std=0.2).set_random_state(3)({"a": img, "b": img.clone()})
    assert torch.equal(same["a"], out["a"])


def test_negative_std():
    with pytest.raises(ValueError, match="std"):
        RandSpeckleNoise(std=-0.1)
