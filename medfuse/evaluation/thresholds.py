# Copyright (c) medfuse contributors
# Licensed under the Apache License, Version 2.0
"""Operating thresholds that are backed by enough cases, with the interval of what they give.

A threshold fitted to reach a target sensitivity on a few dozen positives is mostly noise: the multi-output
U-Net's TB threshold fitted on 28 validation cases cut held-out specificity from 0.83 to 0.43. So a threshold
is only fitted when at least ``min_cases`` positives *and* ``min_cases`` negatives back it
(:func:`threshold_support`); otherwise it is refused, with a message saying why, and the decision stays the
arg-max. :func:`validated_threshold` also reports the sensitivity and specificity the threshold gives on the
cases it was fitted on, with percentile-bootstrap intervals (resampling within each class, the threshold held
fixed: the interval shows the sampling noise of those two numbers, not the extra optimism of having chosen the
threshold on the same cases).
"""

from __future__ import annotations

from typing import Any

import numpy as np

from medfuse.evaluation.bootstrap import percentile_interval, stratified_indices
from medfuse.evaluation.classification import threshold_for_sensitivity

__all__ = ["DEFAULT_MIN_CASES", "threshold_support", "refusal_message", "validated_threshold"]

#: positives and negatives a fitted threshold needs at least (config key ``threshold_min_cases``)
DEFAULT_MIN_CASES = 50


def threshold_support(is_positive: Any) -> tuple[int, int]:
    """``(positives, negatives)`` among the cases (a boolean array)."""
    t = np.asarray(is_positive, dtype=bool).reshape(-1)
    return int(t.sum()), int((~t).sum())


def refusal_message(n_pos: int, n_neg: int, min_cases: int, positive: str = "positive") -> str | None:
    """Why a threshold cannot be fitted on ``n_pos`` positives and ``n_neg`` negatives, or None when it can."""
    if n_pos >= int(min_cases) and n_neg >= int(min_cases):
        return None
    return (f"threshold refused: {n_pos} {positive} and {n_neg} other cases, fewer than threshold_min_cases="
            f"{int(min_cases)} of each; the arg-max decision is kept (give more validation cases, or lower "
            "threshold_min_cases knowing the threshold will not hold)")


def validated_threshold(
    is_positive: Any,
    scores: Any,
    target_sensitivity: float = 0.9,
    min_cases: int = DEFAULT_MIN_CASES,
    n_boot: int = 1000,
    seed: int = 0,
    positive: str = "positive",
) -> dict:
    """Fit the threshold on ``scores`` that reaches ``target_sensitivity``, when enough cases back it.

    Returns:
        ``{"threshold": float or None, "refused": message or None, "n_positive", "n_negative", "min_cases",
        "target_sensitivity", "sensitivity", "specificity", "sensitivity_ci", "specificity_ci"}``; the last four
        are None when the threshold is refused.
    """
    t = np.asarray(is_positive, dtype=bool).reshape(-1)
    s = np.asarray(scores, dtype=np.float64).reshape(-1)
    if t.shape != s.shape:
        raise ValueError(f"is_positive has {t.size} values but scores has {s.size}")
    n_pos, n_neg = threshold_support(t)
    out: dict[str, Any] = {"threshold": None, "refused": refusal_message(n_pos, n_neg, min_cases, positive),
                           "n_positive": n_pos, "n_negative": n_neg, "min_cases": int(min_cases),
                           "target_sensitivity": float(target_sensitivity), "sensitivity": None, "specificity": None,
                           "sensitivity_ci": None, "specificity_ci": None}
    if out["refused"]:
        return out
    thr = threshold_for_sensitivity(t, s, target_sensitivity)
    if thr is None:
        out["refused"] = f"threshold refused: no threshold reaches sensitivity {target_sensitivity} on these cases"
        return out
    decided = s >= thr
    out.update(threshold=float(thr), sensitivity=float(decided[t].mean()), specificity=float((~decided[~t]).mean()))
    if int(n_boot) > 0:
        idx = stratified_indices(t.astype(np.int64), int(n_boot), seed)
        tb, db = t[idx], decided[idx]
        sens = (tb & db).sum(1) / np.maximum(tb.sum(1), 1)
        spec = (~tb & ~db).sum(1) / np.maximum((~tb).sum(1), 1)
        out.update(sensitivity_ci=percentile_interval(sens), specificity_ci=percentile_interval(spec))
    return out
