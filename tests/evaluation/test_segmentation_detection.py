# Copyright (c) medfuse contributors
# Licensed under the Apache License, Version 2.0
"""Segmentation (Dice, IoU, HD95) and detection (mAP, AP50) metrics against hand-computed cases."""

from __future__ import annotations

import warnings

import numpy as np
import pytest
import torch

from medfuse.evaluation.detection import detection_metrics
from medfuse.evaluation.segmentation import segmentation_metrics, to_one_hot


def _square(shape, r0, r1, c0, c1, value=1):
    a = np.zeros(shape, dtype=np.int64)
    a[r0:r1, c0:c1] = value
    return a


def test_dice_iou_hd95_hand_computed():
    t = _square((12, 12), 2, 6, 2, 6)[None]  # 4x4 square
    p = _square((12, 12), 2, 6, 3, 7)[None]  # shifted by one column
    m = segmentation_metrics(p, t, class_names=["lung"])
    case = m["per_case"][0]["lung"]
    assert case["dice"] == pytest.approx(2 * 12 / 32)
    assert case["iou"] == pytest.approx(12 / 20)
    assert case["hd95"] == pytest.approx(1.0)
    assert m["per_class"]["lung"]["dice"]["mean"] == pytest.approx(0.75) and m["mean"]["iou"] == pytest.approx(0.6)
    # spacing scales the distance
    m2 = segmentation_metrics(p, t, class_names=["lung"], spacing=(0.5, 0.5))
    assert m2["per_case"][0]["lung"]["hd95"] == pytest.approx(0.5) and m2["hd95_units"] == "spacing"


def test_perfect_and_one_hot_input_agree():
    t = np.stack([_square((10, 10), 1, 5, 1, 5), _square((10, 10), 4, 9, 2, 8)])
    t[1][0:2, 0:2] = 2
    m = segmentation_metrics(t, t, class_names=["left", "right"])
    for c in ("left", "right"):
        assert m["per_class"][c]["dice"]["mean"] == 1.0 and m["per_class"][c]["hd95"]["mean"] == 0.0
    oh = to_one_hot(torch.as_tensor(t), 3)
    assert oh.shape == (2, 3, 10, 10)
    p = t.copy()
    p[0, 1, 1] = 0
    a = segmentation_metrics(p, t, class_names=["left", "right"])
    b = segmentation_metrics(to_one_hot(p, 3), to_one_hot(t, 3), class_names=["left", "right"])
    assert a["per_case"] == b["per_case"]
    # left of case 0 lost one of 16 pixels: Dice 2*15/31
    assert a["per_case"][0]["left"]["dice"] == pytest.approx(30 / 31, rel=1e-6)


def test_empty_masks_give_nan_with_warning_never_a_crash():
    t = np.stack([_square((8, 8), 2, 5, 2, 5), np.zeros((8, 8), np.int64), _square((8, 8), 1, 3, 1, 3)])
    p = np.stack([_square((8, 8), 2, 5, 2, 5), _square((8, 8), 1, 3, 1, 3), np.zeros((8, 8), np.int64)])
    with warnings.catch_warnings(record=True) as w:
        warnings.simplefilter("always")
        m = segmentation_metrics(p, t, class_names=["lesion"], case_ids=["a", "b", "c"])
    msgs = [str(x.message) for x in w if "segmentation case" in str(x.message)]
    assert any("case b" in s and "ground truth" in s for s in msgs)
    assert any("case c" in s and "prediction" in s for s in msgs)
    assert m["per_case"][1]["lesion"] == {"dice": None, "iou": None, "hd95": None}
    assert m["per_case"][2]["lesion"]["dice"] == 0.0 and m["per_case"][2]["lesion"]["hd95"] is None
    assert m["per_class"]["lesion"]["dice"] == {"mean": 0.5, "std": 0.5, "median": 0.5, "n": 2, "n_undefined": 1}


def test_segmentation_bad_input():
    with pytest.raises(ValueError, match="differ"):
        segmentation_metrics(np.zeros((1, 4, 4, 2), np.int64) + 1, np.ones((1, 4, 4), np.int64))
    one_hot = to_one_hot(np.ones((1, 4, 4), np.int64), 2)  # background + one class
    with pytest.raises(ValueError, match="class names"):
        segmentation_metrics(one_hot, one_hot, class_names=["a", "b"])
    with pytest.raises(ValueError, match="integer class indices"):
        segmentation_metrics(np.full((1, 4, 4), 0.5), np.ones((1, 4, 4)))


def test_detection_perfect_missing_and_undefined_class():
    gt = [np.array([[10, 10, 30, 30], [50, 50, 70, 80]], float), np.array([[5, 5, 25, 25]], float)]
    gc = [np.array([0, 1]), np.array([0])]
    m = detection_metrics(gt, gc, [np.array([0.9, 0.8]), np.array([0.7])], gt, gc, classes=["nodule", "mass", "other"])
    assert m["map"] == pytest.approx(1.0) and m["ap50"] == pytest.approx(1.0)
    assert m["per_class"]["other"]["ap50"] is None and m["per_class"]["other"]["n_gt"] == 0
    assert m["n_gt"] == 3 and m["n_pred"] == 3
    # the second image's nodule is missed, and a false positive there scores lower than the hit:
    # recall 1/2 at precision 1 -> COCO 101-point AP = 51/101
    pred = [np.array([[10, 10, 30, 30]], float), np.array([[60, 60, 80, 80]], float)]
    m2 = detection_metrics(pred, [np.array([0]), np.array([0])], [np.array([0.9]), np.array([0.5])],
                           [gt[0][:1], gt[1]], [np.array([0]), np.array([0])], classes=["nodule"])
    assert m2["ap50"] == pytest.approx(51 / 101)
    # a box with IoU 2/3 counts at 0.5 but not at 0.75
    weak = [np.array([[10, 14, 30, 34]], float)]  # overlap 20x16=320, union 400+400-320=480 -> IoU 0.667
    m3 = detection_metrics(weak, [np.array([0])], [np.array([0.9])], [gt[0][:1]], [np.array([0])], classes=["nodule"],
                           iou_thresholds=(0.75,))
    assert m3["ap_iou"]["0.50"] == pytest.approx(1.0) and m3["ap_iou"]["0.75"] == pytest.approx(0.0)


def test_detection_bad_input():
    with pytest.raises(ValueError, match="one entry per image"):
        detection_metrics([np.zeros((0, 4))], [], [], [np.zeros((0, 4))], [np.zeros(0)], classes=["a"])
    with pytest.raises(ValueError, match="min corner"):
        detection_metrics([np.array([[30, 30, 10, 10]], float)], [np.array([0])], [np.array([0.5])],
                          [np.array([[10, 10, 30, 30]], float)], [np.array([0])], classes=["a"])
