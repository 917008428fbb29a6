# Copyright (c) medfuse contributors
# Licensed under the Apache License, Version 2.0
"""GlobalSpatialAttention: shapes, definition, gradients, regularisation, image basis, arguments, TorchScript."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from monai.networks import eval_mode

from medfuse.networks import GlobalSpatialAttention
from medfuse.networks.blocks import GlobalSpatialAttention as BlockExport

BASIS = torch.randn(4, 6, 5, generator=torch.Generator().manual_seed(0))


def make(mode, map_size=(6, 5), **kwargs):
    if mode == "image_basis":
        return GlobalSpatialAttention(map_size=map_size, mode=mode, basis=BASIS, **kwargs)
    return GlobalSpatialAttention(map_size=map_size, mode=mode, **kwargs)


def randomise(gsa, seed=1):
    """Parameters away from their (uniform) initialisation, so that maps vary over positions."""
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in gsa.parameters():
            p.copy_(torch.randn(p.shape, generator=gen))


SHAPE_CASES = [
    (mode, shape)
    for mode in ("logit_map", "image_basis")
    for shape in ((2, 1, 16, 16), (1, 3, 33, 47), (2, 4, 64, 48))
]


def test_exports():
    assert BlockExport is GlobalSpatialAttention


@pytest.mark.parametrize("mode, shape", SHAPE_CASES)
def test_shapes_and_definition(mode, shape):
    gsa = make(mode)
    randomise(gsa)
    x = torch.randn(shape)
    with eval_mode(gsa):
        out = gsa(x)
        m = gsa.get_map(list(shape[2:]))
    assert out.shape == shape
    assert m.shape == (1, 1, *shape[2:])
    assert float(m.min()) >= 0.0 and float(m.max()) <= 1.0
    # the definition: logits upsampled bilinearly to (H, W), then the sigmoid, the same for every image
    expected_map = torch.sigmoid(F.interpolate(gsa.logits(), size=shape[2:], mode="bilinear", align_corners=False))
    torch.testing.assert_close(m, expected_map)
    torch.testing.assert_close(out, x * expected_map)


@pytest.mark.parametrize("mode", ["logit_map", "image_basis"])
def test_starts_near_identity(mode):
    gsa = make(mode)
    m = gsa.get_map().detach()
    assert m.shape == (1, 1, 6, 5)
    torch.testing.assert_close(m, torch.full_like(m, 1.0 / (1.0 + math.exp(-3.0))))
    assert float(m.min()) > 0.95
    low = make(mode, init_logit=-2.0).get_map().detach()
    torch.testing.assert_close(low, torch.full_like(low, 1.0 / (1.0 + math.exp(2.0))))


def test_image_basis_logits_are_the_per_pixel_linear_model():
    gsa = make("image_basis")
    randomise(gsa)
    expected = gsa.b + (gsa.w[:, None, None] * BASIS).sum(0)
    torch.testing.assert_close(gsa.logits(), expected.reshape(1, 1, 6, 5))
    assert set(gsa.state_dict()) == {"w", "b", "basis"}
    assert [n for n, _ in gsa.named_parameters()] == ["w", "b"]
    assert gsa.w.shape == (4,) and gsa.b.shape == (1,)
    torch.testing.assert_close(gsa.basis, BASIS)


def test_logit_map_state():
    gsa = make("logit_map")
    assert set(gsa.state_dict()) == {"z"}
    assert gsa.z.shape == (1, 1, 6, 5)
    assert gsa.logits() is gsa.z


@pytest.mark.parametrize("mode, names", [("logit_map", ("z",)), ("image_basis", ("w", "b"))])
def test_gradients_reach_parameters(mode, names):
    gsa = make(mode)
    x = torch.randn(2, 3, 9, 11)
    (gsa(x) * torch.randn(2, 3, 9, 11)).sum().backward()
    for name in names:
        grad = getattr(gsa, name).grad
        assert grad is not None and float(grad.abs().sum()) > 0, name
    if mode == "image_basis":
        assert not gsa.basis.requires_grad


def test_regularization_value():
    gsa = make("logit_map")
    randomise(gsa)
    m = torch.sigmoid(gsa.z)
    entropy = -(m * m.log() + (1 - m) * (1 - m).log())
    expected = (m.mean() - 0.3) ** 2 + 0.2 * entropy.mean()
    torch.testing.assert_close(gsa.regularization(target_fraction=0.3, entropy_weight=0.2), expected)
    # defaults 0.5 and 0.01; finite for saturated maps
    expected = (m.mean() - 0.5) ** 2 + 0.01 * entropy.mean()
    torch.testing.assert_close(gsa.regularization(), expected)
    saturated = make("logit_map", init_logit=200.0)
    value = saturated.regularization(target_fraction=1.0).detach()
    assert math.isfinite(float(value)) and float(value) < 1e-6


@pytest.mark.parametrize(
    "kwargs, match",
    [
        ({"spatial_dims": 3}, "2D inputs only, got spatial_dims=3"),
        ({"map_size": (0, 16)}, r"map_size .*got \(0, 16\)"),
        ({"map_size": 0}, "got 0"),
        ({"map_size": (16, 16, 16)}, r"got \(16, 16, 16\)"),
        ({"map_size": (16.0, 16)}, r"got \(16.0, 16\)"),
        ({"mode": "learned"}, "mode must be one of .*got 'learned'"),
        ({"mode": "image_basis"}, "needs a \\(K, h, w\\) basis.*got basis=None"),
        ({"mode": "image_basis", "basis": torch.zeros(16, 16)}, r"got shape \(16, 16\)"),
        ({"mode": "image_basis", "basis": torch.zeros(2, 8, 8)}, r"map_size \(16, 16\), got shape \(2, 8, 8\)"),
        ({"mode": "image_basis", "basis": torch.zeros(0, 16, 16)}, r"got shape \(0, 16, 16\)"),
        ({"mode": "image_basis", "basis": torch.full((2, 16, 16), float("nan"))}, "non-finite"),
        ({"basis": torch.zeros(2, 16, 16)}, "only used with mode='image_basis'"),
        ({"init_logit": float("inf")}, "init_logit must be a finite number, got inf"),
    ],
)
def test_ill_arguments(kwargs, match):
    with pytest.raises(ValueError, match=match):
        GlobalSpatialAttention(**kwargs)


@pytest.mark.parametrize("shape", [(3, 8, 8), (1, 2, 3, 8, 8), (8,)])
def test_input_must_be_4d(shape):
    with pytest.raises(ValueError, match=rf"\(B, C, H, W\) input, got shape \[{', '.join(map(str, shape))}\]"):
        make("logit_map")(torch.randn(shape))


@pytest.mark.parametrize("kwargs, match", [({"target_fraction": 1.5}, "got 1.5"), ({"entropy_weight": -1}, "got -1")])
def test_regularization_ill_arguments(kwargs, match):
    with pytest.raises(ValueError, match=match):
        make("logit_map").regularization(**kwargs)


def training_images(n=12, seed=0):
    gen = torch.Generator().manual_seed(seed)
    # a shared bright blob plus per-image noise and brightness: the images of one "domain"
    yy, xx = torch.meshgrid(torch.linspace(-1, 1, 40), torch.linspace(-1, 1, 36), indexing="ij")
    blob = torch.exp(-((xx - 0.2) ** 2 + yy**2) * 4)
    return blob + 0.3 * torch.rand(n, 1, 1, generator=gen) + 0.2 * torch.rand(n, 40, 36, generator=gen)


def test_basis_from_images_deterministic_and_signed():
    images = training_images()
    basis = GlobalSpatialAttention.basis_from_images(images, k=5, map_size=(8, 6))
    again = GlobalSpatialAttention.basis_from_images(images.clone(), k=5, map_size=(8, 6))
    assert basis.shape == (5, 8, 6) and basis.dtype == torch.float32
    assert torch.equal(basis, again)
    flat = basis.reshape(5, -1).double()
    # sign convention: the largest-|value| entry of every basis image is positive; unit RMS
    for row in flat:
        assert float(row[int(row.abs().argmax())]) > 0
    torch.testing.assert_close(flat.pow(2).mean(1), torch.ones(5, dtype=torch.float64))
    # negated images (every sign flipped) give the same basis: signs are fixed by the convention, not by SVD
    torch.testing.assert_close(GlobalSpatialAttention.basis_from_images(-images, k=5, map_size=(8, 6)), basis)
    # first image: the mean training image; the others: orthogonal principal images, orthogonal to nothing else
    small = F.interpolate(images[:, None], size=(8, 6), mode="bilinear", align_corners=False, antialias=True)
    mean = small.mean(0).reshape(-1).double()
    torch.testing.assert_close(flat[0], mean / mean.pow(2).mean().sqrt(), atol=1e-5, rtol=1e-5)
    gram = flat[1:] @ flat[1:].T / flat.shape[1]
    torch.testing.assert_close(gram, torch.eye(4, dtype=torch.float64), atol=1e-5, rtol=1e-5)
    # channels are averaged; arrays and sequences of images of different sizes are accepted
    torch.testing.assert_close(
        GlobalSpatialAttention.basis_from_images(images[:, None].repeat(1, 3, 1, 1).numpy(), 5, (8, 6)), basis
    )
    mixed = GlobalSpatialAttention.basis_from_images([images[0], np.asarray(images[1, :30]), images[2:3]], 2, 4)
    assert mixed.shape == (2, 4, 4)


def test_basis_zero_variance_directions_are_zero():
    images = training_images(n=3)
    basis = GlobalSpatialAttention.basis_from_images(images[:1].repeat(3, 1, 1), k=3, map_size=(4, 4))
    assert float(basis[0].abs().min()) > 0
    assert torch.equal(basis[1:], torch.zeros(2, 4, 4))


@pytest.mark.parametrize(
    "args, match",
    [
        ((torch.rand(5, 8, 8), 0), "k must be an integer >= 1, got 0"),
        ((torch.rand(5, 8, 8), 6), r"min\(5, 16\), got k=6"),
        ((torch.rand(5, 8, 8), 5, (2, 2)), r"min\(5, 4\), got k=5"),
        ((torch.rand(8, 8), 2), r"got shape \(8, 8\)"),
        (([], 2), "empty"),
        (([torch.rand(2, 2, 3, 4)], 1), r"image 0 must be .*got shape \(2, 2, 3, 4\)"),
        ((torch.full((3, 8, 8), float("nan")), 1), "non-finite"),
        (("images.npz", 1), "got str"),
        ((torch.rand(5, 8, 8), 2, (0, 4)), r"map_size .*got \(0, 4\)"),
    ],
)
def test_basis_from_images_ill_arguments(args, match):
    with pytest.raises(ValueError, match=match):
        GlobalSpatialAttention.basis_from_images(*args if len(args) == 3 else (*args, (4, 4)))


def test_image_basis_from_images_end_to_end():
    basis = GlobalSpatialAttention.basis_from_images(training_images(), k=3, map_size=(8, 8))
    gsa = GlobalSpatialAttention(map_size=8, mode="image_basis", basis=basis)
    assert gsa.map_size == (8, 8)
    assert gsa(torch.randn(2, 1, 40, 36)).shape == (2, 1, 40, 36)


@pytest.mark.parametrize("mode", ["logit_map", "image_basis"])
def test_script_round_trip(mode, tmp_path):
    gsa = make(mode).eval()
    randomise(gsa)
    x = torch.randn(2, 3, 33, 47)
    scripted = torch.jit.script(gsa)
    path = tmp_path / "gsa.ts"
    torch.jit.save(scripted, str(path))
    loaded = torch.jit.load(str(path))
    torch.testing.assert_close(loaded(x), gsa(x))
    torch.testing.assert_close(loaded.get_map([33, 47]), gsa.get_map([33, 47]))
    torch.testing.assert_close(loaded.get_map(None), gsa.get_map())
    with pytest.raises(Exception, match=r"\(B, C, H, W\) input"):
        loaded(torch.randn(3, 33, 47))
