# Copyright (c) medfuse contributors
# Licensed under the Apache License, Version 2.0
"""Monte-Carlo dropout for any classifier: Gal & Ghahramani, "Dropout as a Bayesian Approximation", ICML 2016.

``mc_dropout_predict`` runs ``samples`` stochastic forward passes with only the dropout layers in training
mode (BatchNorm, EfficientNet drop-connect and everything else stay in eval mode, so batch size 1 works and
running statistics never change) and summarises them:

* ``probs``: mean predicted probabilities, ``p = mean_t p_t``;
* ``entropy``: predictive entropy ``H[p] = -sum_k p_k log p_k`` (total uncertainty, nats);
* ``expected_entropy``: ``mean_t H[p_t]`` (aleatoric part);
* ``mutual_info``: ``H[p] - mean_t H[p_t] >= 0`` (epistemic part; 0 when all passes agree).

Multi-label (sigmoid) models use the binary entropy of every label, so these are per label, ``(B, K)``.
These are the ``entropy`` / ``mutual_info`` columns of medfuse's ``predictions.csv``.

``mc_dropout_outputs`` is the form inferers and evaluation use: the network's own ``predict_with_uncertainty``
when it has one, ``mc_dropout_predict`` otherwise, returned as ``{"pred": log(mean p), "entropy", "mutual_info"}``.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from typing import Any, NamedTuple, Optional

import torch
import torch.nn as nn

__all__ = [
    "DROPOUT_TYPES",
    "ENSEMBLE_KEYS",
    "item_seeds",
    "MCDropoutResult",
    "enable_mc_dropout",
    "expected_entropy",
    "mc_dropout_outputs",
    "mc_dropout_predict",
    "mutual_information",
    "predictive_entropy",
]

#: module types switched to training mode for MC dropout
DROPOUT_TYPES = (nn.Dropout, nn.Dropout1d, nn.Dropout2d, nn.Dropout3d, nn.AlphaDropout, nn.FeatureAlphaDropout)

_EPS = 1e-12


class MCDropoutResult(NamedTuple):
    """Summary of Monte-Carlo dropout predictions (see the module docstring for the formulas).

    Attributes:
        probs: mean probabilities, ``(B, K)``.
        entropy: predictive entropy in nats, ``(B,)``; ``(B, K)`` for multi-label.
        mutual_info: mutual information in nats, same shape as ``entropy``.
        expected_entropy: mean entropy of the passes, same shape as ``entropy``.
        sample_probs: probabilities of every pass, ``(T, B, K)``, when asked for; otherwise None.
    """

    probs: torch.Tensor
    entropy: torch.Tensor
    mutual_info: torch.Tensor
    expected_entropy: torch.Tensor
    sample_probs: Optional[torch.Tensor] = None


def predictive_entropy(probs: torch.Tensor, multi_label: bool = False) -> torch.Tensor:
    """Entropy (nats) of probabilities ``(..., K)``: over the last dimension (``(...)``), or, for multi-label,
    the binary entropy of every label (``(..., K)``)."""
    p = probs.float().clamp(0.0, 1.0)
    if multi_label:
        q = 1.0 - p
        return -(p * torch.log(p.clamp_min(_EPS)) + q * torch.log(q.clamp_min(_EPS)))
    return -(p * torch.log(p.clamp_min(_EPS))).sum(dim=-1)


def expected_entropy(sample_probs: torch.Tensor, multi_label: bool = False) -> torch.Tensor:
    """Mean entropy of the passes, for ``sample_probs`` of shape ``(T, B, K)``."""
    return predictive_entropy(sample_probs, multi_label).mean(dim=0)


def mutual_information(sample_probs: torch.Tensor, multi_label: bool = False) -> torch.Tensor:
    """Mutual information between prediction and weights (BALD), for ``sample_probs`` ``(T, B, K)``:
    entropy of the mean minus the mean entropy, clamped at 0 against rounding."""
    total = predictive_entropy(sample_probs.float().mean(dim=0), multi_label)
    return (total - expected_entropy(sample_probs, multi_label)).clamp_min(0.0)


@contextmanager
def enable_mc_dropout(model: nn.Module) -> Iterator[nn.Module]:
    """Put ``model`` in eval mode except its dropout layers (:data:`DROPOUT_TYPES`), which train; restore every
    module's previous mode on exit.

    Examples::

        >>> with enable_mc_dropout(model):
        ...     logits = model(x)  # stochastic, BatchNorm uses running statistics
    """
    previous = {m: m.training for m in model.modules()}
    try:
        model.eval()
        for m in model.modules():
            if isinstance(m, DROPOUT_TYPES):
                m.train()
        yield model
    finally:
        for m, mode in previous.items():
            m.training = mode


def mc_dropout_predict(
    model: nn.Module,
    x: torch.Tensor,
    samples: int = 20,
    multi_label: bool = False,
    return_samples: bool = False,
    forward_fn: Optional[Callable[[torch.Tensor], torch.Tensor]] = None,
    seed: Optional[int] = None,
    item_keys: Optional[torch.Tensor] = None,
) -> MCDropoutResult:
    """Monte-Carlo dropout prediction of a classifier returning logits ``(B, K)``.

    Args:
        model: the classifier; only its dropout layers are put in training mode, and every module's mode is
            restored afterwards.
        x: the input batch.
        samples: number of stochastic passes T (>= 1). Defaults to 20.
        multi_label: sigmoid per label instead of softmax over classes. Defaults to False.
        return_samples: also return the ``(T, B, K)`` probabilities of every pass. Defaults to False.
        forward_fn: computes logits from ``x``; defaults to ``model``. A network whose dropout sits only in
            its head can pass its head and precomputed features (see ``DualCrossAttentionNet``).
        seed: make the passes reproducible per item: each item's dropout masks come from a generator seeded with
            ``seed`` and the item (:func:`item_seeds`), so an item gets the same samples whatever batch it is in
            and however often it is evaluated. The items then run one at a time. ``None``: the global generator.
        item_keys: the tensor each item's seed is taken from (default ``x``); a network that samples only its
            head passes its input image here and its features as ``x``.

    Returns:
        :class:`MCDropoutResult`.

    Raises:
        ValueError: when ``samples`` is not a positive integer.
    """
    if isinstance(samples, bool) or not isinstance(samples, int) or samples < 1:
        raise ValueError(f"samples must be a positive integer, got {samples!r}.")
    fn = model if forward_fn is None else forward_fn
    if not any(isinstance(m, DROPOUT_TYPES) and m.p > 0 for m in model.modules()):
        warnings.warn(
            f"{type(model).__name__} has no dropout layer with p > 0: the {samples} MC-dropout passes are identical "
            f"(mutual information 0).",
            stacklevel=2,
        )
    def activate(logits: torch.Tensor) -> torch.Tensor:
        return torch.sigmoid(logits.float()) if multi_label else torch.softmax(logits.float(), dim=-1)

    with torch.no_grad(), enable_mc_dropout(model):
        if seed is None:
            sample_probs = torch.stack([activate(fn(x)) for _ in range(samples)], dim=0)
        else:
            per_item = []
            for i, s in enumerate(item_seeds(x if item_keys is None else item_keys, int(seed))):
                with torch.random.fork_rng(devices=[x.device] if x.device.type == "cuda" else []):
                    torch.manual_seed(s)
                    per_item.append(torch.stack([activate(fn(x[i:i + 1]))[0] for _ in range(samples)], dim=0))
            sample_probs = torch.stack(per_item, dim=1)
    mean = sample_probs.mean(dim=0)
    entropy = predictive_entropy(mean, multi_label)
    aleatoric = expected_entropy(sample_probs, multi_label)
    return MCDropoutResult(
        probs=mean,
        entropy=entropy,
        mutual_info=(entropy - aleatoric).clamp_min(0.0),
        expected_entropy=aleatoric,
        sample_probs=sample_probs if return_samples else None,
    )


def item_seeds(x: torch.Tensor, seed: int) -> list[int]:
    """One seed per item of the batch ``x``: CRC-32 of the item's values (rounded to 1e-4, so the last bits of a
    float do not change it) combined with ``seed``. The same item and seed give the same seed in any batch."""
    import zlib

    keys = torch.round(x.detach().float().reshape(x.shape[0], -1) * 1e4).to(torch.int64).cpu().numpy()
    return [(zlib.crc32(row.tobytes()) ^ (int(seed) * 2654435761)) % (2 ** 31 - 1) for row in keys]


def _field(result: Any, name: str) -> torch.Tensor:
    return result[name] if isinstance(result, Mapping) else getattr(result, name)


#: extra per-item outputs of an ensemble's ``predict_with_uncertainty`` passed on by :func:`mc_dropout_outputs`
ENSEMBLE_KEYS = ("mutual_info_members", "member_disagreement")


def mc_dropout_outputs(network: nn.Module, inputs: torch.Tensor, samples: int, eps: float = 1e-12,
                       seed: Optional[int] = None) -> dict:
    """Mean probability, predictive entropy and mutual information over ``samples`` dropout passes.

    Uses the network's own ``predict_with_uncertainty(x, samples=T)`` when it has one (the
    dual cross-attention net runs its backbones once and only the head T times), otherwise
    :func:`mc_dropout_predict` (only dropout layers train; batch norm keeps its running
    statistics). Entropy and mutual information are in nats.

    ``seed`` makes the passes reproducible per item (see :func:`mc_dropout_predict`); it is given to a
    network's own ``predict_with_uncertainty`` when that accepts ``seed``. An ensemble
    (:class:`medfuse.networks.nets.EnsembleNet`, ``reports_members``) also accepts ``samples=0`` (no dropout
    sampling) and adds :data:`ENSEMBLE_KEYS`.

    Returns:
        ``{"pred": log(mean p) (B, C), "entropy": (B,), "mutual_info": (B,)}`` (plus :data:`ENSEMBLE_KEYS`)

    Raises:
        ValueError: when ``samples < 1`` (``< 0`` for an ensemble).
    """
    import inspect

    ensemble = bool(getattr(network, "reports_members", False))
    if isinstance(samples, bool) or int(samples) < (0 if ensemble else 1):
        raise ValueError(f"samples must be >= 1 for Monte-Carlo dropout, got {samples}")
    predict = getattr(network, "predict_with_uncertainty", None)
    if callable(predict):
        kwargs = {"seed": seed} if seed is not None and "seed" in inspect.signature(predict).parameters else {}
        result = predict(inputs, samples=int(samples), **kwargs)
    else:
        result = mc_dropout_predict(network, inputs, samples=int(samples), seed=seed)
    probs = _field(result, "probs").float()
    out = {
        "pred": torch.log(probs.clamp_min(eps)),
        "entropy": _field(result, "entropy").float(),
        "mutual_info": _field(result, "mutual_info").float(),
    }
    if isinstance(result, Mapping):
        out.update({k: result[k].float() for k in ENSEMBLE_KEYS if k in result})
    return out
