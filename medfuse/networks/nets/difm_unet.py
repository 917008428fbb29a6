# Copyright (c) medfuse contributors
# Licensed under the Apache License, Version 2.0
"""Dual interaction U-Net (DIFM): two encoders, one for the original and one for the enhanced image."""

from __future__ import annotations

from collections.abc import Sequence
from typing import List, Union

import torch
import torch.nn as nn
from monai.networks.layers.factories import Conv
from monai.networks.nets.basic_unet import Down, TwoConv, UpCat

from medfuse.networks.blocks.difm import DualInteractiveFusion

__all__ = ["DIFMUNet", "DIFMUnet", "DIFMEncoder", "UPSAMPLE_MODES"]

#: Values of ``DIFMUNet(upsample=...)`` (those of MONAI's ``BasicUNet``).
UPSAMPLE_MODES = ("deconv", "pixelshuffle", "nontrainable")
_LEVELS = (0, 1, 2, 3, 4)


class DIFMEncoder(nn.Module):
    """The encoder half of MONAI's ``BasicUNet``: ``conv_0`` (TwoConv), ``down_1`` ... ``down_4`` (max pool +
    TwoConv); ``forward`` returns the five level maps, strides 1, 2, 4, 8, 16.

    Args:
        spatial_dims, in_channels, features, act, norm, bias, dropout: as for ``BasicUNet`` (``features`` needs
            at least five values; the first five are used).
    """

    def __init__(
        self,
        spatial_dims: int,
        in_channels: int,
        features: Sequence[int],
        act: Union[str, tuple],
        norm: Union[str, tuple],
        bias: bool,
        dropout: Union[float, tuple],
    ) -> None:
        super().__init__()
        fea = tuple(int(f) for f in features)
        self.conv_0 = TwoConv(spatial_dims, in_channels, fea[0], act, norm, bias, dropout)
        self.down_1 = Down(spatial_dims, fea[0], fea[1], act, norm, bias, dropout)
        self.down_2 = Down(spatial_dims, fea[1], fea[2], act, norm, bias, dropout)
        self.down_3 = Down(spatial_dims, fea[2], fea[3], act, norm, bias, dropout)
        self.down_4 = Down(spatial_dims, fea[3], fea[4], act, norm, bias, dropout)

    def forward(self, x: torch.Tensor) -> List[torch.Tensor]:
        """
        Args:
            x: ``(B, in_channels, *spatial)``.

        Returns:
            five maps, ``(B, features[l], *spatial / 2**l)`` for levels ``l = 0..4`` (odd sizes floored).
        """
        x0 = self.conv_0(x)
        x1 = self.down_1(x0)
        x2 = self.down_2(x1)
        x3 = self.down_3(x2)
        x4 = self.down_4(x3)
        return [x0, x1, x2, x3, x4]


class DIFMUNet(nn.Module):
    """Dual interaction U-Net: Noh, Jeon & Park, "Dual interaction network with dual interactive fusion module
    for medical image segmentation", Pattern Recognition Letters 197, 2025 (method 3 of the design notes).

    The input stacks an original image and an enhanced copy of it (e.g. by
    :class:`medfuse.transforms.ContrastEnhanced`) along channels, original first: ``(B, 2 * in_channels, H, W)``.
    Each half has its own encoder (``encoder_orig``, ``encoder_enh``; MONAI ``BasicUNet`` blocks), or one shared
    encoder (``share_encoder=True``: both names refer to one module). At each encoder level ``l`` the two maps
    are fused by a :class:`~medfuse.networks.blocks.DualInteractiveFusion` (``fusion.<l>``) when ``l`` is in
    ``difm_levels``, else summed; the fused maps feed a ``BasicUNet`` decoder (skips at levels 0-3, bottleneck
    at level 4). Output: logits ``(B, out_channels, H, W)``, background included. Sizes that are not multiples of
    16 work as in ``BasicUNet`` (the decoder pads to the skip's size).

    One input tensor and one output tensor, so ``monai.bundle.verify_net_in_out``, ``SliceInferer`` and
    TorchScript (``torch.jit.script``) work as for any MONAI segmentation network.

    Stable submodule names (public API):

    * ``encoder_orig``, ``encoder_enh``: ``conv_0``, ``down_1`` ... ``down_4`` each.
    * ``fusion``: ``ModuleDict`` keyed by level (``"0"`` ... ``"4"``), each with ``a_from_b`` (original queries
      the enhanced map), ``b_from_a``, ``gate_a``, ``gate_b`` (their outputs are the gated maps).
    * ``upcat_4``, ``upcat_3``, ``upcat_2``, ``upcat_1``, ``final_conv``: the ``BasicUNet`` decoder.

    :attr:`cam_layer` is ``"upcat_4"``: the first decoder stage (stride 8), which reads the fused bottleneck and
    the fused level-3 skip of both images and exists whatever ``difm_levels`` is.

    Choices the paper leaves open, as made here: ``BasicUNet`` encoder/decoder widths; keys/values pooled to at
    most ``kv_size`` x ``kv_size`` (attention cost linear in pixels at the fine levels); fixed sine-cosine
    positions in input pixels; separate encoder weights by default.

    Args:
        spatial_dims: number of spatial dimensions; only 2 is supported. Defaults to 2.
        in_channels: channels of *one* image (the input has twice as many). Defaults to 1.
        out_channels: segmentation classes including the background (>= 2). Defaults to 2.
        features: ``BasicUNet`` widths, six ints (encoder levels 0-4, last decoder level). Defaults to
            ``(32, 32, 64, 128, 256, 32)``.
        share_encoder: one encoder for both images. Defaults to False.
        difm_levels: encoder levels fused by DIFM (distinct, from 0-4); the others are summed. Defaults to
            ``(0, 1, 2, 3, 4)``.
        num_heads: attention heads of every DIFM (must divide the widths of the fused levels). Defaults to 4.
        kv_size: keys/values grid of every DIFM is at most ``kv_size`` x ``kv_size``. Defaults to 16.
        mlp_ratio: DIFM MLP width ratio. Defaults to 2.0.
        pos_embed: DIFM positions, ``"sincos"`` or ``"none"``. Defaults to ``"sincos"``.
        attn_dropout: dropout inside the DIFM attention layers. Defaults to 0.0.
        act, norm, bias, dropout, upsample: as for MONAI's ``BasicUNet``. Defaults:
            ``("LeakyReLU", {"negative_slope": 0.1, "inplace": True})``, ``("instance", {"affine": True})``, True,
            0.0, ``"deconv"``.

    Raises:
        ValueError: on any unsupported argument value (the message carries the value); in ``forward``, an input
            whose channels are not ``2 * in_channels``.

    Examples::

        >>> net = DIFMUNet(spatial_dims=2, in_channels=1, out_channels=4)
        >>> image, enhanced = torch.rand(2, 1, 128, 128), torch.rand(2, 1, 128, 128)
        >>> net(torch.cat([image, enhanced], dim=1)).shape
        torch.Size([2, 4, 128, 128])
        # one shared encoder, DIFM on the three deepest levels only
        >>> net = DIFMUNet(out_channels=9, share_encoder=True, difm_levels=(2, 3, 4), kv_size=8)
    """

    __constants__ = ["sum_levels", "in_channels"]

    def __init__(
        self,
        spatial_dims: int = 2,
        in_channels: int = 1,
        out_channels: int = 2,
        features: Sequence[int] = (32, 32, 64, 128, 256, 32),
        share_encoder: bool = False,
        difm_levels: Sequence[int] = (0, 1, 2, 3, 4),
        num_heads: int = 4,
        kv_size: int = 16,
        mlp_ratio: float = 2.0,
        pos_embed: str = "sincos",
        attn_dropout: float = 0.0,
        act: Union[str, tuple] = ("LeakyReLU", {"negative_slope": 0.1, "inplace": True}),
        norm: Union[str, tuple] = ("instance", {"affine": True}),
        bias: bool = True,
        dropout: Union[float, tuple] = 0.0,
        upsample: str = "deconv",
    ) -> None:
        super().__init__()
        if spatial_dims != 2:
            raise ValueError(f"DIFMUNet supports 2D images only (slice 3D volumes), got spatial_dims={spatial_dims}.")
        for name, v in (("in_channels", in_channels), ("out_channels", out_channels)):
            if isinstance(v, bool) or not isinstance(v, int) or v < 1:
                raise ValueError(f"{name} must be a positive int, got {v!r}.")
        if out_channels < 2:
            raise ValueError(f"out_channels counts the background too and must be >= 2, got {out_channels}.")
        fea = tuple(int(f) for f in features)
        if len(fea) != 6 or min(fea) < 1:
            raise ValueError(f"features must be six positive ints (as for BasicUNet), got {tuple(features)}.")
        levels = [int(lv) for lv in difm_levels]
        if any(lv not in _LEVELS for lv in levels) or len(set(levels)) != len(levels):
            raise ValueError(f"difm_levels must be distinct levels from {_LEVELS}, got {tuple(difm_levels)}.")
        for lv in levels:
            if num_heads < 1 or fea[lv] % num_heads != 0:
                raise ValueError(
                    f"num_heads must divide the width of every DIFM level, got num_heads={num_heads} and "
                    f"features[{lv}]={fea[lv]}."
                )
        if kv_size < 1:
            raise ValueError(f"kv_size must be >= 1, got {kv_size}.")
        if upsample not in UPSAMPLE_MODES:
            raise ValueError(f"upsample must be one of {UPSAMPLE_MODES}, got {upsample!r}.")
        self.spatial_dims = 2
        self.in_channels = int(in_channels)
        self.out_channels = int(out_channels)
        self.features = fea
        self.share_encoder = bool(share_encoder)
        self.difm_levels = tuple(sorted(levels))
        self.sum_levels = tuple(lv for lv in _LEVELS if lv not in levels)

        self.encoder_orig = DIFMEncoder(spatial_dims, in_channels, fea, act, norm, bias, dropout)
        self.encoder_enh = (
            self.encoder_orig
            if self.share_encoder
            else DIFMEncoder(spatial_dims, in_channels, fea, act, norm, bias, dropout)
        )
        self.fusion = nn.ModuleDict(
            {
                str(lv): DualInteractiveFusion(
                    fea[lv], num_heads=num_heads, mlp_ratio=mlp_ratio, kv_size=kv_size, pos_embed=pos_embed,
                    dropout_rate=attn_dropout,
                )
                for lv in self.difm_levels
            }
        )
        self.upcat_4 = UpCat(spatial_dims, fea[4], fea[3], fea[3], act, norm, bias, dropout, upsample)
        self.upcat_3 = UpCat(spatial_dims, fea[3], fea[2], fea[2], act, norm, bias, dropout, upsample)
        self.upcat_2 = UpCat(spatial_dims, fea[2], fea[1], fea[1], act, norm, bias, dropout, upsample)
        self.upcat_1 = UpCat(spatial_dims, fea[1], fea[0], fea[5], act, norm, bias, dropout, upsample, halves=False)
        self.final_conv = Conv[Conv.CONV, spatial_dims](fea[5], out_channels, kernel_size=1)
        self.cam_layer = "upcat_4"

    def fuse(self, x: torch.Tensor) -> List[torch.Tensor]:
        """The five fused encoder maps (levels 0-4) of an input ``(B, 2 * in_channels, H, W)``."""
        if x.dim() != 4 or x.shape[1] != 2 * self.in_channels:
            raise ValueError(
                f"DIFMUNet expects (B, {2 * self.in_channels}, H, W): the original image ({self.in_channels} "
                f"channel(s)) and its enhanced copy stacked along channels, original first, got {list(x.shape)}; "
                f"stack them, e.g. torch.cat([image, enhanced], dim=1) or ConcatItemsd(keys=['image', "
                f"'image_enhanced'], name='image'), or set in_channels to the channels of one image."
            )
        feats_o = self.encoder_orig(x[:, : self.in_channels])
        feats_e = self.encoder_enh(x[:, self.in_channels :])
        fused: List[torch.Tensor] = [f for f in feats_o]
        for key, block in self.fusion.items():
            lv = int(key)
            fused[lv] = block(feats_o[lv], feats_e[lv])
        for lv in self.sum_levels:
            fused[lv] = feats_o[lv] + feats_e[lv]
        return fused

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """
        Args:
            x: ``(B, 2 * in_channels, H, W)``, the original image's channels first, then the enhanced copy's.

        Returns:
            logits ``(B, out_channels, H, W)``.

        Raises:
            ValueError: when ``x`` is not ``(B, 2 * in_channels, H, W)``.
        """
        f = self.fuse(x)
        u4 = self.upcat_4(f[4], f[3])
        u3 = self.upcat_3(u4, f[2])
        u2 = self.upcat_2(u3, f[1])
        u1 = self.upcat_1(u2, f[0])
        return self.final_conv(u1)


DIFMUnet = DIFMUNet
