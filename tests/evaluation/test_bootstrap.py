# Copyright (c) medfuse contributors
# Licensed under the Apache License, Version 2.0
"""Stratified, seeded bootstrap: resamples, vectorised AUC / AP against the per-resample values, intervals."""

from __future__ import annotations

import numpy as np
import pytest
from sklearn.metrics import average_precision_score, roc_auc_score

from medfuse.evaluation import binary_auc, binary_average_precision, bootstrap_metrics, stratified_indices
from medfuse.evaluation.bootstrap import (
    MIN_CASES_PER_CLASS,
    percentile_interval,
    resampled_auc,
    resampled_average_precision,
    smallest_class,
)


def _data(seed=0, n=300, c=2):
    rng = np.random.default_rng(seed)
    y = rng.integers(0, c, n)
    logits = rng.normal(0, 1, (n, c))
    logits[np.arange(n), y] += 1.0
    p = np.exp(logits) / np.exp(logits).sum(1, keepdims=True)
    return y, np.round(p, 2)  # rounding makes ties


def test_stratified_indices_keep_class_counts_and_are_seeded():
    y = np.array([0] * 7 + [1] * 3 + [2] * 5)
    idx = stratified_indices(y, 50, seed=3)
    assert idx.shape == (50, 15)
    for row in idx:
        np.testing.assert_array_equal(np.bincount(y[row], minlength=3), [7, 3, 5])
    np.testing.assert_array_equal(idx, stratified_indices(y, 50, seed=3))
    assert not np.array_equal(idx, stratified_indices(y, 50, seed=4))


def test_vectorised_values_equal_direct_computation():
    y, p = _data()
    idx = stratified_indices(y, 40, seed=0)
    auc = resampled_auc(y == 1, p[:, 1], idx)
    ap = resampled_average_precision(y == 1, p[:, 1], idx)
    for b in range(40):
        yy, ss = y[idx[b]] == 1, p[idx[b], 1]
        assert auc[b] == pytest.approx(binary_auc(yy, ss), abs=1e-12)
        assert auc[b] == pytest.approx(roc_auc_score(yy, ss), abs=1e-12)
        assert ap[b] == pytest.approx(binary_average_precision(yy, ss), abs=1e-12)
        assert ap[b] == pytest.approx(average_precision_score(yy, ss), abs=1e-12)


def test_intervals_contain_estimate_and_are_reproducible():
    y, p = _data(1, 400, 3)
    ci = bootstrap_metrics(y, p, ["a", "b", "c"], n_boot=300, seed=7)
    again = bootstrap_metrics(y, p, ["a", "b", "c"], n_boot=300, seed=7)
    assert ci == again
    macro = np.mean([roc_auc_score(y == k, p[:, k]) for k in range(3)])
    assert ci["auc"]["low"] < macro < ci["auc"]["high"]
    acc = float((p.argmax(1) == y).mean())
    assert ci["accuracy"]["low"] <= acc <= ci["accuracy"]["high"]
    assert ci["auc"]["n_boot"] == 300 and ci["auc"]["n_defined"] == 300
    assert ci["per_class"]["b"]["aupr"]["low"] < ci["per_class"]["b"]["aupr"]["high"]


def test_perfect_scores_give_a_degenerate_interval_and_missing_class_gives_none():
    y = np.array([0, 0, 1, 1, 1])
    p = np.array([[0.9, 0.1], [0.8, 0.2], [0.3, 0.7], [0.2, 0.8], [0.1, 0.9]])
    ci = bootstrap_metrics(y, p, ["n", "p"], n_boot=100, seed=0, min_per_class=0)
    assert ci["auc"]["low"] == 1.0 and ci["auc"]["high"] == 1.0
    # no case of class 2: its AUC interval is undefined, the macro uses the other classes
    p3 = np.c_[p * 0.9, np.full(5, 0.1)]
    ci3 = bootstrap_metrics(y, p3, ["n", "p", "none"], n_boot=50, seed=0, min_per_class=0)
    assert ci3["per_class"]["none"]["auc"]["low"] is None and ci3["per_class"]["none"]["auc"]["n_defined"] == 0
    assert ci3["auc_macro"]["low"] == 1.0


def test_percentile_interval_and_bad_arguments():
    pi = percentile_interval(np.arange(101, dtype=float))
    assert pi["low"] == pytest.approx(2.5) and pi["high"] == pytest.approx(97.5)
    with pytest.raises(ValueError, match="n_boot"):
        bootstrap_metrics([0, 1], [[0.5, 0.5], [0.5, 0.5]], ["a", "b"], n_boot=0)


def test_multilabel_bootstrap():
    rng = np.random.default_rng(2)
    y = rng.integers(0, 2, (120, 2))
    p = np.clip(0.5 * y + 0.5 * rng.random((120, 2)), 0, 1)
    ci = bootstrap_metrics(y, p, ["x", "y"], multilabel=True, n_boot=100, seed=0)
    est = roc_auc_score(y, p, average="macro")
    assert ci["auc"]["low"] <= est <= ci["auc"]["high"]


def test_too_few_cases_of_a_class_give_no_interval():
    """Five cases (2 + 3) used to give AUC "1.0000 - 1.0000"; below the minimum per class no interval is drawn."""
    y = np.array([0, 0, 1, 1, 1])
    p = np.array([[0.9, 0.1], [0.8, 0.2], [0.3, 0.7], [0.2, 0.8], [0.1, 0.9]])
    ci = bootstrap_metrics(y, p, ["n", "p"], n_boot=100, seed=0)
    assert ci["n_too_small"] is True and ci["smallest_class"] == 2 and ci["min_per_class"] == MIN_CASES_PER_CLASS
    for key in ("auc", "aupr", "accuracy", "sensitivity", "specificity"):
        assert ci[key]["low"] is None and ci[key]["n_too_small"], key
    assert ci["per_class"]["p"]["sensitivity"]["n_too_small"]
    # exactly at the minimum the intervals are drawn; an absent class does not count
    y10 = np.repeat([0, 1], MIN_CASES_PER_CLASS)
    p10 = np.c_[1 - np.linspace(0.05, 0.95, y10.size), np.linspace(0.05, 0.95, y10.size)]
    drawn = bootstrap_metrics(y10, np.c_[p10, np.zeros(y10.size)], ["a", "b", "c"], n_boot=50, seed=0)
    assert drawn["n_too_small"] is False and drawn["auc"]["low"] is not None
    assert smallest_class(np.r_[y10[:-1]]) == MIN_CASES_PER_CLASS - 1
    assert smallest_class(np.array([[1, 0], [1, 1], [1, 0]]), multilabel=True) == 1  # label 1: one positive


def test_sensitivity_and_specificity_intervals():
    y, p = _data(4, 300, 2)
    pred = (p[:, 1] >= 0.3).astype(int)
    ci = bootstrap_metrics(y, p, ["n", "p"], pred=pred, n_boot=400, seed=1)
    sens = float(((pred == 1) & (y == 1)).sum() / (y == 1).sum())
    spec = float(((pred == 0) & (y == 0)).sum() / (y == 0).sum())
    assert ci["sensitivity"]["low"] < sens < ci["sensitivity"]["high"]
    assert ci["specificity"]["low"] < spec < ci["specificity"]["high"]
    assert ci["sensitivity"] == ci["per_class"]["p"]["sensitivity"]
    # one class against the rest: the negative class's sensitivity is the positive class's specificity
    assert ci["per_class"]["n"]["sensitivity"]["low"] == pytest.approx(ci["specificity"]["low"])
    ci3 = bootstrap_metrics(*_data(5, 300, 3), ["a", "b", "c"], n_boot=100, seed=0)
    assert 0 < ci3["sensitivity"]["low"] < ci3["sensitivity"]["high"] < 1


def test_paired_difference_scores_both_models_on_the_same_resamples():
    from medfuse.evaluation.bootstrap import paired_difference

    rng = np.random.default_rng(0)
    y = np.array([0] * 40 + [1] * 30)
    good = np.clip(y * 0.6 + rng.random(70) * 0.5, 0, 1)
    poor = rng.random(70)
    images = [f"im{i}.png" for i in range(70)]

    def pred(p, order=slice(None)):
        probs = np.stack([1 - p, p], 1)
        return {"images": list(np.array(images)[order]), "labels": y[order], "probs": probs[order]}

    same = paired_difference(pred(good), pred(good), n_boot=200)
    for metric in ("auc", "aupr", "accuracy"):
        assert same[metric]["diff"] == 0.0 and same[metric]["low"] == same[metric]["high"] == 0.0
    d = paired_difference(pred(good), pred(poor, order=np.arange(70)[::-1]), n_boot=300)  # rows matched by image
    assert d["auc"]["diff"] == pytest.approx(roc_auc_score(y, good) - roc_auc_score(y, poor))
    assert 0 < d["auc"]["low"] < d["auc"]["diff"] < d["auc"]["high"] and d["n_images"] == 70 and d["n_boot"] == 300
    other = pred(good)
    other["images"] = other["images"][:-1] + ["elsewhere.png"]
    with pytest.raises(ValueError, match="different images"):
        paired_difference(pred(good), other)
    relabelled = pred(poor)
    relabelled["labels"] = 1 - relabelled["labels"]
    with pytest.raises(ValueError, match="labels differ"):
        paired_difference(pred(good), relabelled)
