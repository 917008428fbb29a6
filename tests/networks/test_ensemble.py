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


class _ConvMember(nn.Module):
    def __init__(self, seed: int) -> None:
        super().__init__()
        torch.manual_seed(seed)
        self.features = nn.Sequential(nn.Conv2d(1, 4, 3, padding=1), nn.ReLU())
        self.head = nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(4, 2))
        self.cam_layer = "features"

    def forward(self, x):
        return self.head(self.features(x))


def test_ensemble_cam_is_the_mean_of_the_members_maps_for_the_ensemble_class():
    from medfuse.visualize import compute_cam

    members = [_ConvMember(s) for s in (0, 1, 2)]
    net = EnsembleNet(members).eval()
    assert net.cam_layer == "members.0.features"
    x = torch.rand(3, 1, 12, 10)
    with torch.no_grad():
        cls = net(x).argmax(1).tolist()
    raw = torch.stack([compute_cam(m, x, target_layer="features", class_index=cls, normalize=False) for m in members]).mean(0)
    cam = compute_cam(net, x, target_layer=net.cam_layer)  # the ensemble's own layer: every member, averaged
    assert cam.shape == (3, 1, 12, 10)
    lo = raw.amin(dim=(2, 3), keepdim=True)
    expected = (raw - lo) / (raw.amax(dim=(2, 3), keepdim=True) - lo).clamp_min(1e-12)
    torch.testing.assert_close(cam, expected, atol=1e-5, rtol=1e-4)
    torch.testing.assert_close(compute_cam(net, x, target_layer="auto"), cam)
    torch.testing.assert_close(compute_cam(net, x, target_layer="features"), cam)  # a member's layer name
    torch.testing.assert_close(compute_cam(net, x, target_layer=net.cam_layer, normalize=False), raw)
    # a member's layer named in full is that layer's Grad-CAM of the ensemble's output, not the mean
    alone = compute_cam(net, x, target_layer="members.1.features", class_index=cls)
    assert alone.shape == cam.shape and not torch.allclose(alone, cam, atol=1e-3)
