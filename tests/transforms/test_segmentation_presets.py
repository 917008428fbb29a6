# Copyright (c) medfuse contributors
# Licensed under the Apache License, Version 2.0
"""medfuse.transforms.segmentation_presets: 2-D and volume pipelines of the DIFM bundle (shapes, channels, labels,
CT window, lung split on the demo masks)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from medfuse.data.manifest import load_split
from medfuse.transforms.segmentation_presets import slice_segmentation_transforms


def _volume(tmp_path, values, label=None, spacing=(0.75, 0.75, 5.0)):
    import nibabel as nib

    affine = np.diag([*spacing, 1.0])
    nib.save(nib.Nifti1Image(values.astype(np.float32), affine), str(tmp_path / "img.nii.gz"))
    item = {"image": str(tmp_path / "img.nii.gz")}
    if label is not None:
        nib.save(nib.Nifti1Image(label.astype(np.uint8), affine), str(tmp_path / "lab.nii.gz"))
        item["label"] = str(tmp_path / "lab.nii.gz")
    return item


def test_volume_training_slices_and_evaluation_volume(tmp_path):
    rng = np.random.default_rng(0)
    label = np.zeros((40, 36, 6), np.uint8)
    label[10:20, 10:20, :] = 1
    label[22:30, 12:24, 2:5] = 3
    item = _volume(tmp_path, rng.uniform(0, 500, label.shape), label)
    train = slice_segmentation_transforms("volume", train=True, image_size=32, slices_per_volume=3)
    train.set_random_state(0)
    out = train(dict(item))
    assert isinstance(out, list) and len(out) == 3
    for o in out:
        assert o["image"].shape == (2, 32, 32) and o["label"].shape == (1, 32, 32)
        assert 0.0 <= float(o["image"].min()) and float(o["image"].max()) <= 1.0
        assert set(torch.unique(o["label"]).tolist()) <= {0.0, 1.0, 3.0}
    ev = slice_segmentation_transforms("volume", train=False, image_size=32, enhanced=False)(dict(item))
    # 0.75 mm -> 1.5 mm in-plane, slices kept; one channel without the enhanced copy
    assert ev["image"].shape == (1, 20, 18, 6) and ev["label"].shape == (1, 20, 18, 6)


def test_ct_window(tmp_path):
    values = np.broadcast_to(np.array([-1000.0, -125.0, 75.0, 275.0, 2000.0])[:, None, None], (5, 4, 3)).copy()
    item = _volume(tmp_path, values, spacing=(1.5, 1.5, 3.0))
    out = slice_segmentation_transforms("volume", intensity="ct", enhanced=False, label_key=None)(item)
    img = out["image"].numpy()
    assert img.min() == 0.0 and img.max() == 1.0
    np.testing.assert_allclose(np.unique(img), [0.0, 0.5, 1.0], atol=1e-6)


def test_2d_enhanced_copy_and_lung_split(demo_data):
    item = next(it for it in load_split(demo_data["cxr"], "training") if it.get("mask"))
    xform = slice_segmentation_transforms("2d", train=False, image_size=64, split_lungs=True)
    out = xform({"image": item["image"], "label": item["mask"]})
    assert out["image"].shape == (2, 64, 64) and "image_enhanced" not in out
    assert not torch.equal(out["image"][0], out["image"][1])  # the second channel is the CLAHE copy
    labels = out["label"][0]
    assert set(torch.unique(labels).tolist()) == {0.0, 1.0, 2.0}
    cols = torch.arange(64).float()
    right = (labels == 1).float()
    left = (labels == 2).float()
    assert (right * cols).sum() / right.sum() < (left * cols).sum() / left.sum()  # label 1 on the image's left


def test_bad_arguments():
    with pytest.raises(ValueError, match="data_mode"):
        slice_segmentation_transforms("3d")
    with pytest.raises(ValueError, match="intensity"):
        slice_segmentation_transforms("volume", intensity="pet")
    with pytest.raises(ValueError, match="hu_window"):
        slice_segmentation_transforms("volume", hu_window=(300, 100))
