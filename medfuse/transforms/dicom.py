# Copyright (c) medfuse contributors
# Licensed under the Apache License, Version 2.0
"""DICOM radiograph loading with display semantics: modality LUT, MONOCHROME1, VOI, padding.

MONAI's ``PydicomReader`` applies only the rescale slope/intercept and returns the image
transposed (columns first). Radiographs need more: a MONOCHROME1 image (most CR exports)
shows air white unless it is inverted, a window or VOI LUT may be needed to see anything,
detectors pad the collimated border with a ``PixelPaddingValue``, and a 12-bit image stored
in 16-bit words must be scaled by ``2**12 - 1``, not by its own maximum, so that exposure
differences survive. :func:`read_dicom_image` does all of this and returns rows first.

The rendering follows DICOM PS3.4 N.2: stored values -> modality LUT (rescale or LUT
sequence) -> optional VOI (window or VOI LUT sequence) -> [0, 1] -> MONOCHROME1 inversion ->
padding set to 0.
"""

from __future__ import annotations

import os
from typing import Any

import numpy as np
import torch
from monai.config import KeysCollection
from monai.utils import optional_import

from medfuse.errors import DataError, DicomDecodeError
from medfuse.transforms._common import (
    ImageLoader,
    ImageLoaderd,
    file_warning,
    is_gray_rgb,
    luminance,
    one_line,
    renamed_warnings,
)

pydicom, has_pydicom = optional_import("pydicom")

__all__ = [
    "read_dicom_dataset",
    "read_dicom_image",
    "is_dicom_file",
    "LoadDicomXray",
    "LoadDicomXrayd",
    "LoadDicomXrayD",
    "LoadDicomXrayDict",
]

# transfer syntax UIDs, grouped by the codec that decodes them
_JPEG_BASELINE = "1.2.840.10008.1.2.4.50"
_JPEG_EXTENDED = "1.2.840.10008.1.2.4.51"
_JPEG_LOSSLESS = ("1.2.840.10008.1.2.4.57", "1.2.840.10008.1.2.4.70")
_JPEG_LS = ("1.2.840.10008.1.2.4.80", "1.2.840.10008.1.2.4.81")
_JPEG_2000 = ("1.2.840.10008.1.2.4.90", "1.2.840.10008.1.2.4.91", "1.2.840.10008.1.2.4.92", "1.2.840.10008.1.2.4.93")
_HTJ2K = ("1.2.840.10008.1.2.4.201", "1.2.840.10008.1.2.4.202", "1.2.840.10008.1.2.4.203")
_RLE = "1.2.840.10008.1.2.5"
_NATIVE = ("1.2.840.10008.1.2", "1.2.840.10008.1.2.1", "1.2.840.10008.1.2.2", "1.2.840.10008.1.2.1.99")


def _require_pydicom() -> None:
    if not has_pydicom:
        raise DataError("pydicom is not installed: pip install 'pydicom>=3.0' to read DICOM files")


def _looks_like_headerless_dicom(head: bytes) -> bool:
    """True when a file without the 128-byte preamble starts like a DICOM data set."""
    if len(head) < 8:
        return False
    groups = (0x0002, 0x0008)
    return int.from_bytes(head[0:2], "little") in groups or int.from_bytes(head[0:2], "big") in groups


def is_dicom_file(path: str | os.PathLike) -> bool:
    """True when ``path`` has the ``DICM`` marker at byte 128 or starts with a DICOM group 0002/0008 tag."""
    try:
        with open(path, "rb") as f:
            head = f.read(132)
    except OSError:
        return False
    return (len(head) >= 132 and head[128:132] == b"DICM") or _looks_like_headerless_dicom(head)


def read_dicom_dataset(path: str | os.PathLike, stop_before_pixels: bool = False):
    """Read a DICOM file into a ``pydicom.Dataset``, with errors that name the file.

    Files without the 128-byte preamble (the ``DICM`` marker) are read too, when they start
    with a DICOM group 0002 or 0008 element; a missing transfer syntax is then inferred from
    the encoding pydicom detected.

    Args:
        path: the file.
        stop_before_pixels: skip the pixel data (fast header-only read).

    Raises:
        DataError: the file does not exist.
        DicomDecodeError: the file is not DICOM, or its header cannot be parsed.
    """
    _require_pydicom()
    path = os.fspath(path)
    if not os.path.isfile(path):
        raise DataError(f"{path}: file not found; check the path (manifest paths are relative to the manifest file)")
    with open(path, "rb") as f:
        head = f.read(132)
    has_marker = len(head) >= 132 and head[128:132] == b"DICM"
    if not has_marker and not _looks_like_headerless_dicom(head):
        raise DicomDecodeError(
            f"{path}: not a DICOM file (no 'DICM' marker at byte 128 and no DICOM element at the start); "
            "pass a DICOM file here, or load PNG/JPEG/NIfTI images with medfuse.transforms.LoadXray"
        )
    try:
        with renamed_warnings(path):
            ds = pydicom.dcmread(path, force=not has_marker, stop_before_pixels=stop_before_pixels)
    except Exception as e:  # pydicom raises many types on corrupt input
        raise DicomDecodeError(
            f"{path}: cannot parse the DICOM header ({type(e).__name__}: {one_line(e)}); "
            "the file is corrupt or truncated: re-export or re-copy it"
        ) from e
    file_meta = getattr(ds, "file_meta", None)
    if file_meta is None or "TransferSyntaxUID" not in file_meta:
        implicit, little = getattr(ds, "original_encoding", (None, None))
        uid = pydicom.uid
        if implicit is False:
            ts = uid.ExplicitVRLittleEndian if little is not False else uid.ExplicitVRBigEndian
        else:
            ts = uid.ImplicitVRLittleEndian
        if file_meta is None:
            ds.file_meta = pydicom.dataset.FileMetaDataset()
        ds.file_meta.TransferSyntaxUID = ts
    return ds


def _transfer_syntax(ds) -> tuple[str, str]:
    uid = ds.file_meta.get("TransferSyntaxUID", None)
    if uid is None:
        return "", "unknown transfer syntax"
    uid = pydicom.uid.UID(str(uid))
    return str(uid), (uid.name or str(uid))


def _codec_hint(ts_uid: str, bits_stored: int) -> str:
    """What to install or do when a transfer syntax cannot be decoded."""
    if ts_uid == _JPEG_EXTENDED and bits_stored > 8:
        return (
            "12-bit JPEG Extended needs the GPL-licensed pylibjpeg-libjpeg: pip install 'medfuse[codecs-gpl]' "
            "(or convert the file to uncompressed with 'gdcmconv --raw' / 'dcmdjpeg')"
        )
    if ts_uid in (_JPEG_BASELINE, _JPEG_EXTENDED) + _JPEG_LOSSLESS:
        return "install a JPEG codec: pip install python-gdcm (or pylibjpeg pylibjpeg-libjpeg)"
    if ts_uid in _JPEG_LS:
        return "install a JPEG-LS codec: pip install python-gdcm (or pyjpegls)"
    if ts_uid in _JPEG_2000 + _HTJ2K:
        return "install a JPEG 2000 codec: pip install pylibjpeg pylibjpeg-openjpeg"
    if ts_uid == _RLE or ts_uid in _NATIVE:
        return "pydicom decodes this natively, so the pixel data is truncated or corrupt: re-export or re-copy the file"
    return "unsupported transfer syntax: convert the file to uncompressed ('gdcmconv --raw in.dcm out.dcm')"


def _missing_plugins(ts_uid: str) -> str:
    try:
        decoder = pydicom.pixels.get_decoder(pydicom.uid.UID(ts_uid))
    except Exception:
        return ""
    missing = getattr(decoder, "missing_dependencies", None) or []
    return f" (unavailable decoders: {', '.join(missing)})" if missing else ""


def _decode_error(path: str, ds, err: Exception) -> DicomDecodeError:
    ts_uid, ts_name = _transfer_syntax(ds)
    bits = int(ds.get("BitsStored", 0) or 0)
    return DicomDecodeError(
        f"{path}: cannot decode pixel data ({ts_name}, {ts_uid}, BitsStored={bits}): "
        f"{type(err).__name__}: {one_line(err)}{_missing_plugins(ts_uid)}; {_codec_hint(ts_uid, bits)}"
    )


def _num_frames(ds) -> int:
    try:
        return max(int(ds.get("NumberOfFrames", 1) or 1), 1)
    except (TypeError, ValueError):
        return 1


def _frame_index(path: str, frame: int | str | None, n_frames: int, what: str = "frame") -> int | None:
    """Index of the frame (or slice) to decode, or ``None`` for all."""
    if frame is None:
        return 0
    if isinstance(frame, str):
        if frame == "all":
            return None
        if frame == "middle":
            return n_frames // 2
        raise ValueError(f"{what} must be None, an int, 'all' or 'middle', got {frame!r}")
    if isinstance(frame, (bool, np.bool_)) or not isinstance(frame, (int, np.integer)):
        raise ValueError(f"{what} must be None, an int, 'all' or 'middle', got {frame!r}")
    idx = int(frame) + n_frames if frame < 0 else int(frame)
    if not 0 <= idx < n_frames:
        raise DataError(f"{path}: {what} {frame} requested but the file has {n_frames} {what}(s); choose 0..{n_frames - 1}")
    return idx


def _stored_range(ds) -> tuple[float, float]:
    bits = int(ds.get("BitsStored", ds.get("BitsAllocated", 16)) or 16)
    if int(ds.get("PixelRepresentation", 0) or 0) == 1:
        return -(2.0 ** (bits - 1)), 2.0 ** (bits - 1) - 1
    return 0.0, 2.0**bits - 1


def _lut_output_range(item, ds, which: str) -> tuple[float, float]:
    """Smallest and largest output value of a modality or VOI LUT (its actual data, not the nominal depth)."""
    desc = [int(v) for v in item.LUTDescriptor]
    n_entries = desc[0] or 2**16
    inputs = np.arange(desc[1], desc[1] + n_entries, dtype=np.int64)
    proc = pydicom.pixels
    if which == "modality":
        out = proc.apply_modality_lut(inputs, ds)
    else:
        out = proc.apply_voi(inputs, ds)
    return float(np.min(out)), float(np.max(out))


def _modality_range(ds) -> tuple[float, float]:
    """Output range of the modality LUT applied to the full BitsStored input range."""
    lo, hi = _stored_range(ds)
    if ds.get("ModalityLUTSequence"):
        return _lut_output_range(ds.ModalityLUTSequence[0], ds, "modality")
    if "RescaleSlope" in ds and "RescaleIntercept" in ds:
        slope, icpt = float(ds.RescaleSlope), float(ds.RescaleIntercept)
        a, b = lo * slope + icpt, hi * slope + icpt
        return min(a, b), max(a, b)
    return lo, hi


def _window(values: np.ndarray, center: float, width: float, function: str) -> np.ndarray:
    """DICOM PS3.3 C.11.2.1.2 window mapped to [0, 1] (LINEAR, LINEAR_EXACT or SIGMOID)."""
    function = (function or "LINEAR").upper()
    if function == "LINEAR":
        if width < 1:
            raise ValueError(f"LINEAR window width must be >= 1, got {width}")
        c, w = center - 0.5, width - 1.0
        if w == 0:
            return (values > c).astype(np.float64)
        return np.clip((values - c) / w + 0.5, 0.0, 1.0)
    if function == "LINEAR_EXACT":
        if width <= 0:
            raise ValueError(f"LINEAR_EXACT window width must be > 0, got {width}")
        return np.clip((values - center) / width + 0.5, 0.0, 1.0)
    if function == "SIGMOID":
        if width <= 0:
            raise ValueError(f"SIGMOID window width must be > 0, got {width}")
        return 1.0 / (1.0 + np.exp(-4.0 * (values - center) / width))
    raise ValueError(f"unsupported VOI LUT function {function!r}")


def _nth(value, index: int) -> float:
    if isinstance(value, (list, tuple)) or (hasattr(value, "__len__") and not isinstance(value, (str, bytes))):
        seq = list(value)
        return float(seq[min(index, len(seq) - 1)])
    return float(value)


def _spacing(ds) -> tuple[tuple[float, float] | None, str]:
    """(row, column) spacing in mm from PixelSpacing, else ImagerPixelSpacing; zeros count as unknown."""
    for tag in ("PixelSpacing", "ImagerPixelSpacing"):
        value = ds.get(tag)
        if value is None:
            continue
        try:
            sp = tuple(float(v) for v in value)
        except (TypeError, ValueError):
            continue
        if len(sp) == 2 and all(np.isfinite(s) and s > 0 for s in sp):
            return (sp[0], sp[1]), tag
    return None, ""


def _padding_mask(ds, stored: np.ndarray) -> np.ndarray | None:
    if "PixelPaddingValue" not in ds or ds.PixelPaddingValue is None:
        return None
    pv = float(ds.PixelPaddingValue)
    limit = ds.get("PixelPaddingRangeLimit")
    if limit is not None:
        a, b = sorted((pv, float(limit)))
        return (stored >= a) & (stored <= b)
    return stored == pv


def read_dicom_image(
    path: str | os.PathLike,
    frame: int | str | None = None,
    apply_voi: bool = False,
    voi_index: int = 0,
    window: tuple[float, float] | None = None,
    mask_padding: bool = True,
    return_padding_mask: bool = False,
    scale: bool = True,
) -> tuple[np.ndarray, dict[str, Any]]:
    """Decode a DICOM image as float32 ``(F, H, W)`` in [0, 1], rows first, air dark.

    Steps: decode (any transfer syntax pydicom's handlers support: native little/big endian,
    RLE, JPEG through GDCM/Pillow, JPEG 2000 through pylibjpeg-openjpeg or GDCM) -> colour
    (RGB, YBR, palette) collapsed to gray -> modality LUT (rescale slope/intercept, negative
    slopes included, or a modality LUT sequence) -> optional VOI (explicit ``window``, else
    the file's VOI LUT sequence or window when ``apply_voi``) -> scaled to [0, 1] by the
    *possible* output range (``2**BitsStored - 1`` for a 12-bit image in 16-bit words,
    mapped through the modality LUT when there is one), not by the data maximum ->
    MONOCHROME1 inverted so air and lungs are dark -> pixels equal to ``PixelPaddingValue``
    (or inside ``PixelPaddingRangeLimit``) set to 0.

    Args:
        path: the DICOM file (with or without the 128-byte preamble).
        frame: which frame of a multi-frame file: ``None`` (default) the first, an ``int``
            (negative counts from the end), ``"middle"`` the central one (e.g. the foveal
            B-scan of an OCT cube) or ``"all"`` for every frame.
        apply_voi: apply the file's VOI LUT sequence (preferred) or window centre/width.
            When the file has neither, nothing is applied (``meta["voi_applied"]`` is False).
        voi_index: which VOI LUT / window when the file lists several. Default 0.
        window: ``(center, width)`` in modality-LUT units, overriding the file's VOI.
        mask_padding: set padding pixels to 0 (the darkest value) after scaling. Default True.
        return_padding_mask: put the boolean padding mask ``(F, H, W)`` in
            ``meta["padding_mask"]`` (all False when the file declares no padding).
        scale: ``False`` returns modality-LUT values (e.g. Hounsfield units) unscaled and not
            inverted, padding set to the lowest possible value; incompatible with VOI.

    Returns:
        ``(array, meta)``: ``array`` float32 ``(F, H, W)`` with ``F = 1`` unless
        ``frame="all"`` (then ``F = NumberOfFrames``), ``H = Rows``, ``W = Columns``;
        ``meta`` with ``filename_or_obj``, ``original_shape`` (Rows, Columns),
        ``spatial_shape``, ``photometric``, ``bits_stored``, ``bits_allocated``,
        ``transfer_syntax``, ``modality``, ``num_frames``, ``frame`` (-1 for all),
        ``rescale_slope``/``rescale_intercept``, ``value_range`` (the range mapped to
        [0, 1]), ``inverted``, ``voi_applied``, ``window_center``/``window_width`` (NaN when
        none), ``padding_value`` (NaN when none), ``padding_fraction``, ``view_position``,
        ``laterality``, ``spacing`` (row, column mm; only when known, with
        ``spacing_source``), and a 4x4 ``affine`` with the spacing on its diagonal.

    Raises:
        DataError: the file does not exist, or ``frame`` is out of range.
        DicomDecodeError: not DICOM, no pixel data, corrupt/truncated pixel data, or a
            transfer syntax no installed codec decodes (the message says what to install).
        ValueError: invalid arguments.
    """
    if not scale and (apply_voi or window is not None):
        raise ValueError("scale=False returns modality-LUT values; it cannot be combined with apply_voi or window")
    if window is not None and (len(window) != 2 or float(window[1]) <= 0):
        raise ValueError(f"window must be (center, width) with width > 0, got {window!r}")
    path = os.fspath(path)
    ds = read_dicom_dataset(path)
    if not any(t in ds for t in ("PixelData", "FloatPixelData", "DoubleFloatPixelData")):
        if "SOPClassUID" not in ds:
            raise DicomDecodeError(
                f"{path}: no pixel data and no SOP Class UID could be read; the file is truncated or corrupt: "
                "re-export or re-copy it"
            )
        raise DicomDecodeError(
            f"{path}: the DICOM file has no pixel data (Modality {ds.get('Modality', '?')}, "
            f"SOP class {getattr(ds.get('SOPClassUID'), 'name', ds.get('SOPClassUID', '?'))}); "
            "it is not an image: remove it from the manifest"
        )
    if "Rows" not in ds or "Columns" not in ds:
        raise DicomDecodeError(f"{path}: the DICOM file has pixel data but no Rows/Columns; the header is corrupt: re-export it")

    n_frames = _num_frames(ds)
    idx = _frame_index(path, frame, n_frames)
    photometric = str(ds.get("PhotometricInterpretation", "MONOCHROME2")).strip().upper()
    samples = int(ds.get("SamplesPerPixel", 1) or 1)
    ts_uid, _ = _transfer_syntax(ds)

    try:
        with renamed_warnings(path):
            if n_frames > 1 and idx is not None:
                arr = pydicom.pixels.pixel_array(ds, index=idx)
            else:
                arr = pydicom.pixels.pixel_array(ds)
    except Exception as e:  # codecs raise RuntimeError, ValueError, NotImplementedError, ...
        raise _decode_error(path, ds, e) from e

    arr = np.asarray(arr)
    color = samples > 1 or photometric == "PALETTE COLOR"
    if idx is not None or n_frames == 1:  # one frame decoded: add the frame axis -> (F, H, W[, S])
        arr = arr[None]

    meta: dict[str, Any] = {
        "filename_or_obj": path,
        "source_format": "DICOM",
        "original_shape": (int(ds.Rows), int(ds.Columns)),
        "spatial_shape": (int(ds.Rows), int(ds.Columns)),
        "original_channel_dim": 0,
        "photometric": photometric,
        "bits_stored": int(ds.get("BitsStored", ds.get("BitsAllocated", 0)) or 0),
        "bits_allocated": int(ds.get("BitsAllocated", 0) or 0),
        "transfer_syntax": ts_uid,
        "modality": str(ds.get("Modality", "") or ""),
        "num_frames": n_frames,
        "frame": -1 if idx is None else idx,
        "rescale_slope": float(ds.get("RescaleSlope", 1.0) or 1.0) if "RescaleSlope" in ds else 1.0,
        "rescale_intercept": float(ds.get("RescaleIntercept", 0.0) or 0.0) if "RescaleIntercept" in ds else 0.0,
        "inverted": False,
        "voi_applied": False,
        "window_center": float("nan"),
        "window_width": float("nan"),
        "padding_value": float(ds.PixelPaddingValue) if ds.get("PixelPaddingValue") is not None else float("nan"),
        "padding_fraction": 0.0,
        "view_position": str(ds.get("ViewPosition", "") or ""),
        "laterality": str(ds.get("ImageLaterality", ds.get("Laterality", "")) or ""),
    }
    spacing, source = _spacing(ds)
    affine = np.eye(4)
    if spacing is not None:
        meta["spacing"] = spacing
        meta["spacing_source"] = source
        affine[0, 0], affine[1, 1] = spacing
    meta["affine"] = affine

    if color:
        out, top = _color_to_gray(path, ds, arr, photometric, samples)
        pad = None
        meta["value_range"] = (0.0, top)
        if not scale:
            out = out * top
    else:
        out, pad = _render_monochrome(path, ds, arr, photometric, apply_voi, voi_index, window, mask_padding, scale, meta)

    if return_padding_mask:
        meta["padding_mask"] = pad if pad is not None else np.zeros(out.shape, dtype=bool)
    return np.ascontiguousarray(out, dtype=np.float32), meta


def _color_to_gray(path: str, ds, arr: np.ndarray, photometric: str, samples: int) -> tuple[np.ndarray, float]:
    """RGB / YBR (converted to RGB by pydicom) / palette colour -> (gray in [0, 1], the divisor used)."""
    if photometric == "PALETTE COLOR":
        try:
            arr = pydicom.pixels.apply_color_lut(arr, ds)
        except Exception as e:
            raise DicomDecodeError(f"{path}: cannot apply the palette colour LUT ({one_line(e)}); the header is inconsistent") from e
        top = float(np.iinfo(arr.dtype).max) if np.issubdtype(arr.dtype, np.integer) else 1.0
    else:
        bits = int(ds.get("BitsStored", 8) or 8)
        top = 2.0**bits - 1
    if is_gray_rgb(arr):
        gray = arr[..., 0].astype(np.float32)
    else:
        file_warning(path, f"{photometric} colour DICOM converted to gray with BT.601 luminance weights")
        gray = luminance(arr)
    return np.clip(gray / top, 0.0, 1.0), top


def _render_monochrome(path, ds, stored, photometric, apply_voi, voi_index, window, mask_padding, scale, meta):
    pad = _padding_mask(ds, stored)
    if pad is not None:
        meta["padding_fraction"] = float(pad.mean())
    lo, hi = _modality_range(ds)
    s_lo, s_hi = _stored_range(ds)
    if np.issubdtype(stored.dtype, np.integer) and stored.size:
        data_min, data_max = float(stored.min()), float(stored.max())
        outside = data_min < s_lo or data_max > s_hi
        if pad is not None and outside:
            nonpad = stored[~pad]
            outside = nonpad.size > 0 and (float(nonpad.min()) < s_lo or float(nonpad.max()) > s_hi)
        if outside:
            file_warning(
                path,
                f"pixel values {data_min:g}..{data_max:g} exceed the BitsStored={meta['bits_stored']} range "
                f"{s_lo:g}..{s_hi:g}; values are clipped (the header's BitsStored is probably wrong)",
            )
    elif stored.size:  # float pixel data: no BitsStored semantics
        lo, hi = float(np.nanmin(stored)), float(np.nanmax(stored))

    with renamed_warnings(path):
        values = pydicom.pixels.apply_modality_lut(stored, ds)
    values = np.asarray(values, dtype=np.float64)

    if not scale:
        if pad is not None and mask_padding:
            values[pad] = lo
        meta["value_range"] = (lo, hi)
        return values, pad

    out = None
    if window is not None:
        center, width = float(window[0]), float(window[1])
        out = _window(values, center, width, "LINEAR")
        meta.update(voi_applied=True, window_center=center, window_width=width)
    elif apply_voi:
        out = _apply_file_voi(path, ds, values, voi_index, meta)
    if out is None:
        span = hi - lo
        out = (values - lo) / span if span > 0 else np.zeros_like(values)
        out = np.clip(out, 0.0, 1.0)
        meta["value_range"] = (lo, hi)
    if photometric == "MONOCHROME1":
        out = 1.0 - out
        meta["inverted"] = True
    if pad is not None and mask_padding:
        out[pad] = 0.0
    return out, pad


def _apply_file_voi(path, ds, values, voi_index, meta):
    """The file's VOI LUT sequence (preferred, like pydicom) or window, mapped to [0, 1]; None when absent/invalid."""
    seq = ds.get("VOILUTSequence")
    if seq:
        item = seq[min(voi_index, len(seq) - 1)]
        if item.get("LUTDescriptor") is not None and item.get("LUTData") is not None:
            try:
                with renamed_warnings(path):
                    ints = np.rint(values).astype(np.int64)
                    mapped = pydicom.pixels.apply_voi(ints, ds, index=min(voi_index, len(seq) - 1)).astype(np.float64)
                    v_lo, v_hi = _lut_output_range(item, ds, "voi")
            except Exception as e:
                file_warning(path, f"VOI LUT sequence not applied ({one_line(e)})")
            else:
                span = v_hi - v_lo
                meta.update(voi_applied=True, value_range=(v_lo, v_hi))
                return np.clip((mapped - v_lo) / span, 0.0, 1.0) if span > 0 else np.zeros_like(mapped)
    if ds.get("WindowCenter") is not None and ds.get("WindowWidth") is not None:
        try:
            center, width = _nth(ds.WindowCenter, voi_index), _nth(ds.WindowWidth, voi_index)
            out = _window(values, center, width, str(ds.get("VOILUTFunction", "LINEAR") or "LINEAR"))
        except (TypeError, ValueError) as e:
            file_warning(path, f"window not applied ({one_line(e)})")
            return None
        meta.update(voi_applied=True, window_center=center, window_width=width)
        return out
    return None


class LoadDicomXray(ImageLoader):
    """Load a DICOM radiograph as a float32 ``MetaTensor`` ``(C, H, W)`` in [0, 1] (see :func:`read_dicom_image`).

    Unlike ``monai.transforms.LoadImage(reader="PydicomReader")`` the result is not
    transposed (``H`` = Rows), MONOCHROME1 is inverted, ``PixelPaddingValue`` is masked and
    the scaling respects BitsStored.

    Args:
        frame: ``None`` (first frame), an ``int``, ``"middle"`` or ``"all"`` (frames as channels).
        apply_voi: apply the file's VOI LUT / window. Default False (the full stored range).
        voi_index: which VOI when the file lists several.
        window: explicit ``(center, width)`` overriding the file's VOI.
        mask_padding: set padding pixels to 0. Default True.
        return_padding_mask: return ``(image, padding_mask)``, the mask a bool ``MetaTensor``.
        scale: ``False`` for raw modality-LUT values (see :func:`read_dicom_image`).
        dtype: output dtype, default ``torch.float32``.

    Raises:
        DataError, DicomDecodeError: see :func:`read_dicom_image`.

    Examples::

        img = LoadDicomXray()("RG1_UNCR.dcm")   # MetaTensor (1, 1955, 1841), lungs dark
    """

    def __init__(
        self,
        frame: int | str | None = None,
        apply_voi: bool = False,
        voi_index: int = 0,
        window: tuple[float, float] | None = None,
        mask_padding: bool = True,
        return_padding_mask: bool = False,
        scale: bool = True,
        dtype: torch.dtype = torch.float32,
    ) -> None:
        super().__init__(
            return_padding_mask, dtype, frame=frame, apply_voi=apply_voi, voi_index=voi_index, window=window,
            mask_padding=mask_padding, scale=scale,
        )

    def _read(self, filename: str | os.PathLike, **kwargs: Any) -> tuple[np.ndarray, dict[str, Any]]:
        return read_dicom_image(filename, **kwargs)


class LoadDicomXrayd(ImageLoaderd):
    """Dictionary version of :class:`LoadDicomXray`: replaces file paths under ``keys`` by images.

    Args:
        keys: keys holding DICOM paths.
        padding_mask_key: when set, also store the bool padding mask ``(C, H, W)`` under
            ``padding_mask_key`` (for one key) or ``f"{key}_{padding_mask_key}"`` (several keys).
        allow_missing_keys: skip absent keys.
        other arguments: see :class:`LoadDicomXray`.

    Raises:
        DataError, DicomDecodeError: see :func:`read_dicom_image`.
    """

    loader_class = LoadDicomXray

    def __init__(
        self,
        keys: KeysCollection,
        frame: int | str | None = None,
        apply_voi: bool = False,
        voi_index: int = 0,
        window: tuple[float, float] | None = None,
        mask_padding: bool = True,
        padding_mask_key: str | None = None,
        scale: bool = True,
        dtype: torch.dtype = torch.float32,
        allow_missing_keys: bool = False,
    ) -> None:
        super().__init__(
            keys, padding_mask_key, allow_missing_keys, frame=frame, apply_voi=apply_voi, voi_index=voi_index,
            window=window, mask_padding=mask_padding, scale=scale, dtype=dtype,
        )


LoadDicomXrayD = LoadDicomXrayDict = LoadDicomXrayd
