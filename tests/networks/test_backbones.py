# Copyright (c) medfuse contributors
# Licensed under the Apache License, Version 2.0
"""Backbones by name, tap levels, ImageNet key mapping and strict loading, offline download errors."""

from __future__ import annotations

import socket
import time
import urllib.error

import pytest
import torch
from monai.networks.nets import EfficientNetBNFeatures

from medfuse.errors import DataError
from medfuse.networks import backbones as bb
from medfuse.networks.backbones import (
    PretrainedWeightsError,
    backbone_taps,
    build_backbone,
    convert_from_monai_layout,
    detect_layout,
    download_imagenet_weights,
    load_pretrained_weights,
    read_state_dict,
)


def _bn(prefix, n):
    return {f"{prefix}.{name}": (n,) for name in ("weight", "bias", "running_mean", "running_var")}


def torchvision_resnet_reference(layers, bottleneck=False, in_channels=3):
    """Key -> shape of a torchvision ImageNet ResNet, written from torchvision's architecture (not from MONAI)."""
    exp = 4 if bottleneck else 1
    ref = {"conv1.weight": (64, in_channels, 7, 7), **_bn("bn1", 64)}
    inplanes = 64
    for li, (blocks, planes) in enumerate(zip(layers, (64, 128, 256, 512)), start=1):
        for b in range(blocks):
            p = f"layer{li}.{b}"
            stride = 2 if li > 1 and b == 0 else 1
            if bottleneck:
                ref[f"{p}.conv1.weight"] = (planes, inplanes, 1, 1)
                ref.update(_bn(f"{p}.bn1", planes))
                ref[f"{p}.conv2.weight"] = (planes, planes, 3, 3)
                ref.update(_bn(f"{p}.bn2", planes))
                ref[f"{p}.conv3.weight"] = (planes * exp, planes, 1, 1)
                ref.update(_bn(f"{p}.bn3", planes * exp))
            else:
                ref[f"{p}.conv1.weight"] = (planes, inplanes, 3, 3)
                ref.update(_bn(f"{p}.bn1", planes))
                ref[f"{p}.conv2.weight"] = (planes, planes, 3, 3)
                ref.update(_bn(f"{p}.bn2", planes))
            if b == 0 and (stride != 1 or inplanes != planes * exp):
                ref[f"{p}.downsample.0.weight"] = (planes * exp, inplanes, 1, 1)
                ref.update(_bn(f"{p}.downsample.1", planes * exp))
            inplanes = planes * exp
    ref["fc.weight"] = (1000, 512 * exp)
    ref["fc.bias"] = (1000,)
    return ref


def random_state(ref, seed=0):
    g = torch.Generator().manual_seed(seed)
    return {k: torch.randn(shape, generator=g) for k, shape in ref.items()}


@pytest.mark.parametrize(
    "name, layers, bottleneck",
    [("resnet18", (2, 2, 2, 2), False), ("resnet34", (3, 4, 6, 3), False), ("resnet50", (3, 4, 6, 3), True)],
)
def test_resnet_matches_torchvision_keys_and_shapes(name, layers, bottleneck):
    net = build_backbone(name, in_channels=3)
    ours = {k: tuple(v.shape) for k, v in net.state_dict().items() if not k.endswith("num_batches_tracked")}
    ref = torchvision_resnet_reference(layers, bottleneck)
    ref.pop("fc.weight"), ref.pop("fc.bias")
    assert ours == ref


@pytest.mark.parametrize("layout", ["torchvision", "timm"])  # timm resnet* uses torchvision's key names
def test_resnet_imagenet_load_sums_first_conv_for_grey(layout):
    ref = torchvision_resnet_reference((2, 2, 2, 2))
    state = random_state(ref)
    state["layer1.0.bn1.num_batches_tracked"] = torch.tensor(7)
    net = build_backbone("resnet18", in_channels=1, weights=state)
    loaded = net.state_dict()
    assert loaded["conv1.weight"].shape == (64, 1, 7, 7)
    expected = state["conv1.weight"][:, 0:1] + state["conv1.weight"][:, 1:2] + state["conv1.weight"][:, 2:3]
    torch.testing.assert_close(loaded["conv1.weight"], expected)
    for key in ("layer1.0.conv1.weight", "layer2.0.downsample.0.weight", "layer4.1.bn2.running_var"):
        torch.testing.assert_close(loaded[key], state[key])
    # grey input through the summed kernel == replicated grey through the RGB kernel
    x = torch.randn(1, 1, 9, 9)
    w_rgb = state["conv1.weight"]
    torch.testing.assert_close(
        torch.nn.functional.conv2d(x, loaded["conv1.weight"], padding=3),
        torch.nn.functional.conv2d(x.repeat(1, 3, 1, 1), w_rgb, padding=3),
        rtol=1e-4,
        atol=1e-4,
    )


def test_resnet_truncated_after_loading_full_checkpoint(tmp_path):
    state = random_state(torchvision_resnet_reference((2, 2, 2, 2)))
    path = tmp_path / "resnet18-f37072fd.pth"
    torch.save({"state_dict": {"module." + k: v for k, v in state.items()}}, path)  # wrapped + DDP prefix
    net = build_backbone("resnet18", in_channels=3, weights=path, max_stride=16)
    assert isinstance(net.layer4, torch.nn.Identity)
    torch.testing.assert_close(net.state_dict()["layer3.1.conv2.weight"], state["layer3.1.conv2.weight"])
    assert sorted(backbone_taps(net, "resnet18")) == [4, 8, 16]


def test_partial_or_wrong_checkpoints_raise_with_keys(tmp_path):
    ref = torchvision_resnet_reference((2, 2, 2, 2))
    state = random_state(ref)
    missing = dict(state)
    del missing["layer3.0.conv2.weight"]
    with pytest.raises(PretrainedWeightsError, match=r"missing key.*layer3\.0\.conv2\.weight"):
        build_backbone("resnet18", weights=missing)
    extra = dict(state, **{"layer5.0.conv1.weight": torch.zeros(1)})
    with pytest.raises(PretrainedWeightsError, match=r"unexpected key.*layer5\.0\.conv1\.weight"):
        build_backbone("resnet18", weights=extra)
    # a resnet18 checkpoint is not a resnet34 one (missing blocks), nor a resnet50 one (shapes)
    with pytest.raises(PretrainedWeightsError, match="missing key"):
        build_backbone("resnet34", weights=state)
    with pytest.raises(PretrainedWeightsError, match="shape mismatch"):
        build_backbone("resnet50", weights=state)
    with pytest.raises(PretrainedWeightsError, match="unrecognised resnet checkpoint layout"):
        build_backbone("resnet18", weights={"encoder.conv.weight": torch.zeros(1)})
    with pytest.raises(DataError, match="not found: .*nope.pth"):
        build_backbone("resnet18", weights=tmp_path / "nope.pth")
    junk = tmp_path / "junk.pth"
    junk.write_bytes(b"not a checkpoint")
    with pytest.raises(PretrainedWeightsError, match="cannot read"):
        build_backbone("resnet18", weights=junk)


# known ImageNet key shapes of EfficientNet-B0 in each public layout
EFFNET_B0_FACTS = {
    "lukemelas": {
        "_conv_stem.weight": (32, 3, 3, 3),
        "_blocks.0._depthwise_conv.weight": (32, 1, 3, 3),
        "_blocks.0._se_reduce.weight": (8, 32, 1, 1),
        "_blocks.1._expand_conv.weight": (96, 16, 1, 1),
        "_blocks.15._project_conv.weight": (320, 1152, 1, 1),
        "_conv_head.weight": (1280, 320, 1, 1),
        "_bn1.running_var": (1280,),
        "_fc.weight": (1000, 1280),
    },
    "timm": {
        "conv_stem.weight": (32, 3, 3, 3),
        "bn1.weight": (32,),
        "blocks.0.0.conv_dw.weight": (32, 1, 3, 3),
        "blocks.0.0.se.conv_reduce.weight": (8, 32, 1, 1),
        "blocks.0.0.conv_pw.weight": (16, 32, 1, 1),
        "blocks.1.0.conv_pw.weight": (96, 16, 1, 1),
        "blocks.1.1.se.conv_reduce.weight": (6, 144, 1, 1),
        "blocks.1.0.conv_pwl.weight": (24, 96, 1, 1),
        "blocks.1.0.bn3.weight": (24,),
        "blocks.6.0.conv_pwl.weight": (320, 1152, 1, 1),
        "conv_head.weight": (1280, 320, 1, 1),
        "bn2.weight": (1280,),
        "classifier.weight": (1000, 1280),
    },
    "torchvision": {
        "features.0.0.weight": (32, 3, 3, 3),
        "features.0.1.weight": (32,),
        "features.1.0.block.0.0.weight": (32, 1, 3, 3),
        "features.1.0.block.1.fc1.weight": (8, 32, 1, 1),
        "features.1.0.block.2.0.weight": (16, 32, 1, 1),
        "features.2.0.block.0.0.weight": (96, 16, 1, 1),
        "features.2.0.block.1.0.weight": (96, 1, 3, 3),
        "features.2.0.block.3.0.weight": (24, 96, 1, 1),
        "features.7.0.block.3.0.weight": (320, 1152, 1, 1),
        "features.8.0.weight": (1280, 320, 1, 1),
        "classifier.1.weight": (1000, 1280),
    },
}


@pytest.fixture(scope="module")
def effnet_b0_rgb():
    """A complete MONAI EfficientNet-B0 (with head), standing in for an ImageNet checkpoint."""
    torch.manual_seed(1)
    net = EfficientNetBNFeatures("efficientnet-b0", pretrained=False, in_channels=3)
    # non-trivial BN statistics so that a wrong mapping shows
    for m in net.modules():
        if isinstance(m, torch.nn.BatchNorm2d):
            m.running_mean.uniform_(-1, 1)
            m.running_var.uniform_(0.5, 2)
    return net


@pytest.mark.parametrize("layout", ["lukemelas", "timm", "torchvision", "monai"])
def test_efficientnet_layouts_round_trip(effnet_b0_rgb, layout):
    state = effnet_b0_rgb.state_dict()
    foreign = convert_from_monai_layout(state, "efficientnet", layout)
    assert len(foreign) == len(state)
    for key, shape in EFFNET_B0_FACTS.get(layout, {}).items():
        assert tuple(foreign[key].shape) == shape, key
    assert detect_layout(foreign, "efficientnet") == layout
    fresh = EfficientNetBNFeatures("efficientnet-b0", pretrained=False, in_channels=3)
    with pytest.warns(UserWarning, match="padding") if layout in ("timm", "torchvision") else _no_warning():
        assert load_pretrained_weights(fresh, "efficientnet-b0", foreign) == layout
    for key, value in state.items():
        if not key.startswith(("_fc.", "_conv_head.", "_bn1.")):  # the unused head is not loaded
            torch.testing.assert_close(fresh.state_dict()[key], value, msg=key)
    # the same through build_backbone, truncated after stride 16
    with pytest.warns(UserWarning, match="padding") if layout in ("timm", "torchvision") else _no_warning():
        small = build_backbone("efficientnet-b0", in_channels=3, weights=foreign, max_stride=16)
    torch.testing.assert_close(small._blocks[4][-1]._bn2.running_var, state["_blocks.4.10._bn2.running_var"])
    x = torch.randn(1, 3, 64, 64)
    with torch.no_grad():
        for a, b in zip(fresh.eval()(x), effnet_b0_rgb.eval()(x)):
            torch.testing.assert_close(a, b)


class _no_warning:
    def __enter__(self):
        return self

    def __exit__(self, *exc):
        return False


def test_efficientnet_b4_lukemelas_facts_and_grey_stem():
    net = EfficientNetBNFeatures("efficientnet-b4", pretrained=False, in_channels=3)
    luke = convert_from_monai_layout(net.state_dict(), "efficientnet", "lukemelas")
    assert luke["_conv_stem.weight"].shape == (48, 3, 3, 3)
    assert "_blocks.31._project_conv.weight" in luke and "_blocks.32._project_conv.weight" not in luke
    assert luke["_conv_head.weight"].shape == (1792, 448, 1, 1)
    luke = {k: torch.randn_like(v.float()) if v.is_floating_point() else v for k, v in luke.items()}
    luke = {k: v for k, v in luke.items() if not k.endswith("num_batches_tracked")}  # old checkpoints lack them
    grey = build_backbone("efficientnet-b4", in_channels=1, weights=luke, max_stride=16)
    torch.testing.assert_close(grey._conv_stem.weight, luke["_conv_stem.weight"].sum(dim=1, keepdim=True))
    torch.testing.assert_close(grey._blocks[4][-1]._project_conv.weight, luke["_blocks.21._project_conv.weight"])
    assert len(grey._blocks) == 5 and isinstance(grey._conv_head, torch.nn.Identity)
    taps = backbone_taps(grey, "efficientnet-b4")
    assert {s: (t.channels, t.module) for s, t in taps.items()} == {
        4: (32, "_blocks.1"),
        8: (56, "_blocks.2"),
        16: (160, "_blocks.4"),
    }


def test_efficientnet_checkpoint_of_other_size_raises(effnet_b0_rgb):
    luke = convert_from_monai_layout(effnet_b0_rgb.state_dict(), "efficientnet", "lukemelas")
    with pytest.raises(PretrainedWeightsError, match=r"efficientnet-b1 .*(missing key|shape mismatch)"):
        build_backbone("efficientnet-b1", weights=luke)


@pytest.mark.parametrize(
    "name, strides_channels",
    [
        ("efficientnet-b0", {4: 24, 8: 40, 16: 112, 32: 320}),
        ("resnet10", {4: 64, 8: 128, 16: 256, 32: 512}),
        ("resnet50", {4: 256, 8: 512, 16: 1024, 32: 2048}),
    ],
)
def test_taps_match_real_feature_maps(name, strides_channels):
    net = build_backbone(name, in_channels=1).eval()
    taps = backbone_taps(net, name)
    assert {s: t.channels for s, t in taps.items()} == strides_channels
    with torch.no_grad():
        feats = net(torch.randn(1, 1, 64, 64))
    for s, t in taps.items():
        assert feats[t.feature_index].shape == (1, t.channels, 64 // s, 64 // s)


def test_unknown_backbone_and_3d():
    with pytest.raises(ValueError, match="'resnet9'"):
        build_backbone("resnet9")
    with pytest.raises(ValueError, match="spatial_dims=3"):
        build_backbone("resnet10", spatial_dims=3)


def test_offline_download_fails_fast_and_clearly(tmp_path, monkeypatch):
    monkeypatch.setattr(torch.hub, "get_dir", lambda: str(tmp_path))

    def no_network(address, timeout=None, *args, **kwargs):
        raise socket.timeout("timed out")

    monkeypatch.setattr(bb.socket, "create_connection", no_network)
    start = time.monotonic()
    expected = r"efficientnet-b0.*timed out.*pretrained_weights=\{'efficientnet'"
    with pytest.raises(PretrainedWeightsError, match=expected):
        build_backbone("efficientnet-b0", pretrained=True)
    assert time.monotonic() - start < 5.0

    class FakeSocket:
        def close(self):
            pass

    def url_error(*args, **kwargs):
        raise urllib.error.URLError("Name or service not known")

    monkeypatch.setattr(bb.socket, "create_connection", lambda *a, **k: FakeSocket())
    monkeypatch.setattr(torch.hub, "load_state_dict_from_url", url_error)
    with pytest.raises(PretrainedWeightsError, match="Name or service not known.*local file"):
        download_imagenet_weights("efficientnet-b0")
    with pytest.raises(PretrainedWeightsError, match="no ImageNet weights can be downloaded for resnet10"):
        download_imagenet_weights("resnet10")


def test_pretrained_uses_hub_cache_without_network(tmp_path, monkeypatch, effnet_b0_rgb):
    monkeypatch.setattr(torch.hub, "get_dir", lambda: str(tmp_path))

    def no_network(*args, **kwargs):
        raise AssertionError("network used although the weights are cached")

    monkeypatch.setattr(bb.socket, "create_connection", no_network)
    (tmp_path / "checkpoints").mkdir()
    luke = convert_from_monai_layout(effnet_b0_rgb.state_dict(), "efficientnet", "lukemelas")
    torch.save(luke, tmp_path / "checkpoints" / "efficientnet-b0-355c32eb.pth")
    net = build_backbone("efficientnet-b0", in_channels=3, pretrained=True)
    torch.testing.assert_close(net._conv_stem.weight, effnet_b0_rgb._conv_stem.weight)


def test_read_state_dict_unwraps():
    inner = {"a.weight": torch.ones(2)}
    assert read_state_dict({"model": inner}).keys() == {"a.weight"}
    assert read_state_dict({"_orig_mod.a.weight": torch.ones(2)}).keys() == {"a.weight"}
    with pytest.raises(PretrainedWeightsError, match="no state dict"):
        read_state_dict({"epoch": 3})
