# Copyright (c) medfuse contributors
# Licensed under the Apache License, Version 2.0
"""Bidirectional cross-attention fusion of two 2D feature maps, one scale or several.

Built on MONAI's :class:`~monai.networks.blocks.CrossAttentionBlock` and :class:`~monai.networks.blocks.MLPBlock`.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Optional

import torch
import torch.nn as nn
import torch.nn.functional as F
from monai.networks.blocks import CrossAttentionBlock, MLPBlock

__all__ = [
    "BidirectionalCrossAttentionFusion",
    "CrossAttentionLayer",
    "MultiScaleCrossAttentionFusion",
    "sincos_position_embedding_2d",
    "sincos_position_embedding_coords",
]

FUSION_MODES = ("sum", "concat")
POS_EMBED_MODES = ("sincos", "none")


def sincos_position_embedding_2d(
    height: int, width: int, dim: int, device: torch.device, dtype: torch.dtype
) -> torch.Tensor:
    """Fixed 2D sine-cosine position embedding, ``(1, height * width, dim)``, row-major like ``flatten(2)``.

    A quarter of the channels each hold sin/cos of the row and of the column index at geometric frequencies
    (``dim`` must be divisible by 4). Parameter-free, so any input size works.
    """
    rows = torch.arange(height, device=device, dtype=torch.float32)
    cols = torch.arange(width, device=device, dtype=torch.float32)
    return sincos_position_embedding_coords(rows, cols, dim).to(dtype)


def sincos_position_embedding_coords(rows: torch.Tensor, cols: torch.Tensor, dim: int) -> torch.Tensor:
    """:func:`sincos_position_embedding_2d` at arbitrary (fractional) coordinates, float32.

    Args:
        rows: ``(h,)`` row coordinates, in pixels of some reference grid.
        cols: ``(w,)`` column coordinates.
        dim: embedding width (divisible by 4).

    Returns:
        ``(1, h * w, dim)``, row-major. At integer coordinates ``0..h-1`` / ``0..w-1`` it equals
        :func:`sincos_position_embedding_2d`, so a coarse grid whose cells are given the pixel coordinates of their
        centres is embedded consistently with the full-resolution grid.
    """
    quarter = dim // 4
    omega = 1.0 / (10000.0 ** (torch.arange(quarter, device=rows.device, dtype=torch.float32) / quarter))
    height, width = rows.shape[0], cols.shape[0]
    r = rows.to(torch.float32)[:, None] * omega[None, :]
    c = cols.to(torch.float32)[:, None] * omega[None, :]
    r = r[:, None, :].expand(height, width, quarter)
    c = c[None, :, :].expand(height, width, quarter)
    return torch.cat([r.sin(), r.cos(), c.sin(), c.cos()], dim=-1).reshape(1, height * width, dim)


class CrossAttentionLayer(nn.Module):
    """One direction of cross attention on token sequences, as a pre-norm transformer decoder layer.

    ``x = x + attn(LN(x) [+ pos], LN(context) [+ context_pos, or pos]);  x = x + MLP(LN(x));  return LN(x)``
    (queries from ``x``, keys and values from ``context``). The attention is MONAI's ``CrossAttentionBlock``
    (submodule ``attn``); ``set_save_attn(True)`` makes it keep the attention matrix in ``attn.att_mat``,
    switching PyTorch's fused attention off meanwhile (the two cannot be combined).

    Args:
        hidden_size: token width.
        num_heads: number of attention heads (must divide ``hidden_size``).
        mlp_dim: hidden width of the MLP.
        dropout_rate: dropout of the attention weights, attention output and MLP. Defaults to 0.0.
        qkv_bias: bias of the query/key/value projections. Defaults to True.
        use_flash_attention: use ``torch.nn.functional.scaled_dot_product_attention`` when not capturing maps.
            Only honoured when ``dropout_rate == 0``: MONAI 1.6.1 passes the dropout rate to the fused kernel
            even in eval mode, which would make evaluation random. Defaults to True.

    Raises:
        ValueError: when ``hidden_size`` is not divisible by ``num_heads`` or ``dropout_rate`` is not in [0, 1).
    """

    def __init__(
        self,
        hidden_size: int,
        num_heads: int,
        mlp_dim: int,
        dropout_rate: float = 0.0,
        qkv_bias: bool = True,
        use_flash_attention: bool = True,
    ) -> None:
        super().__init__()
        if num_heads < 1 or hidden_size % num_heads != 0:
            raise ValueError(
                f"hidden_size must be divisible by num_heads, got hidden_size={hidden_size}, num_heads={num_heads}."
            )
        if not 0.0 <= dropout_rate < 1.0:
            raise ValueError(f"dropout_rate must be in [0, 1), got {dropout_rate}.")
        self.flash = bool(use_flash_attention) and dropout_rate == 0.0
        self.norm_q = nn.LayerNorm(hidden_size)
        self.norm_kv = nn.LayerNorm(hidden_size)
        self.attn = CrossAttentionBlock(
            hidden_size=hidden_size,
            num_heads=num_heads,
            dropout_rate=dropout_rate,
            qkv_bias=qkv_bias,
            save_attn=False,
            use_flash_attention=self.flash,
        )
        self.norm_mlp = nn.LayerNorm(hidden_size)
        self.mlp = MLPBlock(hidden_size, mlp_dim, dropout_rate, act="GELU")
        self.norm_out = nn.LayerNorm(hidden_size)

    def set_save_attn(self, save: bool) -> None:
        """Keep (True) or stop keeping (False) the attention matrix in ``attn.att_mat``."""
        self.attn.save_attn = bool(save)
        self.attn.use_flash_attention = self.flash and not save

    def forward(
        self,
        x: torch.Tensor,
        context: torch.Tensor,
        pos: Optional[torch.Tensor] = None,
        context_pos: Optional[torch.Tensor] = None,
    ) -> torch.Tensor:
        """
        Args:
            x: queries, ``(B, N, hidden_size)``.
            context: keys and values, ``(B, M, hidden_size)``.
            pos: optional position embedding added to the normalised queries, broadcastable to ``x``; without
                ``context_pos`` it is added to the normalised context too (so then ``N == M``).
            context_pos: optional position embedding of the context, broadcastable to ``context``; when given,
                ``pos`` goes to the queries only and ``context_pos`` to the context (for ``N != M``, e.g. a
                pooled context).

        Returns:
            ``(B, N, hidden_size)``.
        """
        q = self.norm_q(x)
        kv = self.norm_kv(context)
        if pos is not None:
            q = q + pos
        if context_pos is not None:
            kv = kv + context_pos
        elif pos is not None:
            kv = kv + pos
        x = x + self.attn(q, kv)
        x = x + self.mlp(self.norm_mlp(x))
        return self.norm_out(x)


class BidirectionalCrossAttentionFusion(nn.Module):
    """Dual cross attention of two feature maps: Borah & Singh, arXiv 2503.11851, 2025 (DCAT).

    Both maps are projected to ``hidden_size`` (1x1 convolution + BatchNorm, submodules ``proj_a`` /
    ``proj_b``), ``b`` is resized to ``a``'s grid if the two differ (bilinear), then ``a_from_b`` lets every
    position of ``a`` attend to all positions of ``b`` and ``b_from_a`` the reverse, each a
    :class:`CrossAttentionLayer` (pre-norm attention + MLP, residual). The two directions are fused by a sum,
    or by concatenation and a 1x1 convolution + BatchNorm (submodule ``merge``).

    Args:
        hidden_size: common width.
        num_heads: attention heads.
        in_channels_a: channels of ``a``; None when ``a`` already has ``hidden_size`` channels (no projection).
            Defaults to None.
        in_channels_b: channels of ``b``, likewise. Defaults to None.
        mlp_ratio: MLP hidden width as a multiple of ``hidden_size``. Defaults to 2.0.
        dropout_rate: attention and MLP dropout. Defaults to 0.0.
        qkv_bias: bias of the query/key/value projections. Defaults to True.
        fusion: ``"sum"`` or ``"concat"`` (concatenate, 1x1 conv + BN). Defaults to ``"sum"``.
        pos_embed: ``"sincos"`` adds a fixed 2D position embedding to queries, keys and values so attention
            can tell positions apart; ``"none"`` leaves it content-only. Defaults to ``"sincos"``.
        use_flash_attention: see :class:`CrossAttentionLayer`. Defaults to True.

    Raises:
        ValueError: on an unknown ``fusion`` or ``pos_embed``, ``hidden_size`` not divisible by ``num_heads``
            (or by 4 with ``pos_embed="sincos"``), non-positive sizes.

    Examples::

        >>> block = BidirectionalCrossAttentionFusion(hidden_size=64, num_heads=4, in_channels_a=40, in_channels_b=128)
        >>> block(torch.randn(2, 40, 8, 8), torch.randn(2, 128, 8, 8)).shape
        torch.Size([2, 64, 8, 8])
    """

    def __init__(
        self,
        hidden_size: int,
        num_heads: int,
        in_channels_a: Optional[int] = None,
        in_channels_b: Optional[int] = None,
        mlp_ratio: float = 2.0,
        dropout_rate: float = 0.0,
        qkv_bias: bool = True,
        fusion: str = "sum",
        pos_embed: str = "sincos",
        use_flash_attention: bool = True,
    ) -> None:
        super().__init__()
        if hidden_size < 1:
            raise ValueError(f"hidden_size must be positive, got {hidden_size}.")
        if fusion not in FUSION_MODES:
            raise ValueError(f"fusion must be one of {FUSION_MODES}, got {fusion!r}.")
        if pos_embed not in POS_EMBED_MODES:
            raise ValueError(f"pos_embed must be one of {POS_EMBED_MODES}, got {pos_embed!r}.")
        if pos_embed == "sincos" and hidden_size % 4 != 0:
            raise ValueError(f"pos_embed='sincos' needs hidden_size divisible by 4, got hidden_size={hidden_size}.")
        if mlp_ratio <= 0:
            raise ValueError(f"mlp_ratio must be positive, got {mlp_ratio}.")
        for label, ch in (("in_channels_a", in_channels_a), ("in_channels_b", in_channels_b)):
            if ch is not None and ch < 1:
                raise ValueError(f"{label} must be positive, got {ch}.")
        self.hidden_size = hidden_size
        self.concat = fusion == "concat"
        self.use_pos_embed = pos_embed == "sincos"
        self.proj_a = self._projection(in_channels_a, hidden_size)
        self.proj_b = self._projection(in_channels_b, hidden_size)
        mlp_dim = max(1, int(round(hidden_size * mlp_ratio)))
        layer_args = (hidden_size, num_heads, mlp_dim, dropout_rate, qkv_bias, use_flash_attention)
        self.a_from_b = CrossAttentionLayer(*layer_args)
        self.b_from_a = CrossAttentionLayer(*layer_args)
        self.merge: nn.Module = (
            nn.Sequential(
                nn.Conv2d(2 * hidden_size, hidden_size, kernel_size=1, bias=False), nn.BatchNorm2d(hidden_size)
            )
            if self.concat
            else nn.Identity()
        )

    @staticmethod
    def _projection(in_channels: Optional[int], hidden_size: int) -> nn.Module:
        if in_channels is None:
            return nn.Identity()
        conv = nn.Conv2d(in_channels, hidden_size, kernel_size=1, bias=False)
        return nn.Sequential(conv, nn.BatchNorm2d(hidden_size))

    def set_save_attn(self, save: bool) -> None:
        """Keep (True) or stop keeping (False) the attention matrices of both directions."""
        self.a_from_b.set_save_attn(save)
        self.b_from_a.set_save_attn(save)

    def attention_maps(self) -> dict[str, torch.Tensor]:
        """The last kept attention matrices, ``{"a_from_b": (B, heads, N_a, N_b), "b_from_a": (B, heads, N_b, N_a)}``
        (N = h * w, row-major); empty tensors when nothing was kept."""
        return {"a_from_b": self.a_from_b.attn.att_mat, "b_from_a": self.b_from_a.attn.att_mat}

    def clear_attention_maps(self) -> None:
        """Release the kept attention matrices."""
        self.a_from_b.attn.att_mat = torch.Tensor()
        self.b_from_a.attn.att_mat = torch.Tensor()

    def forward(self, a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
        """
        Args:
            a: ``(B, in_channels_a, H, W)``.
            b: ``(B, in_channels_b, H', W')``; resized to ``(H, W)`` after projection when the grids differ.

        Returns:
            ``(B, hidden_size, H, W)``.
        """
        a = self.proj_a(a)
        b = self.proj_b(b)
        if b.shape[2:] != a.shape[2:]:
            b = F.interpolate(b, size=a.shape[2:], mode="bilinear", align_corners=False)
        shape = a.shape
        tokens_a = a.flatten(2).transpose(1, 2)
        tokens_b = b.flatten(2).transpose(1, 2)
        pos: Optional[torch.Tensor] = None
        if self.use_pos_embed:
            pos = sincos_position_embedding_2d(shape[2], shape[3], self.hidden_size, a.device, tokens_a.dtype)
        out_a = self.a_from_b(tokens_a, tokens_b, pos).transpose(1, 2).reshape(shape)
        out_b = self.b_from_a(tokens_b, tokens_a, pos).transpose(1, 2).reshape(shape)
        if self.concat:
            return self.merge(torch.cat([out_a, out_b], dim=1))
        return out_a + out_b


class MultiScaleCrossAttentionFusion(nn.Module):
    """Bidirectional cross-attention fusion at several scales, then one map (DCAT; Borah & Singh, 2025).

    Scale ``i`` fuses ``feats_a[i]`` and ``feats_b[i]`` with a :class:`BidirectionalCrossAttentionFusion`
    (submodule ``scales.<i>``). The results are brought to the grid of the first scale (pass the finest first)
    by bilinear upsampling and merged: ``"concat"`` concatenates and applies 1x1 conv + BatchNorm + ReLU
    (a learned weighting of the scales; submodule ``merge``), ``"sum"`` adds them.

    Args:
        in_channels_a: channels of each scale of branch A, finest first.
        in_channels_b: channels of each scale of branch B (same number of scales).
        hidden_size: common width.
        num_heads: attention heads.
        mlp_ratio: MLP width ratio. Defaults to 2.0.
        dropout_rate: attention/MLP dropout. Defaults to 0.0.
        qkv_bias: query/key/value bias. Defaults to True.
        fusion: how the two directions are fused, ``"sum"`` or ``"concat"``. Defaults to ``"sum"``.
        scale_fusion: how the scales are merged, ``"concat"`` or ``"sum"``. Defaults to ``"concat"``.
        pos_embed: ``"sincos"`` or ``"none"``. Defaults to ``"sincos"``.
        use_flash_attention: fused attention when not capturing maps. Defaults to True.

    Raises:
        ValueError: when the channel lists are empty or of different lengths, or on a bad mode.

    Examples::

        >>> fuse = MultiScaleCrossAttentionFusion([40, 112], [128, 256], hidden_size=64, num_heads=4)
        >>> fa = [torch.randn(1, 40, 8, 8), torch.randn(1, 112, 4, 4)]
        >>> fb = [torch.randn(1, 128, 8, 8), torch.randn(1, 256, 4, 4)]
        >>> fuse(fa, fb).shape
        torch.Size([1, 64, 8, 8])
    """

    def __init__(
        self,
        in_channels_a: Sequence[int],
        in_channels_b: Sequence[int],
        hidden_size: int,
        num_heads: int,
        mlp_ratio: float = 2.0,
        dropout_rate: float = 0.0,
        qkv_bias: bool = True,
        fusion: str = "sum",
        scale_fusion: str = "concat",
        pos_embed: str = "sincos",
        use_flash_attention: bool = True,
    ) -> None:
        super().__init__()
        if len(in_channels_a) == 0 or len(in_channels_a) != len(in_channels_b):
            raise ValueError(
                f"in_channels_a and in_channels_b must list the same, non-zero number of scales, "
                f"got {list(in_channels_a)} and {list(in_channels_b)}."
            )
        if scale_fusion not in FUSION_MODES:
            raise ValueError(f"scale_fusion must be one of {FUSION_MODES}, got {scale_fusion!r}.")
        self.scales = nn.ModuleList(
            BidirectionalCrossAttentionFusion(
                hidden_size,
                num_heads,
                in_channels_a=ca,
                in_channels_b=cb,
                mlp_ratio=mlp_ratio,
                dropout_rate=dropout_rate,
                qkv_bias=qkv_bias,
                fusion=fusion,
                pos_embed=pos_embed,
                use_flash_attention=use_flash_attention,
            )
            for ca, cb in zip(in_channels_a, in_channels_b)
        )
        n = len(in_channels_a)
        self.concat_scales = scale_fusion == "concat" and n > 1
        self.merge: nn.Module = (
            nn.Sequential(
                nn.Conv2d(n * hidden_size, hidden_size, kernel_size=1, bias=False),
                nn.BatchNorm2d(hidden_size),
                nn.ReLU(inplace=True),
            )
            if self.concat_scales
            else nn.Identity()
        )

    def forward(self, feats_a: list[torch.Tensor], feats_b: list[torch.Tensor]) -> torch.Tensor:
        """
        Args:
            feats_a: one ``(B, in_channels_a[i], H_i, W_i)`` map per scale, finest first.
            feats_b: one ``(B, in_channels_b[i], H_i', W_i')`` map per scale.

        Returns:
            ``(B, hidden_size, H_0, W_0)``.
        """
        fused: list[torch.Tensor] = []
        for i, block in enumerate(self.scales):
            fused.append(block(feats_a[i], feats_b[i]))
        size = fused[0].shape[2:]
        for i in range(1, len(fused)):
            if fused[i].shape[2:] != size:
                fused[i] = F.interpolate(fused[i], size=size, mode="bilinear", align_corners=False)
        if self.concat_scales:
            return self.merge(torch.cat(fused, dim=1))
        out = fused[0]
        for i in range(1, len(fused)):
            out = out + fused[i]
        return out
