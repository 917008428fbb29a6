# Copyright (c) medfuse contributors
# Licensed under the Apache License, Version 2.0
"""LoadOCT / LoadOCTd: Kermany OCT B-scan JPEGs and a multi-frame ophthalmic tomography DICOM built from them."""

from __future__ import annotations

import numpy as np
import pytest
from monai.data import MetaTensor
from PIL import Image

from medfuse.errors import DataError
from medfuse.transforms import LoadOCT, LoadOCTd, LoadXray
from tests.conftest import require
from tests.transforms.helpers import OPHTHALMIC_TOMOGRAPHY, dicom_testfile, write_monochrome


def _oct_jpegs(shared_data, width=512, n=3):
    root = require(shared_data / "oct_kermany_samples")
    found = []
    for path in sorted(root.glob("*/*.jpeg")):
        with Image.open(path) as im:
            if im.size == (width, 496):
                found.append(path)
        if len(found) == n:
            return found
    pytest.skip(f"fewer than {n} OCT samples of width {width} in {root}")


@pytest.mark.parametrize("cls", ["CNV", "DME", "DRUSEN", "NORMAL"])
def test_bscan_jpegs_are_496_rows(shared_data, cls):
    files = sorted(require(shared_data / "oct_kermany_samples" / cls).glob("*.jpeg"))[:3]
    assert files
    for path in files:
        img = LoadOCT()(path)
        assert isinstance(img, MetaTensor)
        assert img.shape[0] == 1 and img.shape[1] == 496 and img.shape[2] in (512, 768)
        assert 0.0 <= float(img.min()) and float(img.max()) <= 1.0 and float(img.std()) > 0.05


@pytest.fixture
def oct_volume(shared_data, tmp_path):
    """An 8-bit multi-frame OPT DICOM whose frames are three real Kermany B-scans."""
    jpegs = _oct_jpegs(shared_data)
    frames = np.stack([np.asarray(Image.open(p).convert("L")) for p in jpegs]).astype(np.uint8)
    path = write_monochrome(
        tmp_path / "oct_volume.dcm", frames, SOPClassUID=OPHTHALMIC_TOMOGRAPHY, Modality="OPT", PixelSpacing=[0.0039, 0.0117]
    )
    return path, frames


def test_dicom_volume_all_frames_by_default(oct_volume):
    path, frames = oct_volume
    img = LoadOCT()(path)
    assert tuple(img.shape) == (3, 496, 512)
    np.testing.assert_allclose(img.numpy(), frames / 255.0, atol=1e-7)
    assert img.meta["modality"] == "OPT" and img.meta["num_frames"] == 3 and img.meta["frame"] == -1
    assert img.meta["spacing"] == (0.0039, 0.0117)


@pytest.mark.parametrize("frame, index", [(0, 0), ("middle", 1), (-1, 2), (None, 0)])
def test_dicom_volume_one_frame(oct_volume, frame, index):
    path, frames = oct_volume
    img = LoadOCT(frame=frame)(path)
    assert tuple(img.shape) == (1, 496, 512)
    np.testing.assert_allclose(img[0].numpy(), frames[index] / 255.0, atol=1e-7)


def test_dicom_frame_equals_jpeg(shared_data, oct_volume):
    path, _ = oct_volume
    first_jpeg = _oct_jpegs(shared_data)[0]
    np.testing.assert_allclose(LoadOCT(frame=0)(path).numpy(), LoadOCT()(first_jpeg).numpy(), atol=1e-7)


def test_loaders_differ_only_in_default_frame():
    path = dicom_testfile("emri_small.dcm")  # 10 frames
    assert LoadOCT()(path).shape[0] == 10
    assert LoadXray()(path).shape[0] == 1
    np.testing.assert_array_equal(LoadOCT(frame=None)(path).numpy(), LoadXray()(path).numpy())


def test_dictionary_version(oct_volume):
    path, _ = oct_volume
    out = LoadOCTd("image", frame="middle")({"image": path, "label": 2})
    assert tuple(out["image"].shape) == (1, 496, 512) and out["label"] == 2
    assert tuple(LoadOCTd("image")({"image": path})["image"].shape) == (3, 496, 512)


def test_frame_out_of_range(oct_volume):
    with pytest.raises(DataError, match=r"oct_volume\.dcm: frame 3 requested but the file has 3 frame"):
        LoadOCT(frame=3)(oct_volume[0])


def test_bad_frame_word():
    with pytest.raises(ValueError, match="frame"):
        LoadOCT(frame="centre")
