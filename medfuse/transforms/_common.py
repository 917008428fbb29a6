# Copyright (c) medfuse contributors
# Licensed under the Apache License, Version 2.0
"""Private helpers shared by the medfuse loaders: warnings that name the file, MetaTensor assembly,
and the base classes of the array and dictionary loaders."""

from __future__ import annotations

import contextlib
import os
import warnings
from collections.abc import Hashable, Iterator, Mapping
from typing import Any

import numpy as np
import torch
from monai.config import KeysCollection
from monai.data import MetaTensor
from monai.transforms import MapTransform, Transform

__all__ = [
    "file_warning",
    "renamed_warnings",
    "to_metatensor",
    "one_line",
    "luminance",
    "is_gray_rgb",
    "ImageLoader",
    "ImageLoaderd",
]

# ITU-R BT.601 luma weights, the usual definition of "gray" for RGB images
LUMA_WEIGHTS = (0.299, 0.587, 0.114)

# the words a loader's ``frame`` argument accepts besides None and an int
_FRAME_WORDS = ("all", "middle")


def one_line(text: object) -> str:
    """Collapse a (possibly multi-line) message to one line."""
    return "; ".join(s.strip() for s in str(text).splitlines() if s.strip())


def file_warning(path: str | os.PathLike, message: str, stacklevel: int = 3) -> None:
    """Emit a ``UserWarning`` whose text starts with the file name."""
    warnings.warn(f"{os.fspath(path)}: {message}", UserWarning, stacklevel=stacklevel)


@contextlib.contextmanager
def renamed_warnings(path: str | os.PathLike) -> Iterator[None]:
    """Re-emit warnings raised by third-party readers inside the block, prefixed with ``path``.

    Readers such as pydicom warn without saying which file is at fault; in a data loader
    running over thousands of files that is useless. The warnings are recorded only inside
    this block (no filter outlives it) and re-issued, one line each, naming the file.
    """
    caught: list = []
    try:
        with warnings.catch_warnings(record=True) as rec:
            warnings.simplefilter("always")
            try:
                yield
            finally:
                caught = list(rec)
    finally:
        for w in caught:
            warnings.warn(f"{os.fspath(path)}: {one_line(w.message)}", w.category, stacklevel=3)


def luminance(rgb: np.ndarray, channel_axis: int = -1) -> np.ndarray:
    """Gray value of an RGB array (BT.601 weights) along ``channel_axis``, as float32."""
    rgb = np.moveaxis(np.asarray(rgb), channel_axis, -1)[..., :3].astype(np.float32)
    w = np.asarray(LUMA_WEIGHTS, dtype=np.float32)
    return rgb @ w


def is_gray_rgb(rgb: np.ndarray, channel_axis: int = -1) -> bool:
    """True when the three colour channels are identical (a gray image stored as RGB)."""
    rgb = np.moveaxis(np.asarray(rgb), channel_axis, -1)
    return bool(np.array_equal(rgb[..., 0], rgb[..., 1]) and np.array_equal(rgb[..., 0], rgb[..., 2]))


def to_metatensor(array: np.ndarray, meta: dict, dtype=torch.float32) -> MetaTensor:
    """Wrap a channel-first array and its meta dict as a :class:`monai.data.MetaTensor`.

    ``meta["affine"]`` (a 4x4 array) becomes the tensor's affine; private entries whose name
    starts with ``_`` and array-valued entries (such as a padding mask) are left out of the
    tensor's meta so that batches collate.
    """
    meta = dict(meta)
    affine = meta.pop("affine", None)
    clean = {k: v for k, v in meta.items() if not k.startswith("_") and not isinstance(v, np.ndarray)}
    t = torch.as_tensor(np.ascontiguousarray(array))
    if dtype is not None:
        t = t.to(dtype)
    out = MetaTensor(t, meta=clean)
    if affine is not None:
        out.affine = torch.as_tensor(np.asarray(affine, dtype=np.float64))
    return out


def _mask_key(key: Hashable, mask_key: str, n_keys: int) -> str:
    return mask_key if n_keys == 1 else f"{key}_{mask_key}"


class ImageLoader(Transform):
    """Base of the array loaders: checks ``frame``, reads with :meth:`_read`, returns MetaTensor(s).

    Subclasses keep their own documented signature and pass the reader's keyword arguments
    (``frame`` among them) as ``read_kwargs``; :meth:`_read` calls the reader function.
    """

    def __init__(self, return_padding_mask: bool, dtype: torch.dtype, **read_kwargs: Any) -> None:
        frame = read_kwargs.get("frame")
        if isinstance(frame, str) and frame not in _FRAME_WORDS:
            raise ValueError(f"frame must be None, an int, 'all' or 'middle', got {frame!r}")
        self.kwargs = read_kwargs
        self.return_padding_mask = return_padding_mask
        self.dtype = dtype

    def _read(self, filename: str | os.PathLike, **kwargs: Any) -> tuple[np.ndarray, dict[str, Any]]:
        raise NotImplementedError

    def __call__(self, filename: str | os.PathLike):
        array, meta = self._read(filename, return_padding_mask=self.return_padding_mask, **self.kwargs)
        img = to_metatensor(array, meta, self.dtype)
        if self.return_padding_mask:
            return img, to_metatensor(meta["padding_mask"], meta, torch.bool)
        return img


class ImageLoaderd(MapTransform):
    """Base of the dictionary loaders: replaces the paths under ``keys`` by ``loader_class`` images.

    With ``padding_mask_key`` the bool padding mask is stored too, under ``padding_mask_key``
    (one key) or ``f"{key}_{padding_mask_key}"`` (several keys).
    """

    loader_class: type[ImageLoader]

    def __init__(
        self,
        keys: KeysCollection,
        padding_mask_key: str | None = None,
        allow_missing_keys: bool = False,
        **loader_kwargs: Any,
    ) -> None:
        super().__init__(keys, allow_missing_keys)
        self.padding_mask_key = padding_mask_key
        self.loader = self.loader_class(return_padding_mask=padding_mask_key is not None, **loader_kwargs)

    def __call__(self, data: Mapping[Hashable, Any]) -> dict[Hashable, Any]:
        d = dict(data)
        for key in list(self.key_iterator(d)):
            out = self.loader(d[key])
            if self.padding_mask_key is None:
                d[key] = out
            else:
                d[key], d[_mask_key(key, self.padding_mask_key, len(self.keys))] = out
        return d
