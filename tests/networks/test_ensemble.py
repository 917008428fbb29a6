# Copyright (c) medfuse contributors
# Licensed under the Apache License, Version 2.0
"""EnsembleNet (mean of probabilities, uncertainty decomposition, TorchScript) and per-item seeded MC dropout."""

from __future__ import annotations

import pytest
import torch
import torch.nn as nn

from medfuse.networks.nets import EnsembleNet
from medfuse.networks.uncertainty import mc_dropout_outputs, mc_dropout_predict


def _member(seed: int, dropout: float = 0.0) -> nn.Module:
    torch.manual_seed(seed)
    return nn.Sequential(nn.Flatten(), nn.Linear(16, 8), nn.ReLU(), nn.Dropout(dropout), nn.Linear(8, 3)).eval()


def test_ensemble_averages_probabilities_and_decomposes_uncertainty():
    net = EnsembleNet([_member(0), _member(1), _member(2)]).eval()
    x = torch.randn(5, 1, 4, 4)
    with torch.no_grad():
        member_p = torch.stack([m(x).softmax(1) for m in net.members])
        torch.testing.assert_close(net(x).exp(), member_p.mean(0))
    out = net.predict_with_uncertainty(x, samples=0)
    p = member_p.mean(0)
    h = -(p * p.log()).sum(1)
    torch.testing.assert_close(out["entropy"], h)
    torch.testing.assert_close(out["mutual_info_members"], h - (-(member_p * member_p.log()).sum(2)).mean(0))
    torch.testing.assert_close(out["mutual_info"], out["mutual_info_members"])  # no dropout sampling
    disagree = (member_p.argmax(2) != p.argmax(1)).float().mean(0)
    torch.testing.assert_close(out["member_disagreement"], disagree)
    # identical members: no disagreement, no mutual information
    same = EnsembleNet(member=_member(0), num_members=3)
    o = same.predict_with_uncertainty(x, samples=0)
    assert float(o["mutual_info_members"].abs().max()) < 1e-6 and float(o["member_disagreement"].max()) == 0.0
    with pytest.raises(ValueError, match="at least two members"):
        EnsembleNet([_member(0)])


def test_ensemble_with_mc_dropout_adds_the_members_mutual_information():
    net = EnsembleNet([_member(0, 0.5), _member(1, 0.5)])
    out = mc_dropout_outputs(net, torch.randn(4, 1, 4, 4), samples=8, seed=3)
    assert torch.all(out["mutual_info"] >= out["mutual_info_members"] - 1e-6)
    assert float((out["mutual_info"] - out["mutual_info_members"]).max()) > 0  # dropout adds epistemic spread


def test_ensemble_is_scriptable_with_the_same_outputs():
    net = EnsembleNet([_member(0), _member(1)]).eval()
    x = torch.randn(2, 1, 4, 4)
    scripted = torch.jit.script(net)
    torch.testing.assert_close(scripted(x), net(x))


def test_seeded_mc_dropout_is_reproducible_per_item_in_any_batch():
    model = _member(0, 0.5)
    x = torch.randn(6, 1, 4, 4)
    full = mc_dropout_predict(model, x, samples=5, seed=7).probs
    again = mc_dropout_predict(model, x, samples=5, seed=7).probs
    part = mc_dropout_predict(model, x[[4, 1]], samples=5, seed=7).probs  # other batch, other order
    torch.testing.assert_close(full, again)
    torch.testing.assert_close(part, full[[4, 1]])
    other = mc_dropout_predict(model, x, samples=5, seed=8).probs
    assert not torch.allclose(other, full)  # the seed matters
