# Copyright (c) medfuse contributors
# Licensed under the Apache License, Version 2.0
"""Lung-masked Grad-CAM of a multi-output network: zero outside the dilated predicted mask, CAM mass inside the
lungs, per-image batch behaviour, model state untouched, overlays."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from medfuse.networks import MultiOutputUNet
from medfuse.visualize.cam import compute_cam, dilate_mask, restrict_cam
from medfuse.visualize.lung_cam import (
    ClassLogitsView,
    cam_mass_inside,
    lung_masked_cam,
    predicted_lung_mask,
    save_lung_cam_overlay,
)


class _KnownSegmentation(MultiOutputUNet):
    """The real network with its segmentation replaced by ``image > 0.5`` (logits +-(x - 0.5)), so that the
    predicted lung mask of a test is known; the class logits and the CAM come from the real graph."""

    def forward_all(self, x):
        seg, cls = super().forward_all(x)
        known = torch.cat([0.5 - x[:, :1], x[:, :1] - 0.5], dim=1) * 10
        return known + 0 * seg, cls


@pytest.fixture(scope="module")
def known():
    torch.manual_seed(0)
    return _KnownSegmentation(features=(4, 4, 8, 8, 16, 4), num_classes=3).eval()


@pytest.fixture(scope="module")
def net():
    torch.manual_seed(0)
    return MultiOutputUNet(features=(4, 4, 8, 8, 16, 4), num_classes=3).eval()


def test_masked_cam_is_zero_outside_the_dilated_predicted_mask(known):
    net = known
    x = torch.rand(3, 1, 32, 32) * 0.4
    x[0, :, 4:20, 6:14] += 0.5
    x[1, :, 10:28, 16:30] += 0.5
    x[2, :, 2:30, 2:30] += 0.5
    res = lung_masked_cam(net, x, dilate=2)
    with torch.no_grad():
        seg, cls = net.forward_all(x)
    lung = x > 0.5
    assert torch.equal(res.lung_mask, lung)
    assert (~res.region).sum() > 0 and res.region.sum() > lung.sum()
    assert torch.equal(res.region, dilate_mask(lung, 2))
    assert res.masked_cam[~res.region].abs().max() == 0
    assert res.cam.shape == res.masked_cam.shape == (3, 1, 32, 32)
    assert torch.equal(res.class_index, cls.argmax(1))
    torch.testing.assert_close(res.probs, torch.softmax(cls, 1))
    # the masked map is exactly the shared restriction of the unmasked one
    torch.testing.assert_close(res.masked_cam, restrict_cam(res.cam, res.region))
    for k in range(3):
        if res.region[k].any() and (res.cam[k] * res.region[k]).max() > 0:
            assert math.isclose(float(res.masked_cam[k].max()), 1.0, rel_tol=1e-6)


def test_unmasked_cam_is_compute_cam_on_the_named_layer(net):
    x = torch.rand(2, 1, 32, 32)
    res = lung_masked_cam(net, x, target_layer="unet.down_3", class_index=[2, 0])
    expected = compute_cam(ClassLogitsView(net), x, target_layer="net.unet.down_3", class_index=[2, 0])
    torch.testing.assert_close(res.cam, expected)
    assert res.class_index.tolist() == [2, 0]


def test_batch_equals_one_image_at_a_time(net):
    x = torch.rand(3, 1, 32, 32)
    batch = lung_masked_cam(net, x)
    for k in range(3):
        one = lung_masked_cam(net, x[k : k + 1])
        torch.testing.assert_close(one.cam, batch.cam[k : k + 1], atol=1e-5, rtol=1e-4)
        torch.testing.assert_close(one.masked_cam, batch.masked_cam[k : k + 1], atol=1e-5, rtol=1e-4)


def test_given_mask_and_full_mask(net):
    x = torch.rand(2, 1, 32, 32)
    full = lung_masked_cam(net, x, mask=torch.ones(32, 32), dilate=0)
    torch.testing.assert_close(full.masked_cam, full.cam)
    box = torch.zeros(32, 32)
    box[8:20, 4:14] = 1
    res = lung_masked_cam(net, x, mask=box, dilate=0)
    assert res.masked_cam[:, :, box == 0].abs().max() == 0


def test_model_state_is_restored(net):
    net.train()
    net.cls_head["dropout"].p = 0.5
    before = {k: v.clone() for k, v in net.state_dict().items()}
    lung_masked_cam(net, torch.rand(2, 1, 32, 32))
    assert net.training and all(m.training for m in net.modules())
    assert all(torch.equal(before[k], v) for k, v in net.state_dict().items())
    assert all(p.grad is None for p in net.parameters())
    net.eval()


def test_cam_mass_inside():
    cam = torch.zeros(2, 1, 4, 4)
    cam[0, 0, 0, 0] = 3.0
    cam[0, 0, 3, 3] = 1.0
    region = torch.zeros(2, 1, 4, 4)
    region[:, :, :2, :2] = 1
    frac = cam_mass_inside(cam, region)
    assert frac[0].item() == pytest.approx(0.75) and math.isnan(frac[1].item())
    with pytest.raises(ValueError, match="non-negative"):
        cam_mass_inside(-cam - 1, region)
    with pytest.raises(ValueError, match=r"\(B, 1, H, W\)"):
        cam_mass_inside(cam[:, 0], region)


def test_masking_moves_cam_mass_into_the_lungs(net):
    """The statistic evaluation reports: the lung-masked CAM has at least as much mass inside the lungs."""
    x = torch.rand(4, 1, 32, 32)
    lungs = torch.zeros(32, 32)
    lungs[6:26, 3:13] = 1
    lungs[6:26, 19:29] = 1
    res = lung_masked_cam(net, x, mask=lungs, dilate=0)
    plain, masked = cam_mass_inside(res.cam, lungs), cam_mass_inside(res.masked_cam, lungs)
    ok = ~torch.isnan(masked)
    assert ok.any() and torch.all(masked[ok] == 1.0) and torch.all(plain[ok] <= 1.0)


def test_predicted_lung_mask_arguments():
    probs = torch.softmax(torch.randn(1, 3, 8, 8), 1)
    torch.testing.assert_close(predicted_lung_mask(probs, 0.5).float(), (probs[:, 1:].sum(1, keepdim=True) > 0.5).float())
    torch.testing.assert_close(predicted_lung_mask(probs, 0.3, classes=[2]).float(), (probs[:, 2:3] > 0.3).float())
    with pytest.raises(ValueError, match="threshold"):
        predicted_lung_mask(probs, 1.0)
    with pytest.raises(ValueError, match="out of range"):
        predicted_lung_mask(probs, 0.5, classes=[3])


def test_bad_arguments(net):
    x = torch.rand(1, 1, 32, 32)
    with pytest.raises(ValueError, match="dilate"):
        lung_masked_cam(net, x, dilate=-1)
    with pytest.raises(ValueError, match="not a submodule"):
        lung_masked_cam(net, x, target_layer="unet.down_9")
    with pytest.raises(ValueError, match="give target_layer"):
        lung_masked_cam(torch.nn.Conv2d(1, 2, 1), x)


def test_overlay_png(net, tmp_path):
    x = torch.rand(1, 1, 32, 32)
    res = lung_masked_cam(net, x)
    path = save_lung_cam_overlay(tmp_path / "sub" / "o.png", x[0, 0], res.cam[0, 0], res.masked_cam[0, 0],
                                 res.lung_mask[0, 0], title="case: class (p = 0.5)", inside_fractions=(0.4, 1.0))
    from PIL import Image

    img = np.asarray(Image.open(path))
    assert img.ndim == 3 and img.shape[1] > 2 * img.shape[0]  # three panels side by side
    with pytest.raises(ValueError, match="differ in size"):
        save_lung_cam_overlay(tmp_path / "bad.png", x[0, 0], res.cam[0, 0], res.masked_cam[0, 0], torch.ones(8, 8))
