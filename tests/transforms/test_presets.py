# Copyright (c) medfuse contributors
# Licensed under the Apache License, Version 2.0
"""cxr_/oct_ train/eval presets end to end on real Kermany images, DICOM, and a synthetic item with a mask."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from monai.data import list_data_collate
from monai.transforms import RandFlipd
from PIL import Image

from medfuse.transforms import cxr_eval_transforms, cxr_train_transforms, oct_eval_transforms, oct_train_transforms
from tests.conftest import require
from tests.transforms.helpers import dicom_testfile

SIZE = 64  # small outputs keep the tests fast; the default 224 is covered once


@pytest.fixture
def kermany_item(shared_data):
    folder = require(shared_data / "kermany_cxr_224" / "train" / "PNEUMONIA")
    path = sorted(folder.iterdir())[0]
    return {"image": str(path), "label": 1, "patient_id": "p1"}


@pytest.fixture
def masked_item(tmp_path):
    """A 120x80 (portrait) image with a bright rectangle and a 0/255 mask of that rectangle."""
    image = np.full((120, 80), 40, np.uint8)
    image[20:100, 10:40] = 220
    mask = np.zeros((120, 80), np.uint8)
    mask[20:100, 10:40] = 255
    Image.fromarray(image).save(tmp_path / "img.png")
    Image.fromarray(mask).save(tmp_path / "mask.png")
    return {"image": str(tmp_path / "img.png"), "mask": str(tmp_path / "mask.png"), "label": 0}


@pytest.mark.parametrize("factory", [cxr_train_transforms, cxr_eval_transforms])
@pytest.mark.parametrize("in_channels", [1, 3])
def test_cxr_on_kermany_jpeg(kermany_item, factory, in_channels):
    t = factory(image_size=SIZE, in_channels=in_channels)
    if hasattr(t, "set_random_state"):
        t.set_random_state(0)
    label = kermany_item["label"]
    out = t(dict(kermany_item))
    assert out["image"].dtype == torch.float32 and tuple(out["image"].shape) == (in_channels, SIZE, SIZE)
    assert out["label"] is label and out["patient_id"] == "p1"  # passed through untouched
    assert 0.0 <= float(out["image"].min()) and float(out["image"].max()) <= 1.0
    if in_channels == 3:
        assert torch.equal(out["image"][0], out["image"][2])


def test_cxr_default_size_224(kermany_item):
    out = cxr_eval_transforms()(dict(kermany_item))
    assert tuple(out["image"].shape) == (1, 224, 224)


def test_train_deterministic_with_seed(kermany_item):
    def run(seed):
        t = cxr_train_transforms(image_size=SIZE, affine_prob=1.0, intensity_prob=1.0, noise_prob=1.0)
        t.set_random_state(seed)
        return t(dict(kermany_item))["image"]

    a, b = run(3), run(3)
    assert torch.equal(a, b)
    assert not torch.equal(a, run(4))


def test_no_left_right_flip_by_default(tmp_path):
    img = np.zeros((64, 64), np.uint8)
    img[:, :16] = 255  # bright band on the left only
    Image.fromarray(img).save(tmp_path / "left.png")
    item = {"image": str(tmp_path / "left.png"), "label": 0}
    kwargs = dict(image_size=32, affine_prob=0.0, intensity_prob=0.0, noise_prob=0.0, percentiles=None)
    default = cxr_train_transforms(**kwargs)
    assert not any(isinstance(x, RandFlipd) for x in default.transforms)
    flipping = cxr_train_transforms(flip=True, **kwargs)
    left_bright = []
    for seed in range(8):
        default.set_random_state(seed)
        flipping.set_random_state(seed)
        out = default(dict(item))["image"][0]
        assert float(out[:, :8].mean()) > 0.9 and float(out[:, -8:].mean()) < 0.1
        flipped = flipping(dict(item))["image"][0]
        left_bright.append(float(flipped[:, :8].mean()) > 0.9)
    assert not all(left_bright) and any(left_bright)  # flip=True flips some of the time


@pytest.mark.parametrize("factory", [cxr_train_transforms, cxr_eval_transforms])
def test_mask_aligned_with_image(masked_item, factory):
    kwargs = dict(image_size=SIZE, mask_key="mask")
    if factory is cxr_train_transforms:
        kwargs.update(affine_prob=1.0, intensity_prob=0.0, noise_prob=0.0)
    t = factory(**kwargs)
    if hasattr(t, "set_random_state"):
        t.set_random_state(5)
    out = t(dict(masked_item))
    image, mask = out["image"][0], out["mask"][0]
    assert out["mask"].dtype == torch.float32 and tuple(out["mask"].shape) == (1, SIZE, SIZE)
    assert set(torch.unique(mask).tolist()) <= {0.0, 1.0} and float(mask.sum()) > 50
    inside, outside = image[mask > 0], image[mask == 0]
    assert float(inside.mean()) > float(outside.mean()) + 0.5  # the mask sits on the bright rectangle
    if factory is cxr_eval_transforms:
        # letterboxed: 120x80 -> 64x43 centred (10 columns of padding left, 11 right)
        assert float(image[:, :10].abs().max()) == 0.0 and float(mask[:, :10].max()) == 0.0


@pytest.mark.parametrize("factory", [cxr_train_transforms, cxr_eval_transforms])
def test_optional_mask(masked_item, factory):
    """optional_mask: items without the mask get an all-zero one and has_mask 0; without it, the key is required."""
    t = factory(image_size=SIZE, mask_key="mask", optional_mask=True)
    with_mask, without = t(dict(masked_item)), t({k: v for k, v in masked_item.items() if k != "mask"})
    assert with_mask["has_mask"] == 1 and float(with_mask["mask"].sum()) > 50
    assert without["has_mask"] == 0 and tuple(without["mask"].shape) == (1, SIZE, SIZE)
    assert float(without["mask"].abs().max()) == 0.0 and without["mask"].dtype == torch.float32
    with pytest.raises(RuntimeError) as e:  # MONAI wraps the loader's KeyError
        factory(image_size=SIZE, mask_key="mask")({k: v for k, v in masked_item.items() if k != "mask"})
    assert isinstance(e.value.__cause__, KeyError) and "mask" in str(e.value.__cause__)


def test_label_map_mask_keeps_values(tmp_path, masked_item):
    labels = np.zeros((120, 80), np.uint8)
    labels[10:50] = 1
    labels[60:110] = 3
    Image.fromarray(labels).save(tmp_path / "labels.png")
    item = dict(masked_item, mask=str(tmp_path / "labels.png"))
    out = cxr_eval_transforms(image_size=SIZE, mask_key="mask", mask_threshold=None)(item)
    assert set(torch.unique(out["mask"]).tolist()) == {0.0, 1.0, 3.0}


def test_enhanced_copy_for_difm(kermany_item):
    t = cxr_train_transforms(image_size=SIZE, in_channels=3, enhanced_postfix="enhanced")
    t.set_random_state(0)
    out = t(dict(kermany_item))
    assert out["image_enhanced"].shape == out["image"].shape == (3, SIZE, SIZE)
    assert not torch.allclose(out["image_enhanced"], out["image"])


def test_imagenet_mean_std(kermany_item):
    mean, std = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)
    plain = cxr_eval_transforms(image_size=SIZE, in_channels=3)(dict(kermany_item))["image"]
    normed = cxr_eval_transforms(image_size=SIZE, in_channels=3, mean=mean, std=std)(dict(kermany_item))["image"]
    expected = (plain - torch.tensor(mean)[:, None, None]) / torch.tensor(std)[:, None, None]
    assert torch.allclose(normed, expected, atol=1e-5)


def test_dicom_through_preset_and_batch(kermany_item):
    t = cxr_eval_transforms(image_size=SIZE)
    items = [t(dict(kermany_item)), t({"image": dicom_testfile("RG1_UNCR.dcm"), "label": 0, "patient_id": "p2"})]
    rg1 = items[1]["image"][0]
    # MONOCHROME1 handled: centre column (mediastinum) brighter than the lateral lung fields
    assert float(rg1[15:35, 29:35].mean()) > float(rg1[15:30, 10:20].mean())
    batch = list_data_collate(items)
    assert tuple(batch["image"].shape) == (2, 1, SIZE, SIZE) and batch["label"].tolist() == [1, 0]


@pytest.mark.parametrize("factory", [oct_train_transforms, oct_eval_transforms])
def test_oct_on_real_bscan(shared_data, factory):
    path = sorted(require(shared_data / "oct_kermany_samples" / "DME").glob("*.jpeg"))[0]
    t = factory(image_size=SIZE, in_channels=3)
    if hasattr(t, "set_random_state"):
        t.set_random_state(1)
    out = t({"image": str(path), "label": 1})
    assert tuple(out["image"].shape) == (3, SIZE, SIZE) and out["image"].dtype == torch.float32 and out["label"] == 1
    assert 0.0 <= float(out["image"].min()) and float(out["image"].max()) <= 1.0
    # 512x496 B-scan letterboxed: top and bottom rows are padding
    if factory is oct_eval_transforms:
        assert float(out["image"][:, 0].abs().max()) == 0.0 and float(out["image"][:, SIZE // 2].max()) > 0


def test_oct_train_flips_sometimes(tmp_path):
    img = np.zeros((40, 60), np.uint8)
    img[:, :10] = 255
    Image.fromarray(img).save(tmp_path / "b.png")
    t = oct_train_transforms(image_size=32, rotate_prob=0.0, speckle_prob=0.0, intensity_prob=0.0, percentiles=None)
    left = []
    for seed in range(8):
        t.set_random_state(seed)
        left.append(float(t({"image": str(tmp_path / "b.png")})["image"][0, 16, :4].mean()) > 0.9)
    assert any(left) and not all(left)


@pytest.mark.parametrize(
    "factory, kwargs",
    [
        (cxr_train_transforms, dict(in_channels=2)),
        (cxr_eval_transforms, dict(image_size=0)),
        (cxr_eval_transforms, dict(keys=())),
        (cxr_train_transforms, dict(mask_key="image")),
        (oct_train_transforms, dict(frame="all")),
        (oct_eval_transforms, dict(frame="all")),
    ],
)
def test_bad_arguments(factory, kwargs):
    with pytest.raises(ValueError):
        factory(**kwargs)


def _names(compose) -> list[str]:
    return [type(t).__name__ for t in compose.transforms]


@pytest.mark.parametrize("factory", [cxr_train_transforms, oct_train_transforms])
def test_intensity_augmentations_documented_today(factory):
    """The gamma / contrast / brightness steps the presets use without shift_augment (module docstring table)."""
    names = _names(factory(image_size=32))
    steps = {"RandAdjustContrastd", "RandScaleIntensityFixedMeand", "RandShiftIntensityd"}
    assert steps <= set(names)
    assert not {"RandGaussianSmoothd", "RandGaussianSharpend"} & set(names)
    gamma = next(t for t in factory(image_size=32).transforms if type(t).__name__ == "RandAdjustContrastd")
    assert tuple(gamma.adjuster.gamma) == (0.8, 1.25)
    # the mask is never intensity-augmented
    masked = cxr_train_transforms(image_size=32, mask_key="mask")
    for t in masked.transforms:
        if type(t).__name__ in steps | {"RandGaussianNoised"}:
            assert tuple(t.keys) == ("image",)


@pytest.mark.parametrize("factory", [cxr_train_transforms, oct_train_transforms])
def test_shift_augment_adds_the_acquisition_shift_steps(factory):
    from medfuse.transforms.presets import SHIFT_AUGMENT

    plain, shifted = _names(factory(image_size=32)), _names(factory(image_size=32, shift_augment=True))
    clip = plain.index("ScaleIntensityRanged")
    # right after the standard augmentation, before the clip to [0, 1]; nothing else changes
    assert tuple(shifted[clip:clip + len(SHIFT_AUGMENT)]) == SHIFT_AUGMENT
    assert shifted[:clip] + shifted[clip + len(SHIFT_AUGMENT):] == plain
    assert _names(factory(image_size=32, shift_augment="false")) == plain  # config string switch
    with pytest.raises(ValueError, match="shift_augment must be true or false"):
        factory(image_size=32, shift_augment="maybe")
    with pytest.raises(ValueError, match="shift_prob"):
        factory(image_size=32, shift_augment=True, shift_prob=1.5)


def test_multi_output_transforms_pass_shift_augment_on():
    from medfuse.workflows.multi_output import multi_output_transforms

    assert "RandGaussianSharpend" in _names(multi_output_transforms(image_size=32, train=True, shift_augment=True))
    assert "RandGaussianSharpend" not in _names(multi_output_transforms(image_size=32, train=True))


def test_shift_augment_outputs_finite_in_range_and_seeded(masked_item):
    xform = cxr_train_transforms(image_size=32, mask_key="mask", shift_augment=True, shift_prob=1.0)
    plain = cxr_train_transforms(image_size=32, mask_key="mask", affine_prob=0.0, intensity_prob=0.0, noise_prob=0.0)
    reference = plain(dict(masked_item))["image"]
    outs = []
    for seed in range(6):
        out = xform.set_random_state(seed)(dict(masked_item))
        img = out["image"]
        assert img.shape == (1, 32, 32) and img.dtype == torch.float32
        assert torch.isfinite(img).all() and float(img.min()) >= 0.0 and float(img.max()) <= 1.0
        assert set(torch.unique(out["mask"]).tolist()) <= {0.0, 1.0}
        outs.append(img)
    assert all(not torch.allclose(o, reference, atol=1e-3) for o in outs)  # every step on: always changed
    again = xform.set_random_state(3)(dict(masked_item))["image"]
    torch.testing.assert_close(again, outs[3])
