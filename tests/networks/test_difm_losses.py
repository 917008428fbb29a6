# Copyright (c) medfuse contributors
# Licensed under the Apache License, Version 2.0
"""MultiScaleBoundaryLoss and DIFMLoss: zero when perfect, positive and differentiable otherwise, targets."""

from __future__ import annotations

import pytest
import torch
from monai.losses import DiceCELoss
from monai.networks.utils import one_hot

from medfuse.networks import DIFMLoss, MultiScaleBoundaryLoss


def _target(b=2, h=16, w=20, classes=3):
    y = torch.zeros(b, 1, h, w, dtype=torch.long)
    y[:, :, 3:10, 4:12] = 1
    y[:, :, 6:14, 10:18] = 2
    return y


def _perfect_logits(y, classes=3):
    return (one_hot(y, classes, dim=1) * 40.0 - 20.0).float()  # +20 on the true class, -20 elsewhere


@pytest.mark.parametrize("include_background", [False, True])
def test_boundary_zero_when_perfect(include_background):
    y = _target()
    loss = MultiScaleBoundaryLoss(include_background=include_background)
    assert float(loss(_perfect_logits(y), y)) < 1e-5


def test_boundary_positive_differentiable_and_targets_agree():
    torch.manual_seed(0)
    y = _target()
    logits = torch.randn(2, 3, 16, 20, requires_grad=True)
    loss = MultiScaleBoundaryLoss(scales=(1, 2, 4))
    value = loss(logits, y)
    assert float(value.detach()) > 0.01
    value.backward()
    assert logits.grad is not None and float(logits.grad.abs().sum()) > 0
    torch.testing.assert_close(loss(logits, one_hot(y, 3, dim=1)), value)
    torch.testing.assert_close(loss(logits, y.float()), value)
    # per-image values average to the mean (equal-size images)
    per_image = MultiScaleBoundaryLoss(reduction="none")(logits, y)
    assert per_image.shape == (2,)
    torch.testing.assert_close(per_image.mean(), value)


def test_boundary_formula_one_scale():
    # a vertical step of height 1 in one channel: Sobel |gx| = 4 on the two columns beside the step
    y = torch.zeros(1, 1, 4, 6, dtype=torch.long)
    y[..., 3:] = 1
    flat = torch.zeros(1, 2, 4, 6)  # uniform prediction p = 0.5 everywhere: no edges
    value = MultiScaleBoundaryLoss(scales=(1,))(flat, y)
    expected = (2 * 4 * (4.0 - 1e-4)) / 24  # 8 pixels with |G(y) - G(p)| = 4 - 1e-4 of 24
    torch.testing.assert_close(value, torch.tensor(expected), rtol=1e-4, atol=1e-5)


def test_boundary_bad_input():
    loss = MultiScaleBoundaryLoss()
    with pytest.raises(ValueError, match="5-D"):
        loss(torch.randn(1, 2, 8, 8, 8), torch.zeros(1, 1, 8, 8, 8))
    with pytest.raises(ValueError, match=r"values \[0, 5\] outside 0..2"):
        loss(torch.randn(1, 3, 8, 8), torch.tensor([0, 5]).repeat(32).reshape(1, 1, 8, 8))
    with pytest.raises(ValueError, match="smaller than the largest scale 4"):
        loss(torch.randn(1, 3, 3, 8), torch.zeros(1, 1, 3, 8))
    for kwargs in ({"scales": (0, 2)}, {"scales": ()}, {"reduction": "max"}):
        with pytest.raises(ValueError):
            MultiScaleBoundaryLoss(**kwargs)


def test_difm_loss_parts_and_perfect():
    torch.manual_seed(0)
    y = _target()
    loss = DIFMLoss()
    assert float(loss(_perfect_logits(y), y)) < 1e-4
    logits = torch.randn(2, 3, 16, 20, requires_grad=True)
    value = loss(logits, y)
    value.backward()
    assert float(logits.grad.abs().sum()) > 0
    parts = loss.last
    assert set(parts) == {"ce", "dice", "boundary", "total"}
    torch.testing.assert_close(value.detach(), torch.tensor(0.3 * parts["ce"] + 0.7 * parts["dice"] + parts["boundary"]))
    # the Dice + CE part is MONAI's DiceCELoss
    reference = DiceCELoss(include_background=False, to_onehot_y=True, softmax=True, lambda_ce=0.3, lambda_dice=0.7)
    torch.testing.assert_close(
        torch.tensor(0.3 * parts["ce"] + 0.7 * parts["dice"]), reference(logits.detach(), y), rtol=1e-5, atol=1e-6
    )
    torch.testing.assert_close(loss(logits, one_hot(y, 3, dim=1)), value)


def test_difm_loss_bad_arguments():
    with pytest.raises(ValueError, match="ce_weight must be >= 0, got -1"):
        DIFMLoss(ce_weight=-1)
    with pytest.raises(ValueError, match="all 0"):
        DIFMLoss(0, 0, 0)
    with pytest.raises(ValueError, match="2D logits"):
        DIFMLoss()(torch.randn(1, 2, 4, 4, 4), torch.zeros(1, 1, 4, 4, 4))
