# Copyright (c) medfuse contributors
# Licensed under the Apache License, Version 2.0
"""Bounding boxes for detection: manifest <-> MONAI coordinate order, letterboxing of boxes, and the detection
training / evaluation presets.

Two conventions meet here:

* manifests store ``[x_min, y_min, x_max, y_max]`` in pixels of the stored image, x the column;
* MONAI's box utilities (``monai.data.box_utils``, ``monai.apps.detection``) use coordinate ``i`` = tensor
  dimension ``i``: on an image ``(C, H, W)`` a box is ``[row_min, col_min, row_max, col_max]``.

:func:`xyxy_to_monai` / :func:`monai_to_xyxy` swap between them (the same swap both ways). Every transform here
works on MONAI-order boxes in pixel-edge coordinates (a box covering the last column ends at ``W``).

Detection augmentation moves boxes with the image through a mask (MONAI's ``BoxToMaskd`` -> ``RandAffined`` ->
``MaskToBoxd``), so rotations and zooms stay consistent; there are no flips (laterality matters in chest X-rays).
"""

from __future__ import annotations

from collections.abc import Hashable, Mapping, Sequence
from typing import Any

import numpy as np
import torch
from monai.apps.detection.transforms.dictionary import BoxToMaskd, MaskToBoxd
from monai.config import KeysCollection
from monai.data import MetaTensor
from monai.data.meta_obj import get_track_meta
from monai.transforms import (
    Compose,
    DeleteItemsd,
    EnsureTyped,
    MapTransform,
    RandAffined,
    RandGaussianNoised,
    RepeatChanneld,
    ScaleIntensityRanged,
)
from monai.transforms.inverse import InvertibleTransform
from monai.utils import TraceKeys, ensure_tuple

from medfuse.transforms.intensity import IntensityNormalized
from medfuse.transforms.io import LoadXrayd
from medfuse.transforms.spatial import ResizeWithPadd

__all__ = [
    "xyxy_to_monai",
    "monai_to_xyxy",
    "BoxesToMonaid",
    "BoxesToMonaiD",
    "BoxesToMonaiDict",
    "ResizeWithPadBoxd",
    "ResizeWithPadBoxD",
    "ResizeWithPadBoxDict",
    "detection_train_transforms",
    "detection_eval_transforms",
]

_SWAP = [1, 0, 3, 2]


def xyxy_to_monai(boxes: Any) -> Any:
    """``[x_min, y_min, x_max, y_max]`` (x = column) -> MONAI ``[row_min, col_min, row_max, col_max]``.

    Accepts a tensor, an array or nested lists ``(N, 4)``; returns the same kind (lists come back as a float32
    array). An empty input gives ``(0, 4)``.

    Raises:
        ValueError: when the boxes are not ``(N, 4)``.
    """
    if isinstance(boxes, torch.Tensor):
        b = boxes.reshape(-1, 4) if boxes.numel() else boxes.reshape(0, 4)
        return b[:, _SWAP]
    a = np.asarray(boxes, dtype=np.float32) if not isinstance(boxes, np.ndarray) else boxes
    if a.size == 0:
        return np.zeros((0, 4), dtype=a.dtype)
    if a.ndim != 2 or a.shape[1] != 4:
        raise ValueError(f"boxes must be (N, 4) [x_min, y_min, x_max, y_max], got shape {a.shape}")
    return a[:, _SWAP]


def monai_to_xyxy(boxes: Any) -> Any:
    """MONAI ``[row_min, col_min, row_max, col_max]`` -> ``[x_min, y_min, x_max, y_max]`` (the same swap)."""
    return xyxy_to_monai(boxes)


class BoxesToMonaid(MapTransform):
    """Manifest boxes and labels (lists) -> MONAI tensors: boxes ``(N, 4)`` float32 in MONAI order, labels
    ``(N,)`` int64. Negatives (``[]``) become ``(0, 4)`` and ``(0,)``.

    Args:
        keys: box keys. Defaults to ``"boxes"``.
        label_keys: the matching label keys. Defaults to ``"box_labels"``.
        allow_missing_keys: skip absent keys. Defaults to False.
    """

    def __init__(self, keys: KeysCollection = "boxes", label_keys: KeysCollection = "box_labels",
                 allow_missing_keys: bool = False) -> None:
        super().__init__(keys, allow_missing_keys)
        self.label_keys = ensure_tuple(label_keys)
        if len(self.label_keys) != len(self.keys):
            raise ValueError(f"give one label key per box key, got keys={self.keys} and label_keys={self.label_keys}")

    def __call__(self, data: Mapping[Hashable, Any]) -> dict[Hashable, Any]:
        d = dict(data)
        for key, label_key in self.key_iterator(d, self.label_keys):
            boxes = torch.as_tensor(np.asarray(d[key], dtype=np.float32).reshape(-1, 4))
            d[key] = xyxy_to_monai(boxes).contiguous()
            d[label_key] = torch.as_tensor(np.asarray(d[label_key], dtype=np.int64).reshape(-1))
        return d


class ResizeWithPadBoxd(MapTransform, InvertibleTransform):
    """Apply to boxes the scale and padding that :class:`~medfuse.transforms.spatial.ResizeWithPadd` applied to
    the reference image (read from its trace), and undo it with :meth:`inverse`.

    Boxes are MONAI order, pixel-edge coordinates; a coordinate ``c`` on axis ``i`` becomes
    ``c * new_i / old_i + pad_before_i`` (MONAI's ``Resize`` without corner alignment maps pixel edges exactly
    so). Run it right after the image's ``ResizeWithPadd`` (the last operation of the reference image must be
    ``ResizeWithPad``). The parameters are also kept in the boxes' own trace (a ``MetaTensor``), so the inverse
    works after the image has been inverted too, and any instance can invert (predicted boxes, which carry no
    trace, are mapped back with the reference image's trace).

    Args:
        box_keys: keys of ``(N, 4)`` MONAI-order boxes.
        ref_key: the letterboxed image. Defaults to ``"image"``.
        allow_missing_keys: skip absent keys. Defaults to False.

    Raises:
        ValueError: when the reference image was not letterboxed by ``ResizeWithPad`` (no trace).

    Examples::

        >>> xf = Compose([ResizeWithPadd("image", 64), ResizeWithPadBoxd("boxes", ref_key="image")])
        >>> out = xf({"image": torch.rand(1, 200, 100), "boxes": torch.tensor([[0.0, 50.0, 200.0, 100.0]])})
        >>> out["boxes"]   # [[0, 48, 64, 64]]: 100 columns -> 32, padded by 16 on the left
        >>> xf.inverse(out)["boxes"]
    """

    def __init__(self, box_keys: KeysCollection, ref_key: str = "image", allow_missing_keys: bool = False) -> None:
        super().__init__(box_keys, allow_missing_keys)
        self.ref_key = ref_key

    def _params(self, ref: Any) -> tuple[list[float], list[float]]:
        ops = getattr(ref, "applied_operations", None) or []
        op = next((o for o in reversed(ops) if o.get(TraceKeys.CLASS_NAME) == "ResizeWithPad"), None)
        if op is None:
            raise ValueError(
                f"ResizeWithPadBoxd: {self.ref_key!r} carries no ResizeWithPad trace; letterbox it with "
                "ResizeWithPadd (meta tracking on) before its boxes"
            )
        orig = [float(s) for s in op[TraceKeys.ORIG_SIZE]]
        pad_info = op[TraceKeys.EXTRA_INFO]["pad_info"]
        resized = [float(s) for s in pad_info[TraceKeys.ORIG_SIZE]]
        padded = pad_info[TraceKeys.EXTRA_INFO]["padded"][1:]  # skip the channel axis
        scale = [r / o for r, o in zip(resized, orig)]
        offset = [float(p[0]) for p in padded]
        return scale, offset

    @staticmethod
    def _apply(boxes: torch.Tensor, scale: Sequence[float], offset: Sequence[float], forward: bool) -> torch.Tensor:
        s = torch.tensor(list(scale) * 2, dtype=torch.float32)
        o = torch.tensor(list(offset) * 2, dtype=torch.float32)
        b = torch.as_tensor(boxes).float().reshape(-1, 4)
        return b * s + o if forward else (b - o) / s

    def __call__(self, data: Mapping[Hashable, Any]) -> dict[Hashable, Any]:
        d = dict(data)
        scale, offset = self._params(d[self.ref_key])
        for key in self.key_iterator(d):
            out = self._apply(d[key], scale, offset, forward=True)
            if get_track_meta():
                out = MetaTensor(out)
                self.push_transform(out, orig_size=(int(out.shape[0]),), extra_info={"scale": scale, "offset": offset})
            d[key] = out
        return d

    def inverse(self, data: Mapping[Hashable, Any]) -> dict[Hashable, Any]:
        """Boxes back in the coordinates of the image before letterboxing."""
        d = dict(data)
        for key in self.key_iterator(d):
            boxes = d[key]
            ops = getattr(boxes, "applied_operations", None)
            if ops and ops[-1].get(TraceKeys.CLASS_NAME) == type(self).__name__:
                # any instance may invert (e.g. a new one for predicted boxes): match by class, not by id
                info = ops.pop()[TraceKeys.EXTRA_INFO]
                scale, offset = info["scale"], info["offset"]
            else:
                scale, offset = self._params(d[self.ref_key])
            d[key] = self._apply(boxes, scale, offset, forward=False)
        return d


BoxesToMonaiD = BoxesToMonaiDict = BoxesToMonaid
ResizeWithPadBoxD = ResizeWithPadBoxDict = ResizeWithPadBoxd


# ----------------------------------------------------------------------------------------------------------
# presets


def _check(image_size: int, in_channels: int) -> None:
    if isinstance(image_size, bool) or not isinstance(image_size, int) or image_size < 1:
        raise ValueError(f"image_size must be a positive int, got {image_size!r}")
    if in_channels not in (1, 3):
        raise ValueError(f"in_channels must be 1 (gray) or 3 (gray repeated), got {in_channels!r}")


def _load(image_key, box_key, label_key, image_size, percentiles, apply_voi) -> list:
    xforms: list = [LoadXrayd(image_key, apply_voi=apply_voi), BoxesToMonaid(box_key, label_key)]
    if percentiles is not None:
        xforms.append(IntensityNormalized(image_key, percentiles=percentiles))
    xforms += [ResizeWithPadd(image_key, size=image_size), ResizeWithPadBoxd(box_key, ref_key=image_key)]
    return xforms


def _finish(image_key, box_key, label_key, in_channels, mean, std) -> list:
    xforms: list = []
    if in_channels == 3:
        xforms.append(RepeatChanneld(image_key, repeats=3))
    if mean is not None or std is not None:
        xforms.append(IntensityNormalized(image_key, percentiles=None, mean=mean, std=std))
    xforms += [EnsureTyped([image_key, box_key], dtype=torch.float32), EnsureTyped(label_key, dtype=torch.int64)]
    return xforms


def detection_train_transforms(
    image_key: str = "image",
    box_key: str = "boxes",
    label_key: str = "box_labels",
    image_size: int = 512,
    in_channels: int = 1,
    rotate_degrees: float = 10.0,
    scale_range: float = 0.1,
    translate_fraction: float = 0.05,
    affine_prob: float = 0.5,
    intensity_prob: float = 0.3,
    noise_prob: float = 0.2,
    noise_std: float = 0.02,
    percentiles: tuple[float, float] | None = (0.5, 99.5),
    apply_voi: bool = False,
    mean: float | Sequence[float] | None = None,
    std: float | Sequence[float] | None = None,
) -> Compose:
    """Training pipeline for chest X-ray detection manifests (DICOM, PNG/JPEG).

    Maps ``{"image": path, "boxes": [[x_min, y_min, x_max, y_max], ...], "box_labels": [...]}`` to
    ``{"image": float32 (C, size, size), "boxes": float32 (N, 4) MONAI order, "box_labels": int64 (N,)}``:
    load -> percentile normalisation -> letterbox image and boxes -> boxes drawn into a mask
    (``BoxToMaskd``) -> random affine of image and mask together (rotation, zoom, shift; nearest for the
    mask) -> boxes read back (``MaskToBoxd``; a box pushed out of the image disappears with its label) ->
    gamma / contrast / brightness changes and Gaussian noise -> clip to [0, 1]. No flips.

    Args:
        image_key, box_key, label_key: item keys. Defaults ``"image"``, ``"boxes"``, ``"box_labels"``.
        image_size: output side (letterboxed, aspect kept). Defaults to 512.
        in_channels: 1 or 3 (gray repeated). Defaults to 1.
        rotate_degrees: rotation range +/- degrees. Defaults to 10.
        scale_range: zoom +/- fraction per axis. Defaults to 0.1.
        translate_fraction: shift +/- fraction of ``image_size``. Defaults to 0.05.
        affine_prob: probability of the affine. Defaults to 0.5.
        intensity_prob: probability of each intensity change. Defaults to 0.3.
        noise_prob, noise_std: additive Gaussian noise. Defaults 0.2, 0.02.
        percentiles: percentile normalisation; None to skip. Defaults to (0.5, 99.5).
        apply_voi: DICOM window / VOI LUT on loading. Defaults to False.
        mean, std: subtract / divide at the end. Defaults to None.

    Returns:
        ``monai.transforms.Compose``; ``set_random_state(seed)`` makes it deterministic.

    Raises:
        ValueError: invalid arguments.
    """
    from medfuse.transforms.presets import _intensity_augment

    _check(image_size, in_channels)
    mask_key = f"{box_key}_mask"
    xforms = _load(image_key, box_key, label_key, image_size, percentiles, apply_voi)
    xforms += [
        BoxToMaskd(box_key, mask_key, label_key, box_ref_image_keys=image_key, min_fg_label=0, ellipse_mask=False),
        RandAffined(
            [image_key, mask_key],
            prob=affine_prob,
            rotate_range=np.deg2rad(rotate_degrees),
            scale_range=(scale_range, scale_range),
            translate_range=(translate_fraction * image_size, translate_fraction * image_size),
            mode=["bilinear", "nearest"],
            padding_mode="zeros",
            spatial_size=(image_size, image_size),
        ),
        MaskToBoxd(box_key, mask_key, label_key, min_fg_label=0),
        DeleteItemsd(mask_key),
    ]
    xforms += _intensity_augment([image_key], intensity_prob)
    xforms.append(RandGaussianNoised(image_key, prob=noise_prob, std=noise_std))
    xforms.append(ScaleIntensityRanged(image_key, a_min=0.0, a_max=1.0, b_min=0.0, b_max=1.0, clip=True))
    return Compose(xforms + _finish(image_key, box_key, label_key, in_channels, mean, std))


def detection_eval_transforms(
    image_key: str = "image",
    box_key: str = "boxes",
    label_key: str = "box_labels",
    image_size: int = 512,
    in_channels: int = 1,
    percentiles: tuple[float, float] | None = (0.5, 99.5),
    apply_voi: bool = False,
    mean: float | Sequence[float] | None = None,
    std: float | Sequence[float] | None = None,
) -> Compose:
    """Deterministic evaluation pipeline (arguments as :func:`detection_train_transforms`); invertible, so
    ``Compose.inverse`` (or ``ResizeWithPadBoxd.inverse``) maps predicted boxes back onto the stored image.

    Raises:
        ValueError: invalid arguments.
    """
    _check(image_size, in_channels)
    xforms = _load(image_key, box_key, label_key, image_size, percentiles, apply_voi)
    return Compose(xforms + _finish(image_key, box_key, label_key, in_channels, mean, std))
