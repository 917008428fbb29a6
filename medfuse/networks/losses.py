# Copyright (c) medfuse contributors
# Licensed under the Apache License, Version 2.0
"""Losses for networks with several outputs, and for global spatial attention.

:class:`MultiOutputLoss` trains :class:`~medfuse.networks.nets.MultiOutputUNet`: Dice + cross-entropy on the
segmentation (MONAI ``DiceCELoss``) plus weighted cross-entropy on the diagnosis, each term computed only on the
items that carry its target, so that a batch may mix images with a mask but no label and images with a label but
no mask.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any, Optional, Union

import torch
import torch.nn as nn
import torch.nn.functional as F
from monai.losses import DiceCELoss

from medfuse.networks.blocks.global_spatial_attention import GlobalSpatialAttention

__all__ = ["MultiOutputLoss", "MISSING_LABEL"]
__all__ += ["GlobalSpatialAttentionLoss"]

#: Class label meaning "this item has no diagnosis label".
MISSING_LABEL = -1


def _split_pred(pred: Any) -> tuple[torch.Tensor, torch.Tensor]:
    if isinstance(pred, Mapping):
        return pred["seg"], pred["cls"]
    if isinstance(pred, (tuple, list)) and len(pred) == 2:
        return pred[0], pred[1]
    raise ValueError(
        "MultiOutputLoss expects the network output (seg_logits, class_logits) or {'seg': ..., 'cls': ...}, "
        f"got {type(pred).__name__}"
    )


class MultiOutputLoss(nn.Module):
    """``seg_weight * DiceCE(seg) + cls_weight * CE(cls)``, each over the items that have that target.

    Targets are a mapping with

    * ``"mask"``: ``(B, 1, *spatial)`` integer label map (0 = background) or ``(B, C, *spatial)`` one-hot;
    * ``"has_mask"``: ``(B,)`` bool/0-1, False for items whose mask is a placeholder; when absent every item is
      taken to have a mask;
    * ``"label"``: ``(B,)`` class index, :data:`MISSING_LABEL` (-1) for items without a diagnosis label.

    The segmentation term is MONAI's ``DiceCELoss`` (softmax, one-hot targets, per-image Dice averaged over the
    foreground classes, or all classes with ``include_background``) on the items with a mask; the
    classification term is ``torch.nn.functional.cross_entropy`` with optional class weights and label
    smoothing on the items with a label (the weighted mean over those items, as ``CrossEntropyLoss`` with
    ``ignore_index`` computes it). A term with no eligible item in the batch contributes 0 and keeps the graph
    connected (its gradient is 0). ``cls_weight=0`` trains the segmentation alone (the comparison setting).

    After each call, :attr:`last` holds the detached parts: ``seg``, ``cls`` (``nan`` when no item was
    eligible), ``n_seg``, ``n_cls``.

    Args:
        seg_weight: weight of the segmentation term (>= 0). Defaults to 1.0.
        cls_weight: weight of the classification term (>= 0). Defaults to 1.0.
        dice_weight: weight of Dice inside the segmentation term (MONAI ``lambda_dice``). Defaults to 1.0.
        ce_weight: weight of the pixel cross-entropy inside the segmentation term (``lambda_ce``). Defaults to 1.0.
        class_weights: diagnosis class weights ``(num_classes,)`` (e.g. inverse frequency), or None.
        label_smoothing: of the diagnosis cross-entropy. Defaults to 0.0.
        include_background: Dice over the background too. Defaults to False.

    Raises:
        ValueError: negative or all-zero weights, on bad targets (see :meth:`forward`).

    Examples::

        >>> loss = MultiOutputLoss(cls_weight=0.5)
        >>> seg, cls = net(images)
        >>> value = loss((seg, cls), {"mask": masks, "label": torch.tensor([1, -1]), "has_mask": torch.tensor([0, 1])})
    """

    def __init__(
        self,
        seg_weight: float = 1.0,
        cls_weight: float = 1.0,
        dice_weight: float = 1.0,
        ce_weight: float = 1.0,
        class_weights: Optional[Union[torch.Tensor, Sequence[float]]] = None,
        label_smoothing: float = 0.0,
        include_background: bool = False,
    ) -> None:
        super().__init__()
        for name, v in (("seg_weight", seg_weight), ("cls_weight", cls_weight), ("dice_weight", dice_weight),
                        ("ce_weight", ce_weight)):
            if float(v) < 0:
                raise ValueError(f"{name} must be >= 0, got {v}")
        if float(seg_weight) == 0 and float(cls_weight) == 0:
            raise ValueError("seg_weight and cls_weight are both 0: nothing would be trained")
        if not 0.0 <= float(label_smoothing) < 1.0:
            raise ValueError(f"label_smoothing must be in [0, 1), got {label_smoothing}")
        self.seg_weight = float(seg_weight)
        self.cls_weight = float(cls_weight)
        self.label_smoothing = float(label_smoothing)
        self.seg_loss = DiceCELoss(
            include_background=bool(include_background), to_onehot_y=True, softmax=True,
            lambda_dice=float(dice_weight), lambda_ce=float(ce_weight),
        )
        self.seg_loss_onehot = DiceCELoss(
            include_background=bool(include_background), to_onehot_y=False, softmax=True,
            lambda_dice=float(dice_weight), lambda_ce=float(ce_weight),
        )
        if class_weights is not None:
            class_weights = torch.as_tensor(class_weights, dtype=torch.float32).reshape(-1)
        self.register_buffer("class_weights", class_weights, persistent=False)
        self.last: dict[str, float] = {}

    def _seg_term(self, seg: torch.Tensor, mask: torch.Tensor, has_mask: torch.Tensor) -> tuple[torch.Tensor, int]:
        idx = torch.nonzero(has_mask, as_tuple=False).reshape(-1)
        if idx.numel() == 0:
            return seg.sum() * 0.0, 0
        s, m = seg.index_select(0, idx), mask.index_select(0, idx)
        if m.shape[1] == 1:
            if m.is_floating_point() and bool(((m != m.round())).any()):
                raise ValueError("the segmentation target must hold integer class indices (threshold soft masks first)")
            if bool((m < 0).any()) or bool((m >= seg.shape[1]).any()):
                raise ValueError(
                    f"the segmentation target holds values outside 0..{seg.shape[1] - 1} (the network has "
                    f"{seg.shape[1]} output channels, background included)"
                )
            return self.seg_loss(s, m.float()), int(idx.numel())
        if m.shape[1] != seg.shape[1]:
            raise ValueError(f"a one-hot mask needs {seg.shape[1]} channels, got {m.shape[1]}")
        return self.seg_loss_onehot(s, m.float()), int(idx.numel())

    def _cls_term(self, cls: torch.Tensor, label: torch.Tensor) -> tuple[torch.Tensor, int]:
        label = label.reshape(-1).long().to(cls.device)
        if label.numel() != cls.shape[0]:
            raise ValueError(f"{label.numel()} labels for a batch of {cls.shape[0]}")
        keep = label != MISSING_LABEL
        if bool((label[keep] < 0).any()) or bool((label[keep] >= cls.shape[1]).any()):
            raise ValueError(f"labels must be in 0..{cls.shape[1] - 1} or {MISSING_LABEL} (missing), got {label.tolist()}")
        n = int(keep.sum())
        if n == 0:
            return cls.sum() * 0.0, 0
        weight = self.class_weights.to(cls.device) if self.class_weights is not None else None
        if weight is not None and weight.numel() != cls.shape[1]:
            raise ValueError(f"class_weights has {weight.numel()} values but the network has {cls.shape[1]} classes")
        value = F.cross_entropy(cls[keep], label[keep], weight=weight, label_smoothing=self.label_smoothing)
        return value, n

    def forward(self, pred: Any, target: Mapping[str, torch.Tensor]) -> torch.Tensor:
        """The weighted sum of the two terms (a scalar tensor).

        Args:
            pred: ``(seg_logits (B, C, *spatial), class_logits (B, K))`` or ``{"seg": ..., "cls": ...}``.
            target: ``{"mask": ..., "has_mask": ..., "label": ...}`` (see the class docstring); ``mask`` may be
                left out when ``has_mask`` is all False or ``seg_weight`` is 0, ``label`` when ``cls_weight`` is 0.

        Raises:
            ValueError: a target that does not fit the outputs (shape, range, missing key).
        """
        seg, cls = _split_pred(pred)
        if not isinstance(target, Mapping):
            raise ValueError(f"MultiOutputLoss expects targets as a mapping with 'mask' and 'label', got {type(target).__name__}")
        batch = seg.shape[0]
        total = seg.sum() * 0.0 + cls.sum() * 0.0
        seg_v, n_seg = torch.tensor(float("nan")), 0
        cls_v, n_cls = torch.tensor(float("nan")), 0
        if self.seg_weight > 0:
            has_mask = target.get("has_mask")
            has_mask = torch.ones(batch, dtype=torch.bool) if has_mask is None else torch.as_tensor(has_mask).reshape(-1).bool()
            if has_mask.numel() != batch:
                raise ValueError(f"has_mask has {has_mask.numel()} values for a batch of {batch}")
            if bool(has_mask.any()):
                mask = target.get("mask")
                if mask is None:
                    raise ValueError("items are marked has_mask but the target has no 'mask'")
                mask = torch.as_tensor(mask).to(seg.device)
                if mask.shape[0] != batch or tuple(mask.shape[2:]) != tuple(seg.shape[2:]):
                    raise ValueError(f"mask shape {tuple(mask.shape)} does not fit segmentation output {tuple(seg.shape)}")
                seg_v, n_seg = self._seg_term(seg, mask, has_mask.to(seg.device))
                total = total + self.seg_weight * seg_v
        if self.cls_weight > 0:
            label = target.get("label")
            if label is None:
                raise ValueError("cls_weight > 0 but the target has no 'label' (use -1 for items without one)")
            cls_v, n_cls = self._cls_term(cls, torch.as_tensor(label))
            total = total + self.cls_weight * cls_v
        self.last = {
            "seg": float(seg_v.detach()) if n_seg else float("nan"),
            "cls": float(cls_v.detach()) if n_cls else float("nan"),
            "n_seg": n_seg,
            "n_cls": n_cls,
        }
        return total


# ---------------------------------------------------------------------------------------------------------------
# DIFM (Noh, Jeon & Park, 2025): Dice + cross-entropy + multi-scale boundary loss
# ---------------------------------------------------------------------------------------------------------------
__all__ += ["MultiScaleBoundaryLoss", "DIFMLoss"]

_REDUCTIONS = ("mean", "sum", "none")


def _onehot_target(target: torch.Tensor, num_classes: int) -> torch.Tensor:
    """``(B, 1, H, W)`` class indices or ``(B, C, H, W)`` one-hot -> float one-hot ``(B, C, H, W)``."""
    from monai.networks.utils import one_hot

    if target.shape[1] == num_classes and num_classes > 1:
        return target.float()
    if target.shape[1] != 1:
        raise ValueError(
            f"the target must be (B, 1, H, W) class indices or (B, {num_classes}, H, W) one-hot, "
            f"got {tuple(target.shape)}"
        )
    if target.is_floating_point() and bool((target != target.round()).any()):
        raise ValueError("the segmentation target must hold integer class indices (threshold soft masks first)")
    if bool((target < 0).any()) or bool((target >= num_classes).any()):
        found = sorted({int(v) for v in torch.unique(target).tolist()})
        raise ValueError(
            f"the target holds values {found} outside 0..{num_classes - 1} (the network has {num_classes} output "
            "channels, background included); remap the labels or change out_channels"
        )
    return one_hot(target.long(), num_classes=num_classes, dim=1).float()


class MultiScaleBoundaryLoss(nn.Module):
    """DIFM's multi-scale boundary loss: Noh, Jeon & Park, Pattern Recognit. Lett. 197, 2025.

    ``sum_s mean |G(avgpool_s(p)) - G(avgpool_s(y))|`` over the scales ``s`` (default 1, 2, 4), where ``p`` is
    the softmax of the logits, ``y`` the one-hot target, ``avgpool_s`` ``avg_pool2d(kernel=s, stride=s)`` (none
    for ``s = 1``) and ``G`` the Sobel gradient magnitude of each channel, ``sqrt(gx**2 + gy**2 + 1e-8)`` with the
    fixed 3x3 kernels ``[[-1, 0, 1], [-2, 0, 2], [-1, 0, 1]]`` (and its transpose), replicate padding, no
    normalisation (a unit step gives 4). Edges of the prediction are pulled onto the target's edges at three
    resolutions; on its own it does not fix which class is where (pair it with Dice / cross-entropy).

    Args:
        scales: pooling factors (positive ints). Defaults to ``(1, 2, 4)``.
        include_background: include channel 0 (the background). Defaults to False.
        reduction: ``"mean"`` (a scalar), ``"sum"`` (the sum over elements instead of the mean, per scale, summed),
            ``"none"`` (``(B,)``: per image, mean over channels and pixels, summed over scales). Defaults to
            ``"mean"``.

    Raises:
        ValueError: bad ``scales`` / ``reduction``; in ``forward``, input that is not ``(B, C, H, W)`` (e.g. 5-D),
            a target that does not fit it, an image smaller than the largest scale.

    Examples::

        >>> loss = MultiScaleBoundaryLoss(scales=(1, 2, 4))
        >>> value = loss(torch.randn(2, 4, 64, 64), torch.randint(0, 4, (2, 1, 64, 64)))
    """

    def __init__(
        self, scales: Sequence[int] = (1, 2, 4), include_background: bool = False, reduction: str = "mean"
    ) -> None:
        super().__init__()
        scales = tuple(scales)
        if not scales or any(isinstance(s, bool) or not isinstance(s, int) or s < 1 for s in scales):
            raise ValueError(f"scales must be positive ints, e.g. (1, 2, 4), got {scales!r}")
        if reduction not in _REDUCTIONS:
            raise ValueError(f"reduction must be one of {_REDUCTIONS}, got {reduction!r}")
        self.scales = scales
        self.include_background = bool(include_background)
        self.reduction = reduction
        kx = torch.tensor([[-1.0, 0.0, 1.0], [-2.0, 0.0, 2.0], [-1.0, 0.0, 1.0]])
        self.register_buffer("sobel", torch.stack([kx, kx.t()])[:, None], persistent=False)  # (2, 1, 3, 3)

    def gradient_magnitude(self, x: torch.Tensor) -> torch.Tensor:
        """Per-channel Sobel magnitude of ``(B, C, H, W)``, same shape."""
        b, c, h, w = x.shape
        padded = F.pad(x.reshape(b * c, 1, h, w), (1, 1, 1, 1), mode="replicate")
        g = F.conv2d(padded, self.sobel.to(dtype=x.dtype, device=x.device))
        return torch.sqrt(g[:, 0] ** 2 + g[:, 1] ** 2 + 1e-8).reshape(b, c, h, w)

    def forward(self, input: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        """
        Args:
            input: logits ``(B, C, H, W)`` (softmax is applied here).
            target: ``(B, 1, H, W)`` class indices or ``(B, C, H, W)`` one-hot.

        Returns:
            a scalar (``"mean"``/``"sum"``) or ``(B,)`` (``"none"``).
        """
        if input.dim() != 4:
            raise ValueError(
                f"MultiScaleBoundaryLoss takes 2D logits (B, C, H, W), got {input.dim()}-D {tuple(input.shape)}; "
                "slice 3D volumes (e.g. monai.inferers.SliceInferer, or a 2D slice dataset)"
            )
        if target.dim() != 4 or target.shape[0] != input.shape[0] or target.shape[2:] != input.shape[2:]:
            raise ValueError(f"target shape {tuple(target.shape)} does not fit logits {tuple(input.shape)}")
        if min(input.shape[2:]) < max(self.scales):
            raise ValueError(
                f"image {tuple(input.shape[2:])} is smaller than the largest scale {max(self.scales)}; "
                "use smaller scales or larger images"
            )
        num_classes = input.shape[1]
        prob = torch.softmax(input, dim=1)
        onehot = _onehot_target(target.to(input.device), num_classes).to(prob.dtype)
        if not self.include_background and num_classes > 1:
            prob, onehot = prob[:, 1:], onehot[:, 1:]
        total = input.new_zeros(input.shape[0] if self.reduction == "none" else ())
        for s in self.scales:
            p, y = (prob, onehot) if s == 1 else (F.avg_pool2d(prob, s, s), F.avg_pool2d(onehot, s, s))
            diff = (self.gradient_magnitude(p) - self.gradient_magnitude(y)).abs()
            if self.reduction == "mean":
                total = total + diff.mean()
            elif self.reduction == "sum":
                total = total + diff.sum()
            else:
                total = total + diff.flatten(1).mean(dim=1)
        return total


class DIFMLoss(nn.Module):
    """DIFM's training loss: Noh, Jeon & Park, Pattern Recognit. Lett. 197, 2025.

    ``ce_weight * CE + dice_weight * Dice + boundary_weight * MultiScaleBoundary``: the first two are MONAI's
    ``DiceCELoss`` (softmax, one-hot targets, ``lambda_ce`` / ``lambda_dice``; submodule ``dice_ce``), the last
    :class:`MultiScaleBoundaryLoss` (submodule ``boundary``). The paper's weights are 0.3 CE, 0.7 Dice and 1 x
    the boundary sum over scales 1, 2, 4.

    After each call :attr:`last` holds the detached parts as floats: ``ce``, ``dice``, ``boundary`` (unweighted)
    and ``total``.

    Args:
        ce_weight: weight of the pixel cross-entropy (>= 0). Defaults to 0.3.
        dice_weight: weight of the Dice loss (>= 0). Defaults to 0.7.
        boundary_weight: weight of the boundary loss (>= 0). Defaults to 1.0.
        scales: boundary-loss scales. Defaults to ``(1, 2, 4)``.
        include_background: Dice and boundary over the background too. Defaults to False.

    Raises:
        ValueError: negative or all-zero weights; see :class:`MultiScaleBoundaryLoss` for inputs.

    Examples::

        >>> loss = DIFMLoss()
        >>> value = loss(net(x), label)          # label (B, 1, H, W) indices or (B, C, H, W) one-hot
        >>> loss.last                            # {"ce": ..., "dice": ..., "boundary": ..., "total": ...}
    """

    def __init__(
        self,
        ce_weight: float = 0.3,
        dice_weight: float = 0.7,
        boundary_weight: float = 1.0,
        scales: Sequence[int] = (1, 2, 4),
        include_background: bool = False,
    ) -> None:
        super().__init__()
        weights = {"ce_weight": ce_weight, "dice_weight": dice_weight, "boundary_weight": boundary_weight}
        for name, v in weights.items():
            if not float(v) >= 0:
                raise ValueError(f"{name} must be >= 0, got {v}")
        if sum(float(v) for v in weights.values()) == 0:
            raise ValueError("ce_weight, dice_weight and boundary_weight are all 0: nothing would be trained")
        self.ce_weight = float(ce_weight)
        self.dice_weight = float(dice_weight)
        self.boundary_weight = float(boundary_weight)
        self.dice_ce = DiceCELoss(
            include_background=bool(include_background), to_onehot_y=False, softmax=True,
            lambda_ce=self.ce_weight, lambda_dice=self.dice_weight,
        )
        self.boundary = MultiScaleBoundaryLoss(scales=scales, include_background=include_background)
        self.last: dict[str, float] = {}

    def forward(self, input: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        """
        Args:
            input: logits ``(B, C, H, W)``.
            target: ``(B, 1, H, W)`` class indices or ``(B, C, H, W)`` one-hot.

        Returns:
            the weighted sum, a scalar.
        """
        if input.dim() != 4:
            raise ValueError(f"DIFMLoss takes 2D logits (B, C, H, W), got {input.dim()}-D {tuple(input.shape)}")
        if target.dim() != 4 or target.shape[0] != input.shape[0] or target.shape[2:] != input.shape[2:]:
            raise ValueError(f"target shape {tuple(target.shape)} does not fit logits {tuple(input.shape)}")
        onehot = _onehot_target(target.to(input.device), input.shape[1]).to(input.dtype)
        # the two parts of DiceCELoss.forward, kept apart for `last`
        dice = self.dice_ce.dice(input, onehot)
        ce = self.dice_ce.ce(input, onehot)
        boundary = self.boundary(input, onehot) if self.boundary_weight > 0 else input.sum() * 0.0
        total = self.dice_weight * dice + self.ce_weight * ce + self.boundary_weight * boundary
        self.last = {
            "ce": float(ce.detach()),
            "dice": float(dice.detach()),
            "boundary": float(boundary.detach()),
            "total": float(total.detach()),
        }
        return total


class GlobalSpatialAttentionLoss(nn.Module):
    """Task loss plus the regularisation of a global spatial attention map (method 5, Xu et al., arXiv 2007.15897):
    ``base(logits, target) + reg_weight * gsa.regularization(target_fraction, entropy_weight)``.

    The regularisation (see :meth:`~medfuse.networks.blocks.GlobalSpatialAttention.regularization`) pulls the mean
    of the shared map ``M`` towards ``target_fraction`` (so that it cannot stay all ones, which is no attention)
    and, with ``entropy_weight``, pushes each position towards important (1) or unimportant (0).

    ``gsa`` is only referenced, not registered as a submodule: the loss owns no parameters (only ``base``'s
    buffers, e.g. class weights), and moving or saving the loss never touches the network.

    After each call, :attr:`last` holds the detached parts as floats: ``base``, ``reg`` (the unweighted
    regularisation) and ``map_mean`` (the mean of ``M`` at the block's ``map_size``).

    Args:
        gsa: a :class:`~medfuse.networks.blocks.GlobalSpatialAttention`, or a network that has one as ``.gsa``
            (:class:`~medfuse.networks.nets.GlobalSpatialAttentionNet`).
        base: the task loss, called as ``base(logits, target)``. Defaults to None: ``torch.nn.CrossEntropyLoss()``.
        reg_weight: weight of the regularisation, >= 0 (0 gives ``base`` alone). Defaults to 0.1.
        target_fraction: wanted mean of the map, in [0, 1]. Defaults to 0.5.
        entropy_weight: weight of the mean binary entropy inside the regularisation, >= 0. Defaults to 0.01.

    Raises:
        ValueError: ``gsa`` that is neither the block nor has it as ``.gsa``, a ``base`` that is not callable, or a
            weight / fraction out of range (the message carries the value).

    Examples::

        >>> model = GlobalSpatialAttentionNet("resnet18", in_channels=1, num_classes=2)
        >>> loss_fn = GlobalSpatialAttentionLoss(model, reg_weight=0.1, target_fraction=0.5)
        >>> loss = loss_fn(model(images), labels)
        >>> loss_fn.last  # {"base": ..., "reg": ..., "map_mean": ...}
    """

    def __init__(
        self,
        gsa: nn.Module,
        base: Optional[Any] = None,
        reg_weight: float = 0.1,
        target_fraction: float = 0.5,
        entropy_weight: float = 0.01,
    ) -> None:
        super().__init__()
        block = gsa if isinstance(gsa, GlobalSpatialAttention) else getattr(gsa, "gsa", None)
        if not isinstance(block, GlobalSpatialAttention):
            raise ValueError(
                f"gsa must be a GlobalSpatialAttention block or a network with one as .gsa, got {type(gsa).__name__}."
            )
        if base is not None and not callable(base):
            raise ValueError(f"base must be a callable loss base(logits, target), got {type(base).__name__}.")
        if not float(reg_weight) >= 0.0:
            raise ValueError(f"reg_weight must be >= 0, got {reg_weight}.")
        if not 0.0 <= float(target_fraction) <= 1.0:
            raise ValueError(f"target_fraction must be in [0, 1], got {target_fraction}.")
        if not float(entropy_weight) >= 0.0:
            raise ValueError(f"entropy_weight must be >= 0, got {entropy_weight}.")
        self.__dict__["_block"] = block  # a reference, not a submodule
        self.base = nn.CrossEntropyLoss() if base is None else base
        self.reg_weight = float(reg_weight)
        self.target_fraction = float(target_fraction)
        self.entropy_weight = float(entropy_weight)
        self.last: dict[str, float] = {}

    @property
    def gsa(self) -> nn.Module:
        """The regularised :class:`~medfuse.networks.blocks.GlobalSpatialAttention` block."""
        return self.__dict__["_block"]

    def forward(self, logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        """The loss, a scalar tensor (for a ``base`` that returns one).

        Args:
            logits: the network output, e.g. ``(B, num_classes)``.
            target: what ``base`` expects, e.g. class indices ``(B,)`` for cross-entropy.
        """
        base_value = self.base(logits, target)
        reg = self.gsa.regularization(self.target_fraction, self.entropy_weight)
        total = base_value + self.reg_weight * reg if self.reg_weight > 0 else base_value
        with torch.no_grad():
            map_mean = self.gsa.get_map().mean()
        self.last = {"base": float(base_value.detach()), "reg": float(reg.detach()), "map_mean": float(map_mean)}
        return total
