# Copyright (c) medfuse contributors
# Licensed under the Apache License, Version 2.0
"""DualAttNet heads: shapes, FGDA normalisation, agreement with a per-image, per-class loop, detach_cls."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from monai.networks import eval_mode

from medfuse.networks.blocks.dualattnet_heads import (
    DualAttentionHead,
    ImageLevelAttention,
    fine_grained_disease_attention,
)

B, C, K, A, H, W = 2, 32, 3, 3, 6, 5


def test_ila_shape_and_nonnegative():
    ila = ImageLevelAttention(C, K, reduction=8)
    with eval_mode(ila):
        out = ila(torch.randn(B, C, H, W))
    assert out.shape == (B, K, H, W)
    assert bool((out >= 0).all())


@pytest.mark.parametrize("size", [[H, W], [2 * H, 3 * W]])
def test_fgda_sums_to_one(size):
    fgda = fine_grained_disease_attention(torch.randn(B, A * K, H, W), A, size)
    assert fgda.shape == (B, K, *size)
    torch.testing.assert_close(fgda.sum(dim=(2, 3)), torch.ones(B, K))


def _loop_reference(head: DualAttentionHead, f: torch.Tensor, cls: torch.Tensor) -> torch.Tensor:
    """The head's formulas written out per image and per class."""
    ila, out = head.ila, torch.zeros(f.shape[0], K)
    bn = ila.norm
    for b in range(f.shape[0]):
        x = f[b]  # (C, H, W)
        pooled = x.mean(dim=(1, 2))  # (C,)
        hidden = F.relu(ila.squeeze.weight[:, :, 0, 0] @ pooled + ila.squeeze.bias)
        for k in range(K):
            gate = torch.sigmoid(ila.excite.weight[k, :, 0, 0] @ hidden + ila.excite.bias[k])
            resp = torch.einsum("c,chw->hw", ila.class_conv.weight[k, :, 0, 0], x) + ila.class_conv.bias[k]
            resp = (resp - bn.running_mean[k]) / torch.sqrt(bn.running_var[k] + bn.eps) * bn.weight[k] + bn.bias[k]
            ila_map = F.relu(resp) * gate
            # anchor-major channels: channel a * K + k is anchor a, class k
            probs = torch.stack([torch.sigmoid(cls[b, a * K + k]) for a in range(A)]).amax(0)
            fgda = probs / probs.sum()
            conv = torch.einsum("c,chw->hw", head.class_conv.weight[k, :, 0, 0], x)
            out[b, k] = (conv * fgda + ila_map).sum()
    return out


def test_head_equals_loop():
    torch.manual_seed(0)
    head = DualAttentionHead(C, K, A, reduction=4)
    with torch.no_grad():  # non-trivial BN statistics
        head.ila.norm.running_mean.uniform_(-0.5, 0.5)
        head.ila.norm.running_var.uniform_(0.5, 2.0)
        head.ila.norm.weight.uniform_(0.5, 1.5)
        head.ila.norm.bias.uniform_(-0.2, 0.2)
    f, cls = torch.randn(B, C, H, W), torch.randn(B, A * K, H, W)
    with eval_mode(head), torch.no_grad():
        out = head(f, cls)
        ref = _loop_reference(head, f, cls)
    assert out.shape == (B, K)
    torch.testing.assert_close(out, ref, rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("reduce", ["mean", "max"])
def test_other_reductions(reduce):
    head = DualAttentionHead(C, K, A, reduce=reduce)
    f, cls = torch.randn(B, C, H, W), torch.randn(B, A * K, H, W)
    with eval_mode(head), torch.no_grad():
        maps = head.attention_map(f, cls)
        out = head(f, cls)
    expected = maps.mean(dim=(2, 3)) if reduce == "mean" else maps.amax(dim=(2, 3))
    torch.testing.assert_close(out, expected)


@pytest.mark.parametrize("detach", [False, True])
def test_detach_cls_blocks_gradient(detach):
    head = DualAttentionHead(C, K, A, detach_cls=detach)
    cls = torch.randn(B, A * K, H, W, requires_grad=True)
    head(torch.randn(B, C, H, W), cls).sum().backward()
    if detach:
        assert cls.grad is None
    else:
        assert cls.grad is not None and float(cls.grad.abs().sum()) > 0


def test_script():
    head = DualAttentionHead(C, K, A)
    f, cls = torch.randn(B, C, H, W), torch.randn(B, A * K, H, W)
    scripted = torch.jit.script(head)
    with eval_mode(head), eval_mode(scripted):
        torch.testing.assert_close(scripted(f, cls), head(f, cls))


@pytest.mark.parametrize(
    "kwargs, match",
    [
        ({"reduce": "median"}, "reduce must be one of .*'median'"),
        ({"num_anchors": 0}, "num_anchors must be a positive int, got 0"),
        ({"num_classes": 0}, "num_classes must be a positive int, got 0"),
    ],
)
def test_ill_arguments(kwargs, match):
    args = {"in_channels": C, "num_classes": K, "num_anchors": A, **kwargs}
    with pytest.raises(ValueError, match=match):
        DualAttentionHead(**args)
    with pytest.raises(ValueError, match="not a multiple of num_anchors=4"):
        fine_grained_disease_attention(torch.randn(1, 9, 2, 2), 4, [2, 2])
