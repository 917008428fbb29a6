# Copyright (c) medfuse contributors
# Licensed under the Apache License, Version 2.0
"""medfuse.workflows.segmentation: partly annotated items, joint transforms, batch preparation, post-processing,
segmentation metrics, and undoing the letterbox for mask files."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from medfuse.errors import DataError, ManifestError
from medfuse.networks.losses import MISSING_LABEL
from medfuse.workflows.segmentation import (
    MultiOutputPostd,
    MultiOutputPrepareBatch,
    SegmentationMetric,
    labelled_outputs,
    mask_to_original,
    multi_output_inference_items,
    multi_output_items,
    multi_output_transforms,
    segmentation_report,
)


def _write_png(path, array):
    from PIL import Image

    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(array).save(path)
    return str(path)


@pytest.fixture
def partial(tmp_path):
    """Three training items: mask + label, mask only, label only; 40 x 60 images (rows x columns); one more
    (mask + label) for validation."""
    rng = np.random.default_rng(0)
    items = []
    for k in range(4):
        img = _write_png(tmp_path / "img" / f"c{k}.png", rng.integers(0, 255, (40, 60), dtype=np.uint8))
        mask = np.zeros((40, 60), np.uint8)
        mask[10:30, 5:25] = 255
        mask[10:30, 35:55] = 128  # anti-aliased value above half: lung
        item = {"image": img, "patient_id": f"p{k}"}
        if k != 2:
            item["mask"] = _write_png(tmp_path / "mask" / f"c{k}.png", mask)
        if k != 1 or k == 3:
            item["label"] = k % 2
        items.append(item)
    manifest = {"schema_version": "1.0", "task": "segmentation_classification", "classes": ["a", "b"],
                "training": items[:3], "validation": items[3:]}
    path = tmp_path / "m.json"
    path.write_text(json.dumps(manifest))
    return path


def test_items_keep_what_each_image_has(partial):
    items = multi_output_items(partial, "training")
    assert [("mask" in it, it["label"], it["has_label"]) for it in items] == [(True, 0, 1), (True, MISSING_LABEL, 0),
                                                                              (False, 0, 1)]
    assert all(it["image_path"] == it["image"] for it in items)
    with pytest.raises(ManifestError, match="has neither a 'mask'"):
        multi_output_items(partial, "training", require="mask")
    with pytest.raises(ManifestError, match="no 'test' items"):
        multi_output_items(partial, "test")
    with pytest.raises(DataError, match="not both"):
        multi_output_inference_items(manifest=partial, input_dir=str(partial.parent))


def test_transforms_move_mask_with_image_and_fill_missing(partial):
    items = multi_output_items(partial, "training")
    xf = multi_output_transforms(image_size=32)
    out = [xf(it) for it in items]
    for d in out:
        assert d["image"].shape == (1, 32, 32) and d["mask"].shape == (1, 32, 32)
        assert 0.0 <= float(d["image"].min()) and float(d["image"].max()) <= 1.0
    assert [d["has_mask"] for d in out] == [1, 1, 0]
    assert float(out[2]["mask"].sum()) == 0
    # 40 x 60 letterboxed to 32: rows 21 high, padded 5 above; both lungs found (128 > half of 255)
    m = out[0]["mask"][0]
    assert set(torch.unique(m).tolist()) == {0.0, 1.0}
    assert m[:5].sum() == 0 and m[-6:].sum() == 0 and m[12:18, 5:11].all() and m[12:18, 21:27].all()
    train = multi_output_transforms(image_size=32, train=True, affine_prob=1.0)
    train.set_random_state(0)
    d = train(items[0])
    assert set(torch.unique(d["mask"]).tolist()) <= {0.0, 1.0} and d["image"].shape == (1, 32, 32)


def test_prepare_batch_and_post_processing():
    batch = {"image": torch.rand(2, 1, 8, 8), "mask": torch.ones(2, 1, 8, 8), "has_mask": torch.tensor([1, 0]),
             "label": torch.tensor([1, MISSING_LABEL])}
    x, target = MultiOutputPrepareBatch()(batch, torch.device("cpu"))
    assert x.shape == (2, 1, 8, 8) and target["mask"].dtype == torch.long
    assert target["has_mask"].tolist() == [True, False] and target["label"].tolist() == [1, -1]
    # inference batches may carry only images
    _, target = MultiOutputPrepareBatch()({"image": torch.rand(3, 1, 8, 8)}, torch.device("cpu"))
    assert target["has_mask"].tolist() == [False] * 3 and target["label"].tolist() == [-1] * 3
    seg = torch.zeros(2, 8, 8)
    seg[1, :4] = 5.0
    item = {"pred": {"seg": seg, "cls": torch.tensor([0.0, 2.0])},
            "label": {"mask": torch.ones(1, 8, 8), "has_mask": torch.tensor(True), "label": torch.tensor(-1)}}
    d = MultiOutputPostd("pred", keep_prob=True)(item)
    assert d["seg"].shape == (1, 8, 8) and d["seg"][0, :4].eq(1).all() and d["seg"][0, 4:].eq(0).all()
    torch.testing.assert_close(d["pred"], torch.softmax(torch.tensor([0.0, 2.0]), 0))
    assert d["label"] is None and d["has_ref_mask"] is True and d["seg_prob"].shape == (1, 8, 8)
    probs, labels = labelled_outputs([d, dict(d, label=1)])
    assert len(probs) == 1 and labels[0].item() == 1


def test_segmentation_metric_skips_items_without_mask():
    metric = SegmentationMetric(num_classes=2, metric="dice")
    ref = torch.zeros(1, 4, 4)
    ref[0, :2] = 1
    pred = torch.zeros(1, 4, 4)
    pred[0, :1] = 1
    metric.update([
        {"seg": pred, "ref_mask": ref, "has_ref_mask": True},
        {"seg": pred, "ref_mask": torch.zeros(1, 4, 4), "has_ref_mask": False},
    ])
    assert metric.compute() == pytest.approx(2 * 4 / (4 + 8))
    iou = SegmentationMetric(metric="iou")
    iou.update([{"seg": pred, "ref_mask": ref, "has_ref_mask": True}])
    assert iou.compute() == pytest.approx(4 / 8)


def test_segmentation_report_uses_the_evaluation_layer():
    """The bundle's metrics of the foreground classes, named after the bundle's segmentation classes."""
    target = np.zeros((2, 16, 16), np.int64)
    target[:, 4:12, 4:12] = 1
    pred = target.copy()
    pred[1, 4:12, 4:8] = 0  # second case: half the square
    out = segmentation_report(pred, target, seg_classes=("background", "lung"))
    assert out["classes"] == ["lung"] and out["n"] == 2 and out["hd95_units"] == "pixels"
    assert out["per_case"][0] == {"case": "0", "lung": {"dice": 1.0, "iou": 1.0, "hd95": 0.0}}
    case = out["per_case"][1]["lung"]
    assert case["dice"] == pytest.approx(2 * 32 / (32 + 64)) and case["iou"] == pytest.approx(0.5)
    assert case["hd95"] == pytest.approx(4.0)
    assert out["mean"]["dice"] == pytest.approx((1 + 2 / 3) / 2)
    # an empty reference is undefined (None), not 0 or 1
    with pytest.warns(UserWarning, match="empty in the ground truth"):
        empty = segmentation_report(np.zeros((1, 8, 8), int), np.zeros((1, 8, 8), int))
    assert empty["per_case"][0]["lung"] == {"dice": None, "iou": None, "hd95": None}
    assert empty["mean"]["dice"] is None


def test_mask_to_original_undoes_the_letterbox(partial):
    items = multi_output_items(partial, "training")
    d = multi_output_transforms(image_size=120)(items[0])  # 40 x 60 -> 80 x 120, 20 rows padded on each side
    back = mask_to_original(d["mask"], d["image"].meta["spatial_shape"])
    from PIL import Image

    original = np.asarray(Image.open(items[0]["mask"])) > 127
    assert back.shape == (40, 60) and back.dtype == np.uint8
    assert np.array_equal(back.astype(bool), original)


def test_clean_label_map_keeps_the_largest_components_and_fills_holes():
    from medfuse.workflows.segmentation import clean_label_map

    lm = torch.zeros(1, 20, 20, dtype=torch.long)
    lm[0, 2:12, 2:8] = 1  # left lung, 60 px
    lm[0, 2:12, 11:18] = 1  # right lung, 70 px
    lm[0, 5, 4] = 0  # a hole in the left lung
    lm[0, 16:18, 16:18] = 1  # a 4 px blob below the right lung
    out = clean_label_map(lm, keep_components=2, fill_holes=True)
    assert out.dtype == lm.dtype and out.shape == lm.shape
    assert out[0, 16:18, 16:18].sum() == 0  # the blob is gone
    assert out[0, 5, 4] == 1  # the hole is filled
    assert int(out.sum()) == 60 + 70
    # off: unchanged; keep only: the hole stays
    assert torch.equal(clean_label_map(lm), lm)
    kept = clean_label_map(lm, keep_components=2)
    assert kept[0, 5, 4] == 0 and kept[0, 16:18, 16:18].sum() == 0
    assert torch.equal(clean_label_map(lm, keep_components=3), lm)  # three components: nothing to drop
