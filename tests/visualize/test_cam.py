# Copyright (c) medfuse contributors
# Licensed under the Apache License, Version 2.0
"""medfuse.visualize.cam: Grad-CAM / Grad-CAM++ over monai.visualize, masks, overlays; the CAMWriter handler.

A tiny DualCrossAttentionNet (EfficientNet-B0 + ResNet10, width 16, 2 heads, 64 px: ``refine`` is 8 x 8).
"""

from __future__ import annotations

import csv
import sys

import numpy as np
import pytest
import torch
from parameterized import parameterized
from PIL import Image

from medfuse.networks.nets import DualCrossAttentionNet
from medfuse.visualize import (
    compute_cam,
    default_target_layer,
    dilate_mask,
    display_image,
    overlay_cam,
    restrict_cam,
    save_overlay,
)

METHODS = [("gradcam",), ("gradcam++",)]


def _net(num_classes: int = 2, seed: int = 0) -> DualCrossAttentionNet:
    torch.manual_seed(seed)
    return DualCrossAttentionNet(
        in_channels=1, num_classes=num_classes, backbones=("efficientnet-b0", "resnet10"), hidden_size=16, num_heads=2
    ).eval()


def _split_predictions(net: DualCrossAttentionNet, x: torch.Tensor) -> torch.Tensor:
    """Shift the head bias so that the images of ``x`` are not all predicted as the same class (2 classes)."""
    with torch.no_grad():
        d = net(x)[:, 1] - net(x)[:, 0]
        net.head.bias[1] -= d.median() + 1e-6 * d.abs().max()
        pred = net(x).argmax(1)
    assert len(set(pred.tolist())) == 2, pred
    return pred


@pytest.fixture(scope="module")
def net():
    return _net()


@pytest.fixture(scope="module")
def images():
    return torch.rand(3, 1, 64, 64, generator=torch.Generator().manual_seed(1))


def _assert_batch_consistent(net, x, **kwargs):
    """Batched maps equal per-image maps, normalised and raw (raw to 1e-4 of each map's maximum: a
    per-image factor such as Grad-CAM++'s exp(score) broadcast over the wrong axis vanishes in the
    normalised maps of this network, whose gradient at ``refine`` is spatially uniform)."""
    torch.testing.assert_close(compute_cam(net, x, **kwargs), _per_image(net, x, **kwargs), atol=2e-5, rtol=1e-4)
    raw = compute_cam(net, x, normalize=False, **kwargs)
    raw_alone = _per_image(net, x, normalize=False, **kwargs)
    scale = raw_alone.flatten(1).amax(1).clamp_min(1e-12).view(-1, 1, 1, 1)
    assert float(scale.min()) > 1e-9  # not trivially zero maps
    torch.testing.assert_close(raw / scale, raw_alone / scale, atol=1e-4, rtol=0)


def _per_image(net, x, **kwargs):
    cls = kwargs.pop("class_index", None)
    out = []
    for i in range(x.shape[0]):
        ci = cls if cls is None or isinstance(cls, int) else [cls[i]]
        out.append(compute_cam(net, x[i : i + 1], class_index=ci, **kwargs))
    return torch.cat(out)


@parameterized.expand(METHODS)
def test_shape_range_and_dtype(method):
    net = _net()
    x = torch.rand(2, 1, 64, 64)
    cams = compute_cam(net, x, method=method)
    assert cams.shape == (2, 1, 64, 64) and cams.dtype == torch.float32 and not cams.requires_grad
    assert float(cams.min()) >= 0.0 and float(cams.max()) <= 1.0
    # per image min-max scaling: each non-constant map reaches 0 and 1
    for c in cams:
        if float(c.max() - c.min()) > 0:
            assert float(c.min()) == 0.0 and float(c.max()) == pytest.approx(1.0)


@parameterized.expand([(m, b) for (m,) in METHODS for b in (2, 3)])
def test_batch_equals_per_image(method, batch):
    """Predicted classes differ within the batch, which MONAI's batched class score gets wrong."""
    net = _net()
    x = torch.rand(batch, 1, 64, 64, generator=torch.Generator().manual_seed(batch))
    _split_predictions(net, x)
    _assert_batch_consistent(net, x, method=method)
    # explicit per-image classes, different from the predictions
    _assert_batch_consistent(net, x, class_index=[1, 0, 1][:batch], method=method)


@parameterized.expand([(m, ci) for (m,) in METHODS for ci in (None, 1)])
def test_batch_equals_per_image_when_width_equals_batch(method, class_index):
    """64 x 32 images give an 8 x 4 ``refine`` map: last dimension == batch size 4 (the Grad-CAM++ pitfall)."""
    net = _net()
    x = torch.rand(4, 1, 64, 32, generator=torch.Generator().manual_seed(7))
    with torch.no_grad():
        assert net.forward_features(x).shape[-1] == x.shape[0]
    if class_index is None:
        _split_predictions(net, x)
    assert compute_cam(net, x, class_index=class_index, method=method).shape == (4, 1, 64, 32)
    _assert_batch_consistent(net, x, class_index=class_index, method=method)


def test_monai_batched_gradcam_differs_but_ours_does_not():
    """Documents why compute_cam has its own class score: MONAI's mixes the batch's predicted classes."""
    from monai.visualize import GradCAM

    net = _net()
    x = torch.rand(4, 1, 64, 64, generator=torch.Generator().manual_seed(3))
    _split_predictions(net, x)
    _assert_batch_consistent(net, x)
    monai_batched = GradCAM(net, "refine")(x)  # default post-processing (inverted scaling), hooks stay behind
    monai_alone = torch.cat([GradCAM(net, "refine")(x[i : i + 1]) for i in range(4)])
    assert float((monai_batched - monai_alone).abs().max()) > 1e-3


def test_predicted_class_by_default_and_class_choice_changes_map(net, images):
    with torch.no_grad():
        pred = net(images).argmax(1)
    torch.testing.assert_close(compute_cam(net, images), compute_cam(net, images, class_index=pred.tolist()))
    torch.testing.assert_close(compute_cam(net, images), compute_cam(net, images, class_index=pred))
    c0 = compute_cam(net, images, class_index=0)
    c1 = compute_cam(net, images, class_index=1)
    assert float((c0 - c1).abs().max()) > 0.1


def test_model_state_untouched(images):
    net = _net()
    net.train()
    net.branch_a.eval()  # a frozen part in eval mode inside a training model
    net.head.weight.requires_grad_(False)
    grads = {}
    for name, p in net.named_parameters():
        if p.requires_grad:
            p.grad = torch.full_like(p, 0.5)
            grads[name] = p.grad
    modes = {n: m.training for n, m in net.named_modules()}
    before = {k: v.clone() for k, v in net.state_dict().items()}
    for method in ("gradcam", "gradcam++"):
        compute_cam(net, images, method=method, target_layer="refine.spatial.gate")
    assert {n: m.training for n, m in net.named_modules()} == modes
    assert not net.head.weight.requires_grad
    assert all(p.requires_grad for n, p in net.named_parameters() if n != "head.weight")
    for name, p in net.named_parameters():
        assert p.grad is grads.get(name), name
        if name in grads:
            assert bool((p.grad == 0.5).all()), name
    assert net.head.weight.grad is None
    after = net.state_dict()
    for k, v in before.items():  # batch-norm running statistics included
        torch.testing.assert_close(after[k], v, msg=k)
    for m in net.modules():
        assert not m._forward_hooks and not m._backward_hooks, m


def test_eval_model_stays_in_eval_and_no_grad_context(net, images):
    assert not net.training
    with torch.no_grad():
        cams = compute_cam(net, images)
    assert not net.training and all(not m.training for m in net.modules())
    assert all(p.grad is None for p in net.parameters())
    torch.testing.assert_close(cams, compute_cam(net, images))
    with torch.inference_mode():
        x = images.clone()
    torch.testing.assert_close(compute_cam(net, x), cams)


def test_metatensor_input(net, images):
    from monai.data import MetaTensor

    cams = compute_cam(net, MetaTensor(images, meta={"filename_or_obj": "x.png"}))
    assert type(cams) is torch.Tensor
    torch.testing.assert_close(cams, compute_cam(net, images))


def _brute_dilate(mask: np.ndarray, r: int) -> np.ndarray:
    ys, xs = np.nonzero(mask)
    yy, xx = np.mgrid[: mask.shape[0], : mask.shape[1]]
    d2 = (yy[..., None] - ys) ** 2 + (xx[..., None] - xs) ** 2
    return (d2 <= r * r).any(-1) if len(ys) else np.zeros_like(mask, dtype=bool)


@parameterized.expand([(0,), (3,)])
def test_masked_cam(dilate):
    net = _net()
    x = torch.rand(2, 1, 64, 64, generator=torch.Generator().manual_seed(5))
    mask = torch.zeros(2, 1, 64, 64)
    mask[0, 0, 10:30, 8:28] = 1.0  # a square in image 0
    mask[1, 0, 40:50, 30:60] = 1.0  # a bar in image 1
    mask[1, 0, 5, 5] = 1.0  # and an isolated pixel
    cams = compute_cam(net, x, mask=mask, dilate=dilate)
    raw = compute_cam(net, x, normalize=False)
    for i in range(2):
        region = _brute_dilate(mask[i, 0].numpy() > 0.5, dilate)
        c = cams[i, 0].numpy()
        assert (c[~region] == 0).all()
        # renormalised: the restricted map is raw * mask scaled per image so that its maximum is 1
        product = raw[i, 0].numpy() * region
        assert product.max() > 0
        np.testing.assert_allclose(c, (product - product.min()) / (product.max() - product.min()), atol=1e-5)
        assert c.max() == pytest.approx(1.0) and c.min() == 0.0
    # dilation grows the region only
    assert bool((dilate_mask(mask.bool(), dilate) >= mask.bool()).all())
    grown = dilate_mask(mask.bool(), dilate)[1, 0].numpy()
    np.testing.assert_array_equal(grown, _brute_dilate(mask[1, 0].numpy() > 0.5, dilate))


def test_masked_cam_mask_shapes_and_edge_cases(net, images):
    mask2d = torch.zeros(64, 64)
    mask2d[16:48, 16:48] = 1
    a = compute_cam(net, images, mask=mask2d)
    b = compute_cam(net, images, mask=mask2d.expand(3, 1, 64, 64).numpy())
    c = compute_cam(net, images, mask=(mask2d > 0).expand(3, 64, 64))
    torch.testing.assert_close(a, b)
    torch.testing.assert_close(a, c)
    # a mask covering the whole image changes nothing; an empty mask gives zeros
    torch.testing.assert_close(compute_cam(net, images, mask=torch.ones(64, 64)), compute_cam(net, images))
    assert float(compute_cam(net, images, mask=torch.zeros(64, 64)).abs().max()) == 0.0
    # restrict_cam on its own agrees with the mask argument
    torch.testing.assert_close(restrict_cam(compute_cam(net, images, normalize=False), mask2d, dilate=2),
                               compute_cam(net, images, mask=mask2d, dilate=2))
    with pytest.raises(ValueError, match="spatial size"):
        compute_cam(net, images, mask=torch.ones(32, 32))
    with pytest.raises(ValueError, match="batch has 3"):
        compute_cam(net, images, mask=torch.ones(2, 1, 64, 64))
    with pytest.raises(ValueError, match="dilate"):
        compute_cam(net, images, mask=mask2d, dilate=-1)


def test_other_target_layer_and_bad_arguments(net, images):
    gate = compute_cam(net, images, target_layer="refine.spatial.gate")
    assert gate.shape == (3, 1, 64, 64) and float(gate.max()) <= 1.0
    with pytest.raises(ValueError, match="did you mean 'refine.spatial.gate'"):
        compute_cam(net, images, target_layer="spatial.gate")
    with pytest.raises(ValueError, match="not a submodule"):
        compute_cam(net, images, target_layer="nope")
    with pytest.raises(ValueError, match="method"):
        compute_cam(net, images, method="scorecam")
    with pytest.raises(ValueError, match="out of range"):
        compute_cam(net, images, class_index=2)
    with pytest.raises(ValueError, match="2 entries but the batch has 3"):
        compute_cam(net, images, class_index=[0, 1])
    with pytest.raises(ValueError, match=r"\(B, C, H, W\)"):
        compute_cam(net, images[0])


def test_overlay_cam():
    img = np.linspace(0, 1, 64 * 48, dtype=np.float32).reshape(64, 48)
    cam = np.zeros((64, 48), np.float32)
    cam[:8, :8] = 1.0
    rgb = overlay_cam(img, cam)
    assert rgb.shape == (64, 48, 3) and rgb.dtype == np.uint8
    # alpha 0: the grey image; alpha 1: the colormap alone (jet: 0 -> dark blue, 1 -> dark red)
    grey = np.repeat(np.round(img * 255).astype(np.uint8)[..., None], 3, -1)
    np.testing.assert_array_equal(overlay_cam(img, cam, alpha=0.0), grey)
    pure = overlay_cam(img, cam, alpha=1.0)
    assert pure[0, 0, 0] > 100 and pure[0, 0, 2] < 50 and pure[-1, -1, 2] > 100 and pure[-1, -1, 0] < 50
    # torch input with a leading channel axis and out-of-range values
    rgb_t = overlay_cam(torch.from_numpy(img)[None] * 2 - 0.5, torch.from_numpy(cam), colormap="inferno")
    assert rgb_t.shape == (64, 48, 3)
    with pytest.raises(ValueError, match="differ in size"):
        overlay_cam(img, cam[:32])
    with pytest.raises(ValueError, match="colormap"):
        overlay_cam(img, cam, colormap="no-such-map")
    with pytest.raises(ValueError, match="alpha"):
        overlay_cam(img, cam, alpha=1.5)


def test_save_overlay_png(tmp_path):
    backend = None
    if "matplotlib" in sys.modules:
        import matplotlib

        backend = matplotlib.get_backend()
    img = np.random.default_rng(0).random((64, 64)).astype(np.float32)
    cam = np.zeros((64, 64), np.float32)
    cam[20:40, 20:40] = 1.0
    path = save_overlay(tmp_path / "sub" / "x_opacity.png", img, cam, title="x: opacity (p = 0.930)")
    assert path.is_file()
    with Image.open(path) as im:
        assert im.format == "PNG" and im.mode in ("RGB", "RGBA")
        w, h = im.size
    assert w > h  # two panels side by side
    if backend is not None:
        import matplotlib

        assert matplotlib.get_backend() == backend  # no global backend switch


def test_cam_writer_handler(tmp_path, net):
    """CAMWriter on a bare ignite engine: predicted class from the probabilities, cap, unique names, index."""
    from ignite.engine import Engine

    from medfuse.workflows import CAMWriter

    x = torch.rand(3, 1, 64, 64, generator=torch.Generator().manual_seed(2))
    probs = torch.tensor([[0.2, 0.8], [0.9, 0.1], [0.4, 0.6]])
    paths = ["/a/img_1.png", "/b/img_1.png", "/c/scan.dcm"]

    def step(engine, batch):
        engine.state.batch = [{"image_path": p} for p in paths]
        return [{"image": x[i], "pred": probs[i]} for i in range(3)]

    engine = Engine(step)
    engine.network = net
    writer = CAMWriter(tmp_path / "cam", classes=["normal", "opacity"], max_images=4)
    writer.attach(engine)
    engine.run([0, 1], max_epochs=1)  # two iterations of three images, capped at four
    with open(tmp_path / "cam" / "index.csv") as f:
        rows = list(csv.DictReader(f))
    names = ["img_1_opacity.png", "img_1_normal.png", "scan_opacity.png", "img_1_opacity-2.png"]
    assert [r["overlay"] for r in rows] == names
    assert [r["image"] for r in rows] == paths + paths[:1]
    assert [float(r["prob"]) for r in rows] == pytest.approx([0.8, 0.9, 0.6, 0.8])
    assert sorted(p.name for p in (tmp_path / "cam").glob("*.png")) == sorted(r["overlay"] for r in rows)
    assert not net.training and all(p.grad is None for p in net.parameters())


def test_cam_writer_batch_dict_output_masks_and_no_cap(tmp_path, net, caplog, monkeypatch):
    """Not decollated (one dictionary per batch), masks on some items, max_images <= 0: every image."""
    import logging

    from ignite.engine import Engine

    from medfuse.workflows import CAMWriter

    x = torch.rand(3, 1, 64, 64, generator=torch.Generator().manual_seed(4))
    probs = torch.tensor([[0.3, 0.7], [0.6, 0.4], [0.5, 0.5]])
    masks = [torch.zeros(1, 64, 64), None, torch.ones(1, 64, 64)]
    masks[0][0, 8:24, 8:24] = 1

    def step(engine, batch):
        engine.state.batch = {"image_path": ["p/a.nii.gz", "q/b", ""]}
        return {"image": x, "pred": probs}

    engine = Engine(step)
    writer = CAMWriter(tmp_path / "cam", max_images=0, network=net)
    writer.attach(engine)
    engine.run([0, 1], max_epochs=1)
    rows = writer.rows
    assert [r["overlay"] for r in rows] == ["a_1.png", "b_0.png", "image00002_0.png", "a_1-2.png", "b_0-2.png",
                                            "image00005_0.png"]
    assert len(list((tmp_path / "cam").glob("*.png"))) == 6

    # masks: the engine output carries them per item (decollated); an item without one is not restricted
    def step_masked(engine, batch):
        return [{"image": x[i], "pred": probs[i], "mask": masks[i], "image_path": f"m{i}.png"} for i in range(3)]

    import medfuse.workflows.cam as cam_module

    seen = {}

    def spy(*args, **kwargs):
        seen.update(kwargs)
        return compute_cam(*args, **kwargs)

    monkeypatch.setattr(cam_module, "compute_cam", spy)
    engine = Engine(step_masked)
    writer = CAMWriter(tmp_path / "cam_masked", classes=["normal", "opacity"], network=net, mask_key="mask",
                       dilate=2)
    writer.attach(engine)
    with caplog.at_level(logging.WARNING, logger="medfuse.workflows.cam"):
        engine.run([0], max_epochs=1)
    assert "some items lack 'mask'" in caplog.text
    assert [r["overlay"] for r in writer.rows] == ["m0_opacity.png", "m1_normal.png", "m2_normal.png"]
    assert seen["class_index"] == [1, 0, 0] and seen["dilate"] == 2 and seen["target_layer"] == "refine"
    torch.testing.assert_close(seen["mask"], torch.stack([masks[0][0], torch.ones(64, 64), masks[2][0]]))


def test_dual_cross_attention_net_names_its_cam_layer(net):
    assert net.cam_layer == "refine" and default_target_layer(net) == "refine"
    assert default_target_layer(torch.nn.DataParallel(net).module) == "refine"


def test_display_image():
    x = torch.tensor([[[0.0, 0.5], [1.0, 0.25]], [[1.0, 0.5], [0.0, 0.25]]])
    np.testing.assert_allclose(display_image(x), [[0.5, 0.5], [0.5, 0.25]])  # channel mean, in [0, 1]: kept
    z = display_image(torch.tensor([[[-2.0, 0.0], [2.0, 1.0]]]))  # e.g. after mean/std: min-max scaled
    np.testing.assert_allclose(z, [[0.0, 0.5], [1.0, 0.75]])
    assert display_image(torch.full((1, 3, 3), 5.0)).max() == 0.0 and display_image(np.ones((4, 4))).shape == (4, 4)
