# Copyright (c) medfuse contributors
# Licensed under the Apache License, Version 2.0
"""Uncertainty: predictive entropy, MC-dropout mutual information, selective prediction.

Selective prediction ranks the cases from most to least certain and keeps the most certain
fraction (the *coverage*); the rest would be referred to a human reader. The risk-coverage
curve gives the error rate of the kept cases at every coverage ``k / N``; AURC is its mean
over ``k = 1..N`` (Geifman & El-Yaniv, "Selective Classification for Deep Neural Networks",
NeurIPS 2017), lower is better. ``e-AURC`` subtracts the AURC of an oracle ranking that refers
the errors first. Cases with equal uncertainty are kept in file order (stable sort).
"""

from __future__ import annotations

from typing import Any, Sequence

import numpy as np

from medfuse.evaluation.classification import binary_auc, classification_metrics

__all__ = ["predictive_entropy", "mutual_information", "risk_coverage", "selective_prediction", "REFERRAL_FRACTIONS"]

REFERRAL_FRACTIONS = (0.05, 0.10, 0.20)
_EPS = 1e-12


def predictive_entropy(probs: Any, multilabel: bool = False) -> np.ndarray:
    """Entropy (nats) of each row of ``probs`` (N, C); for multi-label the sum of the per-class binary entropies."""
    p = np.asarray(probs, dtype=np.float64)
    if multilabel:
        q = np.clip(p, _EPS, 1 - _EPS)
        return -(q * np.log(q) + (1 - q) * np.log(1 - q)).sum(1)
    return -(p * np.log(np.clip(p, _EPS, 1.0))).sum(1)


def mutual_information(sample_probs: Any, multilabel: bool = False) -> np.ndarray:
    """MC-dropout mutual information (nats) from ``(T, N, C)`` sampled probabilities.

    ``H[mean_t p_t] - mean_t H[p_t]`` (BALD; Houlsby et al. 2011, Gal et al. 2017): the part of
    the predictive entropy due to uncertainty about the weights. Never negative (clipped at 0
    against rounding).
    """
    s = np.asarray(sample_probs, dtype=np.float64)
    if s.ndim != 3:
        raise ValueError(f"sample_probs must have shape (T, N, C), got {s.shape}")
    total = predictive_entropy(s.mean(0), multilabel)
    expected = np.mean([predictive_entropy(t, multilabel) for t in s], axis=0)
    return np.maximum(total - expected, 0.0)


def risk_coverage(correct: Any, uncertainty: Any) -> dict:
    """Risk-coverage curve of decisions ``correct`` (bool) ranked by ``uncertainty`` (low = keep first).

    Returns:
        ``{"coverage": (N,), "risk": (N,), "aurc", "oracle_aurc", "e_aurc"}`` (arrays as lists).
    """
    c = np.asarray(correct, dtype=bool).reshape(-1)
    u = np.asarray(uncertainty, dtype=np.float64).reshape(-1)
    if c.shape != u.shape:
        raise ValueError(f"correct has {c.size} values but uncertainty has {u.size}")
    n = c.size
    if n == 0:
        return {"coverage": [], "risk": [], "aurc": None, "oracle_aurc": None, "e_aurc": None}
    u = np.where(np.isfinite(u), u, np.inf)  # unknown uncertainty: referred first
    order = np.argsort(u, kind="stable")
    errors = np.cumsum(~c[order])
    k = np.arange(1, n + 1)
    risk = errors / k
    oracle = np.cumsum(np.sort(~c)) / k  # errors last: the best possible ranking
    aurc, oracle_aurc = float(risk.mean()), float(oracle.mean())
    return {"coverage": (k / n).tolist(), "risk": risk.tolist(), "aurc": aurc, "oracle_aurc": oracle_aurc,
            "e_aurc": aurc - oracle_aurc}


def selective_prediction(
    y_true: Any,
    probs: Any,
    pred: Any,
    uncertainty: Any,
    classes: Sequence[str],
    multilabel: bool = False,
    fractions: Sequence[float] = REFERRAL_FRACTIONS,
    measure: str = "entropy",
) -> dict:
    """Risk-coverage curve, AURC, and accuracy / AUC after referring the most uncertain cases.

    Args:
        y_true: (N,) class indices or (N, C) 0/1 for multi-label.
        probs: (N, C) probabilities.
        pred: decisions: (N,) class indices or (N, C) 0/1.
        uncertainty: (N,) uncertainty per case (higher = referred first).
        classes: class names.
        multilabel: the task is multi-label (a case is correct when every class is).
        fractions: referred fractions to report. Defaults to 5, 10 and 20 %.
        measure: name of the uncertainty measure, recorded in the output.

    Returns:
        ``{"measure", "aurc", "oracle_aurc", "e_aurc", "curve": {"coverage", "risk"},
        "referral": {"5%": {"referred", "kept", "accuracy", "auc"}, ...}, "all": {...}}``;
        ``auc`` is the summary AUC of the kept cases (positive class for two classes, macro
        otherwise; ``None`` when undefined).
    """
    y = np.asarray(y_true)
    p = np.asarray(probs, dtype=np.float64)
    d = np.asarray(pred)
    u = np.asarray(uncertainty, dtype=np.float64).reshape(-1)
    correct = np.all(d == y, axis=1) if multilabel else (d.reshape(-1) == y.reshape(-1))
    rc = risk_coverage(correct, u)
    n = len(u)
    order = np.argsort(np.where(np.isfinite(u), u, np.inf), kind="stable")

    def _kept_metrics(keep: np.ndarray) -> dict:
        if multilabel:
            aucs = [binary_auc(y[keep, k], p[keep, k]) for k in range(p.shape[1])]
            defined = [a for a in aucs if a is not None]
            auc = float(np.mean(defined)) if defined else None
        else:
            auc = classification_metrics(y[keep], p[keep], classes)["auc"] if keep.size else None
        return {"kept": int(keep.size), "accuracy": float(correct[keep].mean()) if keep.size else None, "auc": auc}

    referral = {}
    for f in fractions:
        referred = int(round(float(f) * n))
        keep = np.sort(order[: n - referred])
        referral[f"{round(100 * float(f))}%"] = {"fraction": float(f), "referred": referred, **_kept_metrics(keep)}
    return {
        "measure": measure,
        "aurc": rc["aurc"],
        "oracle_aurc": rc["oracle_aurc"],
        "e_aurc": rc["e_aurc"],
        "curve": {"coverage": rc["coverage"], "risk": rc["risk"]},
        "all": {"referred": 0, **_kept_metrics(np.arange(n))},
        "referral": referral,
    }
