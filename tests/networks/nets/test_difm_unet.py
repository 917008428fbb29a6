# Copyright (c) medfuse contributors
# Licensed under the Apache License, Version 2.0
"""DIFMUNet: shapes (sizes not divisible by 16 too), gradients, shared encoder, bad arguments, TorchScript."""

from __future__ import annotations

import warnings

import pytest
import torch
from monai.networks import eval_mode

from medfuse.networks.nets import DIFMUnet, DIFMUNet

TINY = {"features": (4, 4, 8, 8, 16, 4), "num_heads": 2, "kv_size": 4}


def tiny(**kwargs) -> DIFMUNet:
    return DIFMUNet(**{**TINY, **kwargs})


CASES = [
    # constructor arguments, input shape, output shape
    ({"in_channels": 1, "out_channels": 2}, (2, 2, 32, 32), (2, 2, 32, 32)),
    ({"in_channels": 1, "out_channels": 4}, (1, 2, 48, 80), (1, 4, 48, 80)),
    ({"in_channels": 3, "out_channels": 3, "share_encoder": True, "difm_levels": (2, 4)}, (2, 6, 37, 45), (2, 3, 37, 45)),
    ({"in_channels": 1, "out_channels": 2, "difm_levels": (), "upsample": "nontrainable"}, (1, 2, 24, 40), (1, 2, 24, 40)),
]


@pytest.mark.parametrize("kwargs, in_shape, out_shape", CASES)
def test_shapes(kwargs, in_shape, out_shape):
    net = tiny(**kwargs)
    with eval_mode(net):
        assert net(torch.rand(*in_shape)).shape == out_shape
    assert sorted(net.fusion.keys()) == [str(lv) for lv in kwargs.get("difm_levels", (0, 1, 2, 3, 4))]
    assert isinstance(net.get_submodule(net.cam_layer), torch.nn.Module)


def test_gradients_reach_both_encoders_and_fusions():
    torch.manual_seed(0)
    net = tiny(out_channels=3)
    net(torch.rand(2, 2, 32, 48)).pow(2).mean().backward()
    for name in ("encoder_orig", "encoder_enh", "fusion.0", "fusion.4"):
        grads = [p.grad for p in net.get_submodule(name).parameters()]
        assert all(g is not None for g in grads) and any(float(g.abs().sum()) > 0 for g in grads), name


def test_inputs_are_split_original_first():
    torch.manual_seed(0)
    net = tiny().eval()
    orig, enh = torch.rand(1, 1, 32, 32), torch.rand(1, 1, 32, 32)
    feats_o, feats_e = net.encoder_orig(orig), net.encoder_enh(enh)
    fused = net.fuse(torch.cat([orig, enh], dim=1))
    torch.testing.assert_close(fused[2], net.fusion["2"](feats_o[2], feats_e[2]))


def test_share_encoder_halves_encoder_parameters():
    separate, shared = tiny(), tiny(share_encoder=True)
    assert shared.encoder_orig is shared.encoder_enh

    def count(module):
        return sum(p.numel() for p in module.parameters())

    encoder = count(separate.encoder_orig)
    assert count(separate) - count(shared) == encoder
    assert count(separate.encoder_orig) + count(separate.encoder_enh) == 2 * count(shared.encoder_orig)
    # the state dict still names both, so a checkpoint loads into either kind of model of the same setting
    assert "encoder_enh.conv_0.conv_0.conv.weight" in shared.state_dict()


@pytest.mark.parametrize(
    "kwargs, match",
    [
        ({"spatial_dims": 3}, "spatial_dims=3"),
        ({"out_channels": 1}, ">= 2, got 1"),
        ({"in_channels": 0}, "in_channels must be a positive int, got 0"),
        ({"features": (4, 4, 8, 8, 16)}, r"six positive ints .*\(4, 4, 8, 8, 16\)"),
        ({"difm_levels": (0, 5)}, r"\(0, 5\)"),
        ({"difm_levels": (1, 1)}, r"\(1, 1\)"),
        ({"num_heads": 3}, "num_heads=3 and features\\[0\\]=4"),
        ({"kv_size": 0}, "kv_size must be >= 1, got 0"),
        ({"upsample": "bilinear"}, "'bilinear'"),
    ],
)
def test_bad_arguments(kwargs, match):
    with pytest.raises(ValueError, match=match):
        tiny(**kwargs)


def test_wrong_input_channels():
    net = tiny(in_channels=1)
    with pytest.raises(ValueError, match=r"expects \(B, 2, H, W\).*got \[1, 3, 32, 32\].*torch.cat"):
        net(torch.rand(1, 3, 32, 32))


def test_script_round_trip(tmp_path):
    net = tiny(out_channels=3, share_encoder=True, difm_levels=(0, 3)).eval()
    x = torch.rand(1, 2, 48, 80)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)  # torch 2.13 deprecates torch.jit.script
        scripted = torch.jit.script(net)
        torch.jit.save(scripted, str(tmp_path / "difm_unet.ts"))
        loaded = torch.jit.load(str(tmp_path / "difm_unet.ts"))
    torch.testing.assert_close(loaded(x), net(x))
    with pytest.raises(Exception, match="original first"):
        loaded(torch.rand(1, 1, 32, 32))


def test_alias():
    assert DIFMUnet is DIFMUNet


def test_slice_inference_on_an_enhanced_volume():
    # the DIFM data path: a (1, H, W, D) volume, its CLAHE copy per slice, both stacked, 2D network slice by slice
    from monai.inferers import SliceInferer
    from monai.transforms import ConcatItemsd

    from medfuse.transforms import ContrastEnhanced

    volume = torch.rand(1, 32, 40, 3)
    d = ContrastEnhanced("image", output_keys="image_enhanced", tiles=4)({"image": volume})
    d = ConcatItemsd(["image", "image_enhanced"], name="image")(d)
    net = tiny(out_channels=4)
    inferer = SliceInferer(roi_size=(32, 40), spatial_dim=2, sw_batch_size=3, progress=False)
    with eval_mode(net):
        out = inferer(d["image"][None], net)
        torch.testing.assert_close(out[..., 1], net(d["image"][None, ..., 1]))
    assert out.shape == (1, 4, 32, 40, 3)
