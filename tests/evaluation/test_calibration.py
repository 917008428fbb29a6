# Copyright (c) medfuse contributors
# Licensed under the Apache License, Version 2.0
"""Calibration error, Brier, NLL, temperature scaling, thresholds and calibration.json."""

from __future__ import annotations

import json

import numpy as np
import pytest
from sklearn.calibration import calibration_curve
from sklearn.metrics import brier_score_loss, log_loss

from medfuse.errors import DataError
from medfuse.evaluation import (
    apply_calibration,
    calibration_summary,
    find_calibration,
    fit_calibration,
    fit_temperature,
    load_calibration,
    save_calibration,
    temperature_scale,
)
from medfuse.evaluation.calibration import (
    brier_score,
    calibration_bins,
    expected_calibration_error,
    negative_log_likelihood,
    uncalibrate,
)


def _softmax(z):
    e = np.exp(z - z.max(1, keepdims=True))
    return e / e.sum(1, keepdims=True)


def _sample(n=3000, c=3, true_t=1.0, model_t=1.0, seed=0):
    """Labels drawn from softmax(z / true_t); the model reports softmax(z / model_t)."""
    rng = np.random.default_rng(seed)
    z = rng.normal(0, 2.0, (n, c))
    truth = _softmax(z / true_t)
    y = np.array([rng.choice(c, p=row) for row in truth])
    return y, _softmax(z / model_t)


@pytest.mark.parametrize("strategy", ["uniform", "quantile"])
def test_bins_agree_with_sklearn_calibration_curve(strategy):
    rng = np.random.default_rng(1)
    conf = rng.random(500)
    hit = (rng.random(500) < conf ** 1.3).astype(int)
    b = calibration_bins(conf, hit, 10, strategy)
    prob_true, prob_pred = calibration_curve(hit, conf, n_bins=10, strategy=strategy)
    used = np.asarray(b["count"]) > 0
    np.testing.assert_allclose(np.asarray(b["accuracy"])[used], prob_true, atol=1e-12)
    np.testing.assert_allclose(np.asarray(b["confidence"])[used], prob_pred, atol=1e-12)
    assert sum(b["count"]) == 500


def test_ece_mce_hand():
    conf = np.array([0.1, 0.1, 0.9, 0.9, 0.9, 0.9])
    hit = np.array([0, 1, 1, 1, 1, 0])
    # bins [0,0.5] and (0.5,1]: |0.5-0.1| * 2/6 + |0.75-0.9| * 4/6
    ece, mce = expected_calibration_error(conf, hit, 2, "uniform")
    assert ece == pytest.approx(0.4 * 2 / 6 + 0.15 * 4 / 6)
    assert mce == pytest.approx(0.4)
    assert expected_calibration_error([], [], 5) == (None, None)


def test_brier_and_nll_match_sklearn():
    rng = np.random.default_rng(2)
    y = rng.integers(0, 2, 200)
    p1 = rng.random(200)
    probs = np.c_[1 - p1, p1]
    assert brier_score(y, probs) == pytest.approx(brier_score_loss(y, p1))
    assert negative_log_likelihood(y, probs) == pytest.approx(log_loss(y, probs), rel=1e-9)
    y3, p3 = _sample(300, 3)
    assert negative_log_likelihood(y3, p3) == pytest.approx(log_loss(y3, p3, labels=[0, 1, 2]), rel=1e-9)
    onehot = np.eye(3)[y3]
    assert brier_score(y3, p3) == pytest.approx(((p3 - onehot) ** 2).sum(1).mean())
    s = calibration_summary(y3, p3)
    assert {"ece_equal_width", "mce_equal_width", "ece_equal_mass", "mce_equal_mass", "brier", "nll"} <= set(s)


def test_temperature_recovers_overconfidence():
    # the model is twice as confident as the truth: the fitted temperature is near 2
    y, p = _sample(4000, 3, true_t=1.0, model_t=0.5, seed=3)
    t = fit_temperature(y, p)
    assert 1.7 < t < 2.3
    scaled = temperature_scale(p, t)
    assert negative_log_likelihood(y, scaled) < negative_log_likelihood(y, p)
    assert calibration_summary(y, scaled)["ece"] < calibration_summary(y, p)["ece"]
    np.testing.assert_array_equal(scaled.argmax(1), p.argmax(1))  # never changes the arg-max
    np.testing.assert_allclose(uncalibrate(scaled, t), p, atol=1e-9)


def test_constant_scores_keep_t_one():
    y = np.array([0, 1, 0, 1])
    p = np.full((4, 2), 0.5)
    assert fit_temperature(y, p) == 1.0


def test_fit_calibration_binary_threshold_reaches_target(tmp_path):
    rng = np.random.default_rng(5)
    y = rng.integers(0, 2, 400)
    p1 = 1 / (1 + np.exp(-(rng.normal(0, 1, 400) + 2.0 * (y - 0.5)) * 3))
    cal = fit_calibration(y, np.c_[1 - p1, p1], ["normal", "pneumonia"], target_sensitivity=0.95,
                          fitted_on={"source": "test"})
    assert cal["decision"] == "threshold" and cal["positive_class"] == "pneumonia"
    assert cal["validation"]["sensitivity"] >= 0.95
    assert cal["fitted_on"]["n"] == 400 and sum(cal["fitted_on"]["n_per_class"].values()) == 400
    assert cal["validation"]["nll_after"] <= cal["validation"]["nll_before"] + 1e-12
    probs, pred = apply_calibration(np.c_[1 - p1, p1], cal)
    np.testing.assert_array_equal(pred, (probs[:, 1] >= cal["threshold"]).astype(int))
    assert ((pred == 1) & (y == 1)).sum() / (y == 1).sum() >= 0.95
    # round trip through calibration.json beside a checkpoint
    ckpt = tmp_path / "model.pt"
    ckpt.write_bytes(b"")
    assert find_calibration(ckpt) is None
    save_calibration(tmp_path / "calibration.json", cal)
    assert find_calibration(ckpt) == str(tmp_path / "calibration.json")
    assert find_calibration(tmp_path) == str(tmp_path / "calibration.json")
    back = load_calibration(find_calibration(ckpt), ["normal", "pneumonia"])
    assert back["threshold"] == cal["threshold"] and back["temperature"] == cal["temperature"]
    with pytest.raises(DataError, match="fitted for classes"):
        load_calibration(tmp_path / "calibration.json", ["a", "b"])
    (tmp_path / "broken.json").write_text("{")
    with pytest.raises(DataError, match="cannot read"):
        load_calibration(tmp_path / "broken.json")
    (tmp_path / "partial.json").write_text(json.dumps({"temperature": 1.0}))
    with pytest.raises(DataError, match="lacks"):
        load_calibration(tmp_path / "partial.json")


def test_fit_calibration_multiclass_and_multilabel():
    y, p = _sample(600, 4, seed=6)
    cal = fit_calibration(y, p, list("abcd"))
    assert cal["decision"] == "argmax" and cal["threshold"] is None
    assert set(cal["per_class_thresholds"]) == set("abcd")
    _, pred = apply_calibration(p, cal)
    np.testing.assert_array_equal(pred, p.argmax(1))
    rng = np.random.default_rng(7)
    ym = rng.integers(0, 2, (300, 2))
    pm = np.clip(0.6 * ym + 0.4 * rng.random((300, 2)), 0.01, 0.99)
    calm = fit_calibration(ym, pm, ["x", "y"], multilabel=True, target_sensitivity=0.8)
    assert calm["decision"] == "per-class-threshold"
    _, dm = apply_calibration(pm, calm, multilabel=True)
    for k, c in enumerate(["x", "y"]):
        sens = ((dm[:, k] == 1) & (ym[:, k] == 1)).sum() / (ym[:, k] == 1).sum()
        assert sens >= 0.8


def test_no_positive_validation_case_falls_back_to_argmax():
    y = np.zeros(10, dtype=int)
    p = np.c_[np.linspace(0.9, 0.6, 10), np.linspace(0.1, 0.4, 10)]
    cal = fit_calibration(y, p, ["neg", "pos"])
    assert cal["decision"] == "argmax" and cal["threshold"] is None and cal["per_class_thresholds"]["pos"] is None
    with pytest.raises(DataError, match="labelled"):
        fit_calibration(np.array([-1, -1]), np.full((2, 2), 0.5), ["a", "b"])
