# Copyright (c) medfuse contributors
# Licensed under the Apache License, Version 2.0
"""Pooled features of a classifier: the input of its final linear layer, taken by a forward hook.

One way that fits every classifier medfuse trains: ``DualCrossAttentionNet`` (its ``head``), MONAI's
ResNet / DenseNet / EfficientNet classifiers (``fc``, ``class_layers.out``, ``_fc``) and the global spatial
attention wrapper around them. The features are taken in eval mode (dropout off, batch-norm running
statistics), so they are deterministic even when the predictions use Monte-Carlo dropout; the out-of-distribution
model (:mod:`medfuse.evaluation.ood`) is fitted and applied on them.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

__all__ = ["classifier_layer", "pooled_features"]


def classifier_layer(network: nn.Module) -> nn.Linear:
    """The network's final linear classifier: ``get_classifier()`` when it is a ``Linear``, else the last
    ``nn.Linear`` registered in the network.

    Raises:
        ValueError: when the network has no linear layer (a segmentation or detection network).
    """
    get = getattr(network, "get_classifier", None)
    if callable(get):
        layer = get()
        if isinstance(layer, nn.Linear):
            return layer
    linear = [m for m in network.modules() if isinstance(m, nn.Linear)]
    if not linear:
        raise ValueError(f"{type(network).__name__} has no nn.Linear classifier: pooled features (and the OOD score) "
                         "need a network that ends in a linear layer")
    return linear[-1]


def pooled_features(network: nn.Module, x: torch.Tensor, layer: Any = None) -> torch.Tensor:
    """Features ``(B, D)`` entering the final linear classifier for the batch ``x``, in eval mode, without gradients.

    Args:
        network: the classifier (wrappers such as ``DistributedDataParallel`` are looked through by the caller).
        x: the input batch.
        layer: the linear layer to read; :func:`classifier_layer` of the network by default.

    Returns:
        float32 features on the input's device. Every module's training mode is restored afterwards.
    """
    layer = classifier_layer(network) if layer is None else layer
    captured: list[torch.Tensor] = []

    def hook(module: nn.Module, args: tuple) -> None:
        captured.append(args[0].detach())

    previous = {m: m.training for m in network.modules()}
    handle = layer.register_forward_pre_hook(hook)
    try:
        network.eval()
        with torch.no_grad():
            network(x)
    finally:
        handle.remove()
        for m, mode in previous.items():
            m.training = mode
    if not captured:
        raise RuntimeError(f"the classifier layer of {type(network).__name__} was not called in its forward pass")
    return torch.flatten(captured[-1], 1).float()
