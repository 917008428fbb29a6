# Copyright (c) medfuse contributors
# Licensed under the Apache License, Version 2.0
"""Dual cross-attention fusion classifier (DCAT)."""

from __future__ import annotations

import os
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from typing import Optional, Union

import torch
import torch.nn as nn

from medfuse.networks.backbones import (
    SUPPORTED_BACKBONES,
    TAP_STRIDES,
    backbone_family,
    backbone_taps,
    build_backbone,
)
from medfuse.networks.blocks.cbam import CBAM
from medfuse.networks.blocks.cross_attention_fusion import (
    FUSION_MODES,
    POS_EMBED_MODES,
    MultiScaleCrossAttentionFusion,
)
from medfuse.networks.uncertainty import DROPOUT_TYPES, MCDropoutResult, enable_mc_dropout, mc_dropout_predict

__all__ = ["DualCrossAttentionNet", "DCATNet", "DCAT"]

WeightsSource = Union[str, os.PathLike, Mapping[str, torch.Tensor]]


class DualCrossAttentionNet(nn.Module):
    """Dual cross-attention fusion classifier: Borah & Singh, "DCAT: Dual Cross-Attention Fusion for Disease
    Classification in Radiological Images with Uncertainty Estimation", arXiv 2503.11851, 2025.

    Two MONAI backbones see the same image (``branch_a``, default EfficientNet-B4; ``branch_b``, default
    ResNet34). At each tapped stride (default 8 and 16: EfficientNet stages 3 and 5, ResNet ``layer2`` and
    ``layer3``) both feature maps are projected to ``hidden_size`` channels (1x1 conv + BN) and attend to each
    other in both directions (queries from one branch, keys/values from the other; pre-norm attention + MLP,
    residual, MONAI ``CrossAttentionBlock``); the two directions are fused by ``fusion`` ("sum", or "concat"
    + 1x1 conv). The scales are merged on the finest grid (coarser ones upsampled bilinearly; ``scale_fusion``
    "concat" + 1x1 conv + BN + ReLU, or "sum"), refined by CBAM channel then spatial attention, average pooled,
    and classified by ``dropout`` (``dropout_prob``) + a linear ``head``. Monte-Carlo dropout over that dropout
    gives predictive entropy and mutual information (:meth:`predict_with_uncertainty`).

    Stable submodule names (public API, e.g. for ``monai.visualize.GradCAM(target_layers=...)``):

    * ``branch_a``, ``branch_b``: the MONAI backbones (``EfficientNetBNFeatures`` / ResNet features), truncated
      after the deepest tap; their stages are named in :attr:`feature_info`.
    * ``fusion``: multi-scale cross-attention fusion; ``fusion.scales.<i>`` per tapped stride (finest first),
      each with ``proj_a``, ``proj_b``, ``a_from_b`` (A queries B), ``b_from_a``, ``merge``; ``fusion.merge``.
    * ``refine``: CBAM (``refine.channel``, ``refine.spatial``; the spatial map is ``refine.spatial.gate``'s
      output). ``refine`` outputs the refined map of :meth:`forward_features`: the Grad-CAM target layer.
    * ``pool``, ``dropout``, ``head``.

    :attr:`cam_layer` is ``"refine"``: the submodule Grad-CAM explains by default (the attribute every medfuse
    network sets; see "Contracts" in ``docs/architecture.md``).

    Choices the paper leaves open, as made here: both directions run in parallel from the projected maps
    (not one after the other); the scales are merged on the stride-8 grid, so Grad-CAM maps keep that
    resolution; width 256 with 8 heads of 32 channels; one dropout (0.3), between pooling and the linear head,
    is both the regulariser and the MC-dropout layer, so MC sampling re-runs only the head (exact, cheap);
    20 MC passes by default; entropy and mutual information are both reported (nats).

    Attributes:
        backbones: ``(name of branch A, name of branch B)``.
        taps: tapped strides, ascending.
        num_features: width of the fused map and of ``forward_head(..., pre_logits=True)``.
        feature_info: one dict per tapped level and per fused map, timm-style: ``num_chs``, ``reduction``
            (stride), ``module`` (submodule name, for hooks or CAM), ``branch`` (``"a"``, ``"b"``, ``"fused"``).

    Args:
        spatial_dims: number of spatial dimensions; only 2 is supported. Defaults to 2.
        in_channels: 1 (grey) or 3 (RGB). Defaults to 1.
        num_classes: number of outputs (>= 1). Defaults to 2.
        backbones: names of branch A and branch B, each ``efficientnet-b0`` ... ``efficientnet-b7`` or
            ``resnet10``/``18``/``34``/``50``/``101``/``152``. Defaults to ``("efficientnet-b4", "resnet34")``.
        taps: strides tapped from both backbones, from ``(4, 8, 16, 32)``; add 32 for the deepest levels.
            Defaults to ``(8, 16)``.
        hidden_size: common width of the projected features, attention and refined map. Defaults to 256.
        num_heads: attention heads (must divide ``hidden_size``). Defaults to 8.
        mlp_ratio: width of the attention layers' MLP relative to ``hidden_size``. Defaults to 2.0.
        fusion: fusion of the two attention directions, ``"sum"`` or ``"concat"``. Defaults to ``"sum"``.
        scale_fusion: merging of the scales, ``"concat"`` or ``"sum"``. Defaults to ``"concat"``.
        pos_embed: ``"sincos"`` (fixed 2D position embedding in the attention) or ``"none"``. Defaults to
            ``"sincos"``.
        attn_dropout: dropout inside the attention layers (also sampled by MC dropout; > 0 disables fused
            attention and the cached-features MC path). Defaults to 0.0.
        dropout_prob: dropout before the classifier, the layer MC dropout samples. Defaults to 0.3.
        cbam_reduction: CBAM channel-attention reduction ratio. Defaults to 16.
        cbam_kernel_size: CBAM spatial-attention kernel size. Defaults to 7.
        qkv_bias: bias in the query/key/value projections. Defaults to True.
        use_flash_attention: use PyTorch's fused attention when maps are not being captured. Defaults to True.
        multi_label: outputs are independent labels (sigmoid) rather than classes (softmax); used by
            :meth:`predict_with_uncertainty`. Defaults to False.
        mc_samples: default number of MC-dropout passes. Defaults to 20.
        pretrained: download ImageNet weights for the branches without a local file (EfficientNet: MONAI's
            URLs, ResNet: torchvision's); fails within ``download_timeout`` seconds when offline. Defaults to False.
        pretrained_weights: local ImageNet checkpoints, always loaded, keyed by family (``"efficientnet"``,
            ``"resnet"``), backbone name (``"resnet34"``) or branch (``"branch_a"``, ``"branch_b"``); values are
            paths or state dicts in torchvision, timm, lukemelas or MONAI layout (see
            :mod:`medfuse.networks.backbones`). The first convolution is summed over RGB when ``in_channels=1``.
            Defaults to None.
        progress: show download progress. Defaults to True.
        download_timeout: seconds before an unreachable download host is an error. Defaults to 10.

    Raises:
        ValueError: on any unsupported argument value (the message carries the value).
        medfuse.networks.backbones.PretrainedWeightsError: when weights cannot be downloaded or do not fit.
        medfuse.errors.DataError: when a weights file does not exist.

    Examples::

        # the paper's configuration (EfficientNet-B4 + ResNet34), one grey channel, two classes
        >>> net = DualCrossAttentionNet(spatial_dims=2, in_channels=1, num_classes=2)
        >>> net(torch.randn(2, 1, 224, 224)).shape
        torch.Size([2, 2])
        # small and with ImageNet weights from local files, three scales
        >>> net = DualCrossAttentionNet(
        ...     in_channels=1, num_classes=4, backbones=("efficientnet-b0", "resnet18"), taps=(8, 16, 32),
        ...     hidden_size=128, num_heads=4, fusion="concat",
        ...     pretrained_weights={"efficientnet": "efficientnet-b0-355c32eb.pth", "resnet": "resnet18-f37072fd.pth"})
        >>> with net.capture_attention():
        ...     logits = net.eval()(x)
        >>> maps = net.get_attention_maps()  # {"stride8/a_from_b": (B, heads, N, N), ..., "cbam_spatial": ...}
        >>> result = net.predict_with_uncertainty(x, samples=20)  # probs, entropy, mutual_info, ...
    """

    def __init__(
        self,
        spatial_dims: int = 2,
        in_channels: int = 1,
        num_classes: int = 2,
        backbones: Sequence[str] = ("efficientnet-b4", "resnet34"),
        taps: Sequence[int] = (8, 16),
        hidden_size: int = 256,
        num_heads: int = 8,
        mlp_ratio: float = 2.0,
        fusion: str = "sum",
        scale_fusion: str = "concat",
        pos_embed: str = "sincos",
        attn_dropout: float = 0.0,
        dropout_prob: float = 0.3,
        cbam_reduction: int = 16,
        cbam_kernel_size: int = 7,
        qkv_bias: bool = True,
        use_flash_attention: bool = True,
        multi_label: bool = False,
        mc_samples: int = 20,
        pretrained: bool = False,
        pretrained_weights: Optional[Mapping[str, WeightsSource]] = None,
        progress: bool = True,
        download_timeout: float = 10.0,
    ) -> None:
        super().__init__()
        if spatial_dims != 2:
            raise ValueError(f"DualCrossAttentionNet supports 2D images only, got spatial_dims={spatial_dims}.")
        if in_channels not in (1, 3):
            raise ValueError(f"in_channels must be 1 (grey) or 3 (RGB), got {in_channels}.")
        if isinstance(num_classes, bool) or not isinstance(num_classes, int) or num_classes < 1:
            raise ValueError(f"num_classes must be a positive integer, got {num_classes!r}.")
        if isinstance(backbones, str) or len(backbones) != 2:
            raise ValueError(f"backbones must name two backbones (branch A, branch B), got {backbones!r}.")
        for name in backbones:
            if name not in SUPPORTED_BACKBONES:
                raise ValueError(f"unknown backbone {name!r}: expected one of {', '.join(SUPPORTED_BACKBONES)}.")
        taps_list = list(taps) if not isinstance(taps, (int, str)) else []
        if not taps_list or any(t not in TAP_STRIDES for t in taps_list) or len(set(taps_list)) != len(taps_list):
            raise ValueError(f"taps must be distinct strides from {TAP_STRIDES}, e.g. (8, 16), got {taps!r}.")
        if hidden_size < 1 or num_heads < 1 or hidden_size % num_heads != 0:
            raise ValueError(
                f"hidden_size must be a positive multiple of num_heads, got hidden_size={hidden_size}, "
                f"num_heads={num_heads}."
            )
        if fusion not in FUSION_MODES:
            raise ValueError(f"fusion must be one of {FUSION_MODES}, got {fusion!r}.")
        if scale_fusion not in FUSION_MODES:
            raise ValueError(f"scale_fusion must be one of {FUSION_MODES}, got {scale_fusion!r}.")
        if pos_embed not in POS_EMBED_MODES:
            raise ValueError(f"pos_embed must be one of {POS_EMBED_MODES}, got {pos_embed!r}.")
        if pos_embed == "sincos" and hidden_size % 4 != 0:
            raise ValueError(f"pos_embed='sincos' needs hidden_size divisible by 4, got hidden_size={hidden_size}.")
        if not 0.0 <= dropout_prob < 1.0:
            raise ValueError(f"dropout_prob must be in [0, 1), got {dropout_prob}.")
        if not 0.0 <= attn_dropout < 1.0:
            raise ValueError(f"attn_dropout must be in [0, 1), got {attn_dropout}.")
        if isinstance(mc_samples, bool) or not isinstance(mc_samples, int) or mc_samples < 1:
            raise ValueError(f"mc_samples must be a positive integer, got {mc_samples!r}.")
        name_a, name_b = str(backbones[0]), str(backbones[1])
        weights_a, weights_b = self._resolve_weights(pretrained_weights, name_a, name_b)

        self.backbones = (name_a, name_b)
        self.taps = tuple(sorted(int(t) for t in taps_list))
        self.in_channels = in_channels
        self.num_classes = num_classes
        self.num_features = hidden_size
        self.multi_label = bool(multi_label)
        self.mc_samples = mc_samples
        max_stride = self.taps[-1]

        common = dict(in_channels=in_channels, max_stride=max_stride, pretrained=pretrained, progress=progress)
        self.branch_a = build_backbone(name_a, weights=weights_a, timeout=download_timeout, **common)
        self.branch_b = build_backbone(name_b, weights=weights_b, timeout=download_timeout, **common)
        info_a = backbone_taps(self.branch_a, name_a)
        info_b = backbone_taps(self.branch_b, name_b)
        self.tap_index_a = [info_a[s].feature_index for s in self.taps]
        self.tap_index_b = [info_b[s].feature_index for s in self.taps]

        self.fusion = MultiScaleCrossAttentionFusion(
            in_channels_a=[info_a[s].channels for s in self.taps],
            in_channels_b=[info_b[s].channels for s in self.taps],
            hidden_size=hidden_size,
            num_heads=num_heads,
            mlp_ratio=mlp_ratio,
            dropout_rate=attn_dropout,
            qkv_bias=qkv_bias,
            fusion=fusion,
            scale_fusion=scale_fusion,
            pos_embed=pos_embed,
            use_flash_attention=use_flash_attention,
        )
        self.refine = CBAM(spatial_dims=2, channels=hidden_size, reduction=cbam_reduction, kernel_size=cbam_kernel_size)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.dropout = nn.Dropout(dropout_prob)
        self.head = nn.Linear(hidden_size, num_classes)
        #: the Grad-CAM layer (submodule name), read by medfuse.visualize
        self.cam_layer = "refine"

        finest = self.taps[0]
        self.feature_info = (
            [
                {"num_chs": info_a[s].channels, "reduction": s, "module": f"branch_a.{info_a[s].module}", "branch": "a"}
                for s in self.taps
            ]
            + [
                {"num_chs": info_b[s].channels, "reduction": s, "module": f"branch_b.{info_b[s].module}", "branch": "b"}
                for s in self.taps
            ]
            + [
                {"num_chs": hidden_size, "reduction": finest, "module": "fusion", "branch": "fused"},
                {"num_chs": hidden_size, "reduction": finest, "module": "refine", "branch": "fused"},
            ]
        )
        self._attention_grids: dict = {}
        #: run the two backbones on two CUDA streams (CUDA inputs only; set by ``speed_setup``'s
        #: ``concurrent_branches``): same results, the GPU may overlap the branches when neither fills it
        self.concurrent_branches = False
        self._side_stream = None

    @staticmethod
    def _resolve_weights(
        pretrained_weights: Optional[Mapping[str, WeightsSource]], name_a: str, name_b: str
    ) -> tuple[Optional[WeightsSource], Optional[WeightsSource]]:
        if not pretrained_weights:
            return None, None
        if not isinstance(pretrained_weights, Mapping):
            raise ValueError(
                f"pretrained_weights must be a mapping like {{'efficientnet': path, 'resnet': path}}, "
                f"got {type(pretrained_weights).__name__}."
            )
        keys_a = {"branch_a", name_a, backbone_family(name_a)}
        keys_b = {"branch_b", name_b, backbone_family(name_b)}
        out: list[Optional[WeightsSource]] = [None, None]
        for key, source in pretrained_weights.items():
            in_a, in_b = key in keys_a, key in keys_b
            if in_a and in_b:
                raise ValueError(
                    f"pretrained_weights key {key!r} matches both branches ({name_a}, {name_b}): "
                    f"use 'branch_a' / 'branch_b'."
                )
            if not (in_a or in_b):
                raise ValueError(
                    f"pretrained_weights key {key!r} matches no branch: use one of "
                    f"{sorted(keys_a | keys_b)}."
                )
            index = 0 if in_a else 1
            if source is None:
                continue
            if out[index] is not None:
                raise ValueError(f"pretrained_weights gives two sources for branch {'ab'[index]} (key {key!r}).")
            out[index] = source
        return out[0], out[1]

    # ------------------------------------------------------------------------------------------------------
    # forward

    @torch.jit.export
    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        """
        Args:
            x: ``(B, in_channels, H, W)``.

        Returns:
            the refined fused feature map, ``(B, hidden_size, h, w)`` at the finest tapped stride
            (``h = H / taps[0]`` for sizes divisible by 32).
        """
        if self.concurrent_branches and x.is_cuda and not torch.jit.is_scripting():
            feats_a, feats_b = self._branches_on_two_streams(x)
        else:
            feats_a = self.branch_a(x)
            feats_b = self.branch_b(x)
        taps_a = [feats_a[i] for i in self.tap_index_a]
        taps_b = [feats_b[i] for i in self.tap_index_b]
        return self.refine(self.fusion(taps_a, taps_b))

    @torch.jit.unused
    def _branches_on_two_streams(self, x: torch.Tensor) -> tuple[list[torch.Tensor], list[torch.Tensor]]:
        """Branch A on the current stream while branch B runs on a side stream (autograd runs each backward
        op on its forward op's stream). ``record_stream`` keeps the caching allocator from reusing memory one
        stream still reads."""
        main = torch.cuda.current_stream(x.device)
        if self._side_stream is None or self._side_stream.device != x.device:
            self._side_stream = torch.cuda.Stream(device=x.device)
        side = self._side_stream
        side.wait_stream(main)  # x is ready
        with torch.cuda.stream(side):
            x.record_stream(side)
            feats_b = self.branch_b(x)
        feats_a = self.branch_a(x)
        main.wait_stream(side)
        for f in feats_b:
            f.record_stream(main)
        return list(feats_a), list(feats_b)

    @torch.jit.export
    def forward_head(self, features: torch.Tensor, pre_logits: bool = False) -> torch.Tensor:
        """
        Args:
            features: output of :meth:`forward_features`, ``(B, hidden_size, h, w)``.
            pre_logits: return the pooled (and dropped-out) features ``(B, hidden_size)`` instead of logits.

        Returns:
            logits ``(B, num_classes)``, or ``(B, hidden_size)`` with ``pre_logits``.
        """
        x = self.dropout(torch.flatten(self.pool(features), 1))
        if pre_logits:
            return x
        return self.head(x)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """
        Args:
            x: ``(B, in_channels, H, W)``; H and W multiples of 32 keep every tapped grid exact.

        Returns:
            logits, ``(B, num_classes)``.
        """
        return self.forward_head(self.forward_features(x), False)

    # ------------------------------------------------------------------------------------------------------
    # classifier (timm-style)

    def get_classifier(self) -> nn.Module:
        """The final linear layer."""
        return self.head

    def reset_classifier(self, num_classes: int) -> None:
        """Replace the final linear layer by a freshly initialised one with ``num_classes`` outputs."""
        if isinstance(num_classes, bool) or not isinstance(num_classes, int) or num_classes < 1:
            raise ValueError(f"num_classes must be a positive integer, got {num_classes!r}.")
        self.num_classes = num_classes
        self.head = nn.Linear(self.num_features, num_classes).to(self.head.weight.device, self.head.weight.dtype)

    # ------------------------------------------------------------------------------------------------------
    # attention maps for visualisation

    def set_capture_attention(self, enabled: bool) -> None:
        """Keep (True) or stop keeping (False) the cross-attention and CBAM spatial maps of later forwards.

        While enabled, the cross attention runs without PyTorch's fused kernel (maps need the explicit
        softmax), which costs memory quadratic in the number of positions.
        """
        for block in self.fusion.scales:
            block.set_save_attn(enabled)
        self.refine.spatial.save_map = bool(enabled)

    def clear_attention_maps(self) -> None:
        """Release kept attention maps."""
        for block in self.fusion.scales:
            block.clear_attention_maps()
        self.refine.spatial.attention_map = torch.Tensor()
        self._attention_grids.clear()

    @contextmanager
    def capture_attention(self) -> Iterator[DualCrossAttentionNet]:
        """Context manager: forwards inside it keep their attention maps for :meth:`get_attention_maps`.

        Earlier maps are cleared on entry; the maps stay available after exit until the next capture or
        :meth:`clear_attention_maps`.
        """
        self.clear_attention_maps()
        handles = []
        for stride, block in zip(self.taps, self.fusion.scales):

            def record(module, args, stride=stride):
                self._attention_grids[stride] = tuple(int(v) for v in args[0].shape[2:])

            handles.append(block.register_forward_pre_hook(record))
        self.set_capture_attention(True)
        try:
            yield self
        finally:
            self.set_capture_attention(False)
            for handle in handles:
                handle.remove()

    def get_attention_maps(self, spatial: bool = False) -> dict[str, torch.Tensor]:
        """Maps kept by the last forward inside :meth:`capture_attention`.

        Args:
            spatial: reshape cross-attention maps to ``(B, heads, h, w, h, w)`` (query grid, then key grid).

        Returns:
            ``{"stride<s>/a_from_b": (B, heads, N, N), "stride<s>/b_from_a": ..., "cbam_spatial": (B, 1, h0, w0)}``
            with ``N = h * w`` positions of the stride-``s`` grid in row-major order; ``a_from_b`` holds branch A's
            queries attending to branch B's positions (rows sum to 1).

        Raises:
            RuntimeError: when no maps were captured.
        """
        maps: dict[str, torch.Tensor] = {}
        for stride, block in zip(self.taps, self.fusion.scales):
            for direction, att in block.attention_maps().items():
                if att.numel() == 0:
                    continue
                if spatial:
                    h, w = self._attention_grids[stride]
                    att = att.reshape(att.shape[0], att.shape[1], h, w, h, w)
                maps[f"stride{stride}/{direction}"] = att
        if self.refine.spatial.attention_map.numel() > 0:
            maps["cbam_spatial"] = self.refine.spatial.attention_map
        if not maps:
            raise RuntimeError(
                "no attention maps captured: run a forward inside `with model.capture_attention():` first."
            )
        return maps

    # ------------------------------------------------------------------------------------------------------
    # uncertainty

    def predict_with_uncertainty(
        self,
        x: torch.Tensor,
        samples: Optional[int] = None,
        return_samples: bool = False,
        multi_label: Optional[bool] = None,
        seed: Optional[int] = None,
    ) -> MCDropoutResult:
        """Monte-Carlo dropout prediction (see :func:`medfuse.networks.uncertainty.mc_dropout_predict`).

        Only dropout layers are switched to training mode (BatchNorm and EfficientNet drop-connect stay in eval
        mode; batch size 1 works; every module's mode is restored). When the only active dropout is the one
        before the head (``attn_dropout=0``, the default), features are computed once and the head is sampled
        ``samples`` times, which is exact and much cheaper.

        Args:
            x: ``(B, in_channels, H, W)``.
            samples: number of passes; defaults to ``mc_samples`` (20).
            return_samples: also return every pass's probabilities, ``(T, B, K)``.
            multi_label: sigmoid per label; defaults to the constructor's ``multi_label``.
            seed: per-item reproducible passes (seeded from the input image and ``seed``); None: global generator.

        Returns:
            :class:`~medfuse.networks.uncertainty.MCDropoutResult` (``probs``, ``entropy``, ``mutual_info``,
            ``expected_entropy``, ``sample_probs``).
        """
        samples = self.mc_samples if samples is None else samples
        multi = self.multi_label if multi_label is None else bool(multi_label)
        head_only = not any(
            isinstance(m, DROPOUT_TYPES) and m.p > 0 for m in self.modules() if m is not self.dropout
        )
        if head_only:
            # no active dropout before the head: the features are deterministic, compute them once
            with torch.no_grad(), enable_mc_dropout(self):
                features = self.forward_features(x)
            return mc_dropout_predict(
                self, features, samples, multi_label=multi, return_samples=return_samples, forward_fn=self.forward_head,
                seed=seed, item_keys=x,
            )
        return mc_dropout_predict(self, x, samples, multi_label=multi, return_samples=return_samples, seed=seed)


DCATNet = DCAT = DualCrossAttentionNet
