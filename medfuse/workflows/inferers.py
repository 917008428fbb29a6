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

Given an out-of-distribution model (``ood``: an ``ood.json``, see :mod:`medfuse.evaluation.ood`), the
inferer also returns ``ood_score`` (B,) and ``ood`` (B,) for every batch, from the network's pooled features in
eval mode (:func:`medfuse.networks.features.pooled_features`; one extra deterministic pass), and the output is
always a dictionary (``pred`` holds the logits when ``samples=0``).
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

    Args:
        samples: number of stochastic passes; 0 disables Monte-Carlo dropout.
        ood: an OOD model (path of an ``ood.json`` or its dictionary); ``None`` / ``""``: no OOD score.
    """

    def __init__(self, samples: int = 0, ood: Any = None) -> None:
        super().__init__()
        if int(samples) < 0:
            raise ValueError(f"samples must be >= 0, got {samples}")
        self.samples = int(samples)
        from medfuse.evaluation.ood import load_ood

        self.ood = load_ood(ood)

    def __call__(self, inputs: torch.Tensor, network: torch.nn.Module, *args: Any, **kwargs: Any):
        if self.samples == 0:
            out = network(inputs, *args, **kwargs)
            if self.ood is None:
                return out
            out = {"pred": out}
        else:
            out = mc_dropout_outputs(unwrap_module(network), inputs, self.samples)
        if self.ood is not None:
            from medfuse.evaluation.ood import ood_flags, ood_scores
            from medfuse.networks.features import pooled_features

            scores = ood_scores(pooled_features(unwrap_module(network), inputs).cpu().numpy(), self.ood)
            out["ood_score"] = torch.as_tensor(scores, dtype=torch.float32)
            out["ood"] = torch.as_tensor(ood_flags(scores, self.ood))
        return out


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
