# Copyright (c) medfuse contributors
# Licensed under the Apache License, Version 2.0
"""One loader for chest X-rays and one for OCT, whatever the file format.

:class:`LoadXray` looks at the file's content (not only its name) and reads DICOM through
:func:`medfuse.transforms.dicom.read_dicom_image`, PNG/JPEG/BMP/TIFF through Pillow and
NIfTI through nibabel. Every reader returns the same thing: a float32 channel-first
``MetaTensor`` in [0, 1], rows first (never transposed, unlike MONAI's ``PILReader`` and
``PydicomReader``), with the same core meta keys, so DICOM and PNG items can share a
manifest and a batch.

NIfTI orientation: the array keeps the file's voxel order, exactly as MONAI's
``NibabelReader`` returns it, so ``H`` is voxel axis ``i``, ``W`` is axis ``j`` and slices
are taken along axis ``k`` (the last). Nothing is rotated for display; masks loaded by
MONAI's ``LoadImage`` stay aligned. ``as_canonical=True`` first reorients to the closest
RAS+ orientation (nibabel's ``as_closest_canonical``).
"""

from __future__ import annotations

import gzip
import os
from typing import Any

import numpy as np
import torch
from monai.config import KeysCollection
from monai.utils import optional_import

from medfuse.errors import DataError
from medfuse.transforms._common import (
    ImageLoader,
    ImageLoaderd,
    file_warning,
    is_gray_rgb,
    luminance,
    one_line,
    renamed_warnings,
)
from medfuse.transforms.dicom import _frame_index, read_dicom_image
from medfuse.utils.images import DICOM_EXTENSIONS, NIFTI_EXTENSIONS, PIL_EXTENSIONS

Image, has_pil = optional_import("PIL.Image")
nib, has_nib = optional_import("nibabel")

__all__ = [
    "detect_image_format",
    "image_header_problem",
    "read_image",
    "read_pil_image",
    "read_nifti_image",
    "require_finite",
    "LoadXray",
    "LoadXrayd",
    "LoadXrayD",
    "LoadXrayDict",
    "LoadOCT",
    "LoadOCTd",
    "LoadOCTD",
    "LoadOCTDict",
]

_IMAGE_MAGIC = (
    b"\x89PNG\r\n\x1a\n",  # PNG
    b"\xff\xd8\xff",  # JPEG
    b"BM",  # BMP
    b"II*\x00",  # TIFF little endian
    b"MM\x00*",  # TIFF big endian
    b"GIF87a",
    b"GIF89a",
    b"\x00\x00\x00\x0cjP  ",  # JPEG 2000 (jp2)
    b"\xff\x4f\xff\x51",  # JPEG 2000 codestream
)
_READERS = ("auto", "dicom", "pil", "nifti")


def _is_nifti_header(head: bytes) -> bool:
    return (len(head) >= 348 and head[344:348] in (b"n+1\x00", b"ni1\x00")) or (
        len(head) >= 12 and head[4:8] in (b"n+2\x00", b"ni2\x00")
    )


def detect_image_format(path: str | os.PathLike) -> str:
    """``"dicom"``, ``"pil"`` or ``"nifti"`` for ``path``, from its content first, then its name.

    DICOM: the ``DICM`` marker at byte 128, or a ``.dcm``/``.dicom`` name or no extension
    (a DICOM file without preamble). PNG/JPEG/BMP/TIFF/GIF: their magic numbers. NIfTI: the
    NIfTI-1/2 magic (gzipped or not) or a ``.nii``/``.nii.gz`` name.

    Raises:
        DataError: the file is missing, or its format is none of these.
    """
    path = os.fspath(path)
    if not os.path.isfile(path):
        raise DataError(f"{path}: file not found; check the path (manifest paths are relative to the manifest file)")
    with open(path, "rb") as f:
        head = f.read(352)
    if len(head) >= 132 and head[128:132] == b"DICM":
        return "dicom"
    if any(head.startswith(m) for m in _IMAGE_MAGIC):
        return "pil"
    if _is_nifti_header(head):
        return "nifti"
    if head[:2] == b"\x1f\x8b":
        try:
            with gzip.open(path, "rb") as g:
                if _is_nifti_header(g.read(352)):
                    return "nifti"
        except OSError:
            pass
    name = os.path.basename(path).lower()
    if name.endswith(NIFTI_EXTENSIONS):
        return "nifti"
    ext = os.path.splitext(name)[1]
    if ext in DICOM_EXTENSIONS or ext == "" or ext.lstrip(".").isdigit():
        return "dicom"
    if ext in PIL_EXTENSIONS:
        return "pil"
    from medfuse.transforms.dicom import _looks_like_headerless_dicom

    if _looks_like_headerless_dicom(head):
        return "dicom"
    raise DataError(
        f"{path}: unsupported image format (content is not DICOM, PNG/JPEG/BMP/TIFF or NIfTI); "
        "convert it to PNG or DICOM"
    )


def image_header_problem(path: str | os.PathLike) -> str | None:
    """Why ``path`` cannot be read as an image, from its header only; ``None`` when the header reads.

    Cheap (the pixels are not decoded): the file exists and is readable, its format is known
    (:func:`detect_image_format`), and its header parses: Pillow's lazy ``Image.open`` (not ``verify()``, which reads
    every chunk; :func:`medfuse.data.layouts.sniff.inspect_image` does that and hashes the file too), pydicom's
    ``dcmread(stop_before_pixels=True)``, nibabel's ``load`` (header and lazy data proxy).
    """
    try:
        fmt = detect_image_format(path)
        if os.path.getsize(path) == 0:
            return "empty file"
        if fmt == "pil":
            from PIL import Image

            with Image.open(path) as im:
                if im.width < 1 or im.height < 1:
                    return f"image of size {im.width}x{im.height}"
        elif fmt == "dicom":
            import pydicom

            pydicom.dcmread(path, stop_before_pixels=True, force=True)
        else:
            import nibabel as nib

            nib.load(os.fspath(path))
    except DataError as e:
        return " ".join(str(e).split(": ", 1)[-1].split())
    except Exception as e:  # the readers raise OSError, ValueError, struct.error ... on a bad header
        return f"{fmt} header unreadable ({type(e).__name__}: {' '.join(str(e).split())[:160]})"
    return None


def _base_meta(path: str, fmt: str, shape: tuple[int, ...]) -> dict[str, Any]:
    return {
        "filename_or_obj": path,
        "source_format": fmt,
        "original_shape": tuple(int(s) for s in shape),
        "spatial_shape": tuple(int(s) for s in shape),
        "original_channel_dim": 0,
        "inverted": False,
        "affine": np.eye(4),
    }


def require_finite(path: str | os.PathLike, arr: np.ndarray) -> None:
    """Raise :class:`~medfuse.errors.DataError` naming ``path`` when ``arr`` holds NaN or inf pixels.

    A non-finite pixel is an input error, not something to paint over: min-max scaling or ``nan_to_num`` would turn a
    broken export into a plausible-looking image (an all-NaN file into an all-zero one) and a model would be trained
    on it or report on it without a word.
    """
    finite = np.isfinite(arr)
    if not finite.all():
        bad = int(arr.size - np.count_nonzero(finite))
        raise DataError(
            f"{path}: {bad} of {arr.size} pixels are NaN or inf; re-export the image, or remove it from the manifest"
        )


def read_pil_image(
    path: str | os.PathLike, frame: int | str | None = None, scale: bool = True
) -> tuple[np.ndarray, dict[str, Any]]:
    """Read a PNG/JPEG/BMP/TIFF with Pillow as gray float32 ``(F, H, W)`` in [0, 1].

    8-bit images are divided by 255, 16-bit ones by 65535 (the container depth; Pillow does
    not expose PNG's significant-bits chunk), 1-bit ones by 1; 32-bit integer and float
    images, whose range is unknown, are min-max scaled. RGB whose channels are equal becomes
    one channel exactly; true colour is converted to BT.601 luminance with a warning naming
    the file. Alpha is dropped, palettes are expanded.

    Args:
        path: the image file.
        frame: page of a multi-page TIFF/GIF: ``None`` (first), an ``int``, ``"middle"``, ``"all"``.
        scale: ``False`` keeps the raw pixel values (e.g. label values of a mask).

    Returns:
        ``(array, meta)`` as :func:`medfuse.transforms.dicom.read_dicom_image`, with
        ``photometric`` ``"MONOCHROME2"`` (gray source) or ``"RGB"``, ``pil_mode``,
        ``bits_stored`` and ``value_range``.

    Raises:
        DataError: missing, unreadable or truncated image, or ``frame`` out of range.
    """
    if not has_pil:
        raise DataError("Pillow is not installed: pip install pillow to read PNG/JPEG images")
    path = os.fspath(path)
    if not os.path.isfile(path):
        raise DataError(f"{path}: file not found; check the path (manifest paths are relative to the manifest file)")
    try:
        with renamed_warnings(path), Image.open(path) as im:
            n_frames = int(getattr(im, "n_frames", 1) or 1)
            idx = _frame_index(path, frame, n_frames)
            indices = range(n_frames) if idx is None else [idx]
            pages, modes = [], []
            for i in indices:
                im.seek(i)
                im.load()
                page, mode = _pil_to_array(im)
                pages.append(page)
                modes.append(mode)
            fmt = str(im.format or "")
    except DataError:
        raise
    except Exception as e:  # PIL raises OSError, SyntaxError, ValueError, DecompressionBombError...
        raise DataError(
            f"{path}: cannot read the image ({type(e).__name__}: {one_line(e)}); the file is corrupt, truncated "
            "or not an image: re-export or re-copy it"
        ) from e

    mode = modes[0]
    grays, colored = [], False
    for page in pages:
        if page.ndim == 3:
            if is_gray_rgb(page):
                page = page[..., 0]
            else:
                colored = True
                page = luminance(page)
        grays.append(page)
    if colored:
        file_warning(path, f"colour image (mode {mode}) converted to gray with BT.601 luminance weights")
    arr = np.stack([g.astype(np.float32) for g in grays])

    if mode in ("1",):
        top, bits = 1.0, 1
    elif mode in ("L", "LA", "P", "PA", "RGB", "RGBA", "RGBX", "RGBa", "La", "CMYK", "YCbCr", "LAB", "HSV"):
        top, bits = 255.0, 8
    elif mode.startswith("I;16"):
        top, bits = 65535.0, 16
    elif mode == "I" and arr.size and arr.min() >= 0 and arr.max() <= 65535:
        top, bits = 65535.0, 16
    else:  # 32-bit integer or float: unknown range
        top, bits = None, 32
    require_finite(path, arr)
    meta = _base_meta(path, fmt or "IMAGE", arr.shape[1:])
    if top is None:
        lo, hi = (float(np.nanmin(arr)), float(np.nanmax(arr))) if arr.size else (0.0, 1.0)
    else:
        lo, hi = 0.0, top
    if scale:
        arr = np.clip((arr - lo) / (hi - lo), 0.0, 1.0) if hi > lo else np.zeros_like(arr)
    meta.update(
        photometric="RGB" if colored else "MONOCHROME2",
        pil_mode=mode,
        bits_stored=bits,
        num_frames=n_frames,
        frame=-1 if idx is None else idx,
        value_range=(lo, hi),
    )
    return np.ascontiguousarray(arr, dtype=np.float32), meta


def _pil_to_array(im) -> tuple[np.ndarray, str]:
    """The current frame as ``(H, W)`` or ``(H, W, 3)`` (alpha dropped) and the original mode."""
    mode = im.mode
    if mode == "P" or mode == "PA":
        im = im.convert("RGBA" if ("transparency" in im.info or mode == "PA") else "RGB")
    elif mode in ("CMYK", "YCbCr", "LAB", "HSV"):
        im = im.convert("RGB")
    elif mode == "La":
        im = im.convert("LA")
    elif mode == "RGBa":
        im = im.convert("RGBA")
    arr = np.asarray(im)
    if mode == "1":
        arr = arr.astype(np.uint8)
    if arr.ndim == 3:
        if arr.shape[-1] == 2:  # LA
            arr = arr[..., 0]
        elif arr.shape[-1] >= 3:
            arr = arr[..., :3]
    return arr, mode


def read_nifti_image(
    path: str | os.PathLike,
    slice_index: int | str | None = None,
    as_canonical: bool = False,
    scale: bool = True,
) -> tuple[np.ndarray, dict[str, Any]]:
    """Read a NIfTI image with nibabel as float32 ``(1, H, W)`` or ``(1, H, W, D)``.

    Orientation: the file's voxel order (``H`` = axis i, ``W`` = axis j, ``D`` = axis k), as
    MONAI's ``NibabelReader``; ``as_canonical=True`` reorients to the closest RAS+ first.
    Scaling: the finite min-max of the *whole volume* (before a slice is taken, so slices of
    one volume share one scale); NaN or inf pixels are an error (:func:`require_finite`). Use ``scale=False`` for label maps.

    Args:
        path: ``.nii`` or ``.nii.gz`` file.
        slice_index: ``None`` returns the whole volume ``(1, H, W, D)``; an ``int`` (negative
            counts from the end) or ``"middle"`` returns that slice along the last axis as
            ``(1, H, W)``. 2D files (or ``D == 1``) always return ``(1, H, W)``.
        as_canonical: reorient to the closest RAS+ orientation before anything else.
        scale: ``False`` keeps the stored values (after the NIfTI scl_slope/scl_inter).

    Returns:
        ``(array, meta)``; ``meta["affine"]`` is the NIfTI affine (translated to the chosen
        slice), ``meta["spacing"]`` the voxel sizes of the returned axes.

    Raises:
        DataError: missing/corrupt file, more than 3 non-singleton dimensions, or a slice out of range.
    """
    if not has_nib:
        raise DataError("nibabel is not installed: pip install nibabel to read NIfTI images")
    path = os.fspath(path)
    if not os.path.isfile(path):
        raise DataError(f"{path}: file not found; check the path (manifest paths are relative to the manifest file)")
    try:
        with renamed_warnings(path):
            img = nib.load(path)
            if as_canonical:
                img = nib.as_closest_canonical(img)
            data = np.asarray(img.get_fdata(dtype=np.float32))
            affine = np.asarray(img.affine, dtype=np.float64)
            zooms = tuple(float(z) for z in img.header.get_zooms())
    except Exception as e:
        raise DataError(
            f"{path}: cannot read the NIfTI image ({type(e).__name__}: {one_line(e)}); the file is corrupt or "
            "truncated: re-export or re-copy it"
        ) from e
    original_shape = data.shape
    while data.ndim > 3 and data.shape[-1] == 1:
        data = data[..., 0]
    if data.ndim > 3:
        raise DataError(
            f"{path}: NIfTI image has shape {original_shape}; only 2D and 3D images are supported: "
            "split the time/channel dimension into separate files"
        )
    if data.ndim == 3 and data.shape[2] == 1:
        data = data[..., 0]
    if data.ndim == 1:
        data = data[:, None]
    zooms = (tuple(zooms) + (1.0, 1.0, 1.0))[:3]

    lo, hi = 0.0, 1.0
    require_finite(path, data)
    if scale:
        if data.size:
            lo, hi = float(data.min()), float(data.max())
        data = (data - lo) / (hi - lo) if hi > lo else np.zeros_like(data)

    meta = _base_meta(path, "NIFTI", original_shape)
    meta.update(photometric="MONOCHROME2", bits_stored=32, num_frames=1, frame=0, value_range=(lo, hi))
    if data.ndim == 3:
        depth = data.shape[2]
        if slice_index is None:
            meta["spacing"] = zooms
            meta["slice_index"] = -1
        else:
            if slice_index == "all":
                raise ValueError("slice_index must be None, an int or 'middle', got 'all' (use None for the volume)")
            k = _frame_index(path, slice_index, depth, what="slice")
            data = data[:, :, k]
            shift = np.eye(4)
            shift[2, 3] = k
            affine = affine @ shift
            meta["spacing"] = zooms[:2]
            meta["slice_index"] = k
    else:
        meta["spacing"] = zooms[:2]
        meta["slice_index"] = -1
    meta["spatial_shape"] = tuple(int(s) for s in data.shape)
    meta["affine"] = affine
    return np.ascontiguousarray(data[None], dtype=np.float32), meta


def read_image(
    path: str | os.PathLike,
    reader: str = "auto",
    frame: int | str | None = None,
    apply_voi: bool = False,
    voi_index: int = 0,
    window: tuple[float, float] | None = None,
    mask_padding: bool = True,
    return_padding_mask: bool = False,
    scale: bool = True,
    slice_index: int | str | None = None,
    as_canonical: bool = False,
) -> tuple[np.ndarray, dict[str, Any]]:
    """Read any supported image as float32 channel-first ``(C, H, W)`` (or ``(1, H, W, D)``) plus meta.

    Args:
        path: the file.
        reader: ``"auto"`` (by content, see :func:`detect_image_format`), ``"dicom"``, ``"pil"`` or ``"nifti"``.
        frame: DICOM frame / TIFF page: ``None`` (first), ``int``, ``"middle"`` or ``"all"``.
        apply_voi, voi_index, window, mask_padding: DICOM only, see
            :func:`medfuse.transforms.dicom.read_dicom_image`.
        return_padding_mask: put a bool ``meta["padding_mask"]`` (all False for non-DICOM).
        scale: ``False`` keeps raw values (masks with label values, Hounsfield units).
        slice_index, as_canonical: NIfTI only, see :func:`read_nifti_image`.

    Raises:
        DataError: missing, corrupt or unsupported file (:class:`~medfuse.errors.DicomDecodeError`
            for DICOM), with the file name and the fix in the message.
        ValueError: invalid arguments.
    """
    if reader not in _READERS:
        raise ValueError(f"reader must be one of {_READERS}, got {reader!r}")
    fmt = detect_image_format(path) if reader == "auto" else reader
    if fmt == "dicom":
        return read_dicom_image(
            path,
            frame=frame,
            apply_voi=apply_voi,
            voi_index=voi_index,
            window=window,
            mask_padding=mask_padding,
            return_padding_mask=return_padding_mask,
            scale=scale,
        )
    if fmt == "pil":
        arr, meta = read_pil_image(path, frame=frame, scale=scale)
    else:
        arr, meta = read_nifti_image(path, slice_index=slice_index, as_canonical=as_canonical, scale=scale)
    if return_padding_mask:
        meta["padding_mask"] = np.zeros(arr.shape, dtype=bool)
    return arr, meta


class LoadXray(ImageLoader):
    """Load a chest X-ray from DICOM, PNG/JPEG or NIfTI as a float32 ``MetaTensor`` ``(C, H, W)`` in [0, 1].

    The format is recognised from the content (see :func:`detect_image_format`); DICOM gets
    the full display pipeline of :func:`medfuse.transforms.dicom.read_dicom_image`
    (MONOCHROME1 inverted, BitsStored scaling, padding masked), images are never transposed.
    A 3D NIfTI returns ``(1, H, W, D)`` unless ``slice_index`` is given.

    Args:
        reader: ``"auto"`` (default), ``"dicom"``, ``"pil"`` or ``"nifti"``.
        frame: multi-frame DICOM / multi-page TIFF frame: ``None`` (first), ``int``,
            ``"middle"`` or ``"all"`` (frames become channels).
        apply_voi: apply the DICOM VOI LUT / window. Default False.
        voi_index: which VOI when there are several.
        window: explicit DICOM ``(center, width)``.
        mask_padding: set DICOM padding pixels to 0. Default True.
        return_padding_mask: return ``(image, padding_mask)``.
        scale: ``False`` keeps raw values (for label masks). Default True.
        slice_index: NIfTI slice along the last axis (``int`` or ``"middle"``), ``None`` for the volume.
        as_canonical: reorient NIfTI to the closest RAS+ first. Default False (file order).
        dtype: output dtype, default ``torch.float32``.

    Raises:
        DataError, DicomDecodeError: unreadable input; the message names the file and the fix.

    Examples::

        img = LoadXray()("chest.png")          # (1, H, W) float32 in [0, 1]
        img = LoadXray()("chest.dcm")          # same convention for DICOM
    """

    def __init__(
        self,
        reader: str = "auto",
        frame: int | str | None = None,
        apply_voi: bool = False,
        voi_index: int = 0,
        window: tuple[float, float] | None = None,
        mask_padding: bool = True,
        return_padding_mask: bool = False,
        scale: bool = True,
        slice_index: int | str | None = None,
        as_canonical: bool = False,
        dtype: torch.dtype = torch.float32,
    ) -> None:
        if reader not in _READERS:
            raise ValueError(f"reader must be one of {_READERS}, got {reader!r}")
        super().__init__(
            return_padding_mask, dtype, reader=reader, frame=frame, apply_voi=apply_voi, voi_index=voi_index,
            window=window, mask_padding=mask_padding, scale=scale, slice_index=slice_index, as_canonical=as_canonical,
        )

    def _read(self, filename: str | os.PathLike, **kwargs: Any) -> tuple[np.ndarray, dict[str, Any]]:
        return read_image(filename, **kwargs)


class LoadXrayd(ImageLoaderd):
    """Dictionary version of :class:`LoadXray`: replaces the paths under ``keys`` by images.

    Args:
        keys: keys holding image paths (e.g. ``"image"``, ``"mask"``).
        padding_mask_key: also store the bool DICOM padding mask under this key (one key) or
            ``f"{key}_{padding_mask_key}"`` (several keys).
        allow_missing_keys: skip absent keys.
        other arguments: see :class:`LoadXray`.

    Raises:
        DataError, DicomDecodeError: unreadable input; the message names the file and the fix.
    """

    loader_class = LoadXray

    def __init__(
        self,
        keys: KeysCollection,
        reader: str = "auto",
        frame: int | str | None = None,
        apply_voi: bool = False,
        voi_index: int = 0,
        window: tuple[float, float] | None = None,
        mask_padding: bool = True,
        padding_mask_key: str | None = None,
        scale: bool = True,
        slice_index: int | str | None = None,
        as_canonical: bool = False,
        dtype: torch.dtype = torch.float32,
        allow_missing_keys: bool = False,
    ) -> None:
        super().__init__(
            keys, padding_mask_key, allow_missing_keys, reader=reader, frame=frame, apply_voi=apply_voi,
            voi_index=voi_index, window=window, mask_padding=mask_padding, scale=scale, slice_index=slice_index,
            as_canonical=as_canonical, dtype=dtype,
        )


class LoadOCT(LoadXray):
    """Load retinal OCT: B-scan JPEG/PNG as ``(1, H, W)``, multi-frame DICOM volumes as ``(N, H, W)``.

    The same reader as :class:`LoadXray` with one different default: ``frame="all"``, so an
    ophthalmic tomography DICOM returns every B-scan (frames as channels). Pass an ``int`` or
    ``"middle"`` (the central B-scan, usually through the fovea of a macular cube) to get one.

    Args:
        frame: ``"all"`` (default), ``None`` (first), an ``int`` or ``"middle"``.
        other arguments: see :class:`LoadXray`.

    Raises:
        DataError, DicomDecodeError: unreadable input; the message names the file and the fix.
    """

    def __init__(self, frame: int | str | None = "all", **kwargs: Any) -> None:
        super().__init__(frame=frame, **kwargs)


class LoadOCTd(LoadXrayd):
    """Dictionary version of :class:`LoadOCT` (default ``frame="all"``); arguments as :class:`LoadXrayd`.

    Raises:
        DataError, DicomDecodeError: unreadable input; the message names the file and the fix.
    """

    loader_class = LoadOCT

    def __init__(self, keys: KeysCollection, frame: int | str | None = "all", **kwargs: Any) -> None:
        super().__init__(keys, frame=frame, **kwargs)


LoadXrayD = LoadXrayDict = LoadXrayd
LoadOCTD = LoadOCTDict = LoadOCTd
