# Copyright (c) medfuse contributors
# Licensed under the Apache License, Version 2.0
"""Aspect-preserving resize with padding (letterboxing) to a square or target size.

Chest X-rays and OCT B-scans are not square; stretching them to 224x224 distorts anatomy
(heart size, retinal layer thickness). :class:`ResizeWithPad` scales the image so that it
fits the target (the longest side becomes ``size`` for a square target), then pads the other
side symmetrically with a constant. It is built from MONAI's ``Resize`` and ``SpatialPad``,
so the MetaTensor affine is updated and the operation is invertible (``Invertd`` maps a
predicted mask or CAM back onto the original image).
"""

from __future__ import annotations

from collections.abc import Hashable, Mapping, Sequence
from typing import Any

import numpy as np
import torch
from monai.config import KeysCollection
from monai.data import MetaTensor
from monai.data.meta_obj import get_track_meta
from monai.transforms import MapTransform, Resize, SpatialPad
from monai.transforms.inverse import InvertibleTransform
from monai.utils import TraceKeys, ensure_tuple_rep

__all__ = ["ResizeWithPad", "ResizeWithPadd", "ResizeWithPadD", "ResizeWithPadDict", "fit_size", "FillMissingMaskd"]

_NEAREST = ("nearest", "nearest-exact")


def _target(size: int | Sequence[int]) -> tuple[int, int]:
    if isinstance(size, bool):
        raise ValueError(f"size must be a positive int or a pair of positive ints, got {size!r}")
    target = (int(size), int(size)) if isinstance(size, int) else tuple(int(s) for s in size)
    if len(target) != 2 or min(target) < 1:
        raise ValueError(f"size must be a positive int or a pair of positive ints, got {size!r}")
    return target  # type: ignore[return-value]


def fit_size(shape: Sequence[int], size: int | Sequence[int]) -> tuple[int, int]:
    """The ``(h, w)`` that an image of spatial ``shape`` is resized to so that it fits ``size`` with its aspect kept.

    Example: ``fit_size((100, 50), 224) == (224, 112)``.
    """
    target = _target(size)
    if len(shape) != 2 or min(shape) < 1:
        raise ValueError(f"expected a 2D spatial shape, got {tuple(shape)}")
    scale = min(t / s for t, s in zip(target, shape))
    return tuple(max(1, min(t, int(round(s * scale)))) for s, t in zip(shape, target))  # type: ignore[return-value]


class ResizeWithPad(InvertibleTransform):
    """Resize a channel-first 2D image to fit ``size`` with its aspect ratio kept, then pad symmetrically.

    For a square target the longest side becomes ``size``; a 100x50 image with ``size=224``
    becomes 224x112 and is padded with 56 columns of ``pad_value`` on each side.

    Args:
        size: target ``int`` (square) or ``(H, W)``.
        mode: ``"auto"`` (default): ``"area"`` when shrinking (a box filter, so a 2000-pixel
            radiograph does not alias at 224, and fast) and ``"bilinear"`` when enlarging;
            or any MONAI ``Resize`` mode: ``"bilinear"``, ``"area"``, ``"bicubic"``,
            ``"nearest"``, ``"nearest-exact"``. Use ``"nearest"`` for masks.
        pad_value: constant for the padded border. Default 0.
        align_corners: as ``torch.nn.functional.interpolate``.
        anti_aliasing: MONAI's Gaussian smoothing before downsampling (ignored for nearest
            modes); useful with ``"bilinear"``/``"bicubic"``, slow on full-size radiographs
            (about 0.5 s for 2000x2000 on one CPU thread). Default False.
        dtype: output dtype. Default ``torch.float32``.

    Raises:
        ValueError: ``size`` is not positive, or the input is not ``(C, H, W)``.

    Examples::

        out = ResizeWithPad(224)(torch.rand(1, 100, 50))   # (1, 224, 224), content in columns 56..167
    """

    backend = Resize.backend

    def __init__(
        self,
        size: int | Sequence[int],
        mode: str = "auto",
        pad_value: float = 0.0,
        align_corners: bool | None = None,
        anti_aliasing: bool = False,
        dtype: torch.dtype = torch.float32,
    ) -> None:
        self.size = _target(size)
        self.mode = mode
        self.pad_value = float(pad_value)
        self.align_corners = align_corners
        self.anti_aliasing = anti_aliasing
        self.dtype = dtype

    def __call__(
        self,
        img: torch.Tensor,
        mode: str | None = None,
        align_corners: bool | None = None,
        anti_aliasing: bool | None = None,
    ) -> torch.Tensor:
        """
        Args:
            img: ``(C, H, W)`` tensor or array.
            mode, align_corners, anti_aliasing: override the constructor's values for this call.

        Returns:
            ``(C, size_h, size_w)`` tensor (a ``MetaTensor`` when meta tracking is on).
        """
        if len(img.shape) != 3:
            raise ValueError(f"ResizeWithPad expects a channel-first 2D image (C, H, W), got shape {tuple(img.shape)}")
        mode = self.mode if mode is None else mode
        align = self.align_corners if align_corners is None else align_corners
        aa = self.anti_aliasing if anti_aliasing is None else anti_aliasing
        aa = bool(aa) and mode not in _NEAREST
        new_size = fit_size(tuple(img.shape[1:]), self.size)
        if mode == "auto":
            mode = "area" if new_size[0] < img.shape[1] else "bilinear"
        resizer = Resize(new_size, mode=mode, align_corners=align, anti_aliasing=aa, dtype=self.dtype)
        padder = SpatialPad(self.size, method="symmetric", mode="constant", value=self.pad_value)
        out = padder(resizer(img))
        if get_track_meta() and isinstance(out, MetaTensor):
            pad_info = out.applied_operations.pop()
            resize_info = out.applied_operations.pop()
            self.push_transform(
                out,
                orig_size=resize_info.get(TraceKeys.ORIG_SIZE),
                extra_info={"pad_info": pad_info, "resize_info": resize_info},
            )
        return out

    def inverse(self, data: torch.Tensor) -> torch.Tensor:
        """Undo the padding and the resize (back to the original spatial size)."""
        transform = self.pop_transform(data)
        return self.inverse_transform(data, transform)

    def inverse_transform(self, data: MetaTensor, transform: Mapping) -> MetaTensor:
        extra = dict(transform[TraceKeys.EXTRA_INFO])
        resize_info, pad_info = dict(extra["resize_info"]), dict(extra["pad_info"])
        # the inner transforms were created per call: skip their identity checks
        resize_info[TraceKeys.ID] = TraceKeys.NONE
        pad_info[TraceKeys.ID] = TraceKeys.NONE
        data.applied_operations.append(resize_info)
        data.applied_operations.append(pad_info)
        unpadded = SpatialPad(self.size).inverse(data)
        orig = tuple(int(s) for s in resize_info[TraceKeys.ORIG_SIZE])
        return Resize(orig, dtype=self.dtype).inverse(unpadded)


class ResizeWithPadd(MapTransform, InvertibleTransform):
    """Dictionary version of :class:`ResizeWithPad`, with a ``mode`` per key (``"nearest"`` for masks).

    Args:
        keys: keys to resize (e.g. ``("image", "mask")``).
        size: target ``int`` or ``(H, W)``.
        mode: one mode or one per key, e.g. ``("auto", "nearest")``. Default ``"auto"``
            (area when shrinking, bilinear when enlarging).
        pad_value: one constant or one per key. Default 0.
        align_corners: one value or one per key.
        anti_aliasing: one value or one per key (always off for nearest modes). Default False.
        dtype: output dtype. Default ``torch.float32``.
        allow_missing_keys: skip absent keys.

    Raises:
        ValueError: see :class:`ResizeWithPad`.
    """

    backend = ResizeWithPad.backend

    def __init__(
        self,
        keys: KeysCollection,
        size: int | Sequence[int],
        mode: str | Sequence[str] = "auto",
        pad_value: float | Sequence[float] = 0.0,
        align_corners: bool | None | Sequence[bool | None] = None,
        anti_aliasing: bool | Sequence[bool] = False,
        dtype: torch.dtype = torch.float32,
        allow_missing_keys: bool = False,
    ) -> None:
        super().__init__(keys, allow_missing_keys)
        n = len(self.keys)
        self.mode = ensure_tuple_rep(mode, n)
        self.pad_value = ensure_tuple_rep(pad_value, n)
        self.align_corners = ensure_tuple_rep(align_corners, n)
        self.anti_aliasing = ensure_tuple_rep(anti_aliasing, n)
        self.resizers = [ResizeWithPad(size, mode=m, pad_value=p, dtype=dtype) for m, p in zip(self.mode, self.pad_value)]

    def __call__(self, data: Mapping[Hashable, Any]) -> dict[Hashable, Any]:
        d = dict(data)
        for key, resizer, align, aa in self.key_iterator(d, self.resizers, self.align_corners, self.anti_aliasing):
            d[key] = resizer(d[key], align_corners=align, anti_aliasing=aa)
        return d

    def inverse(self, data: Mapping[Hashable, Any]) -> dict[Hashable, Any]:
        d = dict(data)
        for key, resizer in self.key_iterator(d, self.resizers):
            d[key] = resizer.inverse(d[key])
        return d


ResizeWithPadD = ResizeWithPadDict = ResizeWithPadd


class FillMissingMaskd(MapTransform):
    """Give items without a mask an all-zero one shaped like the image, and record ``has_mask``.

    Args:
        keys: the mask key (one).
        ref_key: the image key whose spatial shape the placeholder takes. Defaults to ``"image"``.
        flag_key: where ``1`` (real mask) or ``0`` (placeholder) is written. Defaults to ``"has_mask"``.
    """

    def __init__(self, keys: KeysCollection = "mask", ref_key: str = "image", flag_key: str = "has_mask") -> None:
        super().__init__(keys, allow_missing_keys=True)
        self.ref_key = ref_key
        self.flag_key = flag_key

    def __call__(self, data: Mapping[Hashable, Any]) -> dict:
        d = dict(data)
        for key in self.keys:
            present = key in d and d[key] is not None and not isinstance(d[key], str)
            if not present:
                ref = d[self.ref_key]
                d[key] = torch.zeros_like(ref[:1]) if isinstance(ref, torch.Tensor) else np.zeros_like(ref[:1])
            d[self.flag_key] = int(present)
        return d
