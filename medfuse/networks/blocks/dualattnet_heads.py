# Copyright (c) medfuse contributors
# Licensed under the Apache License, Version 2.0
"""DualAttNet's attention heads: image-level attention (ILA), fine-grained disease attention (FGDA) and the
per-level head that turns a pyramid level and the detector's class map into image-level logits.

Everything is written for 2-D feature maps ``(B, C, H, W)`` and computed for all images and classes at once
(no loop over batch or class).
"""

from __future__ import annotations

from typing import List

import torch
import torch.nn as nn
import torch.nn.functional as F

__all__ = [
    "ATTENTION_REDUCTIONS",
    "DualAttentionHead",
    "ImageLevelAttention",
    "fine_grained_disease_attention",
]

#: Values of ``DualAttentionHead(reduce=...)``: how a per-class map becomes one logit.
ATTENTION_REDUCTIONS = ("sum", "mean", "max")


def _check_positive(name: str, value: int) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ValueError(f"{name} must be a positive int, got {value!r}.")


class ImageLevelAttention(nn.Module):
    """Image-level attention (ILA): Xu & Duan, "DualAttNet: Synergistic fusion of image-level and fine-grained
    disease attention for multi-label lesion detection in chest X-rays", Comput Biol Med 168:107742, 2024.

    ``ReLU(BN(conv1x1(C -> K)(f))) * sigmoid(conv1x1(C/r -> K)(ReLU(conv1x1(C -> C/r)(avgpool(f)))))``: a
    per-class response map gated, per image and class, by a squeeze-excitation vector.

    Stable submodule names: ``class_conv`` (1x1, C -> K), ``norm`` (BatchNorm), ``pool`` (global average),
    ``squeeze`` (1x1, C -> C/r), ``excite`` (1x1, C/r -> K), ``gate`` (sigmoid, whose output is the class gate).

    Args:
        in_channels: channels C of the feature map.
        num_classes: number of lesion classes K.
        reduction: squeeze ratio r; the hidden width is ``max(1, in_channels // reduction)``. Defaults to 16.

    Raises:
        ValueError: when a size is not a positive int.

    Examples::

        >>> ila = ImageLevelAttention(in_channels=64, num_classes=3)
        >>> ila(torch.randn(2, 64, 16, 16)).shape
        torch.Size([2, 3, 16, 16])
    """

    def __init__(self, in_channels: int, num_classes: int, reduction: int = 16) -> None:
        super().__init__()
        _check_positive("in_channels", in_channels)
        _check_positive("num_classes", num_classes)
        _check_positive("reduction", reduction)
        hidden = max(1, in_channels // reduction)
        self.class_conv = nn.Conv2d(in_channels, num_classes, kernel_size=1)
        self.norm = nn.BatchNorm2d(num_classes)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.squeeze = nn.Conv2d(in_channels, hidden, kernel_size=1)
        self.excite = nn.Conv2d(hidden, num_classes, kernel_size=1)
        self.gate = nn.Sigmoid()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """
        Args:
            x: ``(B, C, H, W)``.

        Returns:
            ``(B, K, H, W)``, non-negative.
        """
        response = F.relu(self.norm(self.class_conv(x)))
        weights = self.gate(self.excite(F.relu(self.squeeze(self.pool(x)))))  # (B, K, 1, 1)
        return response * weights


def fine_grained_disease_attention(cls_logits: torch.Tensor, num_anchors: int, size: List[int]) -> torch.Tensor:
    """Fine-grained disease attention (FGDA) of DualAttNet (Xu & Duan, Comput Biol Med 2024): each class's
    spatial distribution, read from the detector's classification map.

    ``sigmoid(cls_logits).view(B, A, K, h, w).amax(1)`` (MONAI's RetinaNet channel order: anchor-major), resized
    to ``size`` (bilinear, skipped when the size already matches) and divided by its sum over H, W, so each
    ``(image, class)`` map sums to 1. MONAI's heads give logits, hence the sigmoid before normalising.

    Args:
        cls_logits: ``(B, A * K, h, w)`` classification logits of one pyramid level.
        num_anchors: anchors per location A.
        size: ``[H, W]`` of the output.

    Returns:
        ``(B, K, H, W)``, non-negative, summing to 1 over H, W.

    Raises:
        ValueError: when the channels are not a multiple of ``num_anchors``.

    Examples::

        >>> fgda = fine_grained_disease_attention(torch.randn(2, 3 * 4, 8, 8), num_anchors=3, size=[8, 8])
        >>> fgda.shape, fgda.sum((2, 3))  # (2, 4, 8, 8), all ones
    """
    b, c, h, w = cls_logits.shape
    if num_anchors < 1 or c % num_anchors != 0:
        raise ValueError(f"cls_logits has {c} channels, not a multiple of num_anchors={num_anchors}.")
    k = c // num_anchors
    probs = torch.sigmoid(cls_logits).view(b, num_anchors, k, h, w).amax(1)
    if h != size[0] or w != size[1]:
        probs = F.interpolate(probs, size=[int(size[0]), int(size[1])], mode="bilinear", align_corners=False)
    return probs / probs.sum(dim=(2, 3), keepdim=True).clamp_min(1e-12)


class DualAttentionHead(nn.Module):
    """One pyramid level of DualAttNet (Xu & Duan, Comput Biol Med 168:107742, 2024): image-level class logits
    from the level's features and the detector's classification map.

    ``reduce_HW(conv1x1(C -> K, bias=False)(f) * FGDA(cls_logits) + ILA(f))`` -> ``(B, K)``, with FGDA from
    :func:`fine_grained_disease_attention` and ILA from :class:`ImageLevelAttention`. ``reduce`` is ``"sum"``
    (FGDA sums to 1, so the first term is an attention-weighted average of the class responses), ``"mean"`` or
    ``"max"`` over the spatial positions.

    Stable submodule names: ``class_conv`` (1x1, C -> K, no bias), ``ila`` (:class:`ImageLevelAttention`).

    Args:
        in_channels: channels C of the level.
        num_classes: number of lesion classes K.
        num_anchors: anchors per location A of the detector's classification head.
        reduction: ILA squeeze ratio. Defaults to 16.
        reduce: ``"sum"``, ``"mean"`` or ``"max"``. Defaults to ``"sum"``.
        detach_cls: detach the classification map before FGDA, so the image-level loss does not train the
            detector's class head through it. Defaults to False.

    Raises:
        ValueError: an unknown ``reduce`` or a non-positive size.

    Examples::

        >>> head = DualAttentionHead(in_channels=64, num_classes=4, num_anchors=3)
        >>> head(torch.randn(2, 64, 16, 16), torch.randn(2, 12, 16, 16)).shape
        torch.Size([2, 4])
    """

    __constants__ = ["num_anchors", "reduce", "detach_cls"]

    def __init__(
        self,
        in_channels: int,
        num_classes: int,
        num_anchors: int,
        reduction: int = 16,
        reduce: str = "sum",
        detach_cls: bool = False,
    ) -> None:
        super().__init__()
        _check_positive("num_anchors", num_anchors)
        if reduce not in ATTENTION_REDUCTIONS:
            raise ValueError(f"reduce must be one of {list(ATTENTION_REDUCTIONS)}, got {reduce!r}.")
        self.ila = ImageLevelAttention(in_channels, num_classes, reduction)
        self.class_conv = nn.Conv2d(in_channels, num_classes, kernel_size=1, bias=False)
        self.num_classes = int(num_classes)
        self.num_anchors = int(num_anchors)
        self.reduce = str(reduce)
        self.detach_cls = bool(detach_cls)

    def attention_map(self, x: torch.Tensor, cls_logits: torch.Tensor) -> torch.Tensor:
        """The per-class map before the spatial reduction, ``(B, K, H, W)`` (for display)."""
        if self.detach_cls:
            cls_logits = cls_logits.detach()
        fgda = fine_grained_disease_attention(cls_logits, self.num_anchors, [int(x.shape[2]), int(x.shape[3])])
        return self.class_conv(x) * fgda + self.ila(x)

    def forward(self, x: torch.Tensor, cls_logits: torch.Tensor) -> torch.Tensor:
        """
        Args:
            x: ``(B, C, H, W)`` features of the level.
            cls_logits: ``(B, A * K, h, w)`` the detector's classification logits of the same level.

        Returns:
            ``(B, K)`` image-level logits of the level.
        """
        maps = self.attention_map(x, cls_logits)
        if self.reduce == "mean":
            return maps.mean(dim=(2, 3))
        if self.reduce == "max":
            return maps.amax(dim=(2, 3))
        return maps.sum(dim=(2, 3))
