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

With ``tta=N > 0`` (test-time augmentation, :func:`medfuse.transforms.cxr_tta_transforms`: small shifts, scales
and intensity changes, never a flip) the image and N augmented views of it each go through the passes above,
and their probabilities are averaged: the views are inputs, not models, so ``entropy`` is the total entropy of
the averaged probability while ``mutual_info`` (and an ensemble's member columns) is the mean over the views of
each view's own value, and TTA never passes itself off as epistemic uncertainty. Without MC dropout or an
ensemble the result stays a tensor, ``log(mean softmax)`` over the views.
"""

from __future__ import annotations

from typing import Any, Hashable, Mapping

import torch
from monai.config import KeysCollection
from monai.inferers import Inferer
from monai.transforms import Compose, MapTransform
from monai.utils import convert_to_tensor

from medfuse.networks.uncertainty import ENSEMBLE_KEYS, item_seeds, predictive_entropy
from medfuse.networks.uncertainty import mc_dropout_outputs  # re-exported: medfuse.workflows.mc_dropout_outputs
from medfuse.transforms.tta import cxr_tta_transforms
from medfuse.utils.distributed import unwrap_module

__all__ = ["mc_dropout_outputs", "MCDropoutInferer", "UnpackPredictiond", "tta_views"]


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
        tta: number of test-time augmented views averaged with the image itself (:func:`tta_views`); 0 (default)
            is off and changes nothing. Each view costs one more pass of everything above.
        ood: an OOD model (path of an ``ood.json`` or its dictionary); ``None`` / ``""``: no OOD score.

    Raises:
        ValueError: when ``samples`` or ``tta`` is negative.
    """

    def __init__(self, samples: int = 0, seed: int | None = None, tta: int = 0, ood: Any = None) -> None:
        super().__init__()
        if int(samples) < 0:
            raise ValueError(f"samples must be >= 0, got {samples}")
        if isinstance(tta, bool) or int(tta) < 0:
            raise ValueError(f"tta must be the number of test-time augmented views (0 = off), got {tta!r}")
        self.samples = int(samples)
        self.seed = None if seed is None else int(seed)
        self.tta = int(tta)
        from medfuse.evaluation.ood import load_ood

        self.ood = load_ood(ood)

    def __call__(self, inputs: torch.Tensor, network: torch.nn.Module, *args: Any, **kwargs: Any):
        net = unwrap_module(network)
        uncertain = self.samples > 0 or getattr(net, "reports_members", False)
        if self.tta == 0:
            out = mc_dropout_outputs(net, inputs, self.samples, seed=self.seed) if uncertain else network(inputs, *args, **kwargs)
        else:
            views = tta_views(inputs, self.tta, seed=self.seed)
            if uncertain:
                out = _average_views([mc_dropout_outputs(net, v, self.samples, seed=self.seed) for v in views])
            else:
                probs = torch.stack([torch.softmax(network(v, *args, **kwargs).float(), dim=1) for v in views])
                out = torch.log(probs.mean(dim=0).clamp_min(1e-12))
        if self.ood is None:
            return out
        if not isinstance(out, dict):
            out = {"pred": out}
        from medfuse.evaluation.ood import ood_flags, ood_scores
        from medfuse.networks.features import pooled_features

        # scored on the image itself (not its TTA views): the threshold was fitted on plain validation images
        scores = ood_scores(pooled_features(net, inputs).cpu().numpy(), self.ood)
        out["ood_score"] = torch.as_tensor(scores, dtype=torch.float32)
        out["ood"] = torch.as_tensor(ood_flags(scores, self.ood))
        return out


def tta_views(inputs: torch.Tensor, views: int, seed: int | None = None, transforms: Compose | None = None) -> list:
    """The batch ``inputs`` ``(B, C, H, W)`` and ``views`` augmented copies of it (:func:`cxr_tta_transforms`).

    Every item's views are seeded from the item itself and ``seed`` (:func:`medfuse.networks.uncertainty.item_seeds`),
    so an item gets the same views in any batch and on every run; ``seed=None`` draws from the global generator.

    Returns:
        ``[inputs, view_1, ..., view_N]``, each a plain tensor shaped and placed like ``inputs``.
    """
    if inputs.ndim != 4:
        raise ValueError(f"test-time augmentation takes 2D images (B, C, H, W), got shape {tuple(inputs.shape)}")
    xform = cxr_tta_transforms(inputs.shape[2:]) if transforms is None else transforms
    if seed is None:
        seeds = torch.randint(0, 2**31 - 1, (inputs.shape[0],)).tolist()
    else:
        seeds = item_seeds(inputs, int(seed))
    out = [inputs]
    for v in range(1, int(views) + 1):
        items = []
        for x, s in zip(inputs, seeds):
            xform.set_random_state(seed=(s + 7919 * v) % (2**31 - 1))
            items.append(convert_to_tensor(xform(x), track_meta=False).to(inputs.dtype))
        out.append(torch.stack(items))
    return out


def _average_views(outputs: list) -> dict:
    """Combine the per-view dictionaries of :func:`mc_dropout_outputs` (see the module docstring)."""
    probs = torch.stack([o["pred"].float().exp() for o in outputs]).mean(dim=0)
    combined = {"pred": torch.log(probs.clamp_min(1e-12)), "entropy": predictive_entropy(probs)}
    for key in ("mutual_info", *ENSEMBLE_KEYS):
        if key in outputs[0]:
            combined[key] = torch.stack([o[key].float() for o in outputs]).mean(dim=0)
    return combined


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
