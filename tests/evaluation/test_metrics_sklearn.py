# Copyright (c) medfuse contributors
# Licensed under the Apache License, Version 2.0
"""Decision metrics, operating points and multi-label metrics against scikit-learn and hand-computed cases."""

from __future__ import annotations

import numpy as np
import pytest
from sklearn import metrics as skm

from medfuse.evaluation import (
    binary_auc,
    binary_average_precision,
    binary_operating_point,
    classification_metrics,
    decision_metrics,
    multilabel_metrics,
    threshold_for_sensitivity,
)


@pytest.mark.parametrize("seed,n,c", [(0, 50, 2), (1, 200, 3), (2, 97, 5)])
def test_decision_metrics_match_sklearn(seed, n, c):
    rng = np.random.default_rng(seed)
    y = rng.integers(0, c, n)
    pred = np.where(rng.random(n) < 0.6, y, rng.integers(0, c, n))
    m = decision_metrics(y, pred, [f"c{k}" for k in range(c)])
    assert m["accuracy"] == pytest.approx(skm.accuracy_score(y, pred))
    assert m["balanced_accuracy"] == pytest.approx(skm.balanced_accuracy_score(y, pred))
    assert m["f1_macro"] == pytest.approx(skm.f1_score(y, pred, average="macro"))
    np.testing.assert_array_equal(m["confusion_matrix"], skm.confusion_matrix(y, pred, labels=range(c)))
    recall = skm.recall_score(y, pred, average=None, labels=range(c))
    for k in range(c):
        assert m["per_class"][f"c{k}"]["sensitivity"] == pytest.approx(recall[k])
        spec = skm.recall_score(y != k, pred != k)
        assert m["per_class"][f"c{k}"]["specificity"] == pytest.approx(spec)


def test_operating_point_hand():
    y = [1, 1, 1, 0, 0, 0, 0]
    p = [1, 1, 0, 1, 0, 0, 0]
    op = binary_operating_point(y, p)
    assert (op["tp"], op["fn"], op["fp"], op["tn"]) == (2, 1, 1, 3)
    assert op["sensitivity"] == pytest.approx(2 / 3) and op["specificity"] == pytest.approx(3 / 4)
    assert op["ppv"] == pytest.approx(2 / 3) and op["npv"] == pytest.approx(3 / 4)
    assert op["f1"] == pytest.approx(skm.f1_score(y, p))
    # no positives: sensitivity undefined (None), never a crash
    op = binary_operating_point([0, 0], [0, 1])
    assert op["sensitivity"] is None and op["specificity"] == 0.5 and op["balanced_accuracy"] is None


def test_threshold_for_sensitivity():
    y = np.array([1, 1, 1, 1, 0, 0, 0, 0, 0, 1])
    s = np.array([0.9, 0.8, 0.7, 0.3, 0.6, 0.2, 0.1, 0.05, 0.4, 0.3])
    # five positives: 0.9 needs 5 * 0.9 = 4.5 -> the 5th highest positive score, 0.3 (tied with another)
    assert threshold_for_sensitivity(y, s, 0.9) == pytest.approx(0.3)
    assert threshold_for_sensitivity(y, s, 0.6) == pytest.approx(0.7)
    for target in (0.2, 0.5, 0.8, 1.0):
        t = threshold_for_sensitivity(y, s, target)
        assert binary_operating_point(y, s >= t)["sensitivity"] >= target
    assert threshold_for_sensitivity([0, 0], [0.1, 0.2]) is None
    with pytest.raises(ValueError, match="target sensitivity"):
        threshold_for_sensitivity(y, s, 0.0)


def test_perfect_inverted_constant_tied():
    y = np.array([0, 0, 1, 1])
    assert binary_auc(y, [0.1, 0.2, 0.8, 0.9]) == 1.0
    assert binary_auc(y, [0.9, 0.8, 0.2, 0.1]) == 0.0
    assert binary_auc(y, [0.5] * 4) == 0.5
    assert binary_average_precision(y, [0.5] * 4) == pytest.approx(skm.average_precision_score(y, [0.5] * 4))
    tied = [0.2, 0.6, 0.6, 0.9]
    assert binary_auc(y, tied) == pytest.approx(skm.roc_auc_score(y, tied))
    assert binary_average_precision(y, tied) == pytest.approx(skm.average_precision_score(y, tied))


def test_class_without_positives_is_none_not_a_crash():
    y = np.array([0, 1, 0, 1])
    probs = np.array([[0.7, 0.2, 0.1], [0.2, 0.7, 0.1], [0.6, 0.3, 0.1], [0.1, 0.8, 0.1]])
    m = classification_metrics(y, probs, ["a", "b", "c"])
    assert m["per_class"]["c"]["auc"] is None and m["per_class"]["c"]["aupr"] is None
    assert m["auc_macro"] == pytest.approx(1.0)
    d = decision_metrics(y, probs.argmax(1), ["a", "b", "c"])
    assert d["per_class"]["c"]["sensitivity"] is None
    assert d["balanced_accuracy"] == pytest.approx(1.0)


def test_multilabel_against_sklearn():
    rng = np.random.default_rng(4)
    y = rng.integers(0, 2, (150, 3))
    p = np.clip(y * 0.4 + rng.random((150, 3)) * 0.6, 0, 1)
    m = multilabel_metrics(y, p, ["x", "y", "z"], thresholds=[0.5, 0.6, 0.4])
    assert m["auc_macro"] == pytest.approx(skm.roc_auc_score(y, p, average="macro"))
    assert m["aupr_macro"] == pytest.approx(skm.average_precision_score(y, p, average="macro"))
    decided = p >= np.array([0.5, 0.6, 0.4])
    assert m["accuracy"] == pytest.approx(skm.accuracy_score(y, decided))  # exact match (subset accuracy)
    assert m["hamming_accuracy"] == pytest.approx(1 - skm.hamming_loss(y, decided))
    assert m["f1_macro"] == pytest.approx(skm.f1_score(y, decided, average="macro"))
    # an unknown cell (-1) is left out of its class only
    y2 = y.copy()
    y2[0, 1] = -1
    m2 = multilabel_metrics(y2, p, ["x", "y", "z"])
    assert m2["per_class"]["y"]["n"] == 149 and m2["per_class"]["x"]["n"] == 150
