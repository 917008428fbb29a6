# Copyright (c) medfuse contributors
# Licensed under the Apache License, Version 2.0
"""Shared helpers for the transform tests: pydicom-data files and crafted DICOM datasets."""

from __future__ import annotations

import functools

import numpy as np
import pydicom
import pytest
from pydicom.data import get_testdata_file
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.uid import ExplicitVRLittleEndian, generate_uid

OPHTHALMIC_TOMOGRAPHY = "1.2.840.10008.5.1.4.1.1.77.1.5.4"


def dicom_testfile(name: str) -> str:
    """Path of a pydicom-data / pydicom test file; skips when the package is absent."""
    path = get_testdata_file(name)
    if path is None:
        pytest.skip(f"pydicom test file {name} not available: pip install pydicom-data")
    return path


@functools.lru_cache(maxsize=None)
def raw_pixels(name: str) -> np.ndarray:
    """Stored values of a pydicom test file (cached; RG1 files are 1955x1841)."""
    return pydicom.dcmread(dicom_testfile(name)).pixel_array


def write_monochrome(path, pixels: np.ndarray, signed: bool = False, bits_stored: int | None = None, **tags) -> str:
    """Write an uncompressed single- or multi-frame MONOCHROME2 DICOM file with extra ``tags``."""
    pixels = np.asarray(pixels)
    bits_allocated = pixels.dtype.itemsize * 8
    ds = Dataset()
    ds.file_meta = FileMetaDataset()
    ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds.file_meta.MediaStorageSOPClassUID = tags.pop("SOPClassUID", "1.2.840.10008.5.1.4.1.1.7")
    ds.file_meta.MediaStorageSOPInstanceUID = generate_uid()
    ds.SOPClassUID = ds.file_meta.MediaStorageSOPClassUID
    ds.SOPInstanceUID = ds.file_meta.MediaStorageSOPInstanceUID
    ds.Modality = tags.pop("Modality", "OT")
    ds.SamplesPerPixel = 1
    ds.PhotometricInterpretation = tags.pop("PhotometricInterpretation", "MONOCHROME2")
    if pixels.ndim == 3:
        ds.NumberOfFrames = pixels.shape[0]
    ds.Rows, ds.Columns = pixels.shape[-2:]
    ds.BitsAllocated = bits_allocated
    ds.BitsStored = bits_stored or bits_allocated
    ds.HighBit = ds.BitsStored - 1
    ds.PixelRepresentation = 1 if signed else 0
    for key, value in tags.items():
        setattr(ds, key, value)
    ds.PixelData = np.ascontiguousarray(pixels).tobytes()
    ds.save_as(path, enforce_file_format=True)
    return str(path)
