# Copyright (c) medfuse contributors
# Licensed under the Apache License, Version 2.0
"""Inference with optional Monte-Carlo dropout, and the post-transform that unpacks it.

:class:`MCDropoutInferer` with ``samples=0`` is a plain forward pass returning logits. With
``samples=T > 0`` it runs T stochastic passes (dropout active, batch norm in eval mode) and
returns a dictionary per batch::

    {"pred": log(mean softmax), "entropy": (B,), "mutual_info": (B,)}

``pred`` is the log of the mean probability, so the usual ``Activationsd(softmax=True)``
post-transform turns it back into the mean probability, and one post-processing chain
serves both cases. :class:`UnpackPredictiond` (first in that chain) moves ``entropy`` and
``mutual_info`` to top-level keys of the item, where :class:`~medfuse.workflows.PredictionWriter`
finds them.
"""

from __future__ import annotations

from typing import Any, Hashable, Mapping

import torch
from monai.config import KeysCollection
from monai.inferers import Inferer
from monai.transforms import MapTransform

__all__ = ["mc_dropout_outputs", "MCDropoutInferer", "UnpackPredictiond"]


def _enable_dropout(network: torch.nn.Module) -> list[torch.nn.Module]:
    switched = []
    for m in network.modules():
        if isinstance(m, torch.nn.modules.dropout._DropoutNd) and not m.training:
            m.train()
            switched.append(m)
    return switched


def mc_dropout_outputs(network: torch.nn.Module, inputs: torch.Tensor, samples: int, eps: float = 1e-12) -> dict:
    """Mean probability, predictive entropy and mutual information over ``samples`` dropout passes.

    Only dropout layers are switched to training mode (and back afterwards); batch norm keeps
    its running statistics. Entropy ``H[mean p]`` and mutual information
    ``H[mean p] - mean H[p]`` are in nats.

    Returns:
        ``{"pred": log(mean p) (B, C), "entropy": (B,), "mutual_info": (B,)}``

    Raises:
        ValueError: when ``samples < 1`` or the network has no dropout layer.
    """
    if samples < 1:
        raise ValueError(f"samples must be >= 1 for Monte-Carlo dropout, got {samples}")
    if not any(isinstance(m, torch.nn.modules.dropout._DropoutNd) for m in network.modules()):
        raise ValueError("the network has no dropout layer: Monte-Carlo dropout would repeat one prediction")
    switched = _enable_dropout(network)
    try:
        probs = torch.stack([torch.softmax(network(inputs).float(), dim=1) for _ in range(int(samples))])
    finally:
        for m in switched:
            m.eval()
    mean = probs.mean(0)
    entropy = -(mean * torch.log(mean.clamp_min(eps))).sum(1)
    expected_entropy = -(probs * torch.log(probs.clamp_min(eps))).sum(2).mean(0)
    return {
        "pred": torch.log(mean.clamp_min(eps)),
        "entropy": entropy,
        "mutual_info": (entropy - expected_entropy).clamp_min(0.0),
    }


class MCDropoutInferer(Inferer):
    """Plain forward (``samples=0``) or Monte-Carlo dropout with ``samples`` passes.

    With ``samples > 0`` the network's own ``predict_with_uncertainty`` is not required: any
    network with dropout layers works (:func:`mc_dropout_outputs`).

    Args:
        samples: number of stochastic passes; 0 disables Monte-Carlo dropout.
    """

    def __init__(self, samples: int = 0) -> None:
        super().__init__()
        if int(samples) < 0:
            raise ValueError(f"samples must be >= 0, got {samples}")
        self.samples = int(samples)

    def __call__(self, inputs: torch.Tensor, network: torch.nn.Module, *args: Any, **kwargs: Any):
        if self.samples == 0:
            return network(inputs, *args, **kwargs)
        module = network.module if hasattr(network, "module") and isinstance(network.module, torch.nn.Module) else network
        return mc_dropout_outputs(module, inputs, self.samples)


class UnpackPredictiond(MapTransform):
    """Move the entries of a dictionary prediction to top-level keys; keep ``pred`` a tensor.

    ``{"pred": {"pred": t, "entropy": e, "mutual_info": m}}`` becomes
    ``{"pred": t, "entropy": e, "mutual_info": m}``; a tensor ``pred`` is left alone.
    """

    def __init__(self, keys: KeysCollection = "pred", allow_missing_keys: bool = False) -> None:
        super().__init__(keys, allow_missing_keys)

    def __call__(self, data: Mapping[Hashable, Any]) -> dict:
        d = dict(data)
        for key in self.key_iterator(d):
            value = d[key]
            if isinstance(value, Mapping):
                for k, v in value.items():
                    if k != "pred":
                        d[k] = v
                d[key] = value["pred"]
        return d
