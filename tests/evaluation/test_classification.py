# Copyright (c) medfuse contributors
# Licensed under the Apache License, Version 2.0
"""classification_metrics against hand-computed values and scikit-learn."""

from __future__ import annotations

import numpy as np
import pytest
from sklearn.metrics import average_precision_score, roc_auc_score

from medfuse.evaluation import (
    binary_auc,
    binary_average_precision,
    classification_metrics,
    confusion_matrix,
    format_metrics,
)


def test_binary_hand_computed():
    # 4 positive/negative pairs: (0.35 vs 0.1) yes, (0.35 vs 0.4) no, (0.8 vs both) yes -> 3/4
    y, s = [0, 0, 1, 1], [0.1, 0.4, 0.35, 0.8]
    assert binary_auc(y, s) == pytest.approx(0.75)
    # thresholds 0.8: P=1 R=.5 ; 0.4: P=1/2 R=.5 ; 0.35: P=2/3 R=1 ; AP = .5*1 + .5*2/3
    assert binary_average_precision(y, s) == pytest.approx(0.5 + 1 / 3)


def test_ties_hand_computed():
    y, s = [0, 1, 0, 1], [0.5, 0.5, 0.2, 0.9]
    # tie between the positive 0.5 and the negative 0.5 counts one half: (0.5 + 1 + 2) / 4
    assert binary_auc(y, s) == pytest.approx(0.875)
    # the tied pair enters together: 0.9 -> P=1, R=.5 ; 0.5 -> P=2/3, R=1
    assert binary_average_precision(y, s) == pytest.approx(0.5 + 1 / 3)


def test_undefined_cases():
    assert binary_auc([1, 1, 1], [0.1, 0.2, 0.3]) is None
    assert binary_auc([0, 0], [0.1, 0.2]) is None
    assert binary_average_precision([0, 0], [0.1, 0.2]) is None
    assert binary_average_precision([1, 1], [0.1, 0.2]) == pytest.approx(1.0)


def test_confusion_matrix_hand():
    cm = confusion_matrix([0, 0, 1, 2, 2, 2], [0, 1, 1, 2, 0, 2], 3)
    np.testing.assert_array_equal(cm, [[1, 1, 0], [0, 1, 0], [1, 0, 2]])
    with pytest.raises(ValueError, match="outside 0..2"):
        confusion_matrix([0, 3], [0, 0], 3)


def test_binary_metrics_use_positive_class():
    probs = np.array([[0.9, 0.1], [0.6, 0.4], [0.65, 0.35], [0.2, 0.8]])
    m = classification_metrics([0, 0, 1, 1], probs, ["normal", "opacity"])
    assert m["positive_class"] == "opacity"
    assert m["auc"] == pytest.approx(0.75)
    assert m["aupr"] == pytest.approx(0.5 + 1 / 3)
    assert m["accuracy"] == pytest.approx(0.75)  # row 3 predicted normal
    assert m["confusion_matrix"] == [[2, 0], [1, 1]]
    assert m["per_class"]["opacity"]["precision"] == pytest.approx(1.0)
    assert m["per_class"]["opacity"]["recall"] == pytest.approx(0.5)
    assert m["per_class"]["normal"]["support"] == 2
    # for two classes, the AUC of class 0 on p0 equals the positive-class AUC
    assert m["per_class"]["normal"]["auc"] == pytest.approx(0.75)


@pytest.mark.parametrize("seed,n,c", [(0, 40, 4), (1, 25, 3), (2, 60, 2), (3, 15, 5)])
def test_against_sklearn(seed, n, c):
    rng = np.random.default_rng(seed)
    y = np.r_[np.arange(c), rng.integers(0, c, n - c)]  # every class present
    logits = rng.normal(size=(n, c)) + 1.5 * np.eye(c)[y] * rng.random((n, 1))
    logits = np.round(logits, 1)  # create ties on purpose
    probs = np.exp(logits) / np.exp(logits).sum(1, keepdims=True)
    classes = [f"c{k}" for k in range(c)]
    m = classification_metrics(y, probs, classes)
    onehot = np.eye(c)[y]
    for k, name in enumerate(classes):
        assert m["per_class"][name]["auc"] == pytest.approx(roc_auc_score(onehot[:, k], probs[:, k]))
        assert m["per_class"][name]["aupr"] == pytest.approx(average_precision_score(onehot[:, k], probs[:, k]))
    if c == 2:
        assert m["auc"] == pytest.approx(roc_auc_score(y, probs[:, 1]))
        assert m["aupr"] == pytest.approx(average_precision_score(y, probs[:, 1]))
    else:
        assert m["auc"] == pytest.approx(roc_auc_score(y, probs, multi_class="ovr", average="macro"))
        assert m["aupr"] == pytest.approx(average_precision_score(onehot, probs, average="macro"))
    assert m["accuracy"] == pytest.approx(np.mean(probs.argmax(1) == y))
    assert np.sum(m["confusion_matrix"]) == n


def test_missing_class_left_out_of_macro():
    probs = np.array([[0.7, 0.2, 0.1], [0.1, 0.8, 0.1], [0.3, 0.6, 0.1], [0.6, 0.3, 0.1]])
    m = classification_metrics([0, 1, 1, 0], probs, ["a", "b", "c"])
    assert m["per_class"]["c"]["auc"] is None and m["per_class"]["c"]["aupr"] is None
    assert m["auc"] == pytest.approx(1.0)  # mean over a and b only
    assert "-" in format_metrics(m)


def test_bad_inputs():
    with pytest.raises(ValueError, match="2 columns but 3 classes"):
        classification_metrics([0, 1], np.ones((2, 2)) / 2, ["a", "b", "c"])
    with pytest.raises(ValueError, match="outside 0..1"):
        classification_metrics([0, 2], np.ones((2, 2)) / 2, ["a", "b"])
    with pytest.raises(ValueError, match="3 values but probs has 2 rows"):
        classification_metrics([0, 1, 1], np.ones((2, 2)) / 2, ["a", "b"])


def test_torch_inputs_and_table():
    torch = pytest.importorskip("torch")
    m = classification_metrics(torch.tensor([0, 1]), torch.tensor([[0.8, 0.2], [0.1, 0.9]]), ["x", "y"])
    assert m["auc"] == 1.0 and m["accuracy"] == 1.0
    table = format_metrics(m, title="t")
    assert "AUC=1.0000" in table and "confusion matrix" in table
