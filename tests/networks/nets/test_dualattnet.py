# Copyright (c) medfuse contributors
# Licensed under the Apache License, Version 2.0
"""DualAttNet and its detector: output modes, plain RetinaNet equivalence, TorchScript, one training step."""

from __future__ import annotations

import pytest
import torch
from monai.apps.detection.networks.retinanet_detector import RetinaNetDetector
from monai.apps.detection.networks.retinanet_network import RetinaNet
from monai.apps.detection.utils.anchor_utils import AnchorGeneratorWithAnchorShape
from monai.networks import eval_mode

from medfuse.networks.nets.dualattnet import DualAttNet, DualAttNetDetector

TINY = {"backbone": "resnet18", "fpn_channels": 32, "num_classes": 2, "num_anchors": 3}
X = (2, 1, 64, 64)


def tiny(**kwargs) -> DualAttNet:
    torch.manual_seed(0)
    return DualAttNet(**{**TINY, **kwargs})


def anchors() -> AnchorGeneratorWithAnchorShape:
    return AnchorGeneratorWithAnchorShape(feature_map_scales=(1, 2, 4, 8), base_anchor_shapes=((8, 8), (16, 16), (24, 24)))


def test_three_output_modes():
    net = tiny()
    x = torch.rand(X)
    with eval_mode(net), torch.no_grad():
        out = net(x)
        dense = net.set_output("dense")(x)
        image = net.set_output("image")(x)
    assert set(out) == {"classification", "box_regression", "image_logits"}
    assert [tuple(m.shape[2:]) for m in out["classification"]] == [(8, 8), (4, 4), (2, 2), (1, 1)]
    assert all(m.shape[1] == 3 * 2 for m in out["classification"])
    assert all(m.shape[1] == 3 * 4 for m in out["box_regression"])
    n = 3 * (64 + 16 + 4 + 1)
    assert dense.shape == (2, 2 + 4, n)
    torch.testing.assert_close(image, out["image_logits"])
    assert image.shape == (2, 2)
    # dense is MONAI's _reshape_maps order
    det = RetinaNetDetector(net.set_output("dict"), anchors())
    torch.testing.assert_close(dense[:, :2].transpose(1, 2), det._reshape_maps(out["classification"]))
    torch.testing.assert_close(dense[:, 2:].transpose(1, 2), det._reshape_maps(out["box_regression"]))
    assert net.get_submodule(net.cam_layer) is net.feature_extractor.fpn.layer_blocks[0]
    assert sorted(net.attention_heads) == ["p3", "p4", "p5", "p6"]


def test_attention_levels():
    net = tiny(attention_levels=(16, 64))
    assert list(net.attention_heads) == ["p4", "p6"]
    with eval_mode(net), torch.no_grad():
        assert net.set_output("image")(torch.rand(X)).shape == (2, 2)


def test_plain_equals_monai_retinanet():
    net = tiny(attention=False)
    ref = RetinaNet(spatial_dims=2, num_classes=2, num_anchors=3, feature_extractor=net.feature_extractor,
                    size_divisible=64)
    assert set(net.state_dict()) == set(ref.state_dict())
    ref.load_state_dict(net.state_dict())
    x = torch.rand(X)
    with eval_mode(net), eval_mode(ref), torch.no_grad():
        a, b = net(x), ref(x)
    assert set(a) == set(b) == {"classification", "box_regression"}
    for key in a:
        for u, v in zip(a[key], b[key]):
            torch.testing.assert_close(u, v)
    with pytest.raises(ValueError, match="output='image' needs attention=True"):
        net.set_output("image")


def test_dense_script_round_trip(tmp_path):
    net = tiny(output="dense")
    x = torch.rand(1, 1, 64, 64)
    scripted = torch.jit.script(net)
    path = tmp_path / "dualattnet.ts"
    torch.jit.save(scripted, str(path))
    loaded = torch.jit.load(str(path))
    with eval_mode(net), eval_mode(loaded), torch.no_grad():
        torch.testing.assert_close(loaded(x), net(x))


def test_detector_train_step_and_eval():
    torch.manual_seed(0)
    net = tiny()
    det = DualAttNetDetector(net, anchors(), attention_weight=0.5, pos_weight=(1.0, 2.0))
    det.set_box_selector_parameters(score_thresh=0.0, topk_candidates_per_level=50, nms_thresh=0.5,
                                    detections_per_img=10)
    x = torch.rand(X)
    targets = [
        {"boxes": torch.tensor([[10.0, 12.0, 34.0, 40.0], [40.0, 5.0, 60.0, 30.0]]), "labels": torch.tensor([1, 0])},
        {"boxes": torch.zeros(0, 4), "labels": torch.zeros(0, dtype=torch.long)},  # negative image
    ]
    torch.testing.assert_close(det.multi_hot(targets, torch.device("cpu")), torch.tensor([[1.0, 1.0], [0.0, 0.0]]))
    opt = torch.optim.SGD(det.parameters(), lr=1e-3)
    det.train()
    losses = det(x, targets)
    assert set(losses) == {"classification", "box_regression", "attention"}
    assert all(torch.isfinite(v) for v in losses.values())
    sum(losses.values()).backward()
    opt.step()
    det.eval()
    with torch.no_grad():
        results = det(x)
    assert len(results) == 2
    for r in results:
        boxes = r["boxes"]
        assert boxes.shape[0] > 0
        assert bool((boxes >= 0).all()) and bool((boxes[:, 2:] <= 64).all())
        assert bool((boxes[:, 2:] >= boxes[:, :2]).all())
        assert r["image_scores"].shape == (2,)
        assert bool(((r["image_scores"] >= 0) & (r["image_scores"] <= 1)).all())


def test_plain_detector_image_scores():
    net = tiny(attention=False)
    det = DualAttNetDetector(net, anchors())
    det.set_box_selector_parameters(score_thresh=0.0, topk_candidates_per_level=20, nms_thresh=0.5,
                                    detections_per_img=5)
    targets = [{"boxes": torch.tensor([[10.0, 12.0, 34.0, 40.0]]), "labels": torch.tensor([1])}] * 2
    losses = det.train()(torch.rand(X), targets)
    assert set(losses) == {"classification", "box_regression"}
    with torch.no_grad():
        r = det.eval()(torch.rand(X))[0]
    for k in range(2):
        chosen = r["labels_scores"][r["labels"] == k]
        expected = float(chosen.max()) if chosen.numel() else 0.0
        assert float(r["image_scores"][k]) == pytest.approx(expected)


@pytest.mark.parametrize(
    "kwargs, match",
    [
        ({"backbone": "vgg16"}, "unknown backbone 'vgg16'"),
        ({"fpn_strides": (8, 64)}, r"fpn_strides must be distinct strides .*\(8, 64\)"),
        ({"fpn_channels": 30}, "fpn_channels must be a positive multiple of 8.*30"),
        ({"extra_levels": -1}, "extra_levels must be an int >= 0, got -1"),
        ({"output": "boxes"}, "output must be one of .*'boxes'"),
        ({"attention_levels": (4,)}, r"attention_levels must be strides of the pyramid .*\(4,\)"),
        ({"spatial_dims": 3}, "2D images only, got spatial_dims=3"),
        ({"num_classes": 0}, "num_classes must be a positive int, got 0"),
    ],
)
def test_ill_arguments(kwargs, match):
    with pytest.raises(ValueError, match=match):
        DualAttNet(**{**TINY, **kwargs})


def test_grad_cam_on_image_output():
    from monai.visualize import GradCAM

    net = tiny(output="image").eval()
    x = torch.rand(X)
    cam = GradCAM(net, target_layers=net.cam_layer)
    batch = cam(x, class_idx=1)
    assert batch.shape == (2, 1, 64, 64)
    for i in range(2):  # per image equals the batch result
        torch.testing.assert_close(cam(x[i : i + 1], class_idx=1)[0], batch[i], rtol=1e-4, atol=1e-5)
