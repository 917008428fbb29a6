# Copyright (c) medfuse contributors
# Licensed under the Apache License, Version 2.0
from __future__ import annotations

import pytest
import torch
from monai.networks import eval_mode

from medfuse.networks.blocks import CBAM, CBAMChannelAttention, CBAMSpatialAttention

CASES = [
    (2, 16, 4, 7, (2, 16, 12, 10)),
    (2, 32, 16, 3, (1, 32, 7, 7)),
    (3, 8, 2, 5, (2, 8, 6, 5, 4)),
    (1, 8, 8, 3, (3, 8, 11)),
]


@pytest.mark.parametrize("spatial_dims, channels, reduction, kernel_size, shape", CASES)
def test_shapes(spatial_dims, channels, reduction, kernel_size, shape):
    net = CBAM(spatial_dims, channels, reduction, kernel_size)
    net.spatial.save_map = True
    with eval_mode(net):
        out = net(torch.randn(shape))
    assert out.shape == shape
    assert net.spatial.attention_map.shape == (shape[0], 1, *shape[2:])
    assert float(net.spatial.attention_map.min()) > 0 and float(net.spatial.attention_map.max()) < 1


def test_channel_attention_matches_definition():
    torch.manual_seed(0)
    att = CBAMChannelAttention(2, channels=8, reduction=2)
    x = torch.randn(2, 8, 5, 6)
    mlp = att.mlp
    expected = x * torch.sigmoid(mlp(x.mean(dim=(2, 3), keepdim=True)) + mlp(x.amax(dim=(2, 3), keepdim=True)))
    torch.testing.assert_close(att(x), expected)


def test_spatial_attention_matches_definition_and_gate_hook():
    torch.manual_seed(0)
    att = CBAMSpatialAttention(2, kernel_size=3)
    x = torch.randn(2, 8, 5, 6)
    seen = {}
    att.gate.register_forward_hook(lambda m, i, o: seen.setdefault("map", o))
    desc = torch.cat([x.mean(1, keepdim=True), x.max(1, keepdim=True).values], dim=1)
    weights = torch.sigmoid(att.conv(desc))
    torch.testing.assert_close(att(x), x * weights)
    torch.testing.assert_close(seen["map"], weights)
    assert att.attention_map.numel() == 0  # only kept when asked for


@pytest.mark.parametrize(
    "kwargs, match",
    [
        ({"spatial_dims": 4, "channels": 8}, "spatial_dims must be 1, 2 or 3, got 4"),
        ({"spatial_dims": 2, "channels": 0}, "channels must be positive, got 0"),
        ({"spatial_dims": 2, "channels": 8, "reduction": 0}, "reduction must be positive, got 0"),
        ({"spatial_dims": 2, "channels": 8, "kernel_size": 4}, "positive odd number, got 4"),
    ],
)
def test_ill_arguments(kwargs, match):
    with pytest.raises(ValueError, match=match):
        CBAM(**kwargs)


def test_script():
    net = CBAM(2, 16, 4).eval()
    x = torch.randn(2, 16, 6, 6)
    scripted = torch.jit.script(net)
    torch.testing.assert_close(scripted(x), net(x))
