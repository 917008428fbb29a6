# Copyright (c) medfuse contributors
# Licensed under the Apache License, Version 2.0
"""GlobalSpatialAttentionNet: every network at the input and at a stage, hooks, state dicts, CAM layer, arguments,
TorchScript and tracing."""

from __future__ import annotations

import copy

import pytest
import torch
import torch.nn as nn
from monai.networks import eval_mode
from monai.networks.nets import resnet18
from monai.visualize import GradCAM

from medfuse.networks import GlobalSpatialAttention, GlobalSpatialAttentionNet, GSANet
from medfuse.networks.nets import global_spatial_attention_net as gsa_net

pytestmark = [
    pytest.mark.filterwarnings("ignore:`torch.jit.trace:DeprecationWarning"),
    pytest.mark.filterwarnings("ignore::torch.jit.TracerWarning"),
]

TINY_DCAT = {"backbones": ("efficientnet-b0", "resnet10"), "hidden_size": 32, "num_heads": 4}

# name, stage used for "at", expected stages, Grad-CAM layer, input channels
NETWORKS = [
    ("resnet18", "layer2", ("layer1", "layer2", "layer3", "layer4"), "net.layer4", 1),
    ("resnet34", "layer3", ("layer1", "layer2", "layer3", "layer4"), "net.layer4", 1),
    ("resnet50", "layer1", ("layer1", "layer2", "layer3", "layer4"), "net.layer4", 3),
    (
        "densenet121",
        "features.denseblock2",
        tuple(f"features.denseblock{i}" for i in range(1, 5)),
        "net.features.denseblock4",
        1,
    ),
    ("seresnet50", "layer0", ("layer0", "layer1", "layer2", "layer3", "layer4"), "net.layer4", 1),
    (
        "dual_cross_attention",
        "branch_b.layer2",
        ("branch_a._blocks.2", "branch_a._blocks.4", "branch_b.layer2", "branch_b.layer3"),
        "net.refine",
        1,
    ),
]
CASES = [(name, at, stages, cam, ch) for name, stage, stages, cam, ch in NETWORKS for at in ("input", stage)]


def build(name, **kwargs):
    if name == "dual_cross_attention":
        kwargs.setdefault("net_kwargs", TINY_DCAT)
    return GlobalSpatialAttentionNet(name, **kwargs)


@pytest.mark.parametrize("name, at, stages, cam_layer, in_channels", CASES)
def test_shapes_hook_and_names(name, at, stages, cam_layer, in_channels):
    torch.manual_seed(0)
    model = build(name, in_channels=in_channels, num_classes=3, at=at, map_size=(8, 8))
    x = torch.randn(2, in_channels, 32, 32)
    with eval_mode(model):
        out = model(x)
        with torch.no_grad():  # a different map changes the output: the block is really applied
            model.gsa.z.copy_(torch.randn(1, 1, 8, 8) * 3)
        changed = model(x)
    assert out.shape == changed.shape == (2, 3)
    assert not torch.allclose(out, changed)
    assert model.stages == stages
    assert model.cam_layer == cam_layer and cam_layer in dict(model.named_modules())
    assert isinstance(model.gsa, GlobalSpatialAttention) and model.get_map().shape == (1, 1, 8, 8)
    assert model.at == at and model.net_name == name
    keys = list(model.state_dict())
    assert [k for k in keys if not k.startswith("net.")] == ["gsa.z"]
    assert [n for n, _ in model.named_parameters()][0] == "gsa.z"
    if at == "input":
        assert model.applied_by == "input"
    else:
        # every named network's stages are plain Sequentials: the block is their last layer (the same object),
        # hidden from the state dict, whose net.* keys are the plain network's
        assert model.applied_by == "sequential"
        stage = model.net.get_submodule(at)
        assert stage.gsa is model.gsa and stage[-1] is model.gsa
        plain = gsa_net._build(name, in_channels, 3, TINY_DCAT if name == "dual_cross_attention" else {})
        assert [k[4:] for k in keys if k.startswith("net.")] == list(plain.state_dict())
        assert model.net.load_state_dict(plain.state_dict()).missing_keys == []


def test_alias_and_defaults():
    assert GSANet is GlobalSpatialAttentionNet
    model = GSANet()
    assert model.net_name == "resnet18" and model.at == "input" and model.gsa.map_size == (16, 16)
    assert model.net.conv1.stride == (2, 2) and model.net.conv1.in_channels == 1 and model.net.fc.out_features == 2
    expected = torch.full((1, 1, 4, 4), torch.sigmoid(torch.tensor(3.0)))
    torch.testing.assert_close(model.get_map([4, 4]).detach(), expected)


def test_stage_map_multiplies_the_stage_output():
    model = build("resnet18", at="layer2", map_size=(4, 4)).eval()
    with torch.no_grad():
        model.gsa.z.copy_(torch.randn(1, 1, 4, 4))
    seen = {}
    model.net.layer2.register_forward_pre_hook(lambda m, i: seen.setdefault("input", i[0]))
    model.net.layer2.register_forward_hook(lambda m, i, o: seen.setdefault("output", o))
    with torch.no_grad():
        model(torch.randn(2, 1, 64, 64))
        ungated = model.net.layer2[1](model.net.layer2[0](seen["input"]))
    assert seen["output"].shape == (2, 128, 8, 8)
    torch.testing.assert_close(seen["output"], ungated * model.get_map([8, 8]))


def test_image_basis_and_given_module():
    basis = GlobalSpatialAttention.basis_from_images(torch.rand(6, 40, 40), k=3, map_size=(8, 8))
    model = GSANet(resnet18(spatial_dims=2, n_input_channels=1, num_classes=4), at="layer3", mode="image_basis",
                   basis=basis, map_size=(8, 8))
    assert model.net_name == "ResNet" and model.cam_layer == "net.layer4" and model.applied_by == "sequential"
    assert sorted(k for k in model.state_dict() if not k.startswith("net.")) == ["gsa.b", "gsa.basis", "gsa.w"]
    with eval_mode(model):
        assert model(torch.randn(2, 1, 32, 32)).shape == (2, 4)

    class Tiny(nn.Module):
        def __init__(self):
            super().__init__()
            self.conv = nn.Conv2d(1, 4, 3, padding=1)
            self.body = nn.Sequential(nn.Conv2d(4, 4, 3, padding=1), nn.ReLU())
            self.head = nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(4, 2))
            self.cam_layer = "body"

        def forward(self, x):
            return self.head(self.body(self.conv(x)))

    model = GSANet(Tiny(), at="body")
    assert model.stages == ("conv", "body", "head") and model.cam_layer == "net.body"
    assert model.applied_by == "sequential" and len(model.net.body) == 3 and model.net.body[2] is model.gsa
    assert model(torch.randn(2, 1, 9, 13)).shape == (2, 2)
    assert GSANet(nn.Sequential(nn.Conv2d(1, 2, 1), nn.Flatten())).cam_layer is None


def test_forward_hook_on_a_module_that_is_not_a_sequential(tmp_path):
    torch.manual_seed(0)
    net = nn.Sequential(nn.Conv2d(1, 4, 3, padding=1), nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten(),
                        nn.Linear(4, 3))
    plain_keys = list(net.state_dict())
    model = GSANet(net, at="0", map_size=(4, 4)).eval()
    assert model.applied_by == "hook" and model.net[0].gsa is model.gsa and len(model.net) == 5
    with torch.no_grad():
        model.gsa.z.copy_(torch.randn(1, 1, 4, 4))
    x = torch.randn(2, 1, 12, 10)
    expected = net[2:](torch.relu(net[0].forward(x) * model.get_map([12, 10])))  # .forward: without the hook
    torch.testing.assert_close(model(x), expected)
    assert list(model.state_dict()) == ["gsa.z"] + [f"net.{k}" for k in plain_keys]
    torch.testing.assert_close(round_trip(torch.jit.script(model), tmp_path, "s")(x), expected)
    torch.testing.assert_close(round_trip(torch.jit.trace(model, x), tmp_path, "t")(x), expected)
    with pytest.raises(ValueError, match=r"expects \(B, C, H, W\) input, got shape \[2, 4\]"):
        GSANet(nn.Sequential(nn.Flatten(), nn.Linear(4, 2)), at="0")(torch.randn(2, 1, 2, 2))


def test_state_dict_round_trip_at_stage():
    model = build("resnet18", at="layer2", map_size=(4, 4)).eval()
    with torch.no_grad():
        model.gsa.z.copy_(torch.randn(1, 1, 4, 4))
    x = torch.randn(1, 1, 32, 32)
    other = build("resnet18", at="layer2", map_size=(4, 4)).eval()
    assert not other.load_state_dict(model.state_dict()).missing_keys
    torch.testing.assert_close(other.gsa.z, model.gsa.z)
    torch.testing.assert_close(other(x), model(x))
    # a deep copy keeps one block, shared by the wrapper and the stage
    copied = copy.deepcopy(model)
    assert copied.net.layer2.gsa is copied.gsa and copied.gsa is not model.gsa
    torch.testing.assert_close(copied(x), model(x))
    # an input-placed model has the same keys: checkpoints move between placements
    assert list(build("resnet18", map_size=(4, 4)).state_dict()) == list(model.state_dict())


def test_gradcam_on_cam_layer():
    model = build("resnet18", at="layer2", map_size=(4, 4)).eval()
    maps = GradCAM(model, target_layers=model.cam_layer)(torch.randn(2, 1, 32, 32))
    assert maps.shape == (2, 1, 32, 32)


@pytest.mark.parametrize(
    "name, at, match",
    [
        ("resnet18", "layer5", "at='layer5' is neither 'input' nor a submodule of resnet18.*layer1, layer2, layer3, "
                               "layer4"),
        ("densenet121", "denseblock2", "'denseblock2'.*features.denseblock1, features.denseblock2"),
        ("seresnet50", "layer9", "layer0, layer1, layer2, layer3, layer4"),
        ("resnet18", "", "at must be 'input' or the name of a submodule of net, got ''"),
        ("resnet18", None, "got None"),
    ],
)
def test_bad_at_lists_stages(name, at, match):
    with pytest.raises(ValueError, match=match):
        build(name, at=at)


@pytest.mark.parametrize(
    "args, kwargs, match",
    [
        (("vgg16",), {}, "unknown net 'vgg16': expected one of densenet121, resnet18, resnet34, resnet50, seresnet50, "
                         "dual_cross_attention"),
        ((42,), {}, "net must be a network name or an nn.Module, got int"),
        (("resnet18",), {"num_classes": 0}, "num_classes must be a positive integer, got 0"),
        (("resnet18",), {"in_channels": True}, "in_channels must be a positive integer, got True"),
        (("resnet18",), {"net_kwargs": ["x"]}, "net_kwargs must be a mapping or None, got list"),
        ((nn.Conv2d(1, 1, 1),), {"net_kwargs": {"bias": False}}, r"only applies to a network given by name; got \{'b"),
        (("resnet18",), {"net_kwargs": {"num_classes": 5}}, r"must not set \['num_classes'\]"),
        (("dual_cross_attention",), {"net_kwargs": {"in_channels": 3}}, r"must not set \['in_channels'\]"),
        (("resnet18",), {"mode": "pca"}, "got 'pca'"),
        (("resnet18",), {"map_size": (0, 3)}, r"got \(0, 3\)"),
        ((nn.Sequential(nn.ModuleList([nn.ReLU()])),), {"at": "0"}, r"at='0' names a container \(ModuleList\)"),
    ],
)
def test_ill_arguments(args, kwargs, match):
    with pytest.raises(ValueError, match=match):
        GlobalSpatialAttentionNet(*args, **kwargs)


def round_trip(module, tmp_path, name):
    path = tmp_path / f"{name}.ts"
    torch.jit.save(module, str(path))
    return torch.jit.load(str(path))


@pytest.mark.parametrize("at", ["input", "layer2"])
def test_script_and_trace_round_trip(at, tmp_path):
    model = build("resnet18", at=at, map_size=(4, 4)).eval()
    with torch.no_grad():
        model.gsa.z.copy_(torch.randn(1, 1, 4, 4))
    x = torch.randn(2, 1, 32, 32)
    expected = model(x)
    traced = round_trip(torch.jit.trace(model, x), tmp_path, "traced")
    torch.testing.assert_close(traced(x), expected)
    scripted = round_trip(torch.jit.script(model), tmp_path, "scripted")
    torch.testing.assert_close(scripted(x), expected)
    torch.testing.assert_close(scripted.gsa.get_map([8, 8]), model.get_map([8, 8]))
    if at != "input":  # the scripted model lists the block under the stage too
        keys = set(scripted.state_dict())
        assert {"gsa.z", f"net.{at}.gsa.z"} <= keys
        # its state dict loads into an eager model
        other = build("resnet18", at=at, map_size=(4, 4)).eval()
        other.load_state_dict(scripted.state_dict())
        torch.testing.assert_close(other(x), expected)


def test_trace_dual_cross_attention_at_stage():
    model = build("dual_cross_attention", at="branch_b.layer2", map_size=(4, 4)).eval()
    with torch.no_grad():
        model.gsa.z.copy_(torch.randn(1, 1, 4, 4))
    x = torch.randn(1, 1, 32, 32)
    traced = torch.jit.trace(model, x)
    torch.testing.assert_close(traced(x), model(x))
