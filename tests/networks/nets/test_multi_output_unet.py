# Copyright (c) medfuse contributors
# Licensed under the Apache License, Version 2.0
"""MultiOutputUNet and MultiOutputLoss: shapes, output modes, TorchScript, gradients, masked losses."""

from __future__ import annotations

import warnings

import pytest
import torch
from monai.losses import DiceCELoss
from monai.networks import eval_mode

from medfuse.networks import MultiOutputLoss, MultiOutputUNet
from medfuse.networks.losses import MISSING_LABEL

TINY = {"features": (4, 4, 8, 8, 16, 4)}


def tiny(**kwargs) -> MultiOutputUNet:
    return MultiOutputUNet(**{**TINY, **kwargs})


SHAPE_CASES = [
    # constructor arguments, input shape
    ({"in_channels": 1, "out_channels": 2, "num_classes": 2}, (2, 1, 32, 32)),
    ({"in_channels": 3, "out_channels": 3, "num_classes": 4, "cls_from": "bottleneck+decoder"}, (2, 3, 32, 48)),
    ({"spatial_dims": 3, "in_channels": 1, "out_channels": 2, "num_classes": 1}, (1, 1, 32, 32, 32)),
    # FlexibleUNet ignores ``features``; its decoder widths are ``decoder_channels``
    ({"backbone": "flexibleunet", "encoder": "efficientnet-b0", "decoder_channels": (16, 8, 8, 8, 4), "num_classes": 3},
     (2, 1, 64, 64)),
]


@pytest.mark.parametrize("kwargs, shape", SHAPE_CASES)
def test_shapes_and_modes(kwargs, shape):
    net = tiny(**kwargs)
    x = torch.rand(*shape)
    with eval_mode(net):
        seg, cls = net(x)
        assert seg.shape == (shape[0], net.out_channels, *shape[2:])
        assert cls.shape == (shape[0], net.num_classes)
        # the single-output modes give the same numbers as the tuple
        torch.testing.assert_close(net.set_output("seg")(x), seg)
        torch.testing.assert_close(net.set_output("cls")(x), cls)
        torch.testing.assert_close(net.forward_seg(x), seg)
        torch.testing.assert_close(net.forward_cls(x), cls)
    assert net.get_classifier().out_features == net.num_classes
    assert net.cam_layer in dict(net.named_modules())


def test_stable_names_and_head_on_the_bottleneck():
    net = tiny()
    names = dict(net.named_modules())
    for n in ("unet.conv_0", "unet.down_4", "unet.upcat_1", "unet.final_conv", "cls_head.fc", "cls_head.dropout"):
        assert n in names, n
    assert net.cam_layer == net.cam_target_layer == "unet.down_4" and net.reduction == 16
    assert net.get_classifier().in_features == TINY["features"][4]
    assert tiny(cls_from="bottleneck+decoder").get_classifier().in_features == TINY["features"][4] + TINY["features"][5]


def test_cls_mode_skips_the_decoder():
    net = tiny(output="cls").eval()
    calls = []
    net.unet.upcat_1.register_forward_hook(lambda *a: calls.append(1))
    net(torch.rand(1, 1, 32, 32))
    assert calls == []
    net.set_output("both")(torch.rand(1, 1, 32, 32))
    assert calls == [1]


@pytest.mark.parametrize("kwargs", [{}, {"cls_from": "bottleneck+decoder"}])
def test_torchscript_round_trip(kwargs, tmp_path):
    x = torch.rand(2, 1, 32, 32)
    for output in ("both", "seg", "cls"):
        net = tiny(output=output, **kwargs).eval()
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", DeprecationWarning)
            scripted = torch.jit.script(net)
            path = tmp_path / f"{output}.ts"
            torch.jit.save(scripted, str(path))
            loaded = torch.jit.load(str(path))
        with torch.no_grad():
            expected, got = net(x), loaded(x)
        if output == "both":
            assert isinstance(got, tuple) and len(got) == 2
            for e, g in zip(expected, got):
                torch.testing.assert_close(g, e)
        else:
            torch.testing.assert_close(got, expected)


def test_gradients_reach_the_right_parts():
    net = tiny().train()
    seg, cls = net(torch.rand(2, 1, 32, 32))
    cls.sum().backward()
    # the classification loss trains the encoder and the head, never the decoder
    assert net.unet.down_4.convs.conv_0.conv.weight.grad.abs().sum() > 0
    assert net.cls_head["fc"].weight.grad.abs().sum() > 0
    assert net.unet.final_conv.weight.grad is None and net.unet.upcat_1.convs.conv_0.conv.weight.grad is None
    net.zero_grad(set_to_none=True)
    seg, cls = net(torch.rand(2, 1, 32, 32))
    seg.sum().backward()
    assert net.cls_head["fc"].weight.grad is None and net.unet.final_conv.weight.grad.abs().sum() > 0


@pytest.mark.parametrize(
    "kwargs, match",
    [
        ({"backbone": "unetr"}, "backbone must be one of"),
        ({"output": "logits"}, "output must be one of"),
        ({"cls_from": "decoder"}, "cls_from must be one of"),
        ({"out_channels": 1}, "background too"),
        ({"num_classes": 0}, "num_classes must be a positive int"),
        ({"features": (4, 4, 8)}, "six positive ints"),
        ({"cls_dropout": 1.0}, "cls_dropout"),
        ({"spatial_dims": 1}, "spatial_dims"),
    ],
)
def test_ill_arguments(kwargs, match):
    with pytest.raises(ValueError, match=match):
        tiny(**kwargs)
    if "output" in kwargs:
        with pytest.raises(ValueError, match="output must be one of"):
            tiny().set_output(kwargs["output"])


# ------------------------------------------------------------------------------------------------------------
# MultiOutputLoss


def _batch(b=4, size=16, classes=2, seed=0):
    g = torch.Generator().manual_seed(seed)
    seg = torch.randn(b, 2, size, size, generator=g, requires_grad=True)
    cls = torch.randn(b, classes, generator=g, requires_grad=True)
    mask = (torch.rand(b, 1, size, size, generator=g) > 0.5).long()
    label = torch.randint(0, classes, (b,), generator=g)
    return seg, cls, mask, label


def test_full_targets_equal_the_monai_and_torch_losses():
    seg, cls, mask, label = _batch()
    loss = MultiOutputLoss(seg_weight=1.0, cls_weight=0.5)
    value = loss((seg, cls), {"mask": mask, "label": label})
    expected = DiceCELoss(to_onehot_y=True, softmax=True, include_background=False)(seg, mask.float())
    expected = expected + 0.5 * torch.nn.functional.cross_entropy(cls, label)
    torch.testing.assert_close(value, expected)
    assert loss.last["n_seg"] == 4 and loss.last["n_cls"] == 4
    # a dict prediction is the same
    torch.testing.assert_close(loss({"seg": seg, "cls": cls}, {"mask": mask, "label": label}), value)


def test_items_without_mask_or_label_do_not_count():
    seg, cls, mask, label = _batch()
    has_mask = torch.tensor([1, 0, 1, 0])
    label = label.clone()
    label[[0, 3]] = MISSING_LABEL
    loss = MultiOutputLoss(cls_weight=1.0)
    value = loss((seg, cls), {"mask": mask, "has_mask": has_mask, "label": label})
    seg_part = DiceCELoss(to_onehot_y=True, softmax=True, include_background=False)(seg[[0, 2]], mask[[0, 2]].float())
    cls_part = torch.nn.functional.cross_entropy(cls[[1, 2]], label[[1, 2]])
    torch.testing.assert_close(value, seg_part + cls_part)
    assert loss.last["n_seg"] == 2 and loss.last["n_cls"] == 2
    value.backward()
    # the outputs of the unannotated items get no gradient from the missing target
    assert seg.grad[[1, 3]].abs().sum() == 0 and seg.grad[[0, 2]].abs().sum() > 0
    assert cls.grad[[0, 3]].abs().sum() == 0 and cls.grad[[1, 2]].abs().sum() > 0


def test_batch_without_any_target_of_a_kind():
    seg, cls, mask, label = _batch()
    loss = MultiOutputLoss()
    value = loss((seg, cls), {"mask": mask, "has_mask": torch.zeros(4), "label": torch.full((4,), MISSING_LABEL)})
    assert value.item() == 0.0 and value.requires_grad
    value.backward()
    assert seg.grad.abs().sum() == 0 and cls.grad.abs().sum() == 0
    assert loss.last["n_seg"] == 0 and loss.last["n_cls"] == 0
    # only labels: the mask may be left out
    value = loss((seg, cls), {"has_mask": torch.zeros(4), "label": label})
    torch.testing.assert_close(value, torch.nn.functional.cross_entropy(cls, label))


def test_segmentation_only_setting_and_class_weights():
    seg, cls, mask, label = _batch()
    seg_only = MultiOutputLoss(cls_weight=0.0)
    value = seg_only((seg, cls), {"mask": mask})  # no label needed
    torch.testing.assert_close(value, DiceCELoss(to_onehot_y=True, softmax=True, include_background=False)(seg, mask.float()))
    w = torch.tensor([0.25, 3.0])
    weighted = MultiOutputLoss(seg_weight=0.0, class_weights=w)
    torch.testing.assert_close(weighted((seg, cls), {"label": label}),
                               torch.nn.functional.cross_entropy(cls, label, weight=w))


def test_one_hot_masks():
    seg, cls, mask, label = _batch()
    onehot = torch.cat([1 - mask, mask], dim=1)
    loss = MultiOutputLoss()
    torch.testing.assert_close(loss((seg, cls), {"mask": onehot, "label": label}),
                               loss((seg, cls), {"mask": mask, "label": label}))


@pytest.mark.parametrize(
    "target, match",
    [
        ({"mask": torch.full((4, 1, 16, 16), 2), "label": torch.zeros(4, dtype=torch.long)}, "outside 0..1"),
        ({"mask": torch.full((4, 1, 16, 16), 0.5), "label": torch.zeros(4, dtype=torch.long)}, "integer class indices"),
        ({"mask": torch.zeros(4, 1, 8, 8), "label": torch.zeros(4, dtype=torch.long)}, "does not fit"),
        ({"mask": torch.zeros(4, 1, 16, 16), "label": torch.tensor([0, 1, 2, 0])}, "labels must be in"),
        ({"mask": torch.zeros(4, 1, 16, 16)}, "no 'label'"),
        ({"label": torch.zeros(4, dtype=torch.long)}, "no 'mask'"),
    ],
)
def test_bad_targets(target, match):
    seg, cls, _, _ = _batch()
    with pytest.raises(ValueError, match=match):
        MultiOutputLoss()((seg, cls), target)


def test_bad_loss_arguments():
    with pytest.raises(ValueError, match="both 0"):
        MultiOutputLoss(seg_weight=0, cls_weight=0)
    with pytest.raises(ValueError, match="cls_weight must be >= 0"):
        MultiOutputLoss(cls_weight=-1)
    with pytest.raises(ValueError, match="expects the network output"):
        MultiOutputLoss()(torch.zeros(2, 2), {"label": torch.zeros(2)})


def test_trains_on_mixed_annotations():
    """A few steps on a toy task where half the items lack a mask and half lack a label: both heads learn."""
    torch.manual_seed(0)
    net = tiny()
    opt = torch.optim.Adam(net.parameters(), lr=1e-2)
    loss_fn = MultiOutputLoss()
    x = torch.rand(8, 1, 32, 32) * 0.2
    mask = torch.zeros(8, 1, 32, 32, dtype=torch.long)
    mask[:, :, 8:24, 6:14] = 1
    x = x + 0.6 * mask
    label = torch.tensor([0, 1] * 4)
    x[label == 1, :, 2:6, 2:6] += 0.8  # the class is visible
    has_mask = torch.tensor([1, 1, 1, 1, 0, 0, 0, 0])
    partial = label.clone()
    partial[[0, 1, 4, 5]] = MISSING_LABEL  # items 0,1: mask only; 4,5: label only; 2,3: both; 6,7: label only
    first = None
    for _ in range(40):
        opt.zero_grad()
        value = loss_fn(net(x), {"mask": mask, "has_mask": has_mask, "label": partial})
        value.backward()
        opt.step()
        first = value.item() if first is None else first
    assert value.item() < 0.5 * first
    with eval_mode(net):
        seg, cls = net(x)
    dice = (2 * ((seg.argmax(1) == 1) & (mask[:, 0] == 1)).sum() / ((seg.argmax(1) == 1).sum() + mask.sum())).item()
    assert dice > 0.8
    assert (cls.argmax(1) == label).float().mean().item() == 1.0
