# Copyright (c) medfuse contributors
# Licensed under the Apache License, Version 2.0
"""Entropy, mutual information, risk-coverage / referral, and subgroup metrics (hand-computed and scikit-learn)."""

from __future__ import annotations

import numpy as np
import pytest
from sklearn.metrics import accuracy_score, roc_auc_score

from medfuse.evaluation import mutual_information, predictive_entropy, risk_coverage, selective_prediction, subgroup_metrics
from medfuse.evaluation.subgroups import age_band, grouping_columns


def test_entropy_and_mutual_information_hand():
    p = np.array([[0.5, 0.5], [1.0, 0.0]])
    np.testing.assert_allclose(predictive_entropy(p), [np.log(2), 0.0], atol=1e-9)
    np.testing.assert_allclose(predictive_entropy(np.array([[0.5, 0.5]]), multilabel=True), [2 * np.log(2)])
    # two passes that disagree completely: mean is 0.5/0.5 (H = log 2), each pass is certain (H = 0) -> MI = log 2
    samples = np.array([[[1.0, 0.0]], [[0.0, 1.0]]])
    np.testing.assert_allclose(mutual_information(samples), [np.log(2)], atol=1e-9)
    # passes that agree: no epistemic part
    same = np.array([[[0.3, 0.7]], [[0.3, 0.7]]])
    np.testing.assert_allclose(mutual_information(same), [0.0], atol=1e-12)
    with pytest.raises(ValueError, match="T, N, C"):
        mutual_information(p)


def test_risk_coverage_hand():
    correct = np.array([True, False, True, True])
    unc = np.array([0.1, 0.9, 0.2, 0.3])  # the error is the most uncertain case
    rc = risk_coverage(correct, unc)
    np.testing.assert_allclose(rc["risk"], [0, 0, 0, 0.25])
    assert rc["aurc"] == pytest.approx(0.0625) and rc["e_aurc"] == pytest.approx(0.0)
    worst = risk_coverage(correct, -unc)  # the error comes first
    np.testing.assert_allclose(worst["risk"], [1, 1 / 2, 1 / 3, 1 / 4])
    assert worst["e_aurc"] > 0


def test_referral_improves_accuracy_and_counts_add_up():
    rng = np.random.default_rng(0)
    n = 200
    y = rng.integers(0, 2, n)
    margin = rng.random(n)
    p1 = np.where(y == 1, 0.5 + margin / 2, 0.5 - margin / 2)
    flip = rng.random(n) < 0.5 * (1 - margin)  # errors among the uncertain cases
    p1 = np.where(flip, 1 - p1, p1)
    probs = np.c_[1 - p1, p1]
    pred = probs.argmax(1)
    sel = selective_prediction(y, probs, pred, predictive_entropy(probs), ["a", "b"])
    assert sel["all"]["accuracy"] == pytest.approx(accuracy_score(y, pred))
    assert sel["all"]["auc"] == pytest.approx(roc_auc_score(y, p1))
    for key, frac in (("5%", 0.05), ("10%", 0.10), ("20%", 0.20)):
        r = sel["referral"][key]
        assert r["referred"] + r["kept"] == n and r["referred"] == round(frac * n)
    assert sel["referral"]["20%"]["accuracy"] > sel["all"]["accuracy"]
    keep = np.argsort(predictive_entropy(probs), kind="stable")[: n - 20]
    assert sel["referral"]["10%"]["accuracy"] == pytest.approx(accuracy_score(y[keep], pred[keep]))


@pytest.mark.parametrize("value,band", [("45", "40-59"), ("045Y", "40-59"), ("006M", "0-19"), ("81.5", "80-99"),
                                        ("", "(missing)"), ("unknown", "(missing)")])
def test_age_band(value, band):
    assert age_band(value) == band


def test_grouping_columns_skip_identifiers_with_reasons():
    n = 30
    extra = {
        "patient_id": [f"p{i}" for i in range(n)],
        "view": ["PA", "AP"] * 15,
        "site": ["s1"] * n,
        "accession_code": [f"a{i}" for i in range(n)],
        "age": ["034Y"] * 10 + ["067Y"] * 20,
    }
    used, skipped = grouping_columns(extra)
    assert set(used) == {"view", "age"}
    assert skipped["patient_id"] == "identifier column" and "nothing to compare" in skipped["site"]
    assert "identifier" in skipped["accession_code"]
    assert sorted(set(used["age"])) == ["20-39", "60-79"]


def test_subgroup_metrics_match_direct_computation():
    rng = np.random.default_rng(1)
    n = 120
    y = rng.integers(0, 2, n)
    p1 = np.clip(0.35 * y + 0.65 * rng.random(n), 0, 1)
    probs = np.c_[1 - p1, p1]
    pred = (p1 >= 0.5).astype(int)
    sex = rng.choice(["F", "M", ""], n)
    res = subgroup_metrics(y, probs, pred, ["neg", "pos"], {"sex": list(sex)}, n_boot=50)
    groups = res["columns"]["sex"]
    assert set(groups) == {"F", "M", "(missing)"}
    assert sum(g["n"] for g in groups.values()) == n
    for value, g in groups.items():
        rows = sex == ("" if value == "(missing)" else value)
        assert g["n"] == rows.sum()
        assert g["n_per_class"] == {"neg": int((y[rows] == 0).sum()), "pos": int((y[rows] == 1).sum())}
        assert g["auc"] == pytest.approx(roc_auc_score(y[rows], p1[rows]))
        assert g["accuracy"] == pytest.approx(accuracy_score(y[rows], pred[rows]))
        assert g["ci"]["auc"]["low"] <= g["auc"] <= g["ci"]["auc"]["high"]


def test_subgroup_with_one_class_only_gives_none_auc():
    y = np.array([0, 0, 1, 1])
    probs = np.array([[0.8, 0.2], [0.6, 0.4], [0.3, 0.7], [0.2, 0.8]])
    res = subgroup_metrics(y, probs, probs.argmax(1), ["a", "b"], {"site": ["x", "x", "y", "y"]})
    assert res["columns"]["site"]["x"]["auc"] is None and res["columns"]["site"]["x"]["accuracy"] == 1.0
