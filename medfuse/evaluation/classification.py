# Copyright (c) medfuse contributors
# Licensed under the Apache License, Version 2.0
"""Classification metrics: AUC and AUPR per class and macro, accuracy, confusion matrix.

Every number is computed here with numpy (no scikit-learn at run time), so validation
during training and ``medfuse evaluate`` report the same values from the same code:

* AUC is the area under the ROC curve, computed as the Mann-Whitney U statistic with
  average ranks for ties (equal to the trapezoidal ROC area).
* AUPR is the average precision ``sum_n (R_n - R_{n-1}) P_n`` over the distinct score
  thresholds (the step-wise area, not the trapezoidal one, which is optimistic).
* Both are one-vs-rest per class. The summary ``auc`` / ``aupr`` is the positive class
  (index 1) for two classes, and the unweighted mean over classes otherwise; classes whose
  metric is undefined (no positive or no negative case) are left out of the mean and
  reported as ``None``.

Example::

    >>> import numpy as np
    >>> m = classification_metrics([0, 1, 1], np.array([[0.8, 0.2], [0.3, 0.7], [0.6, 0.4]]), ["normal", "opacity"])
    >>> m["auc"], m["accuracy"]
    (1.0, 0.6666666666666666)
"""

from __future__ import annotations

import math
from typing import Any, Sequence

import numpy as np

__all__ = [
    "binary_auc",
    "threshold_for_sensitivity",
    "binary_operating_point",
    "decision_metrics",
    "multilabel_metrics",
    "binary_average_precision",
    "confusion_matrix",
    "classification_metrics",
    "format_metrics",
]


def _as_1d(x: Any, dtype=None) -> np.ndarray:
    if hasattr(x, "detach"):  # torch tensors without importing torch
        x = x.detach().cpu().numpy()
    return np.asarray(x, dtype=dtype).reshape(-1)


def _average_ranks(scores: np.ndarray) -> np.ndarray:
    """1-based ranks of ``scores``; tied values share the mean of their ranks."""
    order = np.argsort(scores, kind="mergesort")
    sorted_scores = scores[order]
    ranks = np.empty(len(scores), dtype=np.float64)
    # boundaries of runs of equal values
    starts = np.flatnonzero(np.r_[True, sorted_scores[1:] != sorted_scores[:-1]])
    ends = np.r_[starts[1:], len(scores)]
    for s, e in zip(starts, ends):
        ranks[order[s:e]] = (s + 1 + e) / 2.0  # mean of ranks s+1..e
    return ranks


def binary_auc(y_true: Any, scores: Any) -> float | None:
    """Area under the ROC curve of ``scores`` for the binary target ``y_true`` (1 = positive).

    Returns:
        the AUC in [0, 1], or ``None`` when ``y_true`` has no positive or no negative case.
    """
    y = _as_1d(y_true).astype(bool)
    s = _as_1d(scores, np.float64)
    if y.shape != s.shape:
        raise ValueError(f"y_true has {y.size} values but scores has {s.size}")
    n_pos = int(y.sum())
    n_neg = int(y.size - n_pos)
    if n_pos == 0 or n_neg == 0:
        return None
    ranks = _average_ranks(s)
    u = ranks[y].sum() - n_pos * (n_pos + 1) / 2.0
    return float(u / (n_pos * n_neg))


def binary_average_precision(y_true: Any, scores: Any) -> float | None:
    """Average precision (area under the precision-recall step curve) of ``scores``.

    Thresholds are the distinct score values, from high to low; tied scores enter together.

    Returns:
        the AUPR in [0, 1], or ``None`` when ``y_true`` has no positive case.
    """
    y = _as_1d(y_true).astype(bool)
    s = _as_1d(scores, np.float64)
    if y.shape != s.shape:
        raise ValueError(f"y_true has {y.size} values but scores has {s.size}")
    n_pos = int(y.sum())
    if n_pos == 0:
        return None
    order = np.argsort(-s, kind="mergesort")
    s_sorted, y_sorted = s[order], y[order]
    tp = np.cumsum(y_sorted)
    fp = np.cumsum(~y_sorted)
    # keep the last index of each run of tied scores: one point per threshold
    last = np.r_[s_sorted[1:] != s_sorted[:-1], True]
    tp, fp = tp[last].astype(np.float64), fp[last].astype(np.float64)
    precision = tp / (tp + fp)
    recall = tp / n_pos
    d_recall = np.diff(np.r_[0.0, recall])
    return float(np.sum(d_recall * precision))


def confusion_matrix(y_true: Any, y_pred: Any, num_classes: int) -> np.ndarray:
    """``num_classes`` x ``num_classes`` counts; rows are true classes, columns predicted ones."""
    t = _as_1d(y_true).astype(np.int64)
    p = _as_1d(y_pred).astype(np.int64)
    if t.shape != p.shape:
        raise ValueError(f"y_true has {t.size} values but y_pred has {p.size}")
    for name, v in (("y_true", t), ("y_pred", p)):
        if v.size and (v.min() < 0 or v.max() >= num_classes):
            raise ValueError(f"{name} has values outside 0..{num_classes - 1}: {sorted(set(v.tolist()))}")
    cm = np.zeros((num_classes, num_classes), dtype=np.int64)
    np.add.at(cm, (t, p), 1)
    return cm


def _mean_defined(values: Sequence[float | None]) -> float | None:
    defined = [v for v in values if v is not None]
    return float(np.mean(defined)) if defined else None


def classification_metrics(y_true: Any, probs: Any, classes: Sequence[str]) -> dict:
    """Metrics of single-label predictions.

    Args:
        y_true: true class indices, shape (N,).
        probs: class probabilities (or any scores; the arg-max is the prediction), shape (N, C).
        classes: the C class names, in index order.

    Returns:
        a JSON-ready dictionary::

            {"n": N, "classes": [...], "positive_class": name or None,
             "accuracy": float, "auc": float or None, "aupr": float or None,
             "auc_macro": ..., "aupr_macro": ...,
             "per_class": {name: {"auc", "aupr", "support", "precision", "recall"}},
             "confusion_matrix": [[...]]}  # rows true, columns predicted

        ``auc`` / ``aupr`` are the positive-class values for two classes and the macro means
        otherwise; ``auc_macro`` / ``aupr_macro`` are always the macro means.

    Raises:
        ValueError: when shapes disagree with each other or with ``classes``, or labels are
            outside ``0..C-1``.
    """
    classes = [str(c) for c in classes]
    p = probs.detach().cpu().numpy() if hasattr(probs, "detach") else np.asarray(probs)
    p = p.astype(np.float64)
    if p.ndim != 2:
        raise ValueError(f"probs must have shape (N, C), got {p.shape}")
    n, c = p.shape
    if c != len(classes):
        raise ValueError(f"probs has {c} columns but {len(classes)} classes were given: {classes}")
    y = _as_1d(y_true)
    if y.size != n:
        raise ValueError(f"y_true has {y.size} values but probs has {n} rows")
    if n and (not np.all(np.isfinite(y)) or np.any(y != np.round(y))):
        raise ValueError("y_true must hold integer class indices")
    y = y.astype(np.int64)
    if n and (y.min() < 0 or y.max() >= c):
        raise ValueError(f"y_true has values outside 0..{c - 1}: {sorted(set(y.tolist()))}")
    pred = p.argmax(axis=1) if n else np.zeros(0, dtype=np.int64)
    cm = confusion_matrix(y, pred, c)

    per_class: dict[str, dict] = {}
    aucs, auprs = [], []
    for k, name in enumerate(classes):
        target = y == k
        auc = binary_auc(target, p[:, k]) if n else None
        aupr = binary_average_precision(target, p[:, k]) if n else None
        aucs.append(auc)
        auprs.append(aupr)
        tp = int(cm[k, k])
        predicted = int(cm[:, k].sum())
        support = int(cm[k, :].sum())
        per_class[name] = {
            "auc": auc,
            "aupr": aupr,
            "support": support,
            "precision": tp / predicted if predicted else None,
            "recall": tp / support if support else None,
        }
    auc_macro, aupr_macro = _mean_defined(aucs), _mean_defined(auprs)
    binary = c == 2
    return {
        "n": int(n),
        "classes": classes,
        "positive_class": classes[1] if binary else None,
        "accuracy": float(np.trace(cm) / n) if n else None,
        "auc": aucs[1] if binary else auc_macro,
        "aupr": auprs[1] if binary else aupr_macro,
        "auc_macro": auc_macro,
        "aupr_macro": aupr_macro,
        "per_class": per_class,
        "confusion_matrix": cm.tolist(),
    }


def _fmt(v: Any) -> str:
    if v is None or (isinstance(v, float) and math.isnan(v)):
        return "-"
    return f"{v:.4f}" if isinstance(v, float) else str(v)


def format_metrics(metrics: dict, title: str | None = None) -> str:
    """A short plain-text table of :func:`classification_metrics` output."""
    lines = [title] if title else []
    summary = "positive class " + metrics["positive_class"] if metrics.get("positive_class") else "macro"
    lines.append(
        f"n={metrics['n']}  accuracy={_fmt(metrics['accuracy'])}  "
        f"AUC={_fmt(metrics['auc'])}  AUPR={_fmt(metrics['aupr'])}  ({summary})"
    )
    width = max([len(c) for c in metrics["classes"]] + [5])
    lines.append(f"{'class':<{width}}  {'support':>7}  {'AUC':>7}  {'AUPR':>7}  {'prec':>7}  {'recall':>7}")
    for name, m in metrics["per_class"].items():
        lines.append(
            f"{name:<{width}}  {m['support']:>7}  {_fmt(m['auc']):>7}  {_fmt(m['aupr']):>7}  "
            f"{_fmt(m['precision']):>7}  {_fmt(m['recall']):>7}"
        )
    lines.append("confusion matrix (rows true, columns predicted):")
    head = " " * (width + 2) + "".join(f"{c[:9]:>10}" for c in metrics["classes"])
    lines.append(head)
    for name, row in zip(metrics["classes"], metrics["confusion_matrix"]):
        lines.append(f"{name:<{width}}  " + "".join(f"{v:>10}" for v in row))
    return "\n".join(lines)


def _safe_div(a: float, b: float) -> float | None:
    return float(a) / float(b) if b else None


def threshold_for_sensitivity(y_true: Any, scores: Any, target: float = 0.9) -> float | None:
    """The highest score threshold whose sensitivity (``score >= t`` called positive) reaches ``target``.

    It is the ``ceil(target * P)``-th highest score of the P positive cases, so ties with it are
    called positive too and the sensitivity reached is at least ``target``.

    Returns:
        the threshold, or ``None`` when ``y_true`` has no positive case.

    Raises:
        ValueError: when ``target`` is outside (0, 1].
    """
    if not 0.0 < float(target) <= 1.0:
        raise ValueError(f"target sensitivity must be in (0, 1], got {target}")
    y = _as_1d(y_true).astype(bool)
    s = _as_1d(scores, np.float64)
    pos = np.sort(s[y])[::-1]
    if pos.size == 0:
        return None
    k = int(math.ceil(float(target) * pos.size - 1e-9))
    return float(pos[max(k, 1) - 1])


def binary_operating_point(y_true: Any, pred: Any) -> dict:
    """Counts and rates of binary decisions ``pred`` (1 = positive) against ``y_true``.

    Returns:
        ``{"tp", "fp", "tn", "fn", "sensitivity", "specificity", "ppv", "npv", "f1",
        "accuracy", "balanced_accuracy"}``; a rate whose denominator is zero is ``None``.
    """
    y = _as_1d(y_true).astype(bool)
    p = _as_1d(pred).astype(bool)
    if y.shape != p.shape:
        raise ValueError(f"y_true has {y.size} values but pred has {p.size}")
    tp, fp = int((y & p).sum()), int((~y & p).sum())
    tn, fn = int((~y & ~p).sum()), int((y & ~p).sum())
    sens, spec = _safe_div(tp, tp + fn), _safe_div(tn, tn + fp)
    ppv = _safe_div(tp, tp + fp)
    f1 = _safe_div(2 * tp, 2 * tp + fp + fn)
    bal = None if sens is None or spec is None else (sens + spec) / 2
    return {"tp": tp, "fp": fp, "tn": tn, "fn": fn, "sensitivity": sens, "specificity": spec, "ppv": ppv,
            "npv": _safe_div(tn, tn + fn), "f1": f1, "accuracy": _safe_div(tp + tn, y.size), "balanced_accuracy": bal}


def decision_metrics(y_true: Any, y_pred: Any, classes: Sequence[str]) -> dict:
    """Metrics of single-label decisions (class indices): what depends on the chosen class only.

    Returns:
        ``{"accuracy", "balanced_accuracy" (mean recall over classes with cases), "f1_macro",
        "confusion_matrix", "per_class": {name: {"support", "sensitivity", "specificity",
        "ppv", "npv", "f1"}}}`` (one-vs-rest per class).
    """
    classes = [str(c) for c in classes]
    y = _as_1d(y_true).astype(np.int64)
    p = _as_1d(y_pred).astype(np.int64)
    cm = confusion_matrix(y, p, len(classes))
    per_class = {}
    recalls, f1s = [], []
    for k, name in enumerate(classes):
        op = binary_operating_point(y == k, p == k)
        per_class[name] = {"support": int((y == k).sum()), **{m: op[m] for m in ("sensitivity", "specificity", "ppv", "npv", "f1")}}
        if op["sensitivity"] is not None:
            recalls.append(op["sensitivity"])
        # classes absent from both truth and prediction have no F1 (scikit-learn counts them as 0 with a warning)
        if op["f1"] is not None:
            f1s.append(op["f1"])
    n = y.size
    return {
        "accuracy": float(np.trace(cm) / n) if n else None,
        "balanced_accuracy": float(np.mean(recalls)) if recalls else None,
        "f1_macro": float(np.mean(f1s)) if f1s else None,
        "confusion_matrix": cm.tolist(),
        "per_class": per_class,
    }


def multilabel_metrics(y_true: Any, probs: Any, classes: Sequence[str], thresholds: Sequence[float] | None = None) -> dict:
    """Metrics of multi-label predictions: each class is its own binary problem.

    Args:
        y_true: (N, C) 0/1 targets; -1 marks an unknown cell, left out of that class.
        probs: (N, C) independent class probabilities.
        classes: the C class names.
        thresholds: decision threshold per class; 0.5 each when ``None``.

    Returns:
        ``{"n", "classes", "auc", "aupr" (macro over defined classes), "auc_macro", "aupr_macro",
        "accuracy" (exact match over fully known rows), "hamming_accuracy", "f1_macro",
        "per_class": {name: {"auc", "aupr", "support", "threshold", sensitivity, specificity ...}}}``
    """
    classes = [str(c) for c in classes]
    y = np.asarray(y_true, dtype=np.int64)
    p = np.asarray(probs, dtype=np.float64)
    if y.shape != p.shape or p.ndim != 2 or p.shape[1] != len(classes):
        raise ValueError(f"y_true {y.shape} and probs {p.shape} must both be (N, {len(classes)})")
    thr = np.full(len(classes), 0.5) if thresholds is None else np.asarray(thresholds, dtype=np.float64)
    decided = p >= thr[None, :]
    per_class, aucs, auprs, f1s = {}, [], [], []
    for k, name in enumerate(classes):
        known = y[:, k] >= 0
        yk, pk = y[known, k].astype(bool), p[known, k]
        auc, aupr = binary_auc(yk, pk), binary_average_precision(yk, pk)
        op = binary_operating_point(yk, decided[known, k])
        aucs.append(auc)
        auprs.append(aupr)
        if op["f1"] is not None:
            f1s.append(op["f1"])
        per_class[name] = {"auc": auc, "aupr": aupr, "support": int(yk.sum()), "n": int(known.sum()),
                           "threshold": float(thr[k]), **op}
    full = np.all(y >= 0, axis=1)
    exact = np.all(decided[full] == y[full].astype(bool), axis=1)
    known_cells = y >= 0
    auc_macro, aupr_macro = _mean_defined(aucs), _mean_defined(auprs)
    return {
        "n": int(len(y)),
        "classes": classes,
        "positive_class": None,
        "auc": auc_macro,
        "aupr": aupr_macro,
        "auc_macro": auc_macro,
        "aupr_macro": aupr_macro,
        "accuracy": float(exact.mean()) if exact.size else None,
        "hamming_accuracy": float((decided == y.astype(bool))[known_cells].mean()) if known_cells.any() else None,
        "f1_macro": float(np.mean(f1s)) if f1s else None,
        "per_class": per_class,
    }
