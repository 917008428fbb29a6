# Copyright (c) medfuse contributors
# Licensed under the Apache License, Version 2.0
from __future__ import annotations

import pytest
import torch
from monai.networks import eval_mode

from medfuse.networks.blocks import (
    BidirectionalCrossAttentionFusion,
    CrossAttentionLayer,
    MultiScaleCrossAttentionFusion,
    sincos_position_embedding_2d,
)

CASES = [
    # hidden, heads, ch_a, ch_b, fusion, pos_embed, shape_a, shape_b
    (32, 4, 24, 40, "sum", "sincos", (2, 24, 6, 6), (2, 40, 6, 6)),
    (32, 8, 24, 40, "concat", "none", (1, 24, 5, 7), (1, 40, 5, 7)),
    (16, 2, None, None, "concat", "sincos", (2, 16, 4, 4), (2, 16, 3, 3)),  # b resized to a's grid
]


@pytest.mark.parametrize("hidden, heads, ch_a, ch_b, fusion, pos_embed, shape_a, shape_b", CASES)
def test_bidirectional_shapes_and_maps(hidden, heads, ch_a, ch_b, fusion, pos_embed, shape_a, shape_b):
    block = BidirectionalCrossAttentionFusion(
        hidden, heads, in_channels_a=ch_a, in_channels_b=ch_b, fusion=fusion, pos_embed=pos_embed
    )
    a, b = torch.randn(shape_a), torch.randn(shape_b)
    with eval_mode(block):
        fast = block(a, b)
        block.set_save_attn(True)
        captured = block(a, b)
        block.set_save_attn(False)
    assert fast.shape == (shape_a[0], hidden, *shape_a[2:])
    # capturing maps (explicit softmax) gives the same result as the fused kernel
    torch.testing.assert_close(captured, fast, rtol=1e-4, atol=1e-5)
    n = shape_a[2] * shape_a[3]
    maps = block.attention_maps()
    for direction in ("a_from_b", "b_from_a"):
        assert maps[direction].shape == (shape_a[0], heads, n, n)
        torch.testing.assert_close(maps[direction].sum(-1), torch.ones(shape_a[0], heads, n))
    assert block.a_from_b.attn.use_flash_attention and not block.a_from_b.attn.save_attn
    block.clear_attention_maps()
    assert block.attention_maps()["a_from_b"].numel() == 0


def test_directions_are_cross_not_self():
    torch.manual_seed(0)
    block = BidirectionalCrossAttentionFusion(16, 2, fusion="sum", pos_embed="none").eval()
    a, b = torch.randn(1, 16, 3, 3), torch.randn(1, 16, 3, 3)
    out = block(a, b)
    # changing b changes the update of a (a attends to b)
    a_tokens = a.flatten(2).transpose(1, 2)
    base = block.a_from_b(a_tokens, b.flatten(2).transpose(1, 2))
    other = block.a_from_b(a_tokens, (b + 1).flatten(2).transpose(1, 2))
    assert not torch.allclose(base, other)
    assert out.shape == (1, 16, 3, 3)


def test_attention_dropout_keeps_eval_deterministic():
    # MONAI 1.6.1 applies dropout inside the fused kernel even in eval mode; the layer avoids that path
    layer = CrossAttentionLayer(16, 2, mlp_dim=32, dropout_rate=0.5, use_flash_attention=True).eval()
    assert not layer.attn.use_flash_attention
    x, c = torch.randn(2, 5, 16), torch.randn(2, 7, 16)
    torch.testing.assert_close(layer(x, c), layer(x, c))
    layer.train()
    assert not torch.allclose(layer(x, c), layer(x, c))


def test_position_embedding():
    emb = sincos_position_embedding_2d(3, 4, 8, torch.device("cpu"), torch.float32)
    assert emb.shape == (1, 12, 8)
    # position (row 1, col 2) is token 6: sin/cos of the row in the first half, of the column in the second
    torch.testing.assert_close(emb[0, 6, 0], torch.sin(torch.tensor(1.0)))
    torch.testing.assert_close(emb[0, 6, 2], torch.cos(torch.tensor(1.0)))
    torch.testing.assert_close(emb[0, 6, 4], torch.sin(torch.tensor(2.0)))
    assert len({tuple(row.tolist()) for row in emb[0]}) == 12  # all positions distinct


@pytest.mark.parametrize("scale_fusion", ["concat", "sum"])
def test_multiscale(scale_fusion):
    fuse = MultiScaleCrossAttentionFusion([24, 40], [64, 128], 32, 4, scale_fusion=scale_fusion)
    fa = [torch.randn(2, 24, 8, 8), torch.randn(2, 40, 4, 4)]
    fb = [torch.randn(2, 64, 8, 8), torch.randn(2, 128, 4, 4)]
    with eval_mode(fuse):
        out = fuse(fa, fb)
    assert out.shape == (2, 32, 8, 8)
    assert isinstance(fuse.merge, torch.nn.Sequential) == (scale_fusion == "concat")


@pytest.mark.parametrize(
    "args, kwargs, match",
    [
        ((30, 4), {"pos_embed": "none"}, "divisible by num_heads, got hidden_size=30, num_heads=4"),
        ((30, 5), {"pos_embed": "sincos"}, "divisible by 4, got hidden_size=30"),
        ((32, 4), {"fusion": "max"}, "fusion must be one of .*'max'"),
        ((32, 4), {"pos_embed": "learned"}, "'learned'"),
        ((32, 4), {"in_channels_a": 0}, "in_channels_a must be positive, got 0"),
        ((32, 4), {"dropout_rate": 1.0}, r"dropout_rate must be in \[0, 1\), got 1.0"),
    ],
)
def test_ill_arguments(args, kwargs, match):
    with pytest.raises(ValueError, match=match):
        BidirectionalCrossAttentionFusion(*args, **kwargs)


def test_multiscale_ill_arguments():
    with pytest.raises(ValueError, match=r"same, non-zero number of scales, got \[24\] and \[64, 128\]"):
        MultiScaleCrossAttentionFusion([24], [64, 128], 32, 4)
    with pytest.raises(ValueError, match="scale_fusion must be one of .*'mean'"):
        MultiScaleCrossAttentionFusion([24], [64], 32, 4, scale_fusion="mean")


def test_script():
    fuse = MultiScaleCrossAttentionFusion([24, 40], [64, 128], 32, 4, fusion="concat").eval()
    fa = [torch.randn(1, 24, 8, 8), torch.randn(1, 40, 4, 4)]
    fb = [torch.randn(1, 64, 8, 8), torch.randn(1, 128, 4, 4)]
    scripted = torch.jit.script(fuse)
    torch.testing.assert_close(scripted(fa, fb), fuse(fa, fb))
