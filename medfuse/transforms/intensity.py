# Copyright (c) medfuse contributors
# Licensed under the Apache License, Version 2.0
"""Intensity transforms: percentile normalisation, CLAHE contrast enhancement, speckle noise.

``ContrastEnhance`` is contrast-limited adaptive histogram equalisation (CLAHE, Zuiderveld,
Graphics Gems IV, 1994) written in numpy: the image is cut into a grid of tiles, each tile's
histogram is clipped at ``clip_limit`` times the mean bin count and the excess redistributed
over all bins, the clipped histograms' cumulative sums become per-tile intensity mappings,
and every pixel is mapped by bilinear interpolation between the mappings of the four
nearest tile centres (no block seams). The DIFM segmentation network reads an original and
an "enhanced" copy of each image; :class:`ContrastEnhanced` can write that copy to a new key.
"""

from __future__ import annotations

from collections.abc import Hashable, Mapping, Sequence
from typing import Any

import numpy as np
import torch
from monai.config import KeysCollection
from monai.config.type_definitions import NdarrayOrTensor
from monai.transforms import MapTransform, NormalizeIntensity, RandomizableTransform, Transform
from monai.utils import TransformBackends
from monai.utils.type_conversion import convert_data_type, convert_to_dst_type

__all__ = [
    "clahe",
    "IntensityNormalize",
    "IntensityNormalized",
    "IntensityNormalizeD",
    "IntensityNormalizeDict",
    "ContrastEnhance",
    "ContrastEnhanced",
    "ContrastEnhanceD",
    "ContrastEnhanceDict",
    "RandSpeckleNoise",
    "RandSpeckleNoised",
    "RandSpeckleNoiseD",
    "RandSpeckleNoiseDict",
]


def _pair(value: int | Sequence[int], name: str) -> tuple[int, int]:
    pair = (int(value), int(value)) if np.isscalar(value) else tuple(int(v) for v in value)  # type: ignore[arg-type]
    if len(pair) != 2 or min(pair) < 1:
        raise ValueError(f"{name} must be a positive int or a pair of positive ints, got {value!r}")
    return pair  # type: ignore[return-value]


def clahe(
    image: np.ndarray,
    tiles: int | Sequence[int] = 8,
    clip_limit: float | None = 2.0,
    nbins: int = 256,
    value_range: tuple[float, float] = (0.0, 1.0),
) -> np.ndarray:
    """Contrast-limited adaptive histogram equalisation of one 2D image.

    Args:
        image: ``(H, W)`` array; values outside ``value_range`` are clipped, NaNs become the minimum.
        tiles: number of tiles along (H, W); capped at the image size. Default 8 (an 8x8 grid).
        clip_limit: histogram clip level as a multiple of the mean bin count (OpenCV's
            convention: 1 gives almost no change, 2-4 moderate enhancement); ``None``
            disables clipping (plain adaptive equalisation).
        nbins: histogram bins. Default 256.
        value_range: the intensity range mapped to the bins and of the output. Default (0, 1).

    Returns:
        float32 ``(H, W)`` in ``value_range``.

    Raises:
        ValueError: bad shapes or parameters.
    """
    img = np.asarray(image, dtype=np.float64)
    if img.ndim != 2:
        raise ValueError(f"clahe expects a 2D image, got shape {img.shape}")
    if clip_limit is not None and not clip_limit > 0:
        raise ValueError(f"clip_limit must be > 0 or None, got {clip_limit!r}")
    if int(nbins) < 2:
        raise ValueError(f"nbins must be >= 2, got {nbins!r}")
    lo, hi = float(value_range[0]), float(value_range[1])
    if not hi > lo:
        raise ValueError(f"value_range must be (low, high) with high > low, got {value_range!r}")
    nbins = int(nbins)
    height, width = img.shape
    ty, tx = _pair(tiles, "tiles")
    ty, tx = min(ty, height), min(tx, width)
    th, tw = -(-height // ty), -(-width // tx)  # tile size (ceil)

    x = np.nan_to_num((img - lo) / (hi - lo), nan=0.0)
    q = np.minimum((np.clip(x, 0.0, 1.0) * nbins).astype(np.int64), nbins - 1)

    # histograms of all tiles at once: pad bottom/right (mirror) to a whole number of tiles
    qp = np.pad(q, ((0, ty * th - height), (0, tx * tw - width)), mode="symmetric")
    tile_id = (np.arange(ty)[:, None, None, None] * tx + np.arange(tx)[None, None, :, None]) * nbins
    flat = (qp.reshape(ty, th, tx, tw) + tile_id).ravel()
    hist = np.bincount(flat, minlength=ty * tx * nbins).reshape(ty, tx, nbins).astype(np.float64)

    if clip_limit is not None:
        limit = max(float(clip_limit) * th * tw / nbins, 1.0)
        for _ in range(16):  # redistributing can push bins over the limit again; a few rounds converge
            excess = np.clip(hist - limit, 0.0, None).sum(axis=-1, keepdims=True)
            if float(excess.max()) <= 1e-6 * th * tw:
                break
            hist = np.minimum(hist, limit) + excess / nbins
    cdf = np.cumsum(hist, axis=-1)
    cdf /= cdf[..., -1:]

    # bilinear interpolation between the mappings of the four nearest tile centres
    def axis_weights(n: int, size: int, count: int):
        f = (np.arange(n) + 0.5) / size - 0.5
        i0 = np.clip(np.floor(f), 0, count - 1).astype(np.int64)
        i1 = np.minimum(i0 + 1, count - 1)
        w = np.clip(f - i0, 0.0, 1.0)
        return i0, i1, w

    y0, y1, wy = axis_weights(height, th, ty)
    x0, x1, wx = axis_weights(width, tw, tx)
    y0, y1, wy = y0[:, None], y1[:, None], wy[:, None]
    top = (1 - wx) * cdf[y0, x0[None], q] + wx * cdf[y0, x1[None], q]
    bottom = (1 - wx) * cdf[y1, x0[None], q] + wx * cdf[y1, x1[None], q]
    out = (1 - wy) * top + wy * bottom
    return (lo + out * (hi - lo)).astype(np.float32)


class IntensityNormalize(Transform):
    """Percentile clip and scale to [0, 1], then optionally subtract a mean and divide by a std.

    Robust to the few extreme pixels of radiographs (collimator edges, burnt-in text,
    markers) that would compress a plain min-max scaling.

    The fixed ``mean`` / ``std`` step is MONAI's ``NormalizeIntensity`` (identical output, measured: max
    difference 0 on real, demo and random images). Two MONAI transforms are *not* used, because they do not
    give the same output (measured with ``benchmarks/compare_intensity_normalize.py``, MONAI 1.6.1):

    * ``ScaleIntensityRangePercentiles(low, high, 0, 1, clip=True)`` for the percentile step. It agrees within
      1.2e-7 (4.2e-7 channel-wise) on ordinary images, but (a) when the two percentiles are equal (an image
      that is more than ``100 - high + low`` percent one value) it warns and returns ``img - low`` unclipped
      (difference up to 5.0 on a mostly constant test image) where this transform returns zeros, and (b) it
      takes the percentiles over all pixels, so one NaN or inf pixel turns the whole output into NaN, where this
      transform takes them over the finite pixels only.
    * ``NormalizeIntensity()`` (no subtrahend / divisor) for ``standardize``: it computes the mean and std in
      torch, which differs from numpy's reductions by up to 1.43e-6 on z-scored real DICOM radiographs
      (RG1_*.dcm, 1841 x 1955), above the 1e-6 this transform is held to.

    Args:
        percentiles: ``(low, high)`` in [0, 100]: values are clipped at these percentiles and
            scaled to [0, 1]. ``None`` skips this step. Default ``(0.5, 99.5)``.
        mean: subtracted after scaling: a float or one per channel (e.g. ImageNet's
            ``(0.485, 0.456, 0.406)`` for pretrained 3-channel networks). Default None.
        std: divisor after ``mean``: a float or one per channel. Default None.
        standardize: subtract this image's own mean and divide by its std (zero-mean,
            unit-variance); exclusive with ``mean``/``std``. Default False.
        channel_wise: compute percentiles and statistics per channel. Default False.

    Raises:
        ValueError: invalid percentiles or a zero std.

    Examples::

        IntensityNormalize((1, 99))(img)                  # [0, 1]
        IntensityNormalize(None, standardize=True)(img)   # z-score
    """

    backend = [TransformBackends.NUMPY]

    def __init__(
        self,
        percentiles: tuple[float, float] | None = (0.5, 99.5),
        mean: float | Sequence[float] | None = None,
        std: float | Sequence[float] | None = None,
        standardize: bool = False,
        channel_wise: bool = False,
    ) -> None:
        if percentiles is not None:
            if len(percentiles) != 2 or not 0 <= percentiles[0] < percentiles[1] <= 100:
                raise ValueError(f"percentiles must be (low, high) with 0 <= low < high <= 100, got {percentiles!r}")
        if standardize and (mean is not None or std is not None):
            raise ValueError("standardize=True computes the image's own mean/std; do not also pass mean or std")
        if std is not None and np.any(np.asarray(std, dtype=float) == 0):
            raise ValueError(f"std must be non-zero, got {std!r}")
        self.percentiles = None if percentiles is None else (float(percentiles[0]), float(percentiles[1]))
        self.mean = mean
        self.std = std
        self.standardize = standardize
        self.channel_wise = channel_wise

    def _scale(self, x: np.ndarray) -> np.ndarray:
        if self.percentiles is not None:
            finite = x[np.isfinite(x)]
            if finite.size == 0:
                return np.zeros_like(x)
            lo, hi = np.percentile(finite, self.percentiles)
            x = np.clip(x, lo, hi)
            x = (x - lo) / (hi - lo) if hi > lo else np.zeros_like(x)
        if self.standardize:
            m, s = float(np.mean(x)), float(np.std(x))
            x = (x - m) / s if s > 0 else x - m
        return x

    def _mean_std(self, ndim: int) -> NormalizeIntensity:
        """``(x - mean) / std`` as MONAI's ``NormalizeIntensity``; a missing ``mean`` is 0, a missing ``std`` 1.

        Per-channel values are given as ``(C, 1, ...)`` arrays with ``channel_wise=False`` (broadcast), not as
        lists with ``channel_wise=True``, which would write into the caller's array in place.
        """
        shape = (-1,) + (1,) * (ndim - 1)

        def arr(value: Any, default: float) -> np.ndarray:
            if value is None:
                return np.asarray(default, dtype=np.float32)
            return np.asarray(value, dtype=np.float32).reshape(shape if np.ndim(value) else ())

        return NormalizeIntensity(subtrahend=arr(self.mean, 0.0), divisor=arr(self.std, 1.0), dtype=np.float32)

    def __call__(self, img: NdarrayOrTensor) -> NdarrayOrTensor:
        """``img``: channel-first array or tensor; returns the same type, float32."""
        x = convert_data_type(img, np.ndarray, dtype=np.float32)[0]
        if self.channel_wise:
            out = np.stack([self._scale(c) for c in x]) if x.ndim > 1 else self._scale(x)
        else:
            out = self._scale(x)
        if self.mean is not None or self.std is not None:
            out = self._mean_std(x.ndim)(out)
            out = convert_data_type(out, np.ndarray, dtype=np.float32)[0]
        return convert_to_dst_type(out.astype(np.float32), img, dtype=torch.float32 if isinstance(img, torch.Tensor) else np.float32)[0]


class IntensityNormalized(MapTransform):
    """Dictionary version of :class:`IntensityNormalize` (same arguments, plus ``keys`` and ``allow_missing_keys``).

    Raises:
        ValueError: see :class:`IntensityNormalize`.
    """

    backend = IntensityNormalize.backend

    def __init__(
        self,
        keys: KeysCollection,
        percentiles: tuple[float, float] | None = (0.5, 99.5),
        mean: float | Sequence[float] | None = None,
        std: float | Sequence[float] | None = None,
        standardize: bool = False,
        channel_wise: bool = False,
        allow_missing_keys: bool = False,
    ) -> None:
        super().__init__(keys, allow_missing_keys)
        self.normalizer = IntensityNormalize(percentiles, mean, std, standardize, channel_wise)

    def __call__(self, data: Mapping[Hashable, Any]) -> dict[Hashable, Any]:
        d = dict(data)
        for key in self.key_iterator(d):
            d[key] = self.normalizer(d[key])
        return d


class ContrastEnhance(Transform):
    """CLAHE contrast enhancement of each channel of a ``(C, H, W)`` image (see :func:`clahe`).

    A ``(C, H, W, D)`` volume is enhanced slice by slice along its last axis (each ``(H, W)`` slice of each
    channel on its own, as the 2D slices a DIFM network reads).

    Args:
        tiles: tile grid (rows, columns) or one int for both. Default 8.
        clip_limit: clip level as a multiple of the mean bin count; ``None`` for no clipping. Default 2.0.
        nbins: histogram bins. Default 256.
        value_range: input/output intensity range; inputs are expected in it (values outside
            are clipped). Default (0, 1), the range of medfuse's loaders.

    Raises:
        ValueError: the input is not ``(C, H, W)`` or ``(C, H, W, D)``, or invalid parameters.

    Examples::

        enhanced = ContrastEnhance(tiles=8, clip_limit=2.0)(img)   # img (1, H, W) in [0, 1]
        enhanced = ContrastEnhance()(volume)                       # volume (1, H, W, D): per slice
    """

    backend = [TransformBackends.NUMPY]

    def __init__(
        self,
        tiles: int | Sequence[int] = 8,
        clip_limit: float | None = 2.0,
        nbins: int = 256,
        value_range: tuple[float, float] = (0.0, 1.0),
    ) -> None:
        self.tiles = _pair(tiles, "tiles")
        if clip_limit is not None and not clip_limit > 0:
            raise ValueError(f"clip_limit must be > 0 or None, got {clip_limit!r}")
        if int(nbins) < 2:
            raise ValueError(f"nbins must be >= 2, got {nbins!r}")
        if not value_range[1] > value_range[0]:
            raise ValueError(f"value_range must be (low, high) with high > low, got {value_range!r}")
        self.clip_limit = clip_limit
        self.nbins = int(nbins)
        self.value_range = (float(value_range[0]), float(value_range[1]))

    def __call__(self, img: NdarrayOrTensor) -> NdarrayOrTensor:
        """``img``: ``(C, H, W)`` or ``(C, H, W, D)`` array or tensor; returns the same type, float32."""
        if len(img.shape) not in (3, 4):
            raise ValueError(
                "ContrastEnhance expects a channel-first 2D image (C, H, W) or a volume (C, H, W, D) enhanced slice "
                f"by slice, got shape {tuple(img.shape)}"
            )
        x = convert_data_type(img, np.ndarray, dtype=np.float32)[0]
        args = (self.tiles, self.clip_limit, self.nbins, self.value_range)
        if x.ndim == 4:
            out = np.stack([np.stack([clahe(c[..., k], *args) for k in range(c.shape[-1])], axis=-1) for c in x])
        else:
            out = np.stack([clahe(c, *args) for c in x])
        return convert_to_dst_type(out, img, dtype=torch.float32 if isinstance(img, torch.Tensor) else np.float32)[0]


class ContrastEnhanced(MapTransform):
    """Dictionary version of :class:`ContrastEnhance`, optionally writing the result to new keys.

    Args:
        keys: keys to enhance.
        output_keys: where to write the enhanced images, one per key (e.g. ``"image_enhanced"``
            for DIFM's second input); ``None`` (default) replaces the input in place. The
            output is a new tensor with a copy of the input's meta.
        tiles, clip_limit, nbins, value_range: see :class:`ContrastEnhance`.
        allow_missing_keys: skip absent keys.

    Raises:
        ValueError: ``output_keys`` does not match ``keys`` in length, or see :class:`ContrastEnhance`.
    """

    backend = ContrastEnhance.backend

    def __init__(
        self,
        keys: KeysCollection,
        output_keys: KeysCollection | None = None,
        tiles: int | Sequence[int] = 8,
        clip_limit: float | None = 2.0,
        nbins: int = 256,
        value_range: tuple[float, float] = (0.0, 1.0),
        allow_missing_keys: bool = False,
    ) -> None:
        super().__init__(keys, allow_missing_keys)
        if output_keys is None:
            self.output_keys = self.keys
        else:
            self.output_keys = tuple(output_keys) if not isinstance(output_keys, str) else (output_keys,)
            if len(self.output_keys) != len(self.keys):
                raise ValueError(f"output_keys {self.output_keys} must match keys {self.keys} in length")
        self.enhancer = ContrastEnhance(tiles, clip_limit, nbins, value_range)

    def __call__(self, data: Mapping[Hashable, Any]) -> dict[Hashable, Any]:
        d = dict(data)
        for key, out_key in self.key_iterator(d, self.output_keys):
            d[out_key] = self.enhancer(d[key])
        return d


class RandSpeckleNoise(RandomizableTransform):
    """Multiplicative (speckle-like) Gaussian noise, ``x * (1 + n)`` with ``n ~ N(0, std)``, as seen in OCT.

    Args:
        prob: probability of adding noise. Default 0.1.
        std: standard deviation of ``n``; with ``sample_std`` the actual std is drawn
            uniformly from ``[0, std]`` each time. Default 0.1.
        sample_std: draw the std per call. Default True.
        dtype: output dtype. Default ``np.float32``.

    Raises:
        ValueError: negative ``std``.
    """

    backend = [TransformBackends.TORCH, TransformBackends.NUMPY]

    def __init__(self, prob: float = 0.1, std: float = 0.1, sample_std: bool = True, dtype: Any = np.float32) -> None:
        RandomizableTransform.__init__(self, prob)
        if std < 0:
            raise ValueError(f"std must be >= 0, got {std}")
        self.std = float(std)
        self.sample_std = sample_std
        self.dtype = dtype
        self.noise: np.ndarray | None = None

    def randomize(self, img: NdarrayOrTensor) -> None:  # type: ignore[override]
        super().randomize(None)
        if not self._do_transform:
            return
        std = self.R.uniform(0, self.std) if self.sample_std else self.std
        self.noise = self.R.normal(0.0, std, size=tuple(img.shape)).astype(np.float32)

    def __call__(self, img: NdarrayOrTensor, randomize: bool = True) -> NdarrayOrTensor:
        img = convert_data_type(img, dtype=self.dtype)[0]
        if randomize:
            self.randomize(img)
        if not self._do_transform or self.noise is None:
            return img
        if tuple(self.noise.shape) != tuple(img.shape):
            raise ValueError(f"noise shape {self.noise.shape} does not match the image {tuple(img.shape)}")
        noise = convert_to_dst_type(self.noise, img)[0]
        return img * (1 + noise)


class RandSpeckleNoised(RandomizableTransform, MapTransform):
    """Dictionary version of :class:`RandSpeckleNoise`; every key gets the same noise field (same shapes required).

    Args:
        keys: keys to corrupt.
        prob, std, sample_std, dtype: see :class:`RandSpeckleNoise`.
        allow_missing_keys: skip absent keys.

    Raises:
        ValueError: negative ``std``, or keys of different shapes.
    """

    backend = RandSpeckleNoise.backend

    def __init__(
        self,
        keys: KeysCollection,
        prob: float = 0.1,
        std: float = 0.1,
        sample_std: bool = True,
        dtype: Any = np.float32,
        allow_missing_keys: bool = False,
    ) -> None:
        MapTransform.__init__(self, keys, allow_missing_keys)
        RandomizableTransform.__init__(self, prob)
        self.noiser = RandSpeckleNoise(prob=1.0, std=std, sample_std=sample_std, dtype=dtype)

    def set_random_state(self, seed: int | None = None, state: np.random.RandomState | None = None) -> RandSpeckleNoised:
        super().set_random_state(seed, state)
        self.noiser.set_random_state(seed, state)
        return self

    def __call__(self, data: Mapping[Hashable, Any]) -> dict[Hashable, Any]:
        d = dict(data)
        self.randomize(None)
        if not self._do_transform:
            for key in self.key_iterator(d):
                d[key] = convert_data_type(d[key], dtype=self.noiser.dtype)[0]
            return d
        first = self.first_key(d)
        if first == ():
            return d
        self.noiser.randomize(d[first])
        for key in self.key_iterator(d):
            d[key] = self.noiser(d[key], randomize=False)
        return d


IntensityNormalizeD = IntensityNormalizeDict = IntensityNormalized
ContrastEnhanceD = ContrastEnhanceDict = ContrastEnhanced
RandSpeckleNoiseD = RandSpeckleNoiseDict = RandSpeckleNoised
