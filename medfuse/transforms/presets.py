# Copyright (c) medfuse contributors
# Licensed under the Apache License, Version 2.0
"""Ready-made dictionary pipelines for chest X-ray and OCT training and evaluation.

Each preset maps a manifest item ``{"image": path, "label": int, "mask": path?, ...}`` to
``{"image": float32 (C, size, size), "label": untouched, "mask": float32 (1, size, size)?}``.
Order: load (any format, DICOM display pipeline) -> percentile normalisation on the full
image (padding must not skew the statistics) -> aspect-preserving resize + zero padding ->
augmentation (training only; spatial transforms move the mask with the image) -> optional
CLAHE copy (``<key>_<enhanced_postfix>``) -> gray repeated to 3 channels when asked ->
optional mean/std.

Chest X-ray augmentation never flips left-right unless ``flip=True``: laterality carries
meaning (heart on the patient's left, dextrocardia, side-specific findings). OCT B-scans
may be flipped (left and right eyes mirror each other).

Intensity augmentation of the training presets (image keys only, never the mask), each step with its
own probability, on images in [0, 1] and clipped back to [0, 1] afterwards:

========================  ================================  ===========================================
step                      MONAI transform                   range (probability)
========================  ================================  ===========================================
gamma                     ``RandAdjustContrastd``           gamma 0.8-1.25 (``intensity_prob``, 0.3)
contrast about the mean   ``RandScaleIntensityFixedMeand``  factor 1 +/- 0.2 (``intensity_prob``)
brightness                ``RandShiftIntensityd``           offset +/- 0.1 (``intensity_prob``)
Gaussian noise (CXR)      ``RandGaussianNoised``            std up to ``noise_std`` 0.02 (``noise_prob``, 0.2)
speckle (OCT)             ``RandSpeckleNoised``             multiplicative, std 0.15 (``speckle_prob``, 0.3)
========================  ================================  ===========================================

``shift_augment=True`` adds the acquisition-shift steps (:data:`SHIFT_AUGMENT`: another scanner, detector,
exposure or post-processing LUT), each with probability ``shift_prob`` (0.3), after those above: a wider
gamma (0.5-2.0) and contrast (1 +/- 0.4), Gaussian blur (sigma 0.25-1.5 px, a softer detector or a resampled
film) or sharpening (unsharp masking, alpha 2-8, vendor edge enhancement), and stronger Gaussian noise (std up
to 0.05, lower dose). Off by default (the bundles' ``shift_augment`` key).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch
from monai.transforms import (
    AsDiscreted,
    Compose,
    EnsureTyped,
    RandAdjustContrastd,
    RandAffined,
    RandFlipd,
    RandGaussianNoised,
    RandGaussianSharpend,
    RandGaussianSmoothd,
    RandRotated,
    RandScaleIntensityFixedMeand,
    RandShiftIntensityd,
    RepeatChanneld,
    ScaleIntensityRanged,
)
from monai.utils import ensure_tuple

from medfuse.transforms.intensity import ContrastEnhanced, IntensityNormalized, RandSpeckleNoised
from medfuse.transforms.io import LoadOCTd, LoadXrayd
from medfuse.transforms.spatial import FillMissingMaskd, ResizeWithPadd

__all__ = ["SHIFT_AUGMENT", "cxr_train_transforms", "cxr_eval_transforms", "oct_train_transforms",
           "oct_eval_transforms"]

#: the transforms ``shift_augment=True`` adds to a training preset, in order (see the module docstring)
SHIFT_AUGMENT = ("RandAdjustContrastd", "RandScaleIntensityFixedMeand", "RandGaussianSmoothd", "RandGaussianSharpend",
                 "RandGaussianNoised")


def _check(keys, image_size: int, in_channels: int, mask_key, frame=None) -> tuple[str, ...]:
    keys = tuple(ensure_tuple(keys))
    if not keys:
        raise ValueError("keys must name at least one image key, e.g. ('image',)")
    if in_channels not in (1, 3):
        raise ValueError(f"in_channels must be 1 (gray) or 3 (gray repeated for RGB-pretrained networks), got {in_channels}")
    if isinstance(image_size, bool) or not isinstance(image_size, int) or image_size < 1:
        raise ValueError(f"image_size must be a positive int, got {image_size!r}")
    if mask_key is not None and mask_key in keys:
        raise ValueError(f"mask_key {mask_key!r} must differ from the image keys {keys}")
    if frame == "all":
        raise ValueError("the OCT presets classify one B-scan: choose frame=None, an int or 'middle', not 'all'")
    return keys


def _build(
    loader, loader_kwargs, keys, image_size, in_channels, mask_key, percentiles, mask_threshold, enhanced_postfix,
    mean, std, augment=None, optional_mask=False,
) -> Compose:
    """The steps every preset shares: check, load and fit, ``augment`` (training only), finish.

    ``augment(keys, all_keys, modes)`` returns the training augmentations; ``all_keys`` adds
    the mask key to the image keys and ``modes`` gives their interpolation (nearest for the
    mask). Its output is clipped back to [0, 1]. ``optional_mask``: items may lack the mask; they get an
    all-zero one and ``has_mask`` = 0 (:class:`~medfuse.transforms.spatial.FillMissingMaskd`).
    """
    keys = _check(keys, image_size, in_channels, mask_key, loader_kwargs.get("frame"))
    xforms = _load_and_fit(loader, keys, mask_key, image_size, percentiles, mask_threshold, loader_kwargs, optional_mask)
    if augment is not None:
        all_keys = list(keys) + ([mask_key] if mask_key is not None else [])
        modes = ["bilinear"] * len(keys) + (["nearest"] if mask_key is not None else [])
        xforms += augment(keys, all_keys, modes)
        xforms.append(ScaleIntensityRanged(keys, a_min=0.0, a_max=1.0, b_min=0.0, b_max=1.0, clip=True))
    xforms += _finish(keys, mask_key, in_channels, enhanced_postfix, mean, std)
    return Compose(xforms)


def _load_and_fit(loader, keys, mask_key, image_size, percentiles, mask_threshold, loader_kwargs,
                  optional_mask=False) -> list:
    xforms = [loader(keys, **loader_kwargs)]
    if percentiles is not None:
        xforms.append(IntensityNormalized(keys, percentiles=percentiles))
    spatial_keys, modes = list(keys), ["auto"] * len(keys)
    if mask_key is not None:
        # a binary mask is read in [0, 1] and thresholded; a label map keeps its raw values
        xforms.append(loader(mask_key, scale=mask_threshold is not None, mask_padding=False,
                             allow_missing_keys=optional_mask, **_frame_only(loader_kwargs)))
        if mask_threshold is not None:
            xforms.append(AsDiscreted(mask_key, threshold=mask_threshold, allow_missing_keys=optional_mask))
        if optional_mask:
            xforms.append(FillMissingMaskd(mask_key, ref_key=keys[0]))
        spatial_keys.append(mask_key)
        modes.append("nearest")
    xforms.append(ResizeWithPadd(spatial_keys, size=image_size, mode=modes, pad_value=0.0))
    return xforms


def _frame_only(loader_kwargs: dict) -> dict:
    return {k: v for k, v in loader_kwargs.items() if k == "frame"}


def _finish(keys, mask_key, in_channels, enhanced_postfix, mean, std) -> list:
    xforms: list = []
    out_keys = list(keys)
    if enhanced_postfix:
        enhanced = [f"{k}_{enhanced_postfix}" for k in keys]
        xforms.append(ContrastEnhanced(keys, output_keys=enhanced))
        out_keys += enhanced
    if in_channels == 3:
        xforms.append(RepeatChanneld(out_keys, repeats=3))
    if mean is not None or std is not None:
        xforms.append(IntensityNormalized(out_keys, percentiles=None, mean=mean, std=std))
    typed = out_keys + ([mask_key] if mask_key is not None else [])
    xforms.append(EnsureTyped(typed, dtype=torch.float32))
    return xforms


def cxr_train_transforms(
    keys: str | Sequence[str] = ("image",),
    image_size: int = 224,
    in_channels: int = 1,
    mask_key: str | None = None,
    flip: bool = False,
    rotate_degrees: float = 10.0,
    scale_range: float = 0.1,
    translate_fraction: float = 0.05,
    affine_prob: float = 0.5,
    intensity_prob: float = 0.3,
    noise_prob: float = 0.2,
    noise_std: float = 0.02,
    percentiles: tuple[float, float] | None = (0.5, 99.5),
    apply_voi: bool = False,
    mask_threshold: float | None = 0.5,
    enhanced_postfix: str | None = None,
    mean: float | Sequence[float] | None = None,
    std: float | Sequence[float] | None = None,
    optional_mask: bool = False,
    shift_augment: bool = False,
    shift_prob: float = 0.3,
) -> Compose:
    """Training pipeline for chest X-rays (DICOM, PNG/JPEG, NIfTI slices).

    Args:
        keys: image keys. Default ``("image",)``.
        image_size: output side; the image is letterboxed, aspect kept. Default 224.
        in_channels: 1 or 3 (gray repeated). Default 1.
        mask_key: key of a segmentation mask transformed with the image (nearest
            interpolation), e.g. ``"mask"``. Default None.
        flip: allow random left-right flips. Default False (laterality matters).
        rotate_degrees: random rotation range +/- degrees. Default 10.
        scale_range: random zoom +/- fraction, per axis. Default 0.1.
        translate_fraction: random shift +/- fraction of ``image_size``. Default 0.05.
        affine_prob: probability of the random affine. Default 0.5.
        intensity_prob: probability of each of gamma, contrast (about the mean) and
            brightness changes. Default 0.3.
        noise_prob, noise_std: additive Gaussian noise. Defaults 0.2, 0.02.
        percentiles: percentile normalisation to [0, 1]; None to skip. Default (0.5, 99.5).
        apply_voi: apply the DICOM window / VOI LUT when loading. Default False.
        mask_threshold: binarise the mask (read in [0, 1]) at this value; ``None`` keeps raw
            label values (multi-class label maps). Default 0.5.
        enhanced_postfix: also write a CLAHE copy of each image key to ``f"{key}_{postfix}"``
            (e.g. ``"enhanced"`` -> ``"image_enhanced"``, DIFM's second input), after augmentation.
        mean, std: subtract/divide at the end (e.g. ImageNet statistics with ``in_channels=3``).
        optional_mask: items may lack ``mask_key`` (e.g. labelled images without a lung mask): they get an
            all-zero mask and ``has_mask`` = 0 (items with one get ``has_mask`` = 1).
        shift_augment: add the acquisition-shift augmentations (:data:`SHIFT_AUGMENT`, module docstring).
            Default False.
        shift_prob: probability of each acquisition-shift step. Default 0.3.

    Returns:
        ``monai.transforms.Compose``; ``set_random_state(seed)`` makes it deterministic.

    Raises:
        ValueError: invalid arguments.
    """

    def augment(keys, all_keys, modes) -> list:
        xforms = [
            RandAffined(
                all_keys,
                prob=affine_prob,
                rotate_range=np.deg2rad(rotate_degrees),
                scale_range=(scale_range, scale_range),
                translate_range=(translate_fraction * image_size, translate_fraction * image_size),
                mode=modes,
                padding_mode="zeros",
                spatial_size=(image_size, image_size),
                cache_grid=True,
            )
        ]
        if flip:
            xforms.append(RandFlipd(all_keys, prob=0.5, spatial_axis=1))
        xforms += _intensity_augment(keys, intensity_prob)
        xforms.append(RandGaussianNoised(keys, prob=noise_prob, std=noise_std))
        return xforms + _shift_augment(keys, shift_augment, shift_prob)

    return _build(
        LoadXrayd, {"apply_voi": apply_voi}, keys, image_size, in_channels, mask_key, percentiles, mask_threshold,
        enhanced_postfix, mean, std, augment, optional_mask,
    )


def _shift_augment(keys, enabled, prob: float) -> list:
    """The acquisition-shift steps (:data:`SHIFT_AUGMENT`) when ``enabled``, else none."""
    if not _switch(enabled, "shift_augment"):
        return []
    if not 0.0 <= float(prob) <= 1.0:
        raise ValueError(f"shift_prob must be a probability in [0, 1], got {prob!r}")
    sigma = (0.25, 1.5)
    return [
        RandAdjustContrastd(keys, prob=prob, gamma=(0.5, 2.0)),  # exposure / LUT gamma
        RandScaleIntensityFixedMeand(keys, prob=prob, factors=0.4),  # window width
        RandGaussianSmoothd(keys, prob=prob, sigma_x=sigma, sigma_y=sigma),  # softer detector, resampling
        RandGaussianSharpend(keys, prob=prob, alpha=(2.0, 8.0)),  # vendor edge enhancement
        RandGaussianNoised(keys, prob=prob, std=0.05),  # lower dose
    ]


def _switch(value, name: str) -> bool:
    # the bool switch of a config key; medfuse.workflows.flag is the same rule but transforms may not import workflows
    if isinstance(value, bool):
        return value
    if isinstance(value, str) and value.strip().lower() in ("true", "false"):
        return value.strip().lower() == "true"
    if isinstance(value, int) and value in (0, 1):
        return bool(value)
    raise ValueError(f"{name} must be true or false, got {value!r}")


def _intensity_augment(keys, prob: float) -> list:
    return [
        RandAdjustContrastd(keys, prob=prob, gamma=(0.8, 1.25)),  # gamma
        RandScaleIntensityFixedMeand(keys, prob=prob, factors=0.2),  # contrast about the mean
        RandShiftIntensityd(keys, prob=prob, offsets=0.1),  # brightness
    ]


def cxr_eval_transforms(
    keys: str | Sequence[str] = ("image",),
    image_size: int = 224,
    in_channels: int = 1,
    mask_key: str | None = None,
    percentiles: tuple[float, float] | None = (0.5, 99.5),
    apply_voi: bool = False,
    mask_threshold: float | None = 0.5,
    enhanced_postfix: str | None = None,
    mean: float | Sequence[float] | None = None,
    std: float | Sequence[float] | None = None,
    optional_mask: bool = False,
) -> Compose:
    """Deterministic evaluation/inference pipeline for chest X-rays (arguments as :func:`cxr_train_transforms`).

    Raises:
        ValueError: invalid arguments.
    """
    return _build(
        LoadXrayd, {"apply_voi": apply_voi}, keys, image_size, in_channels, mask_key, percentiles, mask_threshold,
        enhanced_postfix, mean, std, optional_mask=optional_mask,
    )


def oct_train_transforms(
    keys: str | Sequence[str] = ("image",),
    image_size: int = 224,
    in_channels: int = 1,
    mask_key: str | None = None,
    frame: int | str | None = "middle",
    flip: bool = True,
    rotate_degrees: float = 10.0,
    rotate_prob: float = 0.5,
    speckle_prob: float = 0.3,
    speckle_std: float = 0.15,
    intensity_prob: float = 0.3,
    percentiles: tuple[float, float] | None = (0.5, 99.5),
    mask_threshold: float | None = 0.5,
    enhanced_postfix: str | None = None,
    mean: float | Sequence[float] | None = None,
    std: float | Sequence[float] | None = None,
    shift_augment: bool = False,
    shift_prob: float = 0.3,
) -> Compose:
    """Training pipeline for retinal OCT B-scans (JPEG/PNG, or one frame of an OCT DICOM volume).

    Args:
        keys, image_size, in_channels, mask_key, percentiles, mask_threshold,
            enhanced_postfix, mean, std: as :func:`cxr_train_transforms`.
        frame: B-scan of a multi-frame DICOM: ``"middle"`` (default, usually through the
            fovea), ``None`` (first) or an ``int``; ignored for JPEG/PNG.
        flip: random left-right flips. Default True.
        rotate_degrees, rotate_prob: small random rotation. Defaults 10, 0.5.
        speckle_prob, speckle_std: multiplicative speckle-like noise. Defaults 0.3, 0.15.
        intensity_prob: probability of each of gamma, contrast and brightness changes. Default 0.3.
        shift_augment, shift_prob: the acquisition-shift augmentations, as :func:`cxr_train_transforms`.

    Returns:
        ``monai.transforms.Compose``.

    Raises:
        ValueError: invalid arguments (including ``frame="all"``).
    """

    def augment(keys, all_keys, modes) -> list:
        xforms = [RandFlipd(all_keys, prob=0.5, spatial_axis=1)] if flip else []
        xforms.append(
            RandRotated(all_keys, range_x=np.deg2rad(rotate_degrees), prob=rotate_prob, mode=modes, padding_mode="zeros")
        )
        xforms.append(RandSpeckleNoised(keys, prob=speckle_prob, std=speckle_std))
        return xforms + _intensity_augment(keys, intensity_prob) + _shift_augment(keys, shift_augment, shift_prob)

    return _build(
        LoadOCTd, {"frame": frame}, keys, image_size, in_channels, mask_key, percentiles, mask_threshold,
        enhanced_postfix, mean, std, augment,
    )


def oct_eval_transforms(
    keys: str | Sequence[str] = ("image",),
    image_size: int = 224,
    in_channels: int = 1,
    mask_key: str | None = None,
    frame: int | str | None = "middle",
    percentiles: tuple[float, float] | None = (0.5, 99.5),
    mask_threshold: float | None = 0.5,
    enhanced_postfix: str | None = None,
    mean: float | Sequence[float] | None = None,
    std: float | Sequence[float] | None = None,
) -> Compose:
    """Deterministic evaluation/inference pipeline for OCT (arguments as :func:`oct_train_transforms`).

    Raises:
        ValueError: invalid arguments (including ``frame="all"``).
    """
    return _build(
        LoadOCTd, {"frame": frame}, keys, image_size, in_channels, mask_key, percentiles, mask_threshold,
        enhanced_postfix, mean, std,
    )
