# Copyright (c) medfuse contributors
# Licensed under the Apache License, Version 2.0
from __future__ import annotations

import math

import pytest
import torch
import torch.nn as nn

from medfuse.networks.uncertainty import (
    enable_mc_dropout,
    expected_entropy,
    mc_dropout_predict,
    mutual_information,
    predictive_entropy,
)


def test_entropy_and_mutual_information_by_hand():
    # two passes that disagree completely: total uncertainty ln 2, all of it epistemic
    disagree = torch.tensor([[[1.0, 0.0]], [[0.0, 1.0]]])  # (T=2, B=1, K=2)
    assert predictive_entropy(disagree.mean(0)).item() == pytest.approx(math.log(2))
    assert expected_entropy(disagree).item() == pytest.approx(0.0, abs=1e-6)
    assert mutual_information(disagree).item() == pytest.approx(math.log(2))
    # identical passes: mutual information 0, entropy of the common prediction
    p = torch.tensor([0.2, 0.3, 0.5])
    same = p.expand(4, 1, 3)
    h = -(0.2 * math.log(0.2) + 0.3 * math.log(0.3) + 0.5 * math.log(0.5))
    assert predictive_entropy(same.mean(0)).item() == pytest.approx(h, rel=1e-6)
    assert mutual_information(same).item() == pytest.approx(0.0, abs=1e-6)
    # a mixed case: p1 = (0.9, 0.1), p2 = (0.5, 0.5); mean (0.7, 0.3)
    mixed = torch.tensor([[[0.9, 0.1]], [[0.5, 0.5]]])
    h_mean = -(0.7 * math.log(0.7) + 0.3 * math.log(0.3))
    h_each = (-(0.9 * math.log(0.9) + 0.1 * math.log(0.1)) + math.log(2)) / 2
    assert mutual_information(mixed).item() == pytest.approx(h_mean - h_each, rel=1e-5)
    assert mutual_information(mixed).item() > 0


def test_multilabel_entropy_is_per_label_binary():
    probs = torch.tensor([[0.5, 1.0, 0.1]])
    ent = predictive_entropy(probs, multi_label=True)
    expected = [math.log(2), 0.0, -(0.1 * math.log(0.1) + 0.9 * math.log(0.9))]
    assert ent.shape == (1, 3)
    assert ent[0].tolist() == pytest.approx(expected, abs=1e-6)
    samples = torch.tensor([[[0.0, 0.5, 0.1]], [[1.0, 0.5, 0.1]]])
    mi = mutual_information(samples, multi_label=True)
    assert mi[0].tolist() == pytest.approx([math.log(2), 0.0, 0.0], abs=1e-6)


class Tiny(nn.Module):
    def __init__(self, p=0.5):
        super().__init__()
        self.body = nn.Sequential(nn.Linear(6, 16), nn.BatchNorm1d(16), nn.ReLU())
        self.drop = nn.Dropout(p)
        self.fc = nn.Linear(16, 3)

    def forward(self, x):
        return self.fc(self.drop(self.body(x)))


def test_only_dropout_trains_and_modes_are_restored():
    torch.manual_seed(0)
    model = Tiny()
    model.train()
    model.body[1].eval()  # a mixed state must come back as it was
    before = {name: m.training for name, m in model.named_modules()}
    stats = model.body[1].running_mean.clone()
    with enable_mc_dropout(model):
        assert model.drop.training and not model.body[1].training and not model.training
        model(torch.randn(1, 6))  # batch size 1 with BatchNorm: only works in eval mode
    assert {name: m.training for name, m in model.named_modules()} == before
    torch.testing.assert_close(model.body[1].running_mean, stats)


def test_mc_dropout_predict():
    torch.manual_seed(0)
    model = Tiny().eval()
    x = torch.randn(1, 6)
    res = mc_dropout_predict(model, x, samples=16, return_samples=True)
    assert res.probs.shape == (1, 3) and res.entropy.shape == (1,) and res.mutual_info.shape == (1,)
    assert res.sample_probs.shape == (16, 1, 3)
    assert not torch.allclose(res.sample_probs[0], res.sample_probs[1])
    torch.testing.assert_close(res.probs, res.sample_probs.mean(0))
    assert float(res.mutual_info) > 0
    torch.testing.assert_close(res.entropy, res.expected_entropy + res.mutual_info)
    assert not model.training and not model.drop.training

    multi = mc_dropout_predict(model, x, samples=4, multi_label=True)
    assert multi.entropy.shape == (1, 3) and multi.mutual_info.shape == (1, 3)
    assert multi.sample_probs is None


def test_no_dropout_gives_deterministic_passes():
    model = Tiny(p=0.0).eval()
    x = torch.randn(3, 6)
    with pytest.warns(UserWarning, match="no dropout layer with p > 0"):
        res = mc_dropout_predict(model, x, samples=3)
    with torch.no_grad():
        torch.testing.assert_close(res.probs, torch.softmax(model(x), dim=-1))
    torch.testing.assert_close(res.mutual_info, torch.zeros(3))


@pytest.mark.parametrize("samples", [0, -1, 2.5, True])
def test_bad_samples(samples):
    with pytest.raises(ValueError, match=f"got {samples!r}"):
        mc_dropout_predict(Tiny(), torch.randn(2, 6), samples=samples)
