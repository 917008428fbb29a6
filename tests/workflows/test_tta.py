# Copyright (c) medfuse contributors
# Licensed under the Apache License, Version 2.0
"""Test-time augmentation in the MC-dropout inferer: off changes nothing, on is per-item seeded, never flips."""

from __future__ import annotations

import math

import pytest
import torch
from monai.transforms import RandAffine

from medfuse.networks.nets import EnsembleNet
from medfuse.transforms import cxr_tta_transforms
from medfuse.workflows import MCDropoutInferer, mc_dropout_outputs
from medfuse.workflows.inferers import tta_views


class TinyCNN(torch.nn.Module):
    def __init__(self, dropout=0.5, classes=3):
        super().__init__()
        torch.manual_seed(0)
        self.conv = torch.nn.Conv2d(1, 4, 3, padding=1)
        self.drop = torch.nn.Dropout(dropout)
        self.fc = torch.nn.Linear(4 * 4 * 4, classes)

    def forward(self, x):
        h = torch.nn.functional.adaptive_avg_pool2d(torch.relu(self.conv(x)), 4).flatten(1)
        return self.fc(self.drop(h))


def _batch(n=5, size=32, seed=1):
    g = torch.Generator().manual_seed(seed)
    return torch.rand(n, 1, size, size, generator=g)


def test_tta_off_is_the_inferer_of_today():
    net, x = TinyCNN().eval(), _batch()
    torch.testing.assert_close(MCDropoutInferer(0, seed=3, tta=0)(x, net), net(x))
    with_tta_key = MCDropoutInferer(4, seed=3, tta=0)(x, net)
    today = mc_dropout_outputs(net, x, 4, seed=3)
    assert with_tta_key.keys() == today.keys()
    for k in today:
        torch.testing.assert_close(with_tta_key[k], today[k])
    with pytest.raises(ValueError, match="tta must be"):
        MCDropoutInferer(0, tta=-1)


def test_tta_transform_list_never_flips_or_rotates():
    xform = cxr_tta_transforms((32, 32))
    names = [type(t).__name__ for t in xform.transforms]
    assert names == ["RandAffine", "RandAdjustContrast", "RandScaleIntensityFixedMean"]
    assert not any("Flip" in n or "Rotate" in n for n in names)
    affine = next(t for t in xform.transforms if isinstance(t, RandAffine)).rand_affine_grid
    assert not any(affine.rotate_range) and not any(affine.shear_range)  # only shift and zoom
    with pytest.raises(ValueError, match="translate_fraction"):
        cxr_tta_transforms((32, 32), translate_fraction=0.6)
    with pytest.raises(ValueError, match="spatial_size"):
        cxr_tta_transforms((32,))


def test_tta_views_keep_the_sides_and_are_seeded_per_item():
    x = torch.zeros(3, 1, 32, 32)
    x[:, :, 8:24, 2:12] = 1.0  # bright block on the image's left: a flip would move it right
    x[1] *= 0.7
    x[2, :, 0, 0] = 0.5
    views = tta_views(x, 4, seed=5)
    assert len(views) == 5 and views[0] is x
    for v in views[1:]:
        assert v.shape == x.shape and v.dtype == x.dtype and type(v) is torch.Tensor
        assert torch.isfinite(v).all()
        left, right = v[..., :16].sum(dim=(1, 2, 3)), v[..., 16:].sum(dim=(1, 2, 3))
        assert (left > 5 * right).all()
        assert not torch.equal(v, x)
    assert not torch.equal(views[1], views[2])  # views differ from one another
    # the same item gets the same views in another batch, order and run
    again = tta_views(x[[2, 0]], 4, seed=5)
    for v, w in zip(views[1:], again[1:]):
        torch.testing.assert_close(w, v[[2, 0]])
    other_seed = tta_views(x, 4, seed=6)
    assert not torch.equal(other_seed[1], views[1])


def _check_probs(log_p, n, classes=3):
    p = log_p.exp()
    assert p.shape == (n, classes) and torch.isfinite(p).all()
    torch.testing.assert_close(p.sum(dim=1), torch.ones(n))


def test_tta_plain_network_averages_views():
    net, x = TinyCNN().eval(), _batch()
    out = MCDropoutInferer(0, seed=2, tta=3)(x, net)
    assert isinstance(out, torch.Tensor)
    _check_probs(out, 5)
    by_hand = torch.stack([torch.softmax(net(v), dim=1) for v in tta_views(x, 3, seed=2)]).mean(0)
    torch.testing.assert_close(out.exp(), by_hand)
    assert not torch.allclose(out.exp(), torch.softmax(net(x), dim=1))  # the views changed something
    # the Activationsd(softmax) of the post-processing gives the averaged probability back
    torch.testing.assert_close(torch.softmax(out, dim=1), by_hand)


def test_tta_with_mc_dropout_and_ensemble_is_deterministic_and_valid():
    net, x = TinyCNN(), _batch()
    a = MCDropoutInferer(3, seed=4, tta=2)(x, net)
    b = MCDropoutInferer(3, seed=4, tta=2)(x[[4, 3, 2, 1, 0]], net)
    for k in ("pred", "entropy", "mutual_info"):
        torch.testing.assert_close(b[k], a[k][[4, 3, 2, 1, 0]])
    _check_probs(a["pred"], 5)
    assert ((a["entropy"] >= 0) & (a["entropy"] <= math.log(3) + 1e-5)).all()
    assert (a["mutual_info"] >= 0).all()
    # mutual information is the mean over views of each view's: TTA is not counted as epistemic
    per_view = [mc_dropout_outputs(net, v, 3, seed=4)["mutual_info"] for v in tta_views(x, 2, seed=4)]
    torch.testing.assert_close(a["mutual_info"], torch.stack(per_view).mean(0))

    ens = EnsembleNet([TinyCNN(), TinyCNN(dropout=0.2)]).eval()  # the evaluator puts it in eval mode
    with torch.no_grad():
        ens.members[1].fc.weight.mul_(-1.0)
    e = MCDropoutInferer(0, seed=4, tta=2)(x, ens)
    _check_probs(e["pred"], 5)
    assert ((e["member_disagreement"] >= 0) & (e["member_disagreement"] <= 1)).all()
    assert (e["mutual_info_members"] >= 0).all()
    torch.testing.assert_close(MCDropoutInferer(0, seed=4, tta=2)(x, ens)["pred"], e["pred"])


@pytest.mark.parametrize("workflow, key, off", [("evaluate", "tta", 0), ("inference", "tta", 0),
                                               ("train", "shift_augment", False)])
def test_every_bundle_uses_or_refuses_the_optional_keys(workflow, key, off):
    from medfuse.workflows.bundle import compose_layers, workflow_files
    from tests.bundles.helpers import BUNDLES

    bundles = sorted(p.name for p in BUNDLES.iterdir() if (p / "configs" / "metadata.json").is_file())
    assert len(bundles) >= 6
    refusal = f"$medfuse.workflows.refuse_option(@{key}, '{key}', @bundle_name)"
    for bundle in bundles:
        config = compose_layers(workflow_files(bundle, workflow))
        assert config[key] is off or config[key] == off, bundle  # off by default, from the classification base
        if key == "tta":
            used = config["validate"]["inferer"] if workflow == "evaluate" else config["inferer"]
        else:
            used = config["train"]["preprocessing"]
        if isinstance(used, dict) and used.get(key) == f"@{key}":
            assert refusal not in config["initialize"], bundle
        else:
            assert refusal in config["initialize"], bundle


def test_refuse_option_names_the_bundle_and_the_fix():
    from medfuse.workflows import refuse_option

    for off in (0, "0", None, False, "false"):
        refuse_option(off, "tta", "b")
    refuse_option(False, "shift_augment", "b")
    with pytest.raises(ValueError, match="b has no test-time augmentation .*--tta 0"):
        refuse_option(2, "tta", "b")
    with pytest.raises(ValueError, match="b has no acquisition-shift augmentation .*--shift_augment false"):
        refuse_option("true", "shift_augment", "b")
