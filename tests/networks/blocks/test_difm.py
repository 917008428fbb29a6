# Copyright (c) medfuse contributors
# Licensed under the Apache License, Version 2.0
"""ChannelMeanGate, DualInteractiveFusion, and CrossAttentionLayer's context_pos."""

from __future__ import annotations

import warnings

import pytest
import torch
from monai.networks import eval_mode

from medfuse.networks.blocks import (
    ChannelMeanGate,
    CrossAttentionLayer,
    DualInteractiveFusion,
    sincos_position_embedding_2d,
    sincos_position_embedding_coords,
)
from medfuse.networks.blocks.difm import pooled_cell_centres

CASES = [
    # channels, heads, kv_size, pos_embed, shape
    (16, 4, 4, "sincos", (2, 16, 12, 20)),  # pooled keys/values (4 x 4)
    (8, 2, 16, "sincos", (1, 8, 6, 5)),  # grid smaller than kv_size: not pooled
    (12, 3, 3, "none", (2, 12, 7, 9)),  # odd sizes, no positions
]


def test_channel_mean_gate():
    x = torch.randn(2, 5, 4, 3)
    expected = x * torch.sigmoid(x.mean(dim=1, keepdim=True))
    torch.testing.assert_close(ChannelMeanGate()(x), expected)
    assert len(list(ChannelMeanGate().parameters())) == 0


@pytest.mark.parametrize("channels, heads, kv_size, pos_embed, shape", CASES)
def test_shapes_and_maps(channels, heads, kv_size, pos_embed, shape):
    block = DualInteractiveFusion(channels, num_heads=heads, kv_size=kv_size, pos_embed=pos_embed)
    a, b = torch.randn(shape), torch.randn(shape)
    with eval_mode(block):
        fast = block(a, b)
        block.set_save_attn(True)
        captured = block(a, b)
        block.set_save_attn(False)
    assert fast.shape == shape
    torch.testing.assert_close(captured, fast, rtol=1e-4, atol=1e-5)
    n = shape[2] * shape[3]
    m = min(shape[2], kv_size) * min(shape[3], kv_size)
    assert block.a_from_b.attn.att_mat.shape == (shape[0], heads, n, m)


def test_formula_and_directions():
    torch.manual_seed(0)
    block = DualInteractiveFusion(8, num_heads=2, kv_size=3).eval()
    a, b = torch.randn(1, 8, 6, 6), torch.randn(1, 8, 6, 6)
    out = block(a, b)
    # recompute: queries at full resolution, keys/values pooled to 3 x 3 with centre positions 0.5, 2.5, 4.5
    centres = torch.tensor([0.5, 2.5, 4.5])
    torch.testing.assert_close(pooled_cell_centres(6, 3, torch.device("cpu")), centres)
    pos = sincos_position_embedding_2d(6, 6, 8, a.device, a.dtype)
    ctx_pos = sincos_position_embedding_coords(centres, centres, 8)
    tok = lambda t: t.flatten(2).transpose(1, 2)  # noqa: E731
    pool = lambda t: torch.nn.functional.adaptive_avg_pool2d(t, 3)  # noqa: E731
    back = lambda t: t.transpose(1, 2).reshape(a.shape)  # noqa: E731
    ab = back(block.a_from_b(tok(a), tok(pool(b)), pos, ctx_pos))
    ba = back(block.b_from_a(tok(b), tok(pool(a)), pos, ctx_pos))
    gate = lambda t: t * torch.sigmoid(t.mean(1, keepdim=True))  # noqa: E731
    torch.testing.assert_close(out, gate(ab) + gate(ba))
    # a attends to b: changing b changes the result
    assert not torch.allclose(block(a, b + 1), out)


def test_position_embedding_coords():
    rows, cols = torch.arange(3.0), torch.arange(4.0)
    torch.testing.assert_close(
        sincos_position_embedding_coords(rows, cols, 8), sincos_position_embedding_2d(3, 4, 8, rows.device, rows.dtype)
    )
    # adaptive pooling of 10 pixels into 4 cells covers 0-2, 2-4, 5-7, 7-9
    torch.testing.assert_close(pooled_cell_centres(10, 4, torch.device("cpu")), torch.tensor([1.0, 3.0, 6.0, 8.0]))


def test_cross_attention_layer_unchanged_without_context_pos():
    torch.manual_seed(0)
    layer = CrossAttentionLayer(16, 4, mlp_dim=32).eval()
    x, c = torch.randn(2, 6, 16), torch.randn(2, 6, 16)
    pos = torch.randn(1, 6, 16)

    def reference(x, c, pos):  # the layer's formula before context_pos existed
        q, kv = layer.norm_q(x), layer.norm_kv(c)
        if pos is not None:
            q, kv = q + pos, kv + pos
        y = x + layer.attn(q, kv)
        y = y + layer.mlp(layer.norm_mlp(y))
        return layer.norm_out(y)

    torch.testing.assert_close(layer(x, c), reference(x, c, None))
    torch.testing.assert_close(layer(x, c, pos), reference(x, c, pos))
    torch.testing.assert_close(layer(x, c, pos, pos), reference(x, c, pos))
    # a context of another length with its own positions
    c2, cpos = torch.randn(2, 4, 16), torch.randn(1, 4, 16)
    assert layer(x, c2, pos, cpos).shape == (2, 6, 16)
    assert not torch.allclose(layer(x, c2, pos, cpos), layer(x, c2, pos, torch.zeros_like(cpos)))


@pytest.mark.parametrize(
    "kwargs, match",
    [
        ({"channels": 10, "num_heads": 4}, "channels=10, num_heads=4"),
        ({"channels": 8, "kv_size": 0}, "kv_size must be >= 1, got 0"),
        ({"channels": 6, "num_heads": 2}, "divisible by 4, got channels=6"),
        ({"channels": 8, "pos_embed": "learned"}, "'learned'"),
    ],
)
def test_bad_arguments(kwargs, match):
    with pytest.raises(ValueError, match=match):
        DualInteractiveFusion(**kwargs)


def test_shape_mismatch():
    block = DualInteractiveFusion(8, num_heads=2)
    with pytest.raises(ValueError, match=r"\[1, 8, 4, 4\] and \[1, 8, 4, 5\]"):
        block(torch.randn(1, 8, 4, 4), torch.randn(1, 8, 4, 5))


def test_script(tmp_path):
    block = DualInteractiveFusion(8, num_heads=2, kv_size=2).eval()
    a, b = torch.randn(1, 8, 5, 7), torch.randn(1, 8, 5, 7)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        scripted = torch.jit.script(block)
        torch.jit.save(scripted, str(tmp_path / "difm.ts"))
        loaded = torch.jit.load(str(tmp_path / "difm.ts"))
    torch.testing.assert_close(loaded(a, b), block(a, b))
