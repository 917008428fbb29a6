# Copyright (c) medfuse contributors
# Licensed under the Apache License, Version 2.0
"""DualAttNet: a MONAI RetinaNet with image-level and fine-grained disease attention, and its detector.

Boxes follow MONAI's convention: coordinate ``i`` is tensor dimension ``i``, so on an image ``(C, H, W)`` a
2-D box is ``[row_min, col_min, row_max, col_max]`` (``medfuse.transforms.boxes.xyxy_to_monai`` converts the
manifests' ``[x_min, y_min, x_max, y_max]``).
"""

import math
import os
import warnings
from collections.abc import Mapping, Sequence
from typing import Any, Dict, List, Optional, Union

import torch
import torch.nn as nn
import torch.nn.functional as F
from monai.apps.detection.networks.retinanet_detector import RetinaNetDetector
from monai.apps.detection.networks.retinanet_network import RetinaNet
from monai.apps.detection.utils.ATSS_matcher import ATSSMatcher
from monai.apps.detection.utils.hard_negative_sampler import HardNegativeSampler
from monai.networks.blocks import FeaturePyramidNetwork

from medfuse.networks.backbones import SUPPORTED_BACKBONES, TAP_STRIDES, backbone_taps, build_backbone
from medfuse.networks.blocks.dualattnet_heads import ATTENTION_REDUCTIONS, DualAttentionHead

__all__ = ["DUALATTNET_OUTPUTS", "DualAttNet", "DualAttNetDetector", "FPNFeatureExtractor", "DualAttentionNet"]

#: Values of ``DualAttNet(output=...)`` / :meth:`DualAttNet.set_output`.
DUALATTNET_OUTPUTS = ("dict", "dense", "image")

WeightsSource = Union[str, os.PathLike, Mapping[str, torch.Tensor]]


class FPNFeatureExtractor(nn.Module):
    """A medfuse backbone (MONAI ResNet / EfficientNet features) tapped at ``strides``, a MONAI
    ``FeaturePyramidNetwork`` on the taps, and ``extra_levels`` coarser levels by max pooling (kernel 1, stride 2,
    as ``LastLevelMaxPool``). Works without torchvision, unlike MONAI's ``resnet_fpn_feature_extractor``.

    Stable submodule names: ``body`` (the backbone, truncated after the deepest tap), ``fpn``
    (``fpn.inner_blocks.<i>``, ``fpn.layer_blocks.<i>``, finest tap first).

    Attributes:
        out_channels: width of every level (what MONAI's ``RetinaNet`` reads).
        strides: stride of every returned level, ascending (taps, then the pooled levels).

    Args:
        backbone: one of ``medfuse.networks.backbones.SUPPORTED_BACKBONES``. Defaults to ``"resnet50"``.
        in_channels: image channels. Defaults to 1.
        strides: tapped strides, distinct, from ``(4, 8, 16, 32)``. Defaults to ``(8, 16, 32)``.
        out_channels: FPN width. Defaults to 256.
        extra_levels: pooled levels added after the deepest tap. Defaults to 1.
        pretrained_weights: ImageNet checkpoint (path or state dict) for the backbone. Defaults to None.

    Raises:
        ValueError: an unknown backbone, bad strides or non-positive sizes.
    """

    feature_indices: List[int]

    def __init__(
        self,
        backbone: str = "resnet50",
        in_channels: int = 1,
        strides: Sequence[int] = (8, 16, 32),
        out_channels: int = 256,
        extra_levels: int = 1,
        pretrained_weights: Optional[WeightsSource] = None,
    ) -> None:
        super().__init__()
        if backbone not in SUPPORTED_BACKBONES:
            raise ValueError(f"unknown backbone {backbone!r}: expected one of {', '.join(SUPPORTED_BACKBONES)}.")
        taps = sorted(int(s) for s in strides) if not isinstance(strides, (int, str)) else []
        if not taps or any(s not in TAP_STRIDES for s in taps) or len(set(taps)) != len(taps):
            raise ValueError(f"fpn_strides must be distinct strides from {TAP_STRIDES}, e.g. (8, 16, 32), got {strides!r}.")
        if isinstance(extra_levels, bool) or not isinstance(extra_levels, int) or extra_levels < 0:
            raise ValueError(f"extra_levels must be an int >= 0, got {extra_levels!r}.")
        self.body = build_backbone(backbone, in_channels=in_channels, max_stride=taps[-1], weights=pretrained_weights)
        info = backbone_taps(self.body, backbone)
        self.feature_indices = [info[s].feature_index for s in taps]
        self.fpn = FeaturePyramidNetwork(2, [info[s].channels for s in taps], int(out_channels))
        self.extra_levels = int(extra_levels)
        self.out_channels = int(out_channels)
        self.strides = tuple(taps) + tuple(taps[-1] * 2 ** (i + 1) for i in range(self.extra_levels))

    def forward(self, x: torch.Tensor) -> List[torch.Tensor]:
        """
        Args:
            x: ``(B, in_channels, H, W)``, H and W divisible by the largest stride.

        Returns:
            one ``(B, out_channels, H / s, W / s)`` map per stride ``s`` of :attr:`strides`.
        """
        feats = self.body(x)
        taps: Dict[str, torch.Tensor] = {}
        for i, index in enumerate(self.feature_indices):
            taps[str(i)] = feats[index]
        levels = list(self.fpn(taps).values())
        for _ in range(self.extra_levels):
            levels.append(F.max_pool2d(levels[-1], kernel_size=1, stride=2))
        return levels


def _level_name(stride: int) -> str:
    """``"p3"`` for stride 8: the usual FPN level names."""
    return f"p{int(round(math.log2(stride)))}"


class DualAttNet(RetinaNet):
    """DualAttNet: Xu & Duan, "DualAttNet: Synergistic fusion of image-level and fine-grained disease attention for
    multi-label lesion detection in chest X-rays", Comput Biol Med 168:107742, 2024 (method 2 of the design notes).

    A MONAI :class:`~monai.apps.detection.networks.retinanet_network.RetinaNet` on a torchvision-free feature
    extractor (:class:`FPNFeatureExtractor`: a medfuse/MONAI backbone tapped at ``fpn_strides``, MONAI's
    ``FeaturePyramidNetwork``, ``extra_levels`` pooled levels). With ``attention=True`` each pyramid level in
    ``attention_levels`` gets a :class:`~medfuse.networks.blocks.dualattnet_heads.DualAttentionHead` that turns
    the level and the detector's classification map of that level into image-level logits ``(B, K)``; their mean
    over levels is the image-level output, trained with BCE against the multi-hot labels derived from the boxes
    (:class:`DualAttNetDetector`). ``attention=False`` is the plain RetinaNet: same modules, keys and outputs as
    MONAI's ``RetinaNet`` built on the same extractor.

    What :meth:`forward` returns (:meth:`set_output`):

    * ``"dict"`` (training, :class:`DualAttNetDetector`): ``{"classification": [per level (B, A*K, H, W)],
      "box_regression": [per level (B, A*4, H, W)]}`` plus ``"image_logits"`` ``(B, K)`` with attention.
    * ``"dense"`` (export, one tensor): ``(B, K + 4, N)``: for every anchor (MONAI ``_reshape_maps`` order:
      levels finest first, then rows, columns, anchors) the K class logits then the 4 box deltas.
    * ``"image"``: the image-level logits ``(B, K)`` (needs ``attention=True``; Grad-CAM target).

    ``"dense"`` and ``"image"`` script (``torch.jit.script``); ``"dict"`` runs eagerly only (a scripted network
    raises in that mode), which is all the detector needs.

    Stable submodule names: ``feature_extractor`` (``.body``, ``.fpn``), ``classification_head``,
    ``regression_head`` (MONAI's), ``attention_heads.<level>`` with levels ``p3`` (stride 8), ``p4``, ... ,
    each with ``class_conv`` and ``ila``. :attr:`cam_layer` (alias ``cam_target_layer``) is the finest FPN
    output, ``"feature_extractor.fpn.layer_blocks.0"``.

    Choices the paper leaves open, as made here: the base detector is RetinaNet (MONAI heads, GroupNorm); the
    attention heads read the FPN levels and the class logits of the same level; FGDA is the sigmoid of the
    logits, max over anchors, normalised to sum 1; the image logit is the spatial sum (``reduce``) and the
    image output the mean over levels; the image loss is weighted 1 (``DualAttNetDetector(attention_weight=...)``).

    Args:
        spatial_dims: only 2 is supported. Defaults to 2.
        in_channels: image channels. Defaults to 1.
        num_classes: lesion classes K (no "No finding" class). Defaults to 1.
        backbone: medfuse backbone name (``resnet10`` ... ``resnet152``, ``efficientnet-b0`` ... ``b7``).
            Defaults to ``"resnet50"``.
        fpn_strides: tapped strides, from ``(4, 8, 16, 32)``. Defaults to ``(8, 16, 32)``.
        fpn_channels: FPN width; a multiple of 8 (the MONAI heads use GroupNorm with 8 groups). Defaults to 256.
        extra_levels: pooled levels after the deepest tap. Defaults to 1 (strides 8, 16, 32, 64).
        num_anchors: anchors per location; must equal the anchor generator's. Defaults to 3.
        attention: add the attention heads and the image-level output. Defaults to True.
        attention_levels: strides of the levels that get an attention head; None for all. Defaults to None.
        reduction: ILA squeeze ratio. Defaults to 16.
        reduce: spatial reduction of the attention heads, ``"sum"``, ``"mean"`` or ``"max"``. Defaults to "sum".
        detach_cls: keep the image-level loss out of the classification head. Defaults to False.
        output: ``"dict"``, ``"dense"`` or ``"image"``. Defaults to ``"dict"``.
        pretrained_weights: ImageNet checkpoint (path or state dict, torchvision/timm layouts) for the backbone.
            Defaults to None.

    Raises:
        ValueError: on any unsupported argument value (the message carries the value).

    Examples::

        >>> net = DualAttNet(num_classes=14, backbone="resnet50")
        >>> out = net(torch.rand(2, 1, 512, 512))
        >>> [m.shape for m in out["classification"]], out["image_logits"].shape   # 4 levels, (2, 14)
        >>> dense = DualAttNet(num_classes=2, backbone="resnet18", fpn_channels=64, output="dense")
        >>> dense(torch.rand(1, 1, 256, 256)).shape                                # (1, 2 + 4, N)
        >>> plain = DualAttNet(num_classes=2, attention=False)                     # plain RetinaNet
    """

    attention_indices: List[int]

    def __init__(
        self,
        spatial_dims: int = 2,
        in_channels: int = 1,
        num_classes: int = 1,
        backbone: str = "resnet50",
        fpn_strides: Sequence[int] = (8, 16, 32),
        fpn_channels: int = 256,
        extra_levels: int = 1,
        num_anchors: int = 3,
        attention: bool = True,
        attention_levels: Optional[Sequence[int]] = None,
        reduction: int = 16,
        reduce: str = "sum",
        detach_cls: bool = False,
        output: str = "dict",
        pretrained_weights: Optional[WeightsSource] = None,
    ) -> None:
        if spatial_dims != 2:
            raise ValueError(f"DualAttNet supports 2D images only, got spatial_dims={spatial_dims!r}.")
        for name, v in (("in_channels", in_channels), ("num_classes", num_classes), ("num_anchors", num_anchors),
                        ("reduction", reduction)):
            if isinstance(v, bool) or not isinstance(v, int) or v < 1:
                raise ValueError(f"{name} must be a positive int, got {v!r}.")
        if isinstance(fpn_channels, bool) or not isinstance(fpn_channels, int) or fpn_channels < 8 or fpn_channels % 8:
            raise ValueError(f"fpn_channels must be a positive multiple of 8 (GroupNorm, 8 groups), got {fpn_channels!r}.")
        if output not in DUALATTNET_OUTPUTS:
            raise ValueError(f"output must be one of {list(DUALATTNET_OUTPUTS)}, got {output!r}.")
        if reduce not in ATTENTION_REDUCTIONS:
            raise ValueError(f"reduce must be one of {list(ATTENTION_REDUCTIONS)}, got {reduce!r}.")
        if output == "image" and not attention:
            raise ValueError("output='image' needs attention=True (the plain RetinaNet has no image-level logits).")
        extractor = FPNFeatureExtractor(backbone, in_channels, fpn_strides, fpn_channels, extra_levels, pretrained_weights)
        super().__init__(
            spatial_dims=2, num_classes=num_classes, num_anchors=num_anchors, feature_extractor=extractor,
            size_divisible=extractor.strides[-1],
        )
        self.in_channels = int(in_channels)
        self.backbone = str(backbone)
        self.strides = tuple(extractor.strides)
        self.level_names = [_level_name(s) for s in self.strides]
        if attention_levels is None:
            levels = list(self.strides)
        else:
            levels = sorted({int(s) for s in attention_levels})
            if not levels or any(s not in self.strides for s in levels):
                raise ValueError(
                    f"attention_levels must be strides of the pyramid {list(self.strides)}, got {attention_levels!r}."
                )
        self.attention = bool(attention)
        self.attention_heads = nn.ModuleDict()
        self.attention_indices = []
        if self.attention:
            for s in levels:
                head = DualAttentionHead(fpn_channels, num_classes, num_anchors, reduction, reduce, detach_cls)
                self.attention_heads[_level_name(s)] = head
                self.attention_indices.append(self.strides.index(s))
        self.output = str(output)
        self.cam_layer = "feature_extractor.fpn.layer_blocks.0"
        self.cam_target_layer = self.cam_layer
        self.image_key = "image_logits"

    # ------------------------------------------------------------------------------------------------------
    def set_output(self, output: str) -> "DualAttNet":
        """Choose what :meth:`forward` returns (``"dict"``, ``"dense"``, ``"image"``); returns the network.

        Bundle configs keep ``network_def`` in the single-tensor ``"dense"`` mode that exporters and
        ``verify_net_in_out`` need; :class:`DualAttNetDetector` switches its network to ``"dict"``.

        Raises:
            ValueError: an unknown mode, or ``"image"`` without attention heads.
        """
        if output not in DUALATTNET_OUTPUTS:
            raise ValueError(f"output must be one of {list(DUALATTNET_OUTPUTS)}, got {output!r}.")
        if output == "image" and not self.attention:
            raise ValueError("output='image' needs attention=True (the plain RetinaNet has no image-level logits).")
        self.output = str(output)
        return self

    def forward_features(self, images: torch.Tensor) -> List[torch.Tensor]:
        """The pyramid levels, finest first: ``(B, fpn_channels, H / s, W / s)`` per stride ``s``."""
        return self.feature_extractor(images)

    def forward_image(self, features: List[torch.Tensor], cls_maps: List[torch.Tensor]) -> torch.Tensor:
        """Image-level logits ``(B, K)``: the mean over the attention levels of their heads' logits."""
        logits: List[torch.Tensor] = []
        i = 0
        for head in self.attention_heads.values():
            index = self.attention_indices[i]
            logits.append(head(features[index], cls_maps[index]))
            i += 1
        return torch.stack(logits, dim=0).mean(dim=0)

    def _flatten(self, maps: List[torch.Tensor], channels: int) -> torch.Tensor:
        # (B, A * c, H, W) -> (B, H * W * A, c), MONAI RetinaNetDetector._reshape_maps order
        out: List[torch.Tensor] = []
        for m in maps:
            b, h, w = m.shape[0], m.shape[2], m.shape[3]
            out.append(m.view(b, -1, channels, h, w).permute(0, 3, 4, 1, 2).reshape(b, -1, channels))
        return torch.cat(out, dim=1)

    def forward_dense(self, images: torch.Tensor) -> torch.Tensor:
        """One tensor ``(B, K + 4, N)``: class logits and box deltas of every anchor (see the class docstring)."""
        features = self.forward_features(images)
        cls = self._flatten(self.classification_head(features), self.num_classes)
        box = self._flatten(self.regression_head(features), 2 * self.spatial_dims)
        return torch.cat([cls, box], dim=2).transpose(1, 2)

    @torch.jit.unused
    def forward_dict(self, images: torch.Tensor) -> Dict[str, Any]:
        """The MONAI head outputs (``classification``, ``box_regression``; lists over levels) and, with
        attention, ``image_logits`` ``(B, K)``."""
        features = self.forward_features(images)
        cls_maps = self.classification_head(features)
        out: Dict[str, Any] = {self.cls_key: cls_maps, self.box_reg_key: self.regression_head(features)}
        if self.attention:
            out[self.image_key] = self.forward_image(features, cls_maps)
        return out

    def forward(self, images: torch.Tensor) -> Union[torch.Tensor, Dict[str, Any]]:
        """
        Args:
            images: ``(B, in_channels, H, W)``, H and W divisible by :attr:`size_divisible`.

        Returns:
            see the class docstring; depends on :attr:`output`.
        """
        if self.output == "dense":
            return self.forward_dense(images)
        if self.output == "image":
            features = self.forward_features(images)
            return self.forward_image(features, self.classification_head(features))
        return self.forward_dict(images)


class DualAttNetDetector(RetinaNetDetector):
    """MONAI's :class:`~monai.apps.detection.networks.retinanet_detector.RetinaNetDetector` for
    :class:`DualAttNet` (Xu & Duan, Comput Biol Med 168:107742, 2024): trains without torchvision and adds
    the image-level attention loss.

    Anchors are matched by MONAI's ``ATSSMatcher`` and the classification loss sees the positives and hard
    negatives of MONAI's ``HardNegativeSampler`` (both set here with MONAI's tutorial values; call
    ``set_atss_matcher`` / ``set_hard_negative_sampler`` to change them); the torchvision ``Matcher`` /
    ``BalancedPositiveNegativeSampler`` paths of the parent are not available. Training returns the losses
    ``classification``, ``box_regression`` and, when the network has attention heads, ``attention``: BCE with
    logits between ``image_logits`` and each image's multi-hot labels (1 for every class among its box labels;
    an image without boxes is all zeros), multiplied by ``attention_weight``. Evaluation returns MONAI's
    per-image ``boxes``, ``labels``, ``labels_scores`` plus ``image_scores`` ``(K,)``: the sigmoid of the
    image-level logits, or, without attention, the highest box score of each class (0 without a box).

    Targets are MONAI's: per image ``{"boxes": (M, 4) [row_min, col_min, row_max, col_max], "labels": (M,)}``.

    Args:
        network: a :class:`DualAttNet` (switched to ``output="dict"``).
        anchor_generator: MONAI anchor generator, one feature-map scale per pyramid level.
        attention_weight: weight of the attention loss. Defaults to 1.0.
        pos_weight: BCE ``pos_weight`` per class (sequence of K floats) for rare classes. Defaults to None.
        kwargs: passed to ``RetinaNetDetector`` (``debug``, ...).

    Raises:
        ValueError: a negative ``attention_weight`` or a ``pos_weight`` of the wrong length.

    Examples::

        >>> from monai.apps.detection.utils.anchor_utils import AnchorGeneratorWithAnchorShape
        >>> net = DualAttNet(num_classes=2, backbone="resnet18", fpn_channels=64)
        >>> anchors = AnchorGeneratorWithAnchorShape(feature_map_scales=(1, 2, 4, 8),
        ...                                          base_anchor_shapes=((8, 8), (16, 16), (32, 32)))
        >>> det = DualAttNetDetector(net, anchors).train()
        >>> losses = det(images, [{"boxes": b, "labels": l}, ...])   # classification, box_regression, attention
        >>> det.eval()(images)[0]["image_scores"]                    # (2,)
    """

    def __init__(
        self,
        network: nn.Module,
        anchor_generator: Any,
        attention_weight: float = 1.0,
        pos_weight: Optional[Sequence[float]] = None,
        **kwargs: Any,
    ) -> None:
        if hasattr(network, "set_output"):
            network.set_output("dict")
        super().__init__(network, anchor_generator, **kwargs)
        if not float(attention_weight) >= 0.0:
            raise ValueError(f"attention_weight must be >= 0, got {attention_weight!r}.")
        self.attention_weight = float(attention_weight)
        self.image_key = str(getattr(network, "image_key", "image_logits"))
        self.attention_key = "attention"
        self.image_score_key = "image_scores"
        if pos_weight is not None:
            pw = torch.as_tensor(list(pos_weight), dtype=torch.float32)
            if pw.ndim != 1 or pw.numel() != self.num_classes:
                raise ValueError(f"pos_weight must give {self.num_classes} values (one per class), got {list(pos_weight)!r}.")
            self.register_buffer("pos_weight", pw)
        else:
            self.pos_weight = None
        self.set_atss_matcher(num_candidates=4, center_in_gt=False)
        self.set_hard_negative_sampler(batch_size_per_image=64, positive_fraction=0.3, pool_size=20, min_neg=16)

    # ------------------------------------------------------------------------------------------------------
    def multi_hot(self, targets: List[Dict[str, torch.Tensor]], device: torch.device) -> torch.Tensor:
        """``(B, K)`` image-level labels: 1 for each class among an image's box labels."""
        out = torch.zeros(len(targets), self.num_classes, device=device)
        for i, t in enumerate(targets):
            labels = t[self.target_label_key].to(device=device).long().reshape(-1)
            if labels.numel():
                out[i, labels] = 1.0
        return out

    def compute_loss(self, head_outputs_reshape, targets, anchors, num_anchor_locs_per_level):
        """MONAI's classification and box losses, plus the weighted ``attention`` loss when present."""
        image_logits = head_outputs_reshape.pop(self.image_key, None)
        losses = super().compute_loss(head_outputs_reshape, targets, anchors, num_anchor_locs_per_level)
        if image_logits is not None:
            logits = image_logits[0] if isinstance(image_logits, (list, tuple)) else image_logits
            target = self.multi_hot(targets, logits.device).to(logits.dtype)
            pw = None if self.pos_weight is None else self.pos_weight.to(logits.device, logits.dtype)
            bce = F.binary_cross_entropy_with_logits(logits, target, pos_weight=pw)
            losses[self.attention_key] = self.attention_weight * bce
        return losses

    def postprocess_detections(self, head_outputs_reshape, anchors, image_sizes, num_anchor_locs_per_level,
                               need_sigmoid=True):
        """MONAI's box selection, plus ``image_scores`` ``(K,)`` per image."""
        image_logits = head_outputs_reshape.pop(self.image_key, None)
        detections = super().postprocess_detections(
            head_outputs_reshape, anchors, image_sizes, num_anchor_locs_per_level, need_sigmoid
        )
        if image_logits is not None:
            logits = image_logits[0] if isinstance(image_logits, (list, tuple)) else image_logits
            probs = torch.sigmoid(logits.float())
            for i, det in enumerate(detections):
                det[self.image_score_key] = probs[i]
        else:
            for det in detections:
                scores = det[self.pred_score_key].float()
                best = torch.zeros(self.num_classes, dtype=scores.dtype, device=scores.device)
                if scores.numel():
                    best = best.scatter_reduce(0, det[self.target_label_key].long(), scores, reduce="amax")
                det[self.image_score_key] = best
        return detections

    def compute_anchor_matched_idxs(self, anchors, targets, num_anchor_locs_per_level):
        """Matched ground-truth index per anchor (``-1`` unmatched), with MONAI's ATSS matcher.

        Raises:
            NotImplementedError: when another matcher was set (torchvision's is not installed).
        """
        if not isinstance(self.proposal_matcher, ATSSMatcher):
            raise NotImplementedError(
                f"DualAttNetDetector matches anchors with MONAI's ATSSMatcher only (torchvision is not used), got "
                f"{type(self.proposal_matcher).__name__}; call set_atss_matcher(...)"
            )
        matched = []
        for anchors_per_image, targets_per_image in zip(anchors, targets):
            boxes = targets_per_image[self.target_box_key].to(anchors_per_image.device)
            if boxes.numel() == 0:
                matched.append(torch.full((anchors_per_image.size(0),), -1, dtype=torch.int64,
                                          device=anchors_per_image.device))
                continue
            _, idxs = self.proposal_matcher(boxes, anchors_per_image, num_anchor_locs_per_level,
                                            self.num_anchors_per_loc)
            if self.debug and torch.max(idxs) < 0:
                warnings.warn(f"no anchor matched the boxes {boxes.tolist()}; check the anchor shapes", stacklevel=2)
            matched.append(idxs)
        return matched

    def get_cls_train_sample_per_image(self, cls_logits_per_image, targets_per_image, matched_idxs_per_image):
        """Classification samples of one image: positives and MONAI hard negatives (all but the anchors between
        thresholds when no sampler is set), with one-hot targets.

        Raises:
            NotImplementedError: when a sampler other than ``HardNegativeSampler`` was set.
        """
        foreground = matched_idxs_per_image >= 0
        target = torch.zeros_like(cls_logits_per_image)
        labels = targets_per_image[self.target_label_key].to(cls_logits_per_image.device).long()
        if bool(foreground.any()):
            target[foreground, labels[matched_idxs_per_image[foreground]]] = 1.0
        if self.fg_bg_sampler is None:
            valid = torch.where(matched_idxs_per_image != self.proposal_matcher.BETWEEN_THRESHOLDS)[0]
        elif isinstance(self.fg_bg_sampler, HardNegativeSampler):
            max_logits = cls_logits_per_image.to(torch.float32).max(dim=1)[0]
            pos, neg = self.fg_bg_sampler([matched_idxs_per_image + 1], max_logits)
            valid = torch.cat([torch.where(torch.cat(pos))[0], torch.where(torch.cat(neg))[0]])
        else:
            raise NotImplementedError(
                f"DualAttNetDetector samples with MONAI's HardNegativeSampler only (torchvision is not used), got "
                f"{type(self.fg_bg_sampler).__name__}; call set_hard_negative_sampler(...)"
            )
        return cls_logits_per_image[valid, :], target[valid, :]


DualAttentionNet = DualAttNet
