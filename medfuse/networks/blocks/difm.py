# Copyright (c) medfuse contributors
# Licensed under the Apache License, Version 2.0
"""DIFM's dual interactive fusion of an original and an enhanced feature map (method 3 of the design notes).

:class:`ChannelMeanGate` is the paper's "global spatial attention": a per-image, parameter-free gate. It is not
:class:`GlobalSpatialAttention` (method 5, one learned map shared by all images of a domain), which lives in its
own module.
"""

from __future__ import annotations

from typing import Optional

import torch
import torch.nn as nn
import torch.nn.functional as F

from medfuse.networks.blocks.cross_attention_fusion import (
    POS_EMBED_MODES,
    CrossAttentionLayer,
    sincos_position_embedding_coords,
)

__all__ = ["ChannelMeanGate", "DualInteractiveFusion", "pooled_cell_centres"]


def pooled_cell_centres(size: int, out_size: int, device: torch.device) -> torch.Tensor:
    """Centres, in input pixels, of the ``out_size`` cells of an adaptive average pooling of ``size`` pixels.

    Cell ``i`` of ``torch.nn.functional.adaptive_avg_pool*`` averages pixels ``floor(i * size / out_size)`` to
    ``ceil((i + 1) * size / out_size) - 1``; its centre is the mean of the two. With ``out_size == size`` the
    centres are ``0, 1, ..., size - 1``.

    Returns:
        ``(out_size,)`` float32.
    """
    i = torch.arange(out_size, device=device, dtype=torch.int64)
    start = torch.div(i * size, out_size, rounding_mode="floor")
    end = torch.div((i + 1) * size + out_size - 1, out_size, rounding_mode="floor")  # exclusive
    return (start + end - 1).to(torch.float32) * 0.5


class ChannelMeanGate(nn.Module):
    """DIFM's "global spatial attention": Noh, Jeon & Park, Pattern Recognit. Lett. 197, 2025.

    ``x * sigmoid(mean_c(x))``: the channel mean of each image gives one weight per position of that image;
    no parameters. This is a per-image gate, unlike :class:`GlobalSpatialAttention` (method 5 of the design
    notes: a single learned map shared by all images) and unlike CBAM's spatial attention (a learned convolution
    over mean and max). The weight map is the output of the ``gate`` submodule (hook it by name).

    Examples::

        >>> ChannelMeanGate()(torch.randn(2, 32, 8, 8)).shape
        torch.Size([2, 32, 8, 8])
    """

    def __init__(self) -> None:
        super().__init__()
        self.gate = nn.Sigmoid()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """
        Args:
            x: ``(B, C, *spatial)``.

        Returns:
            ``(B, C, *spatial)``, ``x`` scaled by ``sigmoid`` of its channel mean, ``(B, 1, *spatial)``.
        """
        return x * self.gate(x.mean(dim=1, keepdim=True))


class DualInteractiveFusion(nn.Module):
    """Dual interactive fusion module (DIFM): Noh, Jeon & Park, Pattern Recognit. Lett. 197, 2025.

    ``forward(a, b) = gate_a(a <- b) + gate_b(b <- a)`` for an original ``a`` and an enhanced ``b`` feature map
    of one skip level. ``a <- b`` (submodule ``a_from_b``) is a :class:`CrossAttentionLayer` (pre-norm attention
    + MLP, residual): queries from every pixel of ``a``, keys and values from ``b`` average pooled to at most
    ``kv_size`` x ``kv_size`` cells (adaptive pooling; a grid already that small is not pooled), which keeps the
    cost linear in the number of pixels. ``b <- a`` (``b_from_a``) is the reverse. Each direction is gated by a
    :class:`ChannelMeanGate` (``gate_a``, ``gate_b``) and the two are summed.

    Positions (``pos_embed="sincos"``): the fixed 2D sine-cosine embedding of each token's position in input
    pixels; a pooled cell gets the position of the centre of the pixels it averages, so a query and the cell
    over the same place carry matching embeddings.

    Args:
        channels: channels of ``a`` and ``b`` (and of the output).
        num_heads: attention heads (must divide ``channels``). Defaults to 4.
        mlp_ratio: MLP hidden width as a multiple of ``channels``. Defaults to 2.0.
        kv_size: keys/values grid is at most ``kv_size`` x ``kv_size``. Defaults to 16.
        pos_embed: ``"sincos"`` or ``"none"`` (content-only attention). Defaults to ``"sincos"``.
        dropout_rate: attention and MLP dropout. Defaults to 0.0.

    Raises:
        ValueError: ``channels`` not divisible by ``num_heads`` (or by 4 with ``"sincos"``), ``kv_size < 1``, an
            unknown ``pos_embed``, ``mlp_ratio <= 0``; in ``forward``, ``a`` and ``b`` of different shapes.

    Examples::

        >>> difm = DualInteractiveFusion(channels=32, num_heads=4, kv_size=8)
        >>> difm(torch.randn(2, 32, 24, 40), torch.randn(2, 32, 24, 40)).shape
        torch.Size([2, 32, 24, 40])
    """

    def __init__(
        self,
        channels: int,
        num_heads: int = 4,
        mlp_ratio: float = 2.0,
        kv_size: int = 16,
        pos_embed: str = "sincos",
        dropout_rate: float = 0.0,
    ) -> None:
        super().__init__()
        if channels < 1:
            raise ValueError(f"channels must be positive, got {channels}.")
        if num_heads < 1 or channels % num_heads != 0:
            raise ValueError(
                f"channels must be divisible by num_heads, got channels={channels}, num_heads={num_heads}."
            )
        if kv_size < 1:
            raise ValueError(f"kv_size must be >= 1, got {kv_size}.")
        if pos_embed not in POS_EMBED_MODES:
            raise ValueError(f"pos_embed must be one of {POS_EMBED_MODES}, got {pos_embed!r}.")
        if pos_embed == "sincos" and channels % 4 != 0:
            raise ValueError(f"pos_embed='sincos' needs channels divisible by 4, got channels={channels}.")
        if mlp_ratio <= 0:
            raise ValueError(f"mlp_ratio must be positive, got {mlp_ratio}.")
        self.channels = int(channels)
        self.kv_size = int(kv_size)
        self.use_pos_embed = pos_embed == "sincos"
        mlp_dim = max(1, int(round(channels * mlp_ratio)))
        self.a_from_b = CrossAttentionLayer(channels, num_heads, mlp_dim, dropout_rate)
        self.b_from_a = CrossAttentionLayer(channels, num_heads, mlp_dim, dropout_rate)
        self.gate_a = ChannelMeanGate()
        self.gate_b = ChannelMeanGate()

    def set_save_attn(self, save: bool) -> None:
        """Keep (True) or stop keeping (False) the attention matrices of both directions in ``<dir>.attn.att_mat``
        (``(B, heads, H * W, h * w)``, queries at full resolution, keys pooled)."""
        self.a_from_b.set_save_attn(save)
        self.b_from_a.set_save_attn(save)

    def forward(self, a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
        """
        Args:
            a: original-image features, ``(B, channels, H, W)``.
            b: enhanced-image features, same shape.

        Returns:
            ``(B, channels, H, W)``.

        Raises:
            ValueError: when the shapes of ``a`` and ``b`` differ.
        """
        if a.shape != b.shape:
            raise ValueError(
                f"DualInteractiveFusion needs a and b of one shape, got {list(a.shape)} and {list(b.shape)}."
            )
        shape = a.shape
        height, width = shape[2], shape[3]
        h, w = min(height, self.kv_size), min(width, self.kv_size)
        tokens_a = a.flatten(2).transpose(1, 2)
        tokens_b = b.flatten(2).transpose(1, 2)
        ctx_a = tokens_a
        ctx_b = tokens_b
        if h != height or w != width:
            ctx_a = F.adaptive_avg_pool2d(a, [h, w]).flatten(2).transpose(1, 2)
            ctx_b = F.adaptive_avg_pool2d(b, [h, w]).flatten(2).transpose(1, 2)
        pos: Optional[torch.Tensor] = None
        ctx_pos: Optional[torch.Tensor] = None
        if self.use_pos_embed:
            rows = torch.arange(height, device=a.device, dtype=torch.float32)
            cols = torch.arange(width, device=a.device, dtype=torch.float32)
            pos = sincos_position_embedding_coords(rows, cols, self.channels).to(tokens_a.dtype)
            ctx_pos = sincos_position_embedding_coords(
                pooled_cell_centres(height, h, a.device), pooled_cell_centres(width, w, a.device), self.channels
            ).to(tokens_a.dtype)
        out_a = self.a_from_b(tokens_a, ctx_b, pos, ctx_pos).transpose(1, 2).reshape(shape)
        out_b = self.b_from_a(tokens_b, ctx_a, pos, ctx_pos).transpose(1, 2).reshape(shape)
        return self.gate_a(out_a) + self.gate_b(out_b)
