# Copyright (c) medfuse contributors
# Licensed under the Apache License, Version 2.0
"""Test-time augmentation (TTA) views of a chest X-ray: small shifts, scales and intensity changes, never a flip.

:func:`cxr_tta_transforms` is the array pipeline applied to one preprocessed image ``(C, H, W)`` per
augmented view; :class:`medfuse.workflows.MCDropoutInferer` (``tta`` > 0) seeds it per item and view and averages
the views' probabilities with the Monte-Carlo dropout / ensemble passes.

A left-right flip is never part of it: chest X-ray anatomy is lateralised (heart on the patient's left,
dextrocardia, side-specific findings), so a mirrored film is a different, usually abnormal, image rather than
the same one seen again. Rotation is left out too: the training presets rotate, but a view meant to be "the
same film, acquired slightly differently" should stay close to it.

The views are built with MONAI's ``RandAffine``, ``RandAdjustContrast`` and ``RandScaleIntensityFixedMean``
rather than MONAI's ``TestTimeAugmentation`` class: that one runs a dictionary dataset per item, inverts spatial
transforms (a classifier has nothing to invert) and reports a mode/variance, while the inferer here needs the
views of a batch already on the device, seeded per item.
"""

from __future__ import annotations

from collections.abc import Sequence

from monai.transforms import Compose, RandAdjustContrast, RandAffine, RandScaleIntensityFixedMean

__all__ = ["cxr_tta_transforms"]


def cxr_tta_transforms(
    spatial_size: Sequence[int],
    translate_fraction: float = 0.03,
    scale_range: float = 0.05,
    gamma: tuple[float, float] = (0.9, 1.1),
    contrast: float = 0.1,
) -> Compose:
    """The augmentation of one test-time view of a preprocessed chest X-ray ``(C, H, W)`` (every step applied).

    Args:
        spatial_size: ``(H, W)`` of the preprocessed image; the shift is a fraction of it.
        translate_fraction: random shift of up to +/- this fraction of each side. Defaults to 0.03.
        scale_range: random zoom of up to +/- this fraction, per axis. Defaults to 0.05.
        gamma: range of the random gamma (applied on the image's own min-max range, so it also works after
            mean/std normalisation). Defaults to (0.9, 1.1).
        contrast: random contrast factor ``1 +/- contrast`` about the image mean. Defaults to 0.1.

    Returns:
        ``monai.transforms.Compose`` of ``RandAffine`` (zero padding, no rotation, no flip),
        ``RandAdjustContrast`` and ``RandScaleIntensityFixedMean``; ``set_random_state(seed)`` fixes a view.

    Raises:
        ValueError: when ``spatial_size`` is not two positive sides, or a range is negative or too large.

    Examples::

        >>> views = cxr_tta_transforms((64, 64))
        >>> views.set_random_state(seed=3)(torch.rand(1, 64, 64)).shape
        torch.Size([1, 64, 64])
    """
    size = tuple(int(s) for s in spatial_size)
    if len(size) != 2 or min(size) < 1:
        raise ValueError(f"spatial_size must be (H, W) with positive sides, got {tuple(spatial_size)}.")
    for name, value, top in (("translate_fraction", translate_fraction, 0.25), ("scale_range", scale_range, 0.5),
                             ("contrast", contrast, 0.5)):
        if not 0.0 <= float(value) <= top:
            raise ValueError(f"{name} must be in [0, {top}] for a test-time view, got {value}.")
    lo, hi = (float(g) for g in gamma)
    if not 0.0 < lo <= hi:
        raise ValueError(f"gamma must be a range (low, high) with 0 < low <= high, got {tuple(gamma)}.")
    return Compose(
        [
            RandAffine(
                prob=1.0,
                translate_range=(translate_fraction * size[0], translate_fraction * size[1]),
                scale_range=(scale_range, scale_range),
                spatial_size=size,
                padding_mode="zeros",
            ),
            RandAdjustContrast(prob=1.0, gamma=(lo, hi)),
            RandScaleIntensityFixedMean(prob=1.0, factors=float(contrast)),
        ]
    )
