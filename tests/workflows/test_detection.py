# Copyright (c) medfuse contributors
# Licensed under the Apache License, Version 2.0
"""medfuse.workflows.detection pieces on hand-made inputs: pos_weight, anchors, collation, batches, loss, metrics."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from medfuse.workflows.detection import (
    DetectionLoss,
    DetectionMetric,
    DetectionPrepareBatch,
    anchor_generator,
    boxes_to_original,
    detection_collate,
    detection_pos_weight,
    image_auc,
)


def test_pos_weight_modes():
    items = [{"box_labels": [0, 0]}, {"box_labels": [1]}, {"box_labels": []}, {"box_labels": [0]}]
    assert detection_pos_weight(items, 3, "none") is None
    assert detection_pos_weight(items, 3, "balanced") == [2 / 2, 3 / 1, 1.0]  # class 2: no image has it
    with pytest.raises(ValueError, match="pos_weight"):
        detection_pos_weight(items, 3, "inverse")


def test_anchor_generator_levels():
    gen = anchor_generator((8, 16, 32), 1, [[4, 4], [8, 8]])
    assert gen.num_anchors_per_location() == [2, 2, 2, 2]
    sizes = [a[:, 2:] - a[:, :2] for a in gen.cell_anchors]  # one anchor set per level, doubling per level
    torch.testing.assert_close(torch.stack(sizes), torch.tensor([[[4.0, 4.0], [8.0, 8.0]]]) * torch.tensor([1.0, 2, 4, 8])[:, None, None])
    with pytest.raises(ValueError, match="pairs"):
        anchor_generator((8,), 0, [[4, 4, 4]])


def test_collate_and_prepare_batch():
    items = [{"image": torch.rand(1, 8, 8), "boxes": torch.tensor([[0.0, 1.0, 4.0, 5.0]]), "box_labels": torch.tensor([1]),
              "label": [0, 1], "image_path": "a.png"},
             {"image": torch.rand(1, 8, 8), "boxes": torch.zeros(0, 4), "box_labels": torch.zeros(0, dtype=torch.long),
              "label": [0, 0], "image_path": "b.png"}]
    batch = detection_collate(items)
    assert batch["image"].shape == (2, 1, 8, 8) and batch["label"].shape == (2, 2)
    assert batch["image_path"] == ["a.png", "b.png"] and batch["to_original"] == [[1.0, 1.0, 0.0, 0.0]] * 2
    images, targets, args, kwargs = DetectionPrepareBatch(train=True)(batch)
    assert args == (targets,) and kwargs == {} and targets[1]["boxes"].shape == (0, 4)
    assert len(DetectionPrepareBatch()(batch)) == 2


def test_boxes_to_original_swaps_and_clips():
    # MONAI [row_min, col_min, row_max, col_max] at scale 2, offset 1 row -> [x1, y1, x2, y2]
    out = boxes_to_original(torch.tensor([[1.0, 2.0, 3.0, 40.0]]), [2.0, 2.0, -2.0, 0.0], shape=(10, 50))
    np.testing.assert_allclose(out, [[4.0, 0.0, 50.0, 4.0]])


def test_loss_sums_parts():
    loss = DetectionLoss()
    total = loss({"classification": torch.tensor(1.0), "box_regression": torch.tensor(0.5)})
    assert float(total) == 1.5 and loss.last == {"classification": 1.0, "box_regression": 0.5}
    with pytest.raises(ValueError, match="loss dictionary"):
        loss(torch.tensor(1.0))


def test_metric_perfect_and_missed():
    gt = [{"boxes": torch.tensor([[0.0, 0.0, 10.0, 10.0]]), "labels": torch.tensor([0])},
          {"boxes": torch.zeros(0, 4), "labels": torch.zeros(0, dtype=torch.long)}]
    perfect = [{"boxes": torch.tensor([[0.0, 0.0, 10.0, 10.0]]), "labels": torch.tensor([0]),
                "labels_scores": torch.tensor([0.9]), "image_scores": torch.tensor([0.9, 0.1])},
               {"boxes": torch.zeros(0, 4), "labels": torch.zeros(0, dtype=torch.long),
                "labels_scores": torch.zeros(0), "image_scores": torch.tensor([0.2, 0.1])}]
    values = {}
    for name in ("map", "ap50", "ap40", "image_auc"):
        m = DetectionMetric(["a", "b"], name)
        m.reset()
        m.update((perfect, gt))
        values[name] = m.compute()
    assert values == pytest.approx({"map": 1.0, "ap50": 1.0, "ap40": 1.0, "image_auc": 1.0})
    missed = [dict(p, boxes=torch.tensor([[20.0, 20.0, 30.0, 30.0]])) if i == 0 else p for i, p in enumerate(perfect)]
    m = DetectionMetric(["a", "b"], "ap50")
    m.reset()
    m.update((missed, gt))
    assert m.compute() == 0.0
    with pytest.raises(ValueError, match="metric"):
        DetectionMetric(["a"], "f1")


def test_image_auc_skips_one_sided_classes():
    labels = np.array([[1, 0], [0, 0], [1, 0]])
    assert image_auc(labels, np.array([[0.9, 0.1], [0.2, 0.5], [0.4, 0.3]])) == 1.0
    assert image_auc(np.zeros((2, 1)), np.zeros((2, 1))) is None
