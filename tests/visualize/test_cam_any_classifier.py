# Copyright (c) medfuse contributors
# Licensed under the Apache License, Version 2.0
"""Grad-CAM of classifiers other than the dual cross-attention net (``target_layer="auto"``), batch = per image,
and the CAM gallery of the most uncertain rows of a predictions file."""

from __future__ import annotations

import csv

import numpy as np
import pytest
import torch
from monai.networks.nets import DenseNet121, resnet10

from medfuse.evaluation import write_uncertain_cams, write_predictions
from medfuse.utils import unwrap_module
from medfuse.visualize import compute_cam, default_target_layer


def _nets():
    torch.manual_seed(0)
    return {
        "resnet10": resnet10(spatial_dims=2, n_input_channels=1, num_classes=3, conv1_t_stride=2),
        "densenet121": DenseNet121(spatial_dims=2, in_channels=1, out_channels=3, init_features=8, growth_rate=4,
                                   block_config=(2, 2, 2, 2)),
    }


@pytest.mark.parametrize("name", ["resnet10", "densenet121"])
@pytest.mark.parametrize("method", ["gradcam", "gradcam++"])
def test_auto_layer_and_batch_equals_single_images(name, method):
    net = _nets()[name].eval()
    layer = default_target_layer(net)
    assert isinstance(dict(net.named_modules())[layer], torch.nn.Conv2d)
    x = torch.rand(3, 1, 48, 48)
    normalised = compute_cam(net, x, target_layer="auto", class_index=[0, 2, 1], method=method)
    assert normalised.shape == (3, 1, 48, 48) and float(normalised.max()) <= 1.0 + 1e-6
    # raw maps: per-image min-max scaling would magnify float noise of near-constant maps of an untrained net
    batch = compute_cam(net, x, target_layer="auto", class_index=[0, 2, 1], method=method, normalize=False)
    for i, c in enumerate([0, 2, 1]):
        single = compute_cam(net, x[i:i + 1], target_layer=layer, class_index=c, method=method, normalize=False)
        scale = max(float(single.abs().max()), 1e-6)
        torch.testing.assert_close(batch[i:i + 1] / scale, single / scale, atol=1e-4, rtol=1e-4)


def test_model_attribute_wins():
    net = _nets()["resnet10"]
    net.cam_target_layer = "layer1"
    assert default_target_layer(net) == "layer1"
    with pytest.raises(ValueError, match="no convolution"):
        default_target_layer(torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(4, 2)))


def test_cam_layer_is_the_contract_and_cam_target_layer_the_legacy_fallback():
    net = _nets()["resnet10"]
    net.cam_layer = "layer2"
    net.cam_target_layer = "layer1"  # legacy name: used only without cam_layer
    assert default_target_layer(net) == "layer2"
    del net.cam_layer
    assert default_target_layer(net) == "layer1"
    net.cam_layer = "no.such.layer"  # a name that is not a submodule is skipped
    assert default_target_layer(net) == "layer1"
    wrapped = torch.nn.DataParallel(net)
    assert default_target_layer(unwrap_module(wrapped)) == "layer1"


def test_uncertain_gallery(tmp_path):
    from PIL import Image

    rng = np.random.default_rng(0)
    paths = []
    for i in range(5):
        p = tmp_path / f"img{i}.png"
        Image.fromarray((rng.random((32, 32)) * 255).astype(np.uint8)).save(p)
        paths.append(str(p))
    paths.append(str(tmp_path / "missing.png"))
    probs = np.array([[0.9, 0.05, 0.05], [0.4, 0.3, 0.3], [0.34, 0.33, 0.33], [0.6, 0.2, 0.2], [0.1, 0.8, 0.1],
                      [1 / 3, 1 / 3, 1 / 3]])
    write_predictions(tmp_path / "predictions.csv", paths, probs, ["a", "b", "c"], labels=[0, 1, 2, 0, 1, 0])

    def transform(d):
        arr = np.asarray(Image.open(d["image"]), dtype=np.float32)[None] / 255.0
        return {"image": torch.as_tensor(arr)}

    index = write_uncertain_cams(tmp_path / "predictions.csv", _nets()["resnet10"], transform, tmp_path / "cam", k=3)
    with open(index) as f:
        rows = list(csv.DictReader(f))
    # the three most uncertain rows by entropy: the missing file (skipped, with the reason), then img2, img1
    assert [r["rank"] for r in rows] == ["1", "2", "3"]
    assert rows[0]["overlay"] == "" and "cannot load" in rows[0]["skipped"]
    assert rows[1]["image"].endswith("img2.png") and rows[2]["image"].endswith("img1.png")
    assert all((tmp_path / "cam" / r["overlay"]).is_file() for r in rows[1:])
