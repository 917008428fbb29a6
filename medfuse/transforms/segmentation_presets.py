# Copyright (c) medfuse contributors
# Licensed under the Apache License, Version 2.0
"""Pipelines for 2-D segmentation networks on 2-D images or on slices of NIfTI volumes (the DIFM bundle).

:func:`slice_segmentation_transforms` maps a manifest item ``{"image": path, "label": mask path?, ...}`` to
``{"image": float32 (C, S, S) or (C, H, W, D), "label": (1, ...) class indices}``:

* ``data_mode="2d"``: the chest X-ray presets of :mod:`medfuse.transforms.presets` (load, percentile normalisation,
  letterbox to ``image_size``, training augmentation without left-right flips), the mask thresholded at 0.5, and
  with ``split_lungs`` its two largest components as 1 (image-left = the patient's right lung) and 2;
* ``data_mode="volume"``: MONAI ``LoadImaged`` (``NibabelReader``), ``EnsureChannelFirstd``, ``Orientationd("RAS")``,
  ``Spacingd(pixdim=[s, s, -1])`` (in-plane ``target_spacing`` mm, slices kept), intensities to [0, 1] (``"mri"``:
  0.5 / 99.5 percentiles; ``"ct"``: ``hu_window`` clipped), then for training ``SpatialPadd`` to ``image_size`` and
  ``slices_per_volume`` random ``image_size`` x ``image_size`` x 1 crops (``RandCropByPosNegLabeld``, half of them
  centred on the foreground) with the slice axis squeezed; evaluation and inference keep the whole volume (the
  inferer slices it) so that MONAI's ``Invertd`` can bring the prediction back to the input grid.

With ``enhanced=True`` a CLAHE copy (:class:`~medfuse.transforms.ContrastEnhanced`, ``image_enhanced``) is computed
on the whole slice (before any crop, as at inference) and concatenated after the original: ``(2, ...)``, what
:class:`~medfuse.networks.nets.DIFMUNet` takes.
"""

from __future__ import annotations

from collections.abc import Hashable, Mapping, Sequence
from typing import Any

import numpy as np
import torch
from monai.config import KeysCollection
from monai.transforms import (
    Compose,
    ConcatItemsd,
    DeleteItemsd,
    EnsureChannelFirstd,
    EnsureTyped,
    LoadImaged,
    MapTransform,
    Orientationd,
    RandCropByPosNegLabeld,
    ScaleIntensityRanged,
    ScaleIntensityRangePercentilesd,
    Spacingd,
    SpatialPadd,
    SqueezeDimd,
)

from medfuse.transforms.intensity import ContrastEnhanced

__all__ = ["DATA_MODES", "INTENSITY_MODES", "SplitLungsd", "split_lungs", "slice_segmentation_transforms"]

#: Values of ``data_mode``.
DATA_MODES = ("2d", "volume")
#: Values of ``intensity`` (volume mode).
INTENSITY_MODES = ("mri", "ct")


def split_lungs(mask: np.ndarray) -> np.ndarray:
    """``(H, W)`` binary lung mask -> label map: the two largest 8-connected components, 1 for the one whose centre
    lies further to the image's left (the patient's right lung on a frontal view), 2 for the other; smaller
    components become 0. A mask with one component keeps it as 1."""
    from scipy import ndimage

    fg = np.asarray(mask) > 0
    comps, n = ndimage.label(fg, structure=np.ones((3, 3)))
    out = np.zeros(fg.shape, dtype=np.uint8)
    if n == 0:
        return out
    sizes = np.bincount(comps.ravel())[1:]
    keep = (np.argsort(sizes)[::-1][:2] + 1).tolist()
    cols = [float(np.nonzero(comps == k)[1].mean()) for k in keep]
    for rank, k in enumerate(sorted(keep, key=lambda k: cols[keep.index(k)])):
        out[comps == k] = rank + 1
    return out


class SplitLungsd(MapTransform):
    """Dictionary transform: a ``(1, H, W)`` binary lung mask becomes right (1) / left (2) lung labels
    (:func:`split_lungs`); the array type and meta are kept."""

    def __init__(self, keys: KeysCollection, allow_missing_keys: bool = False) -> None:
        super().__init__(keys, allow_missing_keys)

    def __call__(self, data: Mapping[Hashable, Any]) -> dict:
        d = dict(data)
        for key in self.key_iterator(d):
            m = d[key]
            arr = np.asarray(m.detach().cpu() if isinstance(m, torch.Tensor) else m)
            split = np.stack([split_lungs(c) for c in arr]).astype(np.float32)
            if isinstance(m, torch.Tensor):
                out = m.clone()
                out.copy_(torch.as_tensor(split))
                d[key] = out
            else:
                d[key] = split
        return d


def _check_args(data_mode: str, intensity: str, image_size: int, target_spacing: float, slices_per_volume: int,
                hu_window: Sequence[float]) -> None:
    if data_mode not in DATA_MODES:
        raise ValueError(f"data_mode must be one of {DATA_MODES}, got {data_mode!r}")
    if intensity not in INTENSITY_MODES:
        raise ValueError(f"intensity must be one of {INTENSITY_MODES}, got {intensity!r}")
    if isinstance(image_size, bool) or not isinstance(image_size, int) or image_size < 1:
        raise ValueError(f"image_size must be a positive int, got {image_size!r}")
    if not float(target_spacing) > 0:
        raise ValueError(f"target_spacing must be > 0 (mm), got {target_spacing!r}")
    if int(slices_per_volume) < 1:
        raise ValueError(f"slices_per_volume must be >= 1, got {slices_per_volume!r}")
    if len(hu_window) != 2 or not float(hu_window[0]) < float(hu_window[1]):
        raise ValueError(f"hu_window must be [low, high] with low < high, got {list(hu_window)!r}")


def slice_segmentation_transforms(
    data_mode: str = "2d",
    train: bool = False,
    image_size: int = 128,
    enhanced: bool = True,
    label_key: str | None = "label",
    target_spacing: float = 1.5,
    intensity: str = "mri",
    hu_window: Sequence[float] = (-125.0, 275.0),
    slices_per_volume: int = 4,
    split_lungs: bool = False,
    percentiles: Sequence[float] = (0.5, 99.5),
    binary_mask: bool = True,
) -> Compose:
    """The pipeline described in the module docstring.

    Args:
        data_mode: ``"2d"`` (image files) or ``"volume"`` (NIfTI volumes). Defaults to ``"2d"``.
        train: training pipeline (augmentation in 2d, random slices in volume mode). Defaults to False.
        image_size: 2d: letterbox side; volume: side of the training slices (evaluation pads nothing).
        enhanced: add the CLAHE copy and concatenate it after the original (DIFM, ``unet2ch``). Defaults to True.
        label_key: key of the mask / label volume; ``None`` for inference without references.
        target_spacing: in-plane spacing in mm of the resampled volumes. Defaults to 1.5.
        intensity: ``"mri"`` (percentiles) or ``"ct"`` (``hu_window``). Defaults to ``"mri"``.
        hu_window: CT window mapped to [0, 1] and clipped. Defaults to (-125, 275).
        slices_per_volume: training slices drawn per volume and epoch. Defaults to 4.
        split_lungs: 2d: label the two largest mask components 1 and 2 (right / left lung). Defaults to False.
        percentiles: intensity percentiles mapped to [0, 1]. Defaults to (0.5, 99.5).
        binary_mask: 2d: masks are read in [0, 1] and thresholded at 0.5 (lung masks, 0/255 PNGs); False keeps
            the stored values as class indices (label-map PNGs). Volume labels always keep their values.

    Returns:
        ``monai.transforms.Compose`` (volume training returns ``slices_per_volume`` items per input item).

    Raises:
        ValueError: invalid arguments.
    """
    _check_args(data_mode, intensity, image_size, target_spacing, slices_per_volume, hu_window)
    lo, hi = (float(p) for p in percentiles)
    if data_mode == "2d":
        from medfuse.transforms.presets import cxr_eval_transforms, cxr_train_transforms

        common = dict(keys=("image",), image_size=image_size, in_channels=1, mask_key=label_key,
                      percentiles=(lo, hi), mask_threshold=0.5 if binary_mask or split_lungs else None,
                      enhanced_postfix="enhanced" if enhanced else None)
        base = cxr_train_transforms(**common, flip=False) if train else cxr_eval_transforms(**common)
        xforms = list(base.transforms)
        if split_lungs and label_key is not None:
            xforms.append(SplitLungsd(label_key))
        if enhanced:
            xforms += [ConcatItemsd(["image", "image_enhanced"], name="image"), DeleteItemsd("image_enhanced")]
        return Compose(xforms)

    keys = ["image"] + ([label_key] if label_key is not None else [])
    modes = ["bilinear"] + (["nearest"] if label_key is not None else [])
    xforms: list = [
        LoadImaged(keys, reader="NibabelReader", image_only=True),
        EnsureChannelFirstd(keys),
        Orientationd(keys, axcodes="RAS"),
        Spacingd(keys, pixdim=[float(target_spacing), float(target_spacing), -1], mode=modes),
    ]
    if intensity == "mri":
        xforms.append(ScaleIntensityRangePercentilesd("image", lower=lo, upper=hi, b_min=0.0, b_max=1.0, clip=True))
    else:
        xforms.append(ScaleIntensityRanged("image", a_min=float(hu_window[0]), a_max=float(hu_window[1]),
                                           b_min=0.0, b_max=1.0, clip=True))
    if enhanced:
        xforms += [ContrastEnhanced("image", output_keys="image_enhanced"),
                   ConcatItemsd(["image", "image_enhanced"], name="image"), DeleteItemsd("image_enhanced")]
    if train:
        if label_key is None:
            raise ValueError("volume training needs label_key (the slices are drawn around the labels)")
        xforms += [
            SpatialPadd(keys, spatial_size=[image_size, image_size, -1]),
            RandCropByPosNegLabeld(keys, label_key=label_key, spatial_size=[image_size, image_size, 1],
                                   num_samples=int(slices_per_volume), pos=1.0, neg=1.0),
            SqueezeDimd(keys, dim=-1),
        ]
    xforms.append(EnsureTyped(keys, dtype=torch.float32))
    return Compose(xforms)
