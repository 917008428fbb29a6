# Copyright (c) medfuse contributors
# Licensed under the Apache License, Version 2.0
"""Pooled features by a hook on the final linear classifier: DCAT and MONAI classifiers alike, deterministic."""

from __future__ import annotations

import pytest
import torch
from monai.networks.nets import DenseNet121, resnet18

from medfuse.networks.features import classifier_layer, pooled_features
from medfuse.networks.nets import DualCrossAttentionNet


@pytest.mark.parametrize(
    "make, layer, width",
    [
        (lambda: DualCrossAttentionNet(2, 1, 2, backbones=["efficientnet-b0", "resnet10"], hidden_size=16, num_heads=2,
                                       pretrained=False, dropout_prob=0.5), "head", 16),
        (lambda: resnet18(spatial_dims=2, n_input_channels=1, num_classes=3), "fc", 512),
        (lambda: DenseNet121(spatial_dims=2, in_channels=1, out_channels=3, dropout_prob=0.5), "class_layers.out", 1024),
    ],
    ids=["dcat", "monai_resnet18", "monai_densenet121"],
)
def test_pooled_features(make, layer, width):
    torch.manual_seed(0)
    net = make().train()
    found = classifier_layer(net)
    assert [n for n, m in net.named_modules() if m is found] == [layer]
    x = torch.rand(2, 1, 64, 64)
    a, b = pooled_features(net, x), pooled_features(net, x)
    assert a.shape == (2, width) and torch.equal(a, b)  # eval mode: dropout off, the same features twice
    assert net.training  # the caller's mode is restored


def test_network_without_a_linear_layer():
    with pytest.raises(ValueError, match="no nn.Linear classifier"):
        classifier_layer(torch.nn.Conv2d(1, 2, 3))
