# Copyright (c) medfuse contributors
# Licensed under the Apache License, Version 2.0
"""medfuse.workflows.segmentation (the N-class task layer) and medfuse.workflows.multi_output (built on it): partly
annotated items, joint transforms, batch preparation, post-processing, segmentation metrics, evaluator, mask writer
(PNG, NIfTI with the input's affine), undoing the letterbox; the old ``medfuse.workflows.segmentation`` names of the
multi-output pieces; MONAI's FillHoles / one_hot against the hand-written code they replaced."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from medfuse.errors import DataError, ManifestError
from medfuse.networks.losses import MISSING_LABEL
from medfuse.workflows.multi_output import (
    MultiOutputPostd,
    MultiOutputPrepareBatch,
    labelled_outputs,
    multi_output_inference_items,
    multi_output_items,
    multi_output_transforms,
)
from medfuse.workflows.segmentation import SegmentationMetric, mask_to_original, segmentation_report


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


# ----------------------------------------------------------------------------------------------------------
# the generic segmentation layer


def test_segmentation_items_need_masks_unless_told(partial):
    from medfuse.workflows.segmentation import segmentation_items

    with pytest.raises(ManifestError, match="has no 'mask'"):
        segmentation_items(partial, "training")
    items = segmentation_items(partial, "training", require_mask=False)
    assert [("mask" in it) for it in items] == [True, True, False]
    assert all(it["image_path"] == it["image"] and it["patient_id"] for it in items) and "label" not in items[0]
    assert len(segmentation_items(partial, "validation", limit=1)) == 1


def test_segmentation_postd_and_metric_with_three_classes():
    from medfuse.workflows.segmentation import SegmentationPostd

    logits = torch.zeros(3, 6, 6)
    logits[1, :3] = 4.0
    logits[2, 3:, 3:] = 4.0
    ref = torch.zeros(1, 6, 6)
    ref[0, :3] = 1
    ref[0, 3:, :] = 2  # class 2 is twice as large in the reference
    d = SegmentationPostd("pred", keep_prob=True)({"pred": logits, "label": ref})
    assert d["seg"].shape == (1, 6, 6) and set(torch.unique(d["seg"]).tolist()) == {0.0, 1.0, 2.0}
    assert d["has_ref_mask"] is True and d["ref_mask"] is ref and d["seg_prob"].shape == (3, 6, 6)
    assert SegmentationPostd()({"pred": logits})["has_ref_mask"] is False
    metric = SegmentationMetric(num_classes=3)
    metric.update([d])
    assert metric.compute() == pytest.approx((1.0 + 2 * 9 / (9 + 18)) / 2)


def _engine(outputs, batches=None):
    from types import SimpleNamespace

    return SimpleNamespace(state=SimpleNamespace(output=outputs, batch=batches or [{} for _ in outputs]))


def test_segmentation_evaluator_writes_per_class_per_case(tmp_path):
    import csv

    from medfuse.workflows.segmentation import SegmentationEvaluator

    ref = torch.zeros(1, 8, 8)
    ref[0, :4] = 1
    ref[0, 4:, :4] = 2
    good = {"seg": ref.clone(), "ref_mask": ref, "has_ref_mask": True, "image_path": "a.png"}
    half = ref.clone()
    half[0, 4:, :2] = 0
    items = [good, {"seg": half, "ref_mask": ref, "has_ref_mask": True, "image_path": "b.png"},
             {"seg": ref, "ref_mask": None, "has_ref_mask": False, "image_path": "c.png"}]
    ev = SegmentationEvaluator(tmp_path, class_names=["background", "left", "right"])
    ev.collect(_engine(items))
    result = ev.write()
    assert result["n_cases"] == 2 and result["skipped_without_mask"] == 1
    assert list(result["per_class"]) == ["left", "right"]
    assert result["per_class"]["right"]["dice"]["mean"] == pytest.approx((1 + 2 * 8 / (8 + 16)) / 2)
    assert json.loads((tmp_path / "segmentation_metrics.json").read_text())["n_cases"] == 2
    with open(tmp_path / "segmentation_per_case.csv") as f:
        rows = list(csv.DictReader(f))
    assert [r["image"] for r in rows] == ["a.png", "b.png"]
    assert set(rows[0]) == {"image"} | {f"{m}_{c}" for m in ("dice", "iou", "hd95") for c in ("left", "right")}


def test_mask_writer_png_and_nifti_with_the_input_affine(tmp_path):
    import nibabel as nib
    from monai.data import MetaTensor
    from PIL import Image

    from medfuse.workflows.segmentation import MaskWriter

    affine = np.diag([0.5, 0.7, 2.0, 1.0])
    affine[:3, 3] = [10.0, -4.0, 3.0]
    nii = tmp_path / "case.nii.gz"
    nib.save(nib.Nifti1Image(np.zeros((20, 10), np.float32), affine), str(nii))
    seg = torch.zeros(1, 20, 20)
    seg[0, :10, 5:15] = 1  # the letterbox pads 5 columns on each side
    image = MetaTensor(torch.zeros(1, 20, 20), meta={"spatial_shape": np.array([20, 10])})
    items = [{"seg": seg, "image": image, "image_path": str(nii)},
             {"seg": seg, "image": image, "image_path": str(tmp_path / "plain.png")}]
    writer = MaskWriter(tmp_path / "masks", num_classes=2, nifti=True)
    writer(_engine(items))
    writer.write_index()
    png = np.asarray(Image.open(tmp_path / "masks" / "case_mask.png"))
    assert png.shape == (20, 10) and set(np.unique(png).tolist()) == {0, 255} and png[:10].all() and not png[10:].any()
    written = nib.load(str(tmp_path / "masks" / "case_mask.nii.gz"))
    np.testing.assert_allclose(written.affine, affine)
    assert np.array_equal(np.asarray(written.dataobj), (png > 0).astype(np.uint8))
    np.testing.assert_allclose(nib.load(str(tmp_path / "masks" / "plain_mask.nii.gz")).affine, np.eye(4))
    assert (tmp_path / "masks" / "masks.csv").read_text().count("\n") == 3


def test_old_segmentation_names_resolve_to_the_multi_output_layer(tmp_path):
    """Bundles exported before the split name the multi-output pieces under medfuse.workflows.segmentation."""
    from monai.bundle import ConfigParser

    from medfuse.workflows import multi_output, segmentation

    for name in segmentation.MOVED_TO_MULTI_OUTPUT:
        assert getattr(segmentation, name) is getattr(multi_output, name), name
    parser = ConfigParser({"inferer": {"_target_": "medfuse.workflows.segmentation.MultiOutputInferer"},
                           "items": "$medfuse.workflows.segmentation.multi_output_items",
                           "old_eval": {"_target_": "medfuse.workflows.segmentation.SegmentationEvaluator",
                                        "output_dir": str(tmp_path), "cam_images": 4, "dilate": 2}},
                          globals={"medfuse": "medfuse"})
    assert isinstance(parser.get_parsed_content("inferer"), multi_output.MultiOutputInferer)
    assert parser.get_parsed_content("items") is multi_output.multi_output_items
    old = parser.get_parsed_content("old_eval")
    assert isinstance(old, multi_output.MultiOutputEvaluator) and old.cam_images == 4 and old.dilate == 2
    assert type(segmentation.SegmentationEvaluator(tmp_path)) is segmentation.SegmentationEvaluator
    with pytest.raises(AttributeError):
        segmentation.NoSuchThing  # noqa: B018


# ----------------------------------------------------------------------------------------------------------
# library calls against the hand-written code they replaced (copies of the old helpers, kept here)


def _old_clean_label_map(label_map, keep_components=0, fill_holes=False):
    """medfuse.workflows.segmentation.clean_label_map before MONAI's FillHoles (scipy.ndimage only)."""
    from scipy import ndimage

    lm = label_map.detach().cpu().numpy().astype(np.int64)
    out = lm.copy()
    for c in range(lm.shape[0]):
        fg = lm[c] > 0
        if keep_components > 0:
            comps, n = ndimage.label(fg, structure=np.ones((3,) * fg.ndim))
            if n > keep_components:
                sizes = np.bincount(comps.ravel())[1:]
                keep = np.argsort(sizes)[::-1][:keep_components] + 1
                fg = np.isin(comps, keep)
                out[c][~fg] = 0
        if fill_holes:
            filled = ndimage.binary_fill_holes(fg)
            holes = filled & ~fg
            if holes.any():
                idx = ndimage.distance_transform_edt(~fg, return_distances=False, return_indices=True)
                out[c][holes] = out[c][tuple(i[holes] for i in idx)]
    return torch.as_tensor(out, dtype=label_map.dtype, device=label_map.device)


def _old_one_hot(label_map, num_classes):
    """medfuse.workflows.segmentation._one_hot before monai.networks.utils.one_hot."""
    lm = label_map.long()
    if lm.ndim >= 3 and lm.shape[1] == 1:
        lm = lm[:, 0]
    return torch.nn.functional.one_hot(lm.clamp_min(0), num_classes).movedim(-1, 1).float()


def _representative_label_maps(tmp_path, classes: int) -> list[torch.Tensor]:
    """Demo-data lung masks (two lungs, as the bundle predicts them) with speckle, holes and stray blobs, and
    random rectangles of ``classes - 1`` foreground classes with holes."""
    from PIL import Image

    from medfuse.data.demo import make_demo_data
    from medfuse.data.manifest import read_manifest

    rng = np.random.default_rng(classes)
    maps = []
    if classes == 2:
        paths = make_demo_data(tmp_path / "demo", n_cxr=8, n_oct=4, image_size=64, seed=0, dicom=False)
        for it in read_manifest(paths["cxr"], validate=False)["training"]:
            lung = np.asarray(Image.open(paths["cxr"].parent / it["mask"])) > 127
            noisy = lung ^ (rng.random(lung.shape) < 0.03)  # speckle: holes inside, blobs outside
            maps.append(torch.as_tensor(noisy[None].astype(np.int64)))
    for _ in range(12):
        lm = np.zeros((1, 48, 48), np.int64)
        for _ in range(6):
            (r, c), (h, w) = rng.integers(0, 40, 2), rng.integers(4, 16, 2)
            lm[0, r : r + h, c : c + w] = rng.integers(1, classes)
        lm[0][rng.random((48, 48)) < 0.05] = 0
        maps.append(torch.as_tensor(lm))
    return maps


@pytest.mark.parametrize("classes", [2, 3])
def test_clean_label_map_with_monai_fill_holes_equals_the_old_code(tmp_path, classes):
    from monai.transforms import FillHoles

    from medfuse.workflows.segmentation import clean_label_map

    maps = _representative_label_maps(tmp_path, classes)
    for lm in maps:
        for keep in (0, 1, 2, 3):
            for fill in (False, True):
                new, old = clean_label_map(lm, keep, fill), _old_clean_label_map(lm, keep, fill)
                assert new.shape == old.shape and new.dtype == old.dtype
                assert torch.equal(new, old), (keep, fill)
    # MONAI's FillHoles on the label map itself: the same on binary maps, per-label (different) on more classes
    differ = [float((torch.as_tensor(np.asarray(FillHoles(connectivity=1)(lm.numpy().copy())))
                     != clean_label_map(lm, 0, True)).float().mean()) for lm in maps]
    if classes == 2:
        assert max(differ) == 0.0
    else:
        assert 0.0 < max(differ) < 0.01  # the docstring of clean_label_map quotes this measure


def test_segmentation_metric_one_hot_equals_the_old_helper():
    rng = np.random.default_rng(0)
    metric = SegmentationMetric(num_classes=4)
    for shape in ((1, 16, 16), (1, 7, 9), (1, 5, 6, 4)):
        lm = torch.as_tensor(rng.integers(0, 4, shape))
        new = metric._one_hot(lm.float())
        old = _old_one_hot(lm.unsqueeze(0), 4)
        assert new.shape == old.shape == (1, 4, *shape[1:]) and new.dtype == old.dtype
        torch.testing.assert_close(new, old, atol=1e-6, rtol=0)
