# Copyright (c) medfuse contributors
# Licensed under the Apache License, Version 2.0
"""Seeded, stratified bootstrap confidence intervals for AUC, AUPR and accuracy.

Each resample draws, within every stratum (the true class; the label pattern for multi-label
data), as many cases with replacement as the stratum holds, so every resample keeps the class
counts of the data and AUC / AUPR stay defined. The interval is the percentile interval of
the resampled values (2.5th and 97.5th percentiles for 95 %).

The statistics are computed for all resamples at once (numpy along the resample axis, in
chunks that keep memory near 16 M values) from one sort per resample and class: AUC as the
Mann-Whitney statistic with ties counted half, AUPR as the step-wise average precision with
tied scores entering together, exactly as :mod:`medfuse.evaluation.classification` computes
them on the full data. 1000 resamples of 1000 cases take well under a second on a laptop core
(see ``benchmarks/evaluation_bootstrap.py``).

Example::

    >>> ci = bootstrap_metrics(y, probs, classes=["normal", "pneumonia"], n_boot=1000, seed=0)
    >>> ci["auc"]  # {"low": ..., "high": ..., "level": 0.95, "n_boot": 1000}
"""

from __future__ import annotations

from typing import Any, Mapping, Sequence

import numpy as np

__all__ = ["paired_difference", "stratified_indices", "resampled_auc_ap", "resampled_auc", "resampled_average_precision", "percentile_interval",
           "too_small_interval", "smallest_class", "bootstrap_metrics", "MIN_CASES_PER_CLASS"]

_CHUNK_VALUES = 4_000_000

#: Fewest cases of each class (each label's positives and negatives for multi-label) for which intervals are drawn.
#: With fewer, a stratified resample can only reshuffle a handful of cases per class and its percentile interval
#: collapses (four cases that happen to be ranked right give "1.0000 - 1.0000"), which reads as certainty; the
#: report says "n too small" instead.
MIN_CASES_PER_CLASS = 10


def stratified_indices(strata: Any, n_boot: int, seed: int = 0) -> np.ndarray:
    """``(n_boot, N)`` row indices: each row resamples every stratum with replacement, keeping its size.

    Args:
        strata: (N,) stratum of each case (any hashable values; rows of a 2-D array are one stratum each).
        n_boot: number of resamples.
        seed: seed of the numpy generator (the same seed gives the same resamples).
    """
    s = np.asarray(strata)
    if s.ndim > 1:
        _, s = np.unique(s.reshape(len(s), -1), axis=0, return_inverse=True)
    _, codes = np.unique(s.reshape(-1), return_inverse=True)
    codes = codes.reshape(-1)
    rng = np.random.default_rng(seed)
    parts = []
    for k in range(int(codes.max()) + 1 if codes.size else 0):
        members = np.flatnonzero(codes == k)
        parts.append(members[rng.integers(0, members.size, size=(int(n_boot), members.size))])
    if not parts:
        return np.zeros((int(n_boot), 0), dtype=np.int64)
    return np.concatenate(parts, axis=1)


def resampled_auc_ap(target: np.ndarray, scores: np.ndarray, idx: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """ROC AUC and average precision of each resample ``idx[b]`` from one sort per resample.

    With the resample's scores sorted from high to low and ``fp_before`` / ``fp_through`` the negatives
    scoring above / at or above a case, a positive contributes ``n_neg - fp_through`` negatives
    it beats plus half of the ``fp_through - fp_before`` it ties (the Mann-Whitney AUC with average
    ranks), and the precision at the end of its run of tied scores (the step-wise AP).

    Returns:
        ``(auc, ap)``, each ``(B,)``; NaN where a resample lacks positives (both) or negatives (AUC).
    """
    auc = np.full(idx.shape[0], np.nan)
    ap = np.full(idx.shape[0], np.nan)
    n = idx.shape[1]
    if n == 0:
        return auc, ap
    step = max(1, _CHUNK_VALUES // n)
    positions = np.arange(n)[None, :]
    for a in range(0, idx.shape[0], step):
        block = idx[a:a + step]
        s = scores[block]
        order = np.argsort(-s, axis=1, kind="stable")
        s_sorted = np.take_along_axis(s, order, axis=1)
        y_sorted = np.take_along_axis(target[block].astype(bool), order, axis=1)
        tp = np.cumsum(y_sorted, axis=1)
        fp = (positions + 1) - tp
        last = np.ones_like(s_sorted, dtype=bool)
        last[:, :-1] = s_sorted[:, 1:] != s_sorted[:, :-1]
        first = np.ones_like(s_sorted, dtype=bool)
        first[:, 1:] = last[:, :-1]
        # index of the last / first member of each case's run of tied scores
        end = np.minimum.accumulate(np.where(last, positions, n)[:, ::-1], axis=1)[:, ::-1]
        start = np.maximum.accumulate(np.where(first, positions, 0), axis=1)
        fp_through = np.take_along_axis(fp, end, axis=1)
        fp_at_start = np.take_along_axis(fp, start, axis=1)
        neg_at_start = ~np.take_along_axis(y_sorted, start, axis=1)
        fp_before = fp_at_start - neg_at_start
        n_pos = y_sorted.sum(1).astype(np.float64)
        n_neg = n - n_pos
        wins = ((n_neg[:, None] - fp_through) + 0.5 * (fp_through - fp_before)) * y_sorted
        precision_at_end = np.take_along_axis(tp, end, axis=1) / (end + 1.0)
        with np.errstate(invalid="ignore", divide="ignore"):
            auc[a:a + step] = np.where((n_pos > 0) & (n_neg > 0), wins.sum(1) / (n_pos * n_neg), np.nan)
            ap[a:a + step] = np.where(n_pos > 0, (precision_at_end * y_sorted).sum(1) / n_pos, np.nan)
    return auc, ap


def resampled_auc(target: np.ndarray, scores: np.ndarray, idx: np.ndarray) -> np.ndarray:
    """ROC AUC of each resample ``idx[b]`` (``(B,)``; NaN where a resample lacks positives or negatives)."""
    return resampled_auc_ap(target, scores, idx)[0]


def resampled_average_precision(target: np.ndarray, scores: np.ndarray, idx: np.ndarray) -> np.ndarray:
    """Average precision of each resample (``(B,)``; NaN where a resample has no positive)."""
    return resampled_auc_ap(target, scores, idx)[1]


def percentile_interval(values: Any, level: float = 0.95) -> dict:
    """``{"low", "high", "level", "n_boot", "n_defined"}`` of the finite ``values`` (``None`` bounds when none)."""
    v = np.asarray(values, dtype=np.float64)
    ok = v[np.isfinite(v)]
    alpha = (1.0 - float(level)) / 2.0
    if ok.size == 0:
        low = high = None
    else:
        low, high = (float(x) for x in np.percentile(ok, [100 * alpha, 100 * (1 - alpha)]))
    return {"low": low, "high": high, "level": float(level), "n_boot": int(v.size), "n_defined": int(ok.size)}


def paired_difference(a: Mapping[str, Any], b: Mapping[str, Any], n_boot: int = 1000, seed: int = 0,
                      level: float = 0.95) -> dict:
    """``a - b`` of AUC, AUPR and accuracy of two models' predictions of the same images, with a paired bootstrap
    interval: both models are scored on the same label-stratified resamples of the images.

    Args:
        a, b: :func:`medfuse.evaluation.read_predictions` results (``images``, ``labels``, ``probs``); rows are
            matched by image. Two classes: AUC / AUPR of class 1; more: their macro means. Accuracy: arg-max.

    Returns:
        ``{"n_images", "n_boot", "auc": {"diff", "low", "high", ...}, "aupr": {...}, "accuracy": {...}}``.

    Raises:
        ValueError: the two list different images, or other labels for an image.
    """
    index = {img: i for i, img in enumerate(b["images"])}
    if len(index) != len(b["images"]) or sorted(index) != sorted(a["images"]) or len(a["images"]) != len(index):
        raise ValueError("the two models' predictions list different images")
    ai = np.arange(len(a["images"]))
    bi = np.array([index[img] for img in a["images"]], dtype=np.int64)
    y = np.asarray(a["labels"])[ai].astype(np.int64)
    if (y != np.asarray(b["labels"])[bi]).any():
        raise ValueError("the two models' labels differ for the same images")
    probs = (np.asarray(a["probs"], dtype=np.float64)[ai], np.asarray(b["probs"], dtype=np.float64)[bi])
    c = probs[0].shape[1]
    idx = stratified_indices(y, n_boot, seed)
    full = np.arange(len(y))[None, :]
    stats = []
    for p in probs:
        per: dict[str, tuple] = {}
        if c == 2:
            auc, ap = resampled_auc_ap(y == 1, p[:, 1], idx)
            auc0, ap0 = resampled_auc_ap(y == 1, p[:, 1], full)
        else:  # macro over the classes
            rows = [resampled_auc_ap(y == k, p[:, k], idx) for k in range(c)]
            rows0 = [resampled_auc_ap(y == k, p[:, k], full) for k in range(c)]
            auc, ap = np.nanmean([r[0] for r in rows], axis=0), np.nanmean([r[1] for r in rows], axis=0)
            auc0, ap0 = np.nanmean([r[0] for r in rows0], axis=0), np.nanmean([r[1] for r in rows0], axis=0)
        per["auc"], per["aupr"] = (float(auc0[0]), auc), (float(ap0[0]), ap)
        correct = p.argmax(1) == y
        per["accuracy"] = (float(correct.mean()), correct[idx].mean(1))
        stats.append(per)
    out: dict[str, Any] = {"n_images": int(len(y)), "n_boot": int(n_boot)}
    for metric in ("auc", "aupr", "accuracy"):
        out[metric] = {"diff": stats[0][metric][0] - stats[1][metric][0],
                       **percentile_interval(stats[0][metric][1] - stats[1][metric][1], level)}
    return out


def too_small_interval(smallest: int, minimum: int, level: float = 0.95, n_boot: int = 0) -> dict:
    """The interval entry of a bootstrap that was not drawn: ``low`` / ``high`` ``None``, ``n_too_small`` True, and the
    counts that decided it (``smallest``: cases of the smallest class; ``min_per_class``: the minimum)."""
    return {"low": None, "high": None, "level": float(level), "n_boot": int(n_boot), "n_defined": 0, "n_too_small": True,
            "smallest_class": int(smallest), "min_per_class": int(minimum)}


def smallest_class(y_true: Any, multilabel: bool = False) -> int:
    """Cases of the smallest class present (single-label), or the fewest positives or negatives of any label
    (multi-label; a kind with no case at all is left out, as a class absent from the data); 0 without cases."""
    y = np.asarray(y_true)
    if y.size == 0:
        return 0
    if multilabel:
        t = y.reshape(len(y), -1).astype(bool)
        counts = np.concatenate([t.sum(0), (~t).sum(0)])
    else:
        counts = np.unique(y.reshape(-1), return_counts=True)[1]
    counts = counts[counts > 0]
    return int(counts.min()) if counts.size else 0


def bootstrap_metrics(
    y_true: Any,
    probs: Any,
    classes: Sequence[str],
    pred: Any | None = None,
    multilabel: bool = False,
    n_boot: int = 1000,
    seed: int = 0,
    level: float = 0.95,
    min_per_class: int = MIN_CASES_PER_CLASS,
) -> dict:
    """Bootstrap intervals of AUC and AUPR (per class, macro, summary), accuracy, sensitivity and specificity.

    Args:
        y_true: (N,) class indices, or (N, C) 0/1 for multi-label (rows with unknown cells
            should be removed before).
        probs: (N, C) probabilities.
        classes: the C class names.
        pred: the decisions whose accuracy is bootstrapped: (N,) class indices, or (N, C) 0/1 for
            multi-label (exact-match accuracy); the arg-max (0.5 per class) when ``None``.
        multilabel: the task is multi-label.
        n_boot: resamples. Defaults to 1000.
        seed: seed. Defaults to 0.
        level: interval level. Defaults to 0.95.
        min_per_class: fewest cases of the smallest class present (:func:`smallest_class`) for which intervals are
            drawn; below it every interval is :func:`too_small_interval` and ``n_too_small`` is True.
            Defaults to :data:`MIN_CASES_PER_CLASS`.

    Returns:
        ``{"auc": ci, "aupr": ci, "accuracy": ci, "sensitivity": ci, "specificity": ci, "auc_macro": ci,
        "aupr_macro": ci, "per_class": {name: {"auc": ci, "aupr": ci, "sensitivity": ci, "specificity": ci}},
        "method": ..., "seed", "n_boot", "n_too_small", "min_per_class"}`` where ``ci`` is
        :func:`percentile_interval` output. ``auc`` / ``aupr`` follow
        :func:`~medfuse.evaluation.classification.classification_metrics`: the positive class
        (index 1) for two single-label classes, the macro mean otherwise; ``sensitivity`` / ``specificity``
        (of ``pred``, one class against the rest) follow :func:`~medfuse.evaluation.subgroups.core_metrics`: the
        positive class's for two single-label classes, the mean over classes otherwise.
    """
    if int(n_boot) < 1:
        raise ValueError(f"n_boot must be >= 1, got {n_boot}")
    classes = [str(c) for c in classes]
    p = np.asarray(probs, dtype=np.float64)
    y = np.asarray(y_true)
    n, c = p.shape
    if multilabel:
        targets = y.astype(bool)
        decided = (p >= 0.5) if pred is None else np.asarray(pred).astype(bool)
        correct = np.all(decided == targets, axis=1)
    else:
        y = y.astype(np.int64).reshape(-1)
        targets = np.stack([y == k for k in range(c)], axis=1)
        decided = p.argmax(1) if pred is None else np.asarray(pred).astype(np.int64).reshape(-1)
        correct = decided == y
    method = "percentile bootstrap, resampling within each true class (label pattern for multi-label)"
    smallest = smallest_class(y, multilabel)
    if smallest < int(min_per_class):
        none = too_small_interval(smallest, min_per_class, level)
        keys = ("auc", "aupr", "sensitivity", "specificity")
        return {**{k: dict(none) for k in ("auc", "aupr", "auc_macro", "aupr_macro", "accuracy", "sensitivity",
                                           "specificity")},
                "per_class": {name: {k: dict(none) for k in keys} for name in classes}, "method": method,
                "seed": int(seed), "n_boot": 0, "level": float(level), "n_too_small": True,
                "min_per_class": int(min_per_class), "smallest_class": smallest}
    idx = stratified_indices(y, n_boot, seed) if n else np.zeros((int(n_boot), 0), dtype=np.int64)
    decided_k = decided if multilabel else np.stack([decided == k for k in range(c)], axis=1)
    per_class, auc_rows, aupr_rows, sens_rows, spec_rows = {}, [], [], [], []
    for k, name in enumerate(classes):
        auc, aupr = resampled_auc_ap(targets[:, k], p[:, k], idx)
        # the stratified resamples keep every class's count, so the denominators are those of the data
        pos, neg = targets[:, k], ~targets[:, k]
        with np.errstate(invalid="ignore", divide="ignore"):
            sens = (decided_k[:, k] & pos)[idx].sum(1) / pos.sum() if pos.any() else np.full(int(n_boot), np.nan)
            spec = (~decided_k[:, k] & neg)[idx].sum(1) / neg.sum() if neg.any() else np.full(int(n_boot), np.nan)
        per_class[name] = {"auc": percentile_interval(auc, level), "aupr": percentile_interval(aupr, level),
                           "sensitivity": percentile_interval(sens, level), "specificity": percentile_interval(spec, level)}
        auc_rows.append(auc)
        aupr_rows.append(aupr)
        sens_rows.append(sens)
        spec_rows.append(spec)

    def _macro(rows):
        arr = np.stack(rows)
        defined = np.isfinite(arr).any(axis=1)  # stratification fixes which classes are defined
        if not defined.any():
            return np.full(arr.shape[1], np.nan)
        return np.nanmean(arr[defined], axis=0)

    auc_macro, aupr_macro = _macro(auc_rows), _macro(aupr_rows)
    binary = not multilabel and c == 2
    acc = correct[idx].mean(1) if n else np.full(int(n_boot), np.nan)
    return {
        "auc": percentile_interval(auc_rows[1] if binary else auc_macro, level),
        "aupr": percentile_interval(aupr_rows[1] if binary else aupr_macro, level),
        "auc_macro": percentile_interval(auc_macro, level),
        "aupr_macro": percentile_interval(aupr_macro, level),
        "accuracy": percentile_interval(acc, level),
        "sensitivity": percentile_interval(sens_rows[1] if binary else _macro(sens_rows), level),
        "specificity": percentile_interval(spec_rows[1] if binary else _macro(spec_rows), level),
        "per_class": per_class,
        "method": method,
        "seed": int(seed),
        "n_boot": int(n_boot),
        "level": float(level),
        "n_too_small": False,
        "min_per_class": int(min_per_class),
        "smallest_class": smallest,
    }
