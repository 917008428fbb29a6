# Copyright (c) medfuse contributors
# Licensed under the Apache License, Version 2.0
"""DualCrossAttentionNet: shapes, arguments, TorchScript, gradients, attention maps, MC dropout, weights."""

from __future__ import annotations

import json
import socket
import time
import warnings

import pytest
import torch
from monai.bundle import ckpt_export, verify_net_in_out
from monai.networks import eval_mode
from monai.networks.nets import EfficientNetBNFeatures
from monai.visualize import GradCAM

from medfuse.networks import DCATNet, DualCrossAttentionNet, PretrainedWeightsError
from medfuse.networks import backbones as bb
from medfuse.networks.backbones import convert_from_monai_layout
from tests.networks.test_backbones import random_state, torchvision_resnet_reference

TINY = {"backbones": ("efficientnet-b0", "resnet10"), "hidden_size": 32, "num_heads": 4}


def tiny(**kwargs):
    return DualCrossAttentionNet(**{**TINY, **kwargs})


SHAPE_CASES = [
    # constructor arguments, input shape, feature-map grid
    ({"in_channels": 1, "num_classes": 2}, (2, 1, 64, 64), (8, 8)),
    ({"in_channels": 3, "num_classes": 4, "taps": (8, 16, 32), "fusion": "concat"}, (2, 3, 64, 64), (8, 8)),
    ({"num_classes": 4, "taps": (16,), "scale_fusion": "sum", "pos_embed": "none"}, (1, 1, 64, 64), (4, 4)),
    ({"num_classes": 3, "taps": (32, 8), "scale_fusion": "sum", "fusion": "concat"}, (2, 1, 64, 96), (8, 12)),
    # sizes that are not multiples of 32: the branches' grids differ at stride 16 and are aligned
    ({"num_classes": 3}, (1, 1, 72, 80), (9, 10)),
    ({"num_classes": 2, "backbones": ("resnet10", "efficientnet-b0"), "taps": (4, 8)}, (2, 1, 64, 64), (16, 16)),
]


@pytest.mark.parametrize("kwargs, shape, grid", SHAPE_CASES)
def test_shapes(kwargs, shape, grid):
    net = tiny(**kwargs)
    x = torch.randn(shape)
    with eval_mode(net):
        logits = net(x)
        features = net.forward_features(x)
        pooled = net.forward_head(features, pre_logits=True)
        torch.testing.assert_close(net.forward_head(features), logits)
    assert logits.shape == (shape[0], kwargs["num_classes"])
    assert features.shape == (shape[0], 32, *grid)
    assert pooled.shape == (shape[0], 32)


ILL_CASES = [
    ({"backbones": ("efficientnet-b9", "resnet10")}, "unknown backbone 'efficientnet-b9'"),
    ({"backbones": ("resnet10",)}, r"two backbones .*\('resnet10',\)"),
    ({"backbones": "resnet10"}, "two backbones"),
    ({"spatial_dims": 3}, "2D images only, got spatial_dims=3"),
    ({"in_channels": 2}, "in_channels must be 1 .* or 3 .*, got 2"),
    ({"num_classes": 0}, "num_classes must be a positive integer, got 0"),
    ({"hidden_size": 30, "num_heads": 4}, "got hidden_size=30, num_heads=4"),
    ({"hidden_size": 30, "num_heads": 5, "pos_embed": "sincos"}, r"hidden_size divisible by 4, got hidden_size=30"),
    ({"taps": (8, 64)}, r"taps must be distinct strides .*got \(8, 64\)"),
    ({"taps": ()}, r"got \(\)"),
    ({"taps": (8, 8)}, r"got \(8, 8\)"),
    ({"taps": 8}, "got 8"),
    ({"fusion": "avg"}, "fusion must be one of .*'avg'"),
    ({"scale_fusion": "max"}, "scale_fusion must be one of .*'max'"),
    ({"pos_embed": "rope"}, "'rope'"),
    ({"dropout_prob": 1.0}, r"dropout_prob must be in \[0, 1\), got 1.0"),
    ({"attn_dropout": -0.1}, "got -0.1"),
    ({"mc_samples": 0}, "mc_samples must be a positive integer, got 0"),
    ({"pretrained_weights": {"vgg": "w.pth"}}, "key 'vgg' matches no branch"),
    ({"backbones": ("resnet10", "resnet18"), "pretrained_weights": {"resnet": "w.pth"}}, "'resnet' matches both"),
    ({"pretrained_weights": ["w.pth"]}, "must be a mapping"),
]


@pytest.mark.parametrize("kwargs, match", ILL_CASES)
def test_ill_arguments(kwargs, match):
    with pytest.raises(ValueError, match=match):
        tiny(**kwargs)


def test_submodule_names_feature_info_and_classifier():
    net = tiny(num_classes=3, taps=(8, 16, 32))
    names = dict(net.named_modules())
    for name in ("branch_a", "branch_b", "fusion", "fusion.scales.0.a_from_b.attn", "fusion.merge", "refine",
                 "refine.channel", "refine.spatial", "refine.spatial.gate", "pool", "dropout", "head"):
        assert name in names, name
    seen = {}
    hooks = [
        names[info["module"]].register_forward_hook(lambda m, i, o, key=info["module"]: seen.setdefault(key, o))
        for info in net.feature_info
    ]
    with eval_mode(net):
        net(torch.randn(1, 1, 64, 64))
    for hook in hooks:
        hook.remove()
    for info in net.feature_info:
        out = seen[info["module"]]
        assert out.shape[1:] == (info["num_chs"], 64 // info["reduction"], 64 // info["reduction"]), info
    modules = [i["module"] for i in net.feature_info]
    assert modules[:3] == ["branch_a._blocks.2", "branch_a._blocks.4", "branch_a._blocks.6"]
    assert modules[3:] == ["branch_b.layer2", "branch_b.layer3", "branch_b.layer4", "fusion", "refine"]

    assert net.get_classifier() is net.head
    net.reset_classifier(5)
    with eval_mode(net):
        assert net(torch.randn(2, 1, 64, 64)).shape == (2, 5)
    with pytest.raises(ValueError, match="got 0"):
        net.reset_classifier(0)
    assert DCATNet is DualCrossAttentionNet


def test_unused_stages_removed_and_all_parameters_trained():
    net = tiny(taps=(8, 16))
    assert isinstance(net.branch_b.layer4, torch.nn.Identity) and len(net.branch_a._blocks) == 5
    net.train()
    loss = net(torch.randn(2, 1, 64, 64)).logsumexp(-1).sum()
    loss.backward()
    assert net.branch_a._conv_stem.weight.grad.abs().sum() > 0
    assert net.branch_b.conv1.weight.grad.abs().sum() > 0
    no_grad = [n for n, p in net.named_parameters() if p.grad is None]
    assert not no_grad, f"parameters without gradient (would break DDP): {no_grad[:5]}"


def test_torchscript_round_trip(tmp_path):
    net = tiny(num_classes=3, taps=(8, 16, 32), fusion="concat").eval()
    x = torch.randn(2, 1, 64, 64)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)  # torch 2.13 deprecates torch.jit.script
        scripted = torch.jit.script(net)
        path = tmp_path / "dcat.ts"
        torch.jit.save(scripted, str(path))
        loaded = torch.jit.load(str(path))
    with torch.no_grad():
        expected = net(x)
        torch.testing.assert_close(loaded(x), expected)
        torch.testing.assert_close(loaded.forward_head(loaded.forward_features(x)), expected)


def test_attention_maps():
    net = tiny(taps=(8, 16)).eval()
    x = torch.randn(2, 1, 64, 64)
    with pytest.raises(RuntimeError, match="capture_attention"):
        net.get_attention_maps()
    with torch.no_grad():
        plain = net(x)
        with net.capture_attention():
            captured = net(x)
    torch.testing.assert_close(captured, plain, rtol=1e-4, atol=1e-5)
    maps = net.get_attention_maps()
    assert maps["stride8/a_from_b"].shape == (2, 4, 64, 64)
    assert maps["stride8/b_from_a"].shape == (2, 4, 64, 64)
    assert maps["stride16/a_from_b"].shape == (2, 4, 16, 16)
    assert maps["cbam_spatial"].shape == (2, 1, 8, 8)
    torch.testing.assert_close(maps["stride16/b_from_a"].sum(-1), torch.ones(2, 4, 16))
    spatial = net.get_attention_maps(spatial=True)
    assert spatial["stride8/a_from_b"].shape == (2, 4, 8, 8, 8, 8)
    # fast path back after capture, maps still there until cleared
    attn = net.fusion.scales[0].a_from_b.attn
    assert attn.use_flash_attention and not attn.save_attn and not net.refine.spatial.save_map
    net.clear_attention_maps()
    with pytest.raises(RuntimeError):
        net.get_attention_maps()


def test_gradcam_on_refine():
    net = tiny(num_classes=3)
    cam = GradCAM(nn_module=net, target_layers="refine")
    x = torch.randn(2, 1, 64, 64)
    maps = cam(x=x)
    assert maps.shape == (2, 1, 64, 64)
    single = cam(x=x[1:2])  # per-image CAM equals the batch CAM (BatchNorm in eval)
    torch.testing.assert_close(single, maps[1:2], rtol=1e-4, atol=1e-5)


def _bn_state(net):
    return {k: v.clone() for k, v in net.state_dict().items() if "running" in k or "num_batches" in k}


@pytest.mark.parametrize("attn_dropout", [0.0, 0.2])
def test_mc_dropout(attn_dropout):
    torch.manual_seed(0)
    net = tiny(num_classes=3, dropout_prob=0.5, attn_dropout=attn_dropout)
    net.train()
    stats = _bn_state(net)
    x = torch.randn(1, 1, 64, 64)  # batch size 1
    res = net.predict_with_uncertainty(x, samples=4, return_samples=True)
    assert res.probs.shape == (1, 3) and res.entropy.shape == (1,) and res.mutual_info.shape == (1,)
    assert res.sample_probs.shape == (4, 1, 3)
    assert not torch.allclose(res.sample_probs[0], res.sample_probs[1])
    assert float(res.mutual_info) >= 0
    torch.testing.assert_close(res.probs.sum(-1), torch.ones(1))
    for key, value in _bn_state(net).items():
        torch.testing.assert_close(value, stats[key], msg=key)
    assert net.training and all(m.training for m in net.modules())  # modes restored
    default = net.predict_with_uncertainty(x)
    assert default.sample_probs is None


def test_mc_dropout_without_dropout_equals_eval():
    net = tiny(num_classes=3, dropout_prob=0.0).eval()
    x = torch.randn(2, 1, 64, 64)
    with pytest.warns(UserWarning, match="identical"):
        res = net.predict_with_uncertainty(x, samples=3)
    with torch.no_grad():
        torch.testing.assert_close(res.probs, torch.softmax(net(x), -1))
    torch.testing.assert_close(res.mutual_info, torch.zeros(2))


def test_mc_dropout_multi_label():
    net = tiny(num_classes=4, multi_label=True, mc_samples=3).eval()
    res = net.predict_with_uncertainty(torch.randn(2, 1, 64, 64), return_samples=True)
    assert res.entropy.shape == (2, 4) and res.sample_probs.shape == (3, 2, 4)
    assert not torch.allclose(res.probs.sum(-1), torch.ones(2))  # sigmoid, not softmax


def test_bf16_autocast():
    net = tiny(num_classes=3).eval()
    x = torch.randn(2, 1, 64, 64)
    with torch.no_grad():
        reference = net(x)
        with torch.autocast("cpu", dtype=torch.bfloat16):
            out = net(x)
    assert out.dtype == torch.bfloat16 and torch.isfinite(out).all()
    torch.testing.assert_close(out.float(), reference, rtol=0.1, atol=0.05)


def test_channels_last():
    net = tiny(num_classes=3, taps=(8, 16, 32)).eval()
    x = torch.randn(2, 1, 64, 64)
    with torch.no_grad():
        reference = net(x)
        net = net.to(memory_format=torch.channels_last)
        out = net(x.contiguous(memory_format=torch.channels_last))
    torch.testing.assert_close(out, reference, rtol=1e-4, atol=1e-5)


def test_default_configuration_builds_and_runs():
    net = DualCrossAttentionNet(spatial_dims=2, in_channels=1, num_classes=2).eval()
    assert net.backbones == ("efficientnet-b4", "resnet34") and net.taps == (8, 16)
    assert isinstance(net.branch_a, EfficientNetBNFeatures)
    with torch.no_grad():
        assert net(torch.randn(1, 1, 224, 224)).shape == (1, 2)
        assert net.forward_features(torch.randn(1, 1, 224, 224)).shape == (1, 256, 28, 28)


def test_imagenet_weights_from_files(tmp_path):
    torch.manual_seed(0)
    effnet = EfficientNetBNFeatures("efficientnet-b0", pretrained=False, in_channels=3)
    luke = convert_from_monai_layout(effnet.state_dict(), "efficientnet", "lukemelas")
    resnet = random_state(torchvision_resnet_reference((2, 2, 2, 2)))
    effnet_file, resnet_file = tmp_path / "efficientnet-b0-355c32eb.pth", tmp_path / "resnet18-f37072fd.pth"
    torch.save(luke, effnet_file)
    torch.save(resnet, resnet_file)
    net = tiny(
        backbones=("efficientnet-b0", "resnet18"),
        in_channels=1,
        pretrained_weights={"efficientnet": effnet_file, "resnet18": str(resnet_file)},  # by family, by name
    )
    torch.testing.assert_close(net.branch_a._conv_stem.weight, luke["_conv_stem.weight"].sum(1, keepdim=True))
    torch.testing.assert_close(net.branch_b.conv1.weight, resnet["conv1.weight"].sum(1, keepdim=True))
    torch.testing.assert_close(net.branch_b.layer3[1].bn2.running_mean, resnet["layer3.1.bn2.running_mean"])
    # a truncated checkpoint is an error naming keys, a missing file names the path
    del resnet["layer2.1.conv1.weight"]
    with pytest.raises(PretrainedWeightsError, match=r"resnet18.*missing key.*layer2\.1\.conv1\.weight"):
        tiny(backbones=("efficientnet-b0", "resnet18"), pretrained_weights={"branch_b": resnet})
    with pytest.raises(Exception, match="not found: .*missing.pth"):
        tiny(pretrained_weights={"efficientnet": tmp_path / "missing.pth"})


def test_pretrained_offline_fails_fast(tmp_path, monkeypatch):
    monkeypatch.setattr(torch.hub, "get_dir", lambda: str(tmp_path))

    def offline(*args, **kwargs):
        raise socket.gaierror(-2, "Name or service not known")

    monkeypatch.setattr(bb.socket, "create_connection", offline)
    start = time.monotonic()
    with pytest.raises(PretrainedWeightsError, match="efficientnet-b0.*Name or service not known.*pretrained_weights"):
        tiny(pretrained=True)
    assert time.monotonic() - start < 5.0


def test_bundle_verify_and_ckpt_export(tmp_path):
    """The model-zoo path: ``verify_net_in_out`` and ``ckpt_export`` (TorchScript by default) on a bundle config."""
    config = {
        "network_def": {
            "_target_": "medfuse.networks.nets.DualCrossAttentionNet",
            "in_channels": 1,
            "num_classes": 3,
            "backbones": ["efficientnet-b0", "resnet10"],
            "hidden_size": 32,
            "num_heads": 4,
        }
    }
    meta = {
        "network_data_format": {
            "inputs": {"image": {"num_channels": 1, "spatial_shape": [64, 64], "dtype": "float32"}},
            "outputs": {"pred": {"num_channels": 3, "dtype": "float32"}},
        }
    }
    config_file, meta_file = tmp_path / "inference.json", tmp_path / "metadata.json"
    config_file.write_text(json.dumps(config))
    meta_file.write_text(json.dumps(meta))
    verify_net_in_out(net_id="network_def", meta_file=str(meta_file), config_file=str(config_file))

    net = DualCrossAttentionNet(**{k: v for k, v in config["network_def"].items() if k != "_target_"}).eval()
    torch.save(net.state_dict(), tmp_path / "model.pt")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        ckpt_export(
            net_id="network_def",
            filepath=str(tmp_path / "model.ts"),
            ckpt_file=str(tmp_path / "model.pt"),
            meta_file=str(meta_file),
            config_file=str(config_file),
        )
        exported = torch.jit.load(str(tmp_path / "model.ts"))
    x = torch.randn(2, 1, 64, 64)
    with torch.no_grad():
        torch.testing.assert_close(exported(x), net(x))


class _CountSDPA(torch.overrides.TorchFunctionMode):
    def __init__(self):
        super().__init__()
        self.calls = 0

    def __torch_function__(self, func, types, args=(), kwargs=None):
        if func is torch.nn.functional.scaled_dot_product_attention:
            self.calls += 1
        return func(*args, **(kwargs or {}))


def test_fused_attention_is_taken_and_equals_the_explicit_path():
    """PyTorch's fused scaled_dot_product_attention runs in every cross-attention layer (2 directions x 2 taps)
    of a training and an eval forward; capturing maps switches to the explicit softmax, with the same output."""
    net = tiny(taps=(8, 16))
    x = torch.randn(2, 1, 64, 64)
    with _CountSDPA() as mode:
        net.train()(x).sum().backward()
    assert mode.calls == 4
    net.eval()
    with torch.no_grad(), _CountSDPA() as mode:
        fused = net(x)
        assert mode.calls == 4
        with net.capture_attention():
            explicit = net(x)
        assert mode.calls == 4  # the explicit path adds none
    torch.testing.assert_close(explicit, fused, rtol=1e-4, atol=1e-5)
    # attention dropout disables the fused kernel (MONAI would apply its dropout in eval mode too)
    with torch.no_grad(), _CountSDPA() as mode:
        tiny(taps=(8, 16), attn_dropout=0.1).eval()(x)
    assert mode.calls == 0


@pytest.mark.parametrize("device", ["cpu", pytest.param("cuda", marks=pytest.mark.skipif(
    not torch.cuda.is_available(), reason="CUDA streams need a GPU"))])
def test_concurrent_branches_same_outputs_and_gradients(device):
    """Two CUDA streams for the branches change nothing but timing (on a CPU the option is a no-op)."""
    torch.manual_seed(0)
    net = tiny().to(device)
    x = torch.randn(2, 1, 64, 64, device=device)
    outs, grads = [], []
    for concurrent in (False, True):
        net.concurrent_branches = concurrent
        net.zero_grad()
        torch.manual_seed(1)  # the same dropout / drop-connect draws in both runs
        out = net.train()(x)
        out.sum().backward()
        outs.append(out.detach())
        grads.append(torch.cat([p.grad.flatten() for p in net.parameters() if p.grad is not None]))
    torch.testing.assert_close(outs[1], outs[0], rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(grads[1], grads[0], rtol=1e-4, atol=1e-5)
    assert sorted(net.state_dict()) == sorted(tiny().state_dict())  # no new parameters or buffers
