# Copyright (c) medfuse contributors
# Licensed under the Apache License, Version 2.0
"""Out-of-distribution scores of a classifier: class-conditional Gaussians on its pooled features.

Lee et al. (NeurIPS 2018, "A simple unified framework for detecting out-of-distribution samples and adversarial
attacks") model the penultimate features of each class as a Gaussian with a covariance shared by all classes; the
OOD score of an input is its smallest squared Mahalanobis distance to a class mean. medfuse fits the means and
the shared covariance on the training features (the covariance with Ledoit-Wolf shrinkage from scikit-learn, since
a few hundred training images do not pin down a 256-512 dimensional covariance), scores the validation split, and
sets the threshold at the 99th percentile of those validation scores: about 1 % of in-distribution inputs are
flagged by construction, and the measured rate on the test split is what the docs report.

The model is stored as ``ood.json`` beside the weights (:func:`save_ood` / :func:`load_ood`): ``means`` (C x D),
``precision`` (D x D), ``threshold``, the percentile, counts and what it was fitted on. Features come from
:func:`medfuse.networks.features.pooled_features` (the input of the network's final linear classifier).
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any, Mapping, Sequence

import numpy as np

from medfuse.errors import DataError
from medfuse.utils.io import atomic_write_text

__all__ = ["OOD_FILE", "OOD_PERCENTILE", "fit_ood", "ood_scores", "ood_flags", "save_ood", "load_ood", "find_ood"]

#: file name of the OOD model beside the weights
OOD_FILE = "ood.json"
#: percentile of the validation scores used as the threshold
OOD_PERCENTILE = 99.0
_FORMAT = "medfuse-ood-mahalanobis-1"


def fit_ood(
    train_features: Any,
    train_labels: Sequence[int],
    val_features: Any,
    percentile: float = OOD_PERCENTILE,
    fitted_on: Mapping[str, Any] | None = None,
) -> dict:
    """Fit class means and a shared (shrunk) covariance on ``train_features``; threshold from ``val_features``.

    Args:
        train_features: (N, D) pooled features of the training images.
        train_labels: (N,) class index of each (negative: unknown, left out).
        val_features: (M, D) features of the validation images (the threshold's split; M >= 1).
        percentile: the threshold is this percentile of the validation scores. Defaults to 99.
        fitted_on: free-form provenance stored in the file (run folder, splits, counts).

    Returns:
        the OOD model dictionary (see the module docstring).

    Raises:
        DataError: with fewer than two labelled training features, no validation feature, or non-finite features.
    """
    from sklearn.covariance import LedoitWolf

    x = np.asarray(train_features, dtype=np.float64)
    y = np.asarray(train_labels, dtype=np.int64).reshape(-1)
    v = np.asarray(val_features, dtype=np.float64)
    if x.ndim != 2 or len(x) != len(y):
        raise ValueError(f"train_features must be (N, D) with one label each, got {x.shape} and {y.shape}")
    keep = y >= 0
    x, y = x[keep], y[keep]
    if len(x) < 2:
        raise DataError(f"the OOD model needs at least two labelled training images, got {len(x)}")
    if v.ndim != 2 or len(v) == 0 or v.shape[1] != x.shape[1]:
        raise DataError(f"the OOD threshold needs validation features of width {x.shape[1]}, got shape {v.shape}")
    if not (np.isfinite(x).all() and np.isfinite(v).all()):
        raise DataError("non-finite pooled features: the network cannot be trusted; the OOD model is not fitted")
    if not 0 < float(percentile) <= 100:
        raise ValueError(f"percentile must be in (0, 100], got {percentile}")
    classes = np.unique(y)
    means = np.zeros((int(classes.max()) + 1, x.shape[1]))
    centred = np.empty_like(x)
    for c in classes:
        means[c] = x[y == c].mean(0)
        centred[y == c] = x[y == c] - means[c]
    lw = LedoitWolf(assume_centered=True).fit(centred)
    model = {
        "format": _FORMAT,
        "method": "Mahalanobis distance to the nearest class mean, covariance shared by the classes "
                  "(Ledoit-Wolf shrinkage), fitted on the training features",
        "feature": "input of the final linear classifier (pooled features)",
        "classes_present": [int(c) for c in classes],
        "means": means.tolist(),
        "precision": lw.precision_.tolist(),
        "shrinkage": float(lw.shrinkage_),
        "n_train": int(len(x)),
        "n_validation": int(len(v)),
        "percentile": float(percentile),
    }
    val_scores = ood_scores(v, model)
    model["threshold"] = float(np.percentile(val_scores, float(percentile)))
    model["validation_scores"] = {"median": float(np.median(val_scores)), "max": float(val_scores.max())}
    model["fitted_on"] = dict(fitted_on or {})
    return model


def ood_scores(features: Any, model: Mapping[str, Any]) -> np.ndarray:
    """Smallest squared Mahalanobis distance of each row of ``features`` (N, D) to a class mean present in training.

    Computed with numpy from the stored means and precision rather than a rebuilt scikit-learn estimator
    (``EmpiricalCovariance.mahalanobis`` takes one location; here every class has its own).
    """
    f = np.asarray(features, dtype=np.float64)
    means = np.asarray(model["means"], dtype=np.float64)[list(model.get("classes_present") or range(len(model["means"])))]
    prec = np.asarray(model["precision"], dtype=np.float64)
    if f.ndim != 2 or f.shape[1] != means.shape[1]:
        raise DataError(f"features of shape {tuple(f.shape)} do not fit this OOD model (width {means.shape[1]}): "
                        "was it fitted for another network?")
    best = np.full(len(f), np.inf)
    for mu in means:
        d = f - mu
        best = np.minimum(best, np.einsum("nd,de,ne->n", d, prec, d))
    return best


def ood_flags(scores: Any, model: Mapping[str, Any]) -> np.ndarray:
    """True where a score lies above the model's threshold (a non-finite score is flagged too)."""
    s = np.asarray(scores, dtype=np.float64)
    return ~(s <= float(model["threshold"]))


def save_ood(model: Mapping[str, Any], path: str | os.PathLike) -> Path:
    """Write ``model`` as JSON (atomically)."""
    return atomic_write_text(path, json.dumps(model))


def load_ood(path: str | os.PathLike | Mapping[str, Any] | None) -> dict | None:
    """Read an ``ood.json`` (a dictionary is returned as it is; ``None`` / ``""``: no model).

    Raises:
        DataError: when the file is not a medfuse OOD model.
    """
    if not path:
        return None
    if isinstance(path, Mapping):
        return dict(path)
    with open(path, encoding="utf-8") as f:
        model = json.load(f)
    if not isinstance(model, dict) or model.get("format") != _FORMAT or "threshold" not in model:
        raise DataError(f"{path}: not a medfuse OOD model (format {_FORMAT}); refit it with `medfuse ood-fit RUN`")
    return model


def find_ood(checkpoint: str | os.PathLike | None) -> str:
    """``ood.json`` beside ``checkpoint`` (a file or a folder), or ``""`` when there is none."""
    if not checkpoint:
        return ""
    p = Path(checkpoint)
    cand = (p if p.is_dir() else p.parent) / OOD_FILE
    return str(cand) if cand.is_file() else ""
