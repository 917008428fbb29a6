# Copyright (c) medfuse contributors
# Licensed under the Apache License, Version 2.0
"""FROC on hand-made boxes: hits need IoU >= 0.4 and the same class, duplicates are false positives."""

from __future__ import annotations

import numpy as np
import pytest

from medfuse.evaluation.detection import FROC_FP_RATES, froc


def _case():
    gt_boxes = [np.array([[0, 0, 10, 10], [20, 20, 30, 30]], float), np.array([[0, 0, 10, 10]], float), np.zeros((0, 4))]
    gt_classes = [np.array([0, 0]), np.array([1]), np.zeros(0, int)]
    pred_boxes = [
        np.array([[0, 0, 10, 10], [50, 50, 60, 60], [20, 20, 30, 30], [21, 21, 31, 31]], float),
        np.array([[1, 1, 11, 11], [0, 0, 10, 10]], float),
        np.array([[5, 5, 9, 9]], float),
    ]
    pred_classes = [np.array([0, 0, 1, 0]), np.array([1, 1]), np.array([0])]
    pred_scores = [np.array([0.9, 0.8, 0.7, 0.6]), np.array([0.95, 0.5]), np.array([0.3])]
    return pred_boxes, pred_classes, pred_scores, gt_boxes, gt_classes


def test_froc_hand_made():
    # pooled by score: 0.95 TP, 0.9 TP, 0.8 FP, 0.7 FP (wrong class), 0.6 TP (IoU 0.68), 0.5 FP (duplicate),
    # 0.3 FP (negative image); 3 images, 3 true boxes
    r = froc(*_case())
    assert r["fp_rates"] == list(FROC_FP_RATES)
    assert r["n_gt"] == 3 and r["n_images"] == 3 and r["n_pred"] == 7
    # FP/image at each score: 0, 0, 1/3, 2/3, 2/3, 1, 4/3
    expected = [2 / 3, 2 / 3, 2 / 3, 1.0, 1.0, 1.0, 1.0]
    np.testing.assert_allclose(r["sensitivity"], expected)
    assert r["mean_sensitivity"] == pytest.approx(np.mean(expected))
    np.testing.assert_allclose(r["curve"]["fp_per_image"], [0, 0, 1 / 3, 2 / 3, 2 / 3, 1, 4 / 3])


def test_froc_iou_threshold():
    gt = [np.array([[0, 0, 10, 10]], float)]
    pred = [np.array([[4, 0, 14, 10]], float)]  # IoU 60 / 140 = 0.43
    args = (pred, [np.array([0])], [np.array([0.9])], gt, [np.array([0])])
    assert froc(*args)["sensitivity"][0] == 1.0
    assert froc(*args, iou_threshold=0.5)["sensitivity"] == [0.0] * 7
    empty = froc([np.zeros((0, 4))], [np.zeros(0)], [np.zeros(0)], [np.zeros((0, 4))], [np.zeros(0)])
    assert empty["sensitivity"] == [None] * 7 and empty["mean_sensitivity"] is None
    with pytest.raises(ValueError, match="one entry per image"):
        froc(pred, [], [], gt, [])


def test_image_with_true_boxes_and_no_detection():
    """An image whose true boxes got no detection counts its misses (it used to crash on the IoU shape)."""
    r = froc([[[0, 0, 10, 10]], []], [[0], []], [[0.9], []], [[[0, 0, 10, 10]], [[5, 5, 9, 9], [1, 1, 3, 3]]],
             [[0], [1, 0]], fp_rates=(1.0,))
    assert r["n_gt"] == 3 and r["sensitivity"] == [pytest.approx(1 / 3)]
