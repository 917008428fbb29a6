# Copyright (c) medfuse contributors
# Licensed under the Apache License, Version 2.0
"""GlobalSpatialAttentionLoss: value, parts, the map's pull towards target_fraction, arguments."""

from __future__ import annotations

import pytest
import torch
import torch.nn as nn

from medfuse.networks import GlobalSpatialAttention, GlobalSpatialAttentionLoss, GSANet
from medfuse.networks.losses import GlobalSpatialAttentionLoss as FromLosses


def tiny_model():
    net = nn.Sequential(nn.Conv2d(1, 4, 3, padding=1), nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten(),
                        nn.Linear(4, 3))
    return GSANet(net, map_size=(4, 4))


def batch(seed=0):
    gen = torch.Generator().manual_seed(seed)
    return torch.randn(4, 1, 12, 12, generator=gen), torch.tensor([0, 2, 1, 2])


def test_export():
    assert FromLosses is GlobalSpatialAttentionLoss


def test_reg_weight_zero_is_the_base_loss():
    model = tiny_model()
    x, y = batch()
    logits = model(x)
    loss = GlobalSpatialAttentionLoss(model, reg_weight=0.0)
    value = loss(logits, y)
    assert torch.equal(value, nn.CrossEntropyLoss()(logits, y))
    assert set(loss.last) == {"base", "reg", "map_mean"}
    assert loss.last["base"] == pytest.approx(float(value.detach()))


@pytest.mark.parametrize("mode", ["logit_map", "image_basis"])
def test_value_and_parts(mode):
    basis = torch.randn(3, 4, 4, generator=torch.Generator().manual_seed(1)) if mode == "image_basis" else None
    gsa = GlobalSpatialAttention(map_size=(4, 4), mode=mode, basis=basis)
    with torch.no_grad():
        for p in gsa.parameters():
            p.add_(torch.randn(p.shape, generator=torch.Generator().manual_seed(2)))
    logits, y = torch.randn(4, 3), torch.tensor([0, 2, 1, 2])
    base = nn.CrossEntropyLoss(weight=torch.tensor([1.0, 2.0, 0.5]))
    loss = GlobalSpatialAttentionLoss(gsa, base=base, reg_weight=0.3, target_fraction=0.2, entropy_weight=0.05)
    value = loss(logits, y)
    reg = gsa.regularization(target_fraction=0.2, entropy_weight=0.05)
    torch.testing.assert_close(value, base(logits, y) + 0.3 * reg)
    assert loss.last["reg"] == pytest.approx(float(reg.detach()))
    assert loss.last["base"] == pytest.approx(float(base(logits, y)))
    assert loss.last["map_mean"] == pytest.approx(float(gsa.get_map().detach().mean()))
    assert all(isinstance(v, float) for v in loss.last.values())
    # a reference to the block, not a submodule: the loss owns only base's state
    assert loss.gsa is gsa and list(loss.parameters()) == [] and list(loss.state_dict()) == ["base.weight"]


@pytest.mark.parametrize("init_logit, target_fraction", [(3.0, 0.5), (-3.0, 0.5), (0.0, 0.1)])
def test_gradient_step_moves_the_map_mean_towards_target(init_logit, target_fraction):
    model = GSANet(tiny_model().net, map_size=(4, 4), init_logit=init_logit)
    x, y = batch()
    loss = GlobalSpatialAttentionLoss(model, reg_weight=1.0, target_fraction=target_fraction)
    before = float(model.get_map().detach().mean())
    optimizer = torch.optim.SGD([model.gsa.z], lr=50.0)
    loss(model(x), y).backward()
    optimizer.step()
    after = float(model.get_map().detach().mean())
    assert loss.last["map_mean"] == pytest.approx(before)
    assert abs(after - target_fraction) < abs(before - target_fraction)


def test_gradient_step_on_the_image_basis_moves_the_map_mean():
    basis = torch.rand(3, 4, 4, generator=torch.Generator().manual_seed(0))
    gsa = GlobalSpatialAttention(map_size=(4, 4), mode="image_basis", basis=basis)
    loss = GlobalSpatialAttentionLoss(gsa, base=lambda logits, target: logits.sum() * 0.0, reg_weight=1.0)
    before = float(gsa.get_map().detach().mean())
    loss(torch.zeros(1, requires_grad=True), None).backward()
    assert float(gsa.w.grad.abs().sum()) > 0 and float(gsa.b.grad.abs().sum()) > 0
    torch.optim.SGD(gsa.parameters(), lr=50.0).step()
    assert abs(float(gsa.get_map().detach().mean()) - 0.5) < abs(before - 0.5)


def test_entropy_term_pushes_positions_to_zero_or_one():
    gsa = GlobalSpatialAttention(map_size=(1, 2))
    with torch.no_grad():
        gsa.z.copy_(torch.tensor([[[[0.5, -0.5]]]]))  # mean exactly 0.5: only the entropy term has a gradient
    loss = GlobalSpatialAttentionLoss(gsa, base=lambda a, b: torch.zeros(()), reg_weight=1.0, entropy_weight=1.0)
    loss(None, None).backward()
    torch.optim.SGD([gsa.z], lr=1.0).step()
    z = gsa.z.detach()
    assert float(z[0, 0, 0, 0]) > 0.5 and float(z[0, 0, 0, 1]) < -0.5


@pytest.mark.parametrize(
    "gsa, kwargs, match",
    [
        (nn.Linear(2, 2), {}, "GlobalSpatialAttention block or a network with one as .gsa, got Linear"),
        ("gsa", {}, "got str"),
        (None, {"base": "cross_entropy"}, "base must be a callable .*got str"),
        (None, {"reg_weight": -0.1}, "reg_weight must be >= 0, got -0.1"),
        (None, {"target_fraction": 1.2}, r"target_fraction must be in \[0, 1\], got 1.2"),
        (None, {"entropy_weight": -1.0}, "entropy_weight must be >= 0, got -1.0"),
        (None, {"reg_weight": float("nan")}, "got nan"),
    ],
)
def test_ill_arguments(gsa, kwargs, match):
    with pytest.raises(ValueError, match=match):
        GlobalSpatialAttentionLoss(GlobalSpatialAttention() if gsa is None else gsa, **kwargs)
