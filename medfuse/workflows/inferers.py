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

from medfuse.networks.uncertainty import mc_dropout_outputs  # re-exported: medfuse.workflows.mc_dropout_outputs
from medfuse.utils.distributed import unwrap_module

__all__ = ["mc_dropout_outputs", "MCDropoutInferer", "UnpackPredictiond"]


class MCDropoutInferer(Inferer):
    """Plain forward (``samples=0``) or Monte-Carlo dropout with ``samples`` passes.

    With ``samples > 0`` the network's ``predict_with_uncertainty`` is used when it has one;
    any other network with dropout layers works too (:func:`medfuse.networks.uncertainty.mc_dropout_outputs`).
    A ``DataParallel`` / ``DistributedDataParallel`` wrapper is looked through (:func:`medfuse.utils.unwrap_module`).

    An ensemble (:class:`medfuse.networks.nets.EnsembleNet`) always returns the dictionary, with its
    ``mutual_info_members`` and ``member_disagreement`` (without dropout sampling when ``samples=0``).

    Args:
        samples: number of stochastic passes; 0 disables Monte-Carlo dropout.
        seed: make the passes reproducible per item (the same item gets the same dropout masks in any batch and on
            every run; :func:`medfuse.networks.uncertainty.mc_dropout_predict`); None: the global generator.
    """

    def __init__(self, samples: int = 0, seed: int | None = None) -> None:
        super().__init__()
        if int(samples) < 0:
            raise ValueError(f"samples must be >= 0, got {samples}")
        self.samples = int(samples)
        self.seed = None if seed is None else int(seed)

    def __call__(self, inputs: torch.Tensor, network: torch.nn.Module, *args: Any, **kwargs: Any):
        net = unwrap_module(network)
        if self.samples == 0 and not getattr(net, "reports_members", False):
            return network(inputs, *args, **kwargs)
        return mc_dropout_outputs(net, inputs, self.samples, seed=self.seed)


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
