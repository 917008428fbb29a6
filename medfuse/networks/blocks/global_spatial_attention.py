# Copyright (c) medfuse contributors
# Licensed under the Apache License, Version 2.0
"""Global spatial attention: one learned spatial weight map shared by every image of a domain (method 5).

Not to be confused with the *per-image* spatial attentions of the other methods: CBAM's spatial attention
(:class:`~medfuse.networks.blocks.CBAMSpatialAttention`, DCAT's refinement) and DIFM's parameter-free
channel-mean gate both compute a new map from each image's own features.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any, List, Optional, Union

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

__all__ = ["GlobalSpatialAttention", "GSA", "GSA_MODES"]

#: Parameterisations of the map logits ``z``.
GSA_MODES = ("logit_map", "image_basis")


def _map_size_pair(map_size: Any) -> tuple[int, int]:
    """``map_size`` as ``(h, w)``; ValueError naming the value when it is not one or two integers >= 1."""
    values = [map_size, map_size] if isinstance(map_size, (int, np.integer)) else map_size
    try:
        values = list(values)
    except TypeError:
        values = []
    if len(values) != 2 or any(
        isinstance(v, bool) or not isinstance(v, (int, np.integer)) or int(v) < 1 for v in values
    ):
        raise ValueError(f"map_size must be one integer >= 1 or two, (h, w), got {map_size!r}.")
    return int(values[0]), int(values[1])


def _resize_to(images: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """``(n, H, W)`` -> ``(n, h, w)``, bilinear with antialiasing (deterministic, also when downsizing a lot)."""
    out = F.interpolate(images[:, None].float(), size=size, mode="bilinear", align_corners=False, antialias=True)
    return out[:, 0]


def _small_images(images: Any, size: tuple[int, int], chunk: int = 256) -> torch.Tensor:
    """Training images (see :meth:`GlobalSpatialAttention.basis_from_images`) as ``(N, h * w)`` float64 rows."""
    if isinstance(images, (torch.Tensor, np.ndarray)):
        batch = torch.as_tensor(images)
        if batch.ndim == 4:  # (N, C, H, W): channels averaged
            batch = batch.float().mean(dim=1)
        if batch.ndim != 3:
            raise ValueError(
                f"images must be (N, H, W) or (N, C, H, W), or a sequence of (H, W) / (C, H, W) images, "
                f"got shape {tuple(batch.shape)}."
            )
        rows = [_resize_to(batch[i : i + chunk], size) for i in range(0, batch.shape[0], chunk)]
    elif isinstance(images, Sequence) and not isinstance(images, str):
        rows = []
        for i, image in enumerate(images):
            one = torch.as_tensor(np.asarray(image) if not isinstance(image, torch.Tensor) else image)
            if one.ndim == 3:
                one = one.float().mean(dim=0)
            if one.ndim != 2:
                raise ValueError(f"image {i} must be (H, W) or (C, H, W), got shape {tuple(one.shape)}.")
            rows.append(_resize_to(one[None], size))
    else:
        raise ValueError(f"images must be a tensor, an array or a sequence of images, got {type(images).__name__}.")
    if not rows:
        raise ValueError("images is empty: at least one training image is needed.")
    flat = torch.cat(rows).reshape(-1, size[0] * size[1]).double()
    if not bool(torch.isfinite(flat).all()):
        raise ValueError("images hold non-finite values (nan or inf).")
    return flat


def _fix_sign_and_scale(vectors: torch.Tensor) -> torch.Tensor:
    """Each row: sign so that its largest-|value| entry (first one on ties) is positive, then unit RMS.

    Rows that are (numerically) zero stay zero.
    """
    out = vectors.clone()
    for i in range(out.shape[0]):
        row = out[i]
        peak = int(torch.argmax(row.abs()))
        if row[peak] < 0:
            row.neg_()
        rms = float(row.pow(2).mean().sqrt())
        if rms > 0:
            row.div_(rms)
    return out


class GlobalSpatialAttention(nn.Module):
    """Global spatial attention: Xu et al., "Global Spatial Attention for Medical Image Classification" (one
    weight map shared by all images of a domain), arXiv 2007.15897, 2020.

    Images of one domain (chest X-rays, retinal OCT) show the same anatomy at about the same place, so one map
    ``M = sigmoid(z)`` in (0, 1) says, for the whole domain, which positions matter. ``forward(x)`` returns
    ``x * M``, with the logits ``z`` (``(1, 1, h, w)``, ``h, w = map_size``) upsampled bilinearly
    (``align_corners=False``) to the input's ``(H, W)`` before the sigmoid: any input size works, and the
    same map serves every resolution (the image, or a feature map inside a CNN).

    This is *not* the per-image spatial attention of CBAM (:class:`~medfuse.networks.blocks.CBAMSpatialAttention`,
    used by DCAT) nor DIFM's channel-mean gate: those compute a new map from each image's own features; this
    map is a parameter of the model, the same for every image, and readable on its own (:meth:`get_map`).

    Parameterisations (``mode``):

    * ``"logit_map"``: ``z`` is the parameter ``z``, filled with ``init_logit``.
    * ``"image_basis"``: the paper's per-pixel binary classifier (important / unimportant pixel) over the
      training images' intensities at that pixel, reduced by PCA. Each position ``p`` has ``K`` features
      ``basis[:, p]`` (the mean training image and the top ``K - 1`` principal images, see
      :meth:`basis_from_images`), and a logistic model shared by all positions gives
      ``z = b + sum_k w[k] * basis[k]``. ``basis`` is a persistent buffer (saved with the model, never trained);
      ``w`` (``(K,)``) and ``b`` (``(1,)``) are parameters.

    Initialisation: ``M`` starts near identity in both modes, so training starts from the plain network:
    ``z = init_logit`` everywhere (``logit_map``), or ``w = 0`` and ``b = init_logit`` (``image_basis``). With the
    default 3.0, ``M = sigmoid(3) ~ 0.95``. :meth:`regularization` then keeps the map from staying (or
    collapsing to) all ones, which would be no attention at all.

    Stable names (public API): parameters ``z`` (logit_map) or ``w``, ``b`` and buffer ``basis`` (image_basis);
    :meth:`logits` gives ``z`` in both modes.

    Args:
        spatial_dims: number of spatial dimensions; only 2 is supported. Defaults to 2.
        map_size: ``(h, w)`` of the learned map (one integer for a square map). Defaults to ``(16, 16)``.
        mode: ``"logit_map"`` or ``"image_basis"``. Defaults to ``"logit_map"``.
        basis: ``(K, h, w)`` tensor or array, required by (and only allowed with) ``"image_basis"``; usually
            ``GlobalSpatialAttention.basis_from_images(train_images, k, map_size)``. Defaults to None.
        init_logit: initial logit (a finite number). Defaults to 3.0.

    Raises:
        ValueError: ``spatial_dims`` not 2, ``map_size`` not made of integers >= 1, unknown ``mode``, a missing,
            misshapen or non-finite ``basis`` for ``"image_basis"`` (or a ``basis`` with ``"logit_map"``), a
            non-finite ``init_logit``; in :meth:`forward`, an input that is not ``(B, C, H, W)``.

    Examples::

        >>> gsa = GlobalSpatialAttention(spatial_dims=2, map_size=(16, 16))
        >>> gsa(torch.randn(2, 1, 33, 47)).shape
        torch.Size([2, 1, 33, 47])
        >>> gsa.get_map((224, 224)).shape  # the shared map, in [0, 1]
        torch.Size([1, 1, 224, 224])
        # the paper's per-pixel classifier over PCA-reduced training intensities
        >>> basis = GlobalSpatialAttention.basis_from_images(train_images, k=16, map_size=(16, 16))
        >>> gsa = GlobalSpatialAttention(mode="image_basis", basis=basis)
        >>> loss = ce + 0.1 * gsa.regularization(target_fraction=0.5, entropy_weight=0.01)
    """

    def __init__(
        self,
        spatial_dims: int = 2,
        map_size: Union[Sequence[int], int] = (16, 16),
        mode: str = "logit_map",
        basis: Optional[Union[torch.Tensor, np.ndarray]] = None,
        init_logit: float = 3.0,
    ) -> None:
        super().__init__()
        if spatial_dims != 2:
            raise ValueError(f"GlobalSpatialAttention supports 2D inputs only, got spatial_dims={spatial_dims}.")
        size = _map_size_pair(map_size)
        if mode not in GSA_MODES:
            raise ValueError(f"mode must be one of {GSA_MODES}, got {mode!r}.")
        try:
            init = float(init_logit)
        except (TypeError, ValueError):
            init = float("nan")
        if not math.isfinite(init):
            raise ValueError(f"init_logit must be a finite number, got {init_logit!r}.")
        if mode == "logit_map" and basis is not None:
            raise ValueError("basis is only used with mode='image_basis'; got a basis with mode='logit_map'.")
        if mode == "image_basis":
            if basis is None:
                raise ValueError(
                    "mode='image_basis' needs a (K, h, w) basis, e.g. "
                    "GlobalSpatialAttention.basis_from_images(images, k, map_size); got basis=None."
                )
            basis_t = torch.as_tensor(basis).detach().float().clone()
            if basis_t.ndim != 3 or basis_t.shape[0] < 1 or tuple(basis_t.shape[1:]) != size:
                raise ValueError(
                    f"basis must be (K, h, w) with K >= 1 and (h, w) = map_size {size}, got shape "
                    f"{tuple(basis_t.shape)}."
                )
            if not bool(torch.isfinite(basis_t).all()):
                raise ValueError("basis holds non-finite values (nan or inf).")

        self.spatial_dims = spatial_dims
        self.map_size = size
        self.mode = mode
        self.init_logit = init
        if mode == "logit_map":
            self.z = nn.Parameter(torch.full((1, 1, *size), init))
        else:
            self.register_buffer("basis", basis_t, persistent=True)
            self.w = nn.Parameter(torch.zeros(basis_t.shape[0]))
            self.b = nn.Parameter(torch.full((1,), init))

    def extra_repr(self) -> str:
        k = f", K={self.basis.shape[0]}" if self.mode == "image_basis" else ""
        return f"mode={self.mode!r}, map_size={self.map_size}{k}"

    @torch.jit.export
    def logits(self) -> torch.Tensor:
        """The map logits ``z``, ``(1, 1, h, w)`` at ``map_size``."""
        if hasattr(self, "basis"):
            z = self.b + (self.w.reshape(-1, 1, 1) * self.basis).sum(dim=0)
            return z.reshape(1, 1, self.basis.shape[1], self.basis.shape[2])
        return self.z

    @torch.jit.export
    def get_map(self, size: Optional[List[int]] = None) -> torch.Tensor:
        """The shared map ``M = sigmoid(z)``, ``(1, 1, H, W)`` in [0, 1].

        Args:
            size: ``(H, W)`` to upsample ``z`` to (bilinear, before the sigmoid, as in :meth:`forward`);
                None gives the map at ``map_size``.
        """
        z = self.logits()
        if size is not None:
            z = F.interpolate(z, size=size, mode="bilinear", align_corners=False)
        return torch.sigmoid(z)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """
        Args:
            x: ``(B, C, H, W)``, any ``H, W``.

        Returns:
            ``x * M``, ``(B, C, H, W)``: every image and channel multiplied by the same map (in ``x``'s dtype).

        Raises:
            ValueError: when ``x`` is not 4-D.
        """
        if x.dim() != 4:
            raise ValueError(f"GlobalSpatialAttention expects (B, C, H, W) input, got shape {list(x.shape)}.")
        m = self.get_map([x.shape[2], x.shape[3]])
        return x * m.to(x.dtype)

    def regularization(self, target_fraction: float = 0.5, entropy_weight: float = 0.01) -> torch.Tensor:
        """``(mean(M) - target_fraction) ** 2 + entropy_weight * mean(H(M))`` over the map at ``map_size``.

        ``H(m) = -m log m - (1 - m) log(1 - m)`` is the binary entropy (nats), computed from ``z`` without
        overflow. The first term keeps the map from being all ones (no attention) or all zeros; the second
        pushes each position towards important (1) or unimportant (0). Add it, weighted, to the task loss
        (:class:`~medfuse.networks.losses.GlobalSpatialAttentionLoss` does).

        Args:
            target_fraction: the wanted mean of ``M``, in [0, 1]. Defaults to 0.5.
            entropy_weight: weight of the entropy term, >= 0. Defaults to 0.01.

        Returns:
            a scalar tensor, differentiable with respect to the map's parameters.

        Raises:
            ValueError: ``target_fraction`` outside [0, 1] or a negative ``entropy_weight``.
        """
        if not 0.0 <= float(target_fraction) <= 1.0:
            raise ValueError(f"target_fraction must be in [0, 1], got {target_fraction}.")
        if not float(entropy_weight) >= 0.0:
            raise ValueError(f"entropy_weight must be >= 0, got {entropy_weight}.")
        z = self.logits()
        m = torch.sigmoid(z)
        # log m = -softplus(-z), log(1 - m) = -softplus(z)
        entropy = m * F.softplus(-z) + (1.0 - m) * F.softplus(z)
        return (m.mean() - float(target_fraction)) ** 2 + float(entropy_weight) * entropy.mean()

    @staticmethod
    def basis_from_images(
        images: Any, k: int = 16, map_size: Union[Sequence[int], int] = (16, 16)
    ) -> torch.Tensor:
        """The ``(k, h, w)`` basis of ``mode="image_basis"``: mean image and top ``k - 1`` principal images.

        Every image is averaged over channels and resized to ``map_size`` (bilinear, antialiased); with the
        resized images as rows of ``X`` (``(N, h * w)``, float64), the basis is the mean image followed by the
        first ``k - 1`` right singular vectors of ``X - mean`` (principal images, by decreasing variance).
        ``basis[:, p]`` are then position ``p``'s PCA-reduced intensity features. Deterministic: each basis image
        is signed so that its largest-|value| entry (the first such on ties) is positive, and scaled to unit
        root-mean-square over positions (standardised features for the per-pixel classifier; a zero image,
        e.g. a direction without variance, stays zero).

        Args:
            images: the training images, ``(N, H, W)`` or ``(N, C, H, W)`` tensor or array, or a sequence of
                ``(H, W)`` / ``(C, H, W)`` images of any sizes.
            k: basis size, ``1 <= k <= min(N, h * w)``. Defaults to 16.
            map_size: ``(h, w)``, the block's ``map_size``. Defaults to ``(16, 16)``.

        Returns:
            float32 ``(k, h, w)``.

        Raises:
            ValueError: bad ``k``, ``map_size`` or images (the message carries the value).
        """
        size = _map_size_pair(map_size)
        if isinstance(k, bool) or not isinstance(k, (int, np.integer)) or k < 1:
            raise ValueError(f"k must be an integer >= 1, got {k!r}.")
        x = _small_images(images, size)
        n, p = x.shape
        if k > min(n, p):
            raise ValueError(f"k must be <= min(number of images, h * w) = min({n}, {p}), got k={k}.")
        mean = x.mean(dim=0, keepdim=True)
        vectors = [mean]
        if k > 1:
            _, s, vh = torch.linalg.svd(x - mean, full_matrices=False)
            comps = vh[: k - 1].clone()
            # directions without variance are arbitrary: zero them (deterministic, and w has nothing to learn there)
            tol = float(s.max()) * max(n, p) * torch.finfo(torch.float64).eps if s.numel() else 0.0
            comps[s[: k - 1] <= tol] = 0.0
            vectors.append(comps)
        basis = _fix_sign_and_scale(torch.cat(vectors))
        return basis.reshape(k, *size).float()


GSA = GlobalSpatialAttention
