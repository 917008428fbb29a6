# Copyright (c) medfuse contributors
# Licensed under the Apache License, Version 2.0
"""Tiny synthetic files for converter tests: PNGs with distinct pixels, DICOM, npz."""

from __future__ import annotations

import zlib
from pathlib import Path

import numpy as np
from PIL import Image

__all__ = ["write_png", "write_dicom", "write_npz", "make_tree"]


def write_png(path, seed: int | None = None, size=(8, 8), mode="L") -> Path:
    """Write a small PNG whose pixels depend on ``seed`` (default: the path), so files differ."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    if seed is None:
        seed = zlib.crc32(str(path).encode())
    rng = np.random.default_rng(seed)
    shape = size[::-1] + ((3,) if mode == "RGB" else ())
    Image.fromarray(rng.integers(0, 256, shape, dtype=np.uint8)).save(path)
    return path


def write_dicom(path, with_pixels: bool = True) -> Path:
    """Write a minimal 8x8 MONOCHROME2 DICOM file (with the 128-byte preamble and 'DICM')."""
    from pydicom.dataset import FileDataset, FileMetaDataset
    from pydicom.uid import ExplicitVRLittleEndian, SecondaryCaptureImageStorage, generate_uid

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = SecondaryCaptureImageStorage
    meta.MediaStorageSOPInstanceUID = generate_uid()
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds = FileDataset(str(path), {}, file_meta=meta, preamble=b"\0" * 128)
    ds.SOPClassUID = meta.MediaStorageSOPClassUID
    ds.SOPInstanceUID = meta.MediaStorageSOPInstanceUID
    ds.Modality = "OT"
    if with_pixels:
        ds.Rows, ds.Columns = 8, 8
        ds.SamplesPerPixel = 1
        ds.PhotometricInterpretation = "MONOCHROME2"
        ds.BitsAllocated, ds.BitsStored, ds.HighBit = 8, 8, 7
        ds.PixelRepresentation = 0
        ds.PixelData = np.arange(64, dtype=np.uint8).tobytes()
    ds.save_as(str(path), enforce_file_format=True)
    return path


def write_npz(path, splits=("train", "val", "test"), n=(6, 3, 3), rgb=False, labels=None, size=4) -> Path:
    """MedMNIST-like npz: ``<split>_images`` (N,size,size[,3]) uint8 and ``<split>_labels`` (N,1)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    arrays = {}
    for s, k in zip(splits, n):
        shape = (k, size, size) + ((3,) if rgb else ())
        arrays[f"{s}_images"] = rng.integers(0, 256, shape, dtype=np.uint8)
        arrays[f"{s}_labels"] = (np.arange(k) % 2).reshape(k, 1).astype(np.uint8) if labels is None else labels[s]
    np.savez_compressed(path, **arrays)
    return path


def make_tree(root, files: dict) -> Path:
    """Create ``{relative path: content}``: ``None`` -> PNG, bytes -> raw bytes, Path -> copy of that file."""
    root = Path(root)
    for rel, content in files.items():
        p = root / rel
        p.parent.mkdir(parents=True, exist_ok=True)
        if content is None:
            write_png(p)
        elif isinstance(content, Path):
            p.write_bytes((root / content).read_bytes())
        else:
            p.write_bytes(content)
    return root
