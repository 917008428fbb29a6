# Copyright (c) medfuse contributors
# Licensed under the Apache License, Version 2.0
"""CBAM channel and spatial attention (per image), as used by DCAT's feature refinement.

Not to be confused with *global* spatial attention (one learned map shared by all images of a domain,
method 5 of the design notes), which lives in its own module.
"""

from __future__ import annotations

import torch
import torch.nn as nn
from monai.networks.layers.factories import Conv, Pool

__all__ = ["CBAM", "CBAMChannelAttention", "CBAMSpatialAttention"]


def _check_spatial_dims(spatial_dims: int) -> None:
    if spatial_dims not in (1, 2, 3):
        raise ValueError(f"spatial_dims must be 1, 2 or 3, got {spatial_dims}.")


class CBAMChannelAttention(nn.Module):
    """CBAM channel attention: Woo et al., "CBAM: Convolutional Block Attention Module", ECCV 2018.

    ``x * sigmoid(MLP(avgpool(x)) + MLP(maxpool(x)))`` with one MLP (two 1x1 convolutions) shared by both
    pooled descriptors. Unlike MONAI's ``ChannelSELayer`` (squeeze-excitation, average pooling only), the max
    pooled descriptor is used too.

    Args:
        spatial_dims: number of spatial dimensions. Defaults to 2.
        channels: number of input (and output) channels.
        reduction: channel reduction ratio of the MLP; the hidden width is ``max(1, channels // reduction)``.
            Defaults to 16.

    Raises:
        ValueError: when ``channels`` or ``reduction`` is not positive, or ``spatial_dims`` is not 1, 2 or 3.

    Examples::

        >>> att = CBAMChannelAttention(spatial_dims=2, channels=64)
        >>> att(torch.randn(2, 64, 8, 8)).shape
        torch.Size([2, 64, 8, 8])
    """

    def __init__(self, spatial_dims: int = 2, channels: int = 64, reduction: int = 16) -> None:
        super().__init__()
        _check_spatial_dims(spatial_dims)
        if channels < 1:
            raise ValueError(f"channels must be positive, got {channels}.")
        if reduction < 1:
            raise ValueError(f"reduction must be positive, got {reduction}.")
        hidden = max(1, channels // reduction)
        conv = Conv[Conv.CONV, spatial_dims]
        self.avg_pool = Pool[Pool.ADAPTIVEAVG, spatial_dims](1)
        self.max_pool = Pool[Pool.ADAPTIVEMAX, spatial_dims](1)
        self.mlp = nn.Sequential(
            conv(channels, hidden, kernel_size=1, bias=True),
            nn.ReLU(inplace=True),
            conv(hidden, channels, kernel_size=1, bias=True),
        )
        self.gate = nn.Sigmoid()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """
        Args:
            x: ``(B, C, *spatial)``.

        Returns:
            ``(B, C, *spatial)``, ``x`` scaled per channel.
        """
        weights = self.gate(self.mlp(self.avg_pool(x)) + self.mlp(self.max_pool(x)))
        return x * weights


class CBAMSpatialAttention(nn.Module):
    """CBAM spatial attention (per image): Woo et al., "CBAM: Convolutional Block Attention Module", ECCV 2018.

    ``x * sigmoid(conv([mean_c(x), max_c(x)]))``: a ``kernel_size`` convolution over the channel-wise mean
    and maximum gives one weight per position of each image. The weight map is the output of the ``gate``
    submodule (hook it by name), and is also kept in ``attention_map`` while ``save_map`` is True.

    Args:
        spatial_dims: number of spatial dimensions. Defaults to 2.
        kernel_size: odd convolution size. Defaults to 7.
        save_map: keep the last weight map (detached) in ``attention_map``. Defaults to False.

    Raises:
        ValueError: when ``kernel_size`` is not a positive odd number, or ``spatial_dims`` is not 1, 2 or 3.

    Examples::

        >>> att = CBAMSpatialAttention(spatial_dims=2, kernel_size=7, save_map=True)
        >>> y = att(torch.randn(2, 64, 8, 8))
        >>> att.attention_map.shape
        torch.Size([2, 1, 8, 8])
    """

    def __init__(self, spatial_dims: int = 2, kernel_size: int = 7, save_map: bool = False) -> None:
        super().__init__()
        _check_spatial_dims(spatial_dims)
        if kernel_size < 1 or kernel_size % 2 == 0:
            raise ValueError(f"kernel_size must be a positive odd number, got {kernel_size}.")
        self.conv = Conv[Conv.CONV, spatial_dims](2, 1, kernel_size=kernel_size, padding=kernel_size // 2, bias=True)
        self.gate = nn.Sigmoid()
        self.save_map = save_map
        self.attention_map = torch.Tensor()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """
        Args:
            x: ``(B, C, *spatial)``.

        Returns:
            ``(B, C, *spatial)``, ``x`` scaled per position; the weights, ``(B, 1, *spatial)``, are the output
            of ``self.gate``.
        """
        descriptor = torch.cat([x.mean(dim=1, keepdim=True), x.amax(dim=1, keepdim=True)], dim=1)
        weights = self.gate(self.conv(descriptor))
        if self.save_map:
            self.attention_map = weights.detach()
        return x * weights


class CBAM(nn.Module):
    """Convolutional Block Attention Module: Woo et al., ECCV 2018 (channel attention, then spatial attention).

    Submodules ``channel`` (:class:`CBAMChannelAttention`) and ``spatial`` (:class:`CBAMSpatialAttention`);
    the spatial weight map is the output of ``spatial.gate``.

    Args:
        spatial_dims: number of spatial dimensions. Defaults to 2.
        channels: number of channels.
        reduction: channel attention reduction ratio. Defaults to 16.
        kernel_size: spatial attention convolution size. Defaults to 7.

    Examples::

        >>> cbam = CBAM(spatial_dims=2, channels=64)
        >>> cbam(torch.randn(2, 64, 8, 8)).shape
        torch.Size([2, 64, 8, 8])
    """

    def __init__(self, spatial_dims: int = 2, channels: int = 64, reduction: int = 16, kernel_size: int = 7) -> None:
        super().__init__()
        self.channel = CBAMChannelAttention(spatial_dims, channels, reduction)
        self.spatial = CBAMSpatialAttention(spatial_dims, kernel_size)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """
        Args:
            x: ``(B, C, *spatial)``.

        Returns:
            ``(B, C, *spatial)``.
        """
        return self.spatial(self.channel(x))
