# Copyright (c) medfuse contributors
# Licensed under the Apache License, Version 2.0
"""Items from manifests and folders, classes, class weights and the balanced sampler."""

from __future__ import annotations

import json
from collections import Counter

import pytest
import torch

from medfuse.data.manifest import make_provenance, new_manifest, write_manifest
from medfuse.errors import DataError, ManifestError
from medfuse.workflows import (
    balanced_sampler,
    class_counts,
    class_weights,
    folder_items,
    inference_items,
    loss_class_weights,
    manifest_classes,
    resolve_classes,
    split_items,
    train_sampler,
)


def _manifest(tmp_path, labels=(0, 0, 0, 1), classes=("normal", "opacity"), test_labels=True):
    (tmp_path / "img").mkdir(exist_ok=True)
    def item(name, lab, with_label=True):
        (tmp_path / "img" / name).write_bytes(b"png")
        it = {"image": f"img/{name}", "patient_id": name[:3]}
        if with_label:
            it["label"] = lab
        return it
    training = [item(f"t{i:02d}.png", lab) for i, lab in enumerate(labels)]
    test = [item("x00.png", 1, test_labels), item("x01.png", 0, test_labels)]
    m = new_manifest("classification", classes, make_provenance("test"), training=training, test=test)
    return write_manifest(m, tmp_path / "m.json")


def test_split_items(tmp_path):
    path = _manifest(tmp_path)
    items = split_items(path, "training")
    assert len(items) == 4
    assert items[0]["image"] == str((tmp_path / "img" / "t00.png").resolve())
    assert items[0]["image_path"] == items[0]["image"]
    assert items[0]["label"] == 0 and items[0]["patient_id"] == "t00"
    assert "mask" not in items[0]
    assert len(split_items(path, "training", limit=2)) == 2
    with pytest.raises(ManifestError, match="no 'validation' items"):
        split_items(path, "validation")


def test_unlabelled_split(tmp_path):
    path = _manifest(tmp_path, test_labels=False)
    with pytest.raises(ManifestError, match="lack an integer class label"):
        split_items(path, "test")
    items = inference_items(manifest=path, split="test")
    assert [("label" in it) for it in items] == [False, False]


def test_classes(tmp_path):
    path = _manifest(tmp_path)
    assert manifest_classes(path) == ["normal", "opacity"]
    with pytest.raises(ManifestError, match=r"do not match this bundle's classes \['CNV', 'DME', 'DRUSEN', 'NORMAL'\]"):
        manifest_classes(path, ["CNV", "DME", "DRUSEN", "NORMAL"])
    assert resolve_classes(manifest=path) == ["normal", "opacity"]
    run = tmp_path / "run"
    run.mkdir()
    (run / "run_info.json").write_text(json.dumps({"classes": ["a", "b"]}))
    assert resolve_classes(manifest="", checkpoint=str(run / "model.pt")) == ["a", "b"]
    with pytest.raises(DataError, match="trained on classes"):
        resolve_classes(checkpoint=str(run / "model.pt"), expected=["x", "y"])
    assert resolve_classes(expected=("x", "y")) == ["x", "y"]
    with pytest.raises(DataError, match="cannot tell the class names"):
        resolve_classes()
    # an exported bundle names its classes: no manifest is needed to build its network ...
    missing = tmp_path / "data" / "cxr_manifest.json"
    assert resolve_classes(manifest=str(missing), expected=["normal", "opacity"]) == ["normal", "opacity"]
    # ... but without them a missing manifest is still an error, and a present one is still checked
    with pytest.raises(ManifestError, match="manifest not found"):
        resolve_classes(manifest=str(missing))
    with pytest.raises(ManifestError, match="do not match this bundle's classes"):
        resolve_classes(manifest=path, expected=["x", "y"])
    with pytest.raises(ManifestError, match="manifest not found"):
        inference_items(manifest=str(missing), split="test")


def test_class_weights_inverse_frequency(tmp_path):
    items = split_items(_manifest(tmp_path), "training")  # 3 normal, 1 opacity
    assert class_counts(items, 2) == [3, 1]
    # n / (C * n_c): 4 / (2 * 3) and 4 / (2 * 1)
    torch.testing.assert_close(class_weights(items, 2), torch.tensor([2 / 3, 2.0]))
    assert loss_class_weights(items, 2, "sampler") is None
    with pytest.warns(UserWarning, match=r"\[2\] have no training items"):
        w = class_weights(items, 3)
    assert w[2] == 0
    with pytest.raises(ValueError, match="class_balance must be one of"):
        loss_class_weights(items, 2, "oversample")


def test_balanced_sampler_draws_classes_evenly():
    items = [{"label": 0}] * 90 + [{"label": 1}] * 10
    sampler = balanced_sampler(items, 2, num_samples=4000, seed=3)
    drawn = Counter(items[i]["label"] for i in sampler)
    assert abs(drawn[0] - drawn[1]) < 400  # about 2000 each, against 3600 / 400 unbalanced
    assert list(balanced_sampler(items, 2, seed=3)) == list(balanced_sampler(items, 2, seed=3))
    assert train_sampler(items, 2, "weights") is None
    assert len(train_sampler(items, 2, "sampler")) == 100


def test_folder_items(tmp_path):
    (tmp_path / "a").mkdir()
    (tmp_path / "a" / "x.PNG").write_bytes(b"1")
    (tmp_path / "b.jpg").write_bytes(b"1")
    (tmp_path / "notes.txt").write_text("no")
    (tmp_path / "IM0001").write_bytes(b"\0" * 128 + b"DICM" + b"\0" * 10)  # DICOM without extension
    (tmp_path / "README").write_text("not dicom")
    items = folder_items(tmp_path)
    names = sorted(it["image"].split("/")[-1] for it in items)
    assert names == ["IM0001", "b.jpg", "x.PNG"]
    assert all("label" not in it for it in items)
    with pytest.raises(DataError, match="no image files"):
        folder_items(tmp_path / "a", extensions=(".dcm",))
    with pytest.raises(DataError, match="not a folder"):
        folder_items(tmp_path / "missing")
    with pytest.raises(DataError, match="neither"):
        inference_items(manifest="", input_dir="")
    with pytest.raises(DataError, match="both"):
        inference_items(manifest="m.json", input_dir=str(tmp_path))


def test_folder_items_lists_every_image_type(tmp_path):
    """Inference over a folder takes what folder2manifest takes (BMP, TIFF) and DICOM / NIfTI too."""
    names = ["a.bmp", "b.tif", "c.png", "d.dcm", "e.nii.gz", "f.TIFF", "g.jpeg"]
    for name in names:
        (tmp_path / name).write_bytes(b"1")
    (tmp_path / "h.txt").write_text("no")
    (tmp_path / "i.gz").write_bytes(b"1")
    items = folder_items(tmp_path)
    assert [it["image"].split("/")[-1] for it in items] == names
