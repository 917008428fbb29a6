# Copyright (c) medfuse contributors
# Licensed under the Apache License, Version 2.0
"""Thresholds refused below threshold_min_cases; the bootstrap interval of the sensitivity/specificity they give."""

from __future__ import annotations

import numpy as np

from medfuse.evaluation.calibration import fit_calibration
from medfuse.evaluation.predictions import decision_columns
from medfuse.evaluation.thresholds import validated_threshold


def _data(n_pos: int, n_neg: int, seed: int = 0):
    rng = np.random.default_rng(seed)
    y = np.r_[np.ones(n_pos, int), np.zeros(n_neg, int)]
    s = np.clip(rng.normal(0.35 + 0.3 * y, 0.15), 0.001, 0.999)
    return y, np.c_[1 - s, s]


def test_threshold_fitted_with_interval_when_enough_cases():
    y, p = _data(80, 120)
    t = validated_threshold(y == 1, p[:, 1], 0.9, min_cases=50, n_boot=200, seed=0)
    assert t["refused"] is None and t["sensitivity"] >= 0.9
    assert t["sensitivity_ci"]["low"] <= t["sensitivity"] <= t["sensitivity_ci"]["high"]
    assert t["specificity_ci"]["low"] <= t["specificity"] <= t["specificity_ci"]["high"]
    assert t["specificity_ci"]["high"] - t["specificity_ci"]["low"] > 0.01


def test_threshold_refused_below_min_cases():
    y, p = _data(28, 300)  # the 28 TB cases of the multi-output U-Net story
    t = validated_threshold(y == 1, p[:, 1], 0.9, min_cases=50)
    assert t["threshold"] is None and "28 positive and 300 other cases" in t["refused"]
    cal = fit_calibration(y, p, ["normal", "tb"], min_cases=50)
    assert cal["decision"] == "argmax" and cal["threshold"] is None and "threshold_min_cases=50" in cal["threshold_refused"]
    assert decision_columns(cal, 2, 3)["threshold"] == ["0.5"] * 3  # argmax of two classes: 0.5
    assert decision_columns(None, 3, 2)["threshold"] == ["", ""]  # more classes: empty
    fitted = fit_calibration(y, p, ["normal", "tb"], min_cases=20)
    assert fitted["decision"] == "threshold"
    assert decision_columns(fitted, 2, 1)["threshold"] == [f"{fitted['threshold']:.6g}"]
