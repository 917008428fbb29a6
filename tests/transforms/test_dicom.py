# Copyright (c) medfuse contributors
# Licensed under the Apache License, Version 2.0
"""read_dicom_image / LoadDicomXray / LoadDicomXrayd on real DICOM (pydicom-data, shared data) and crafted files."""

from __future__ import annotations

import contextlib
import functools
import re

import numpy as np
import pydicom
import pytest
import torch
from monai.data import MetaTensor
from pydicom.pixels import apply_modality_lut, apply_voi_lut

from medfuse.errors import DataError, DicomDecodeError
from medfuse.transforms import LoadDicomXray, LoadDicomXrayd, is_dicom_file, read_dicom_image
from tests.conftest import require
from tests.transforms.helpers import dicom_testfile, raw_pixels, write_monochrome

RG1_ROWS, RG1_COLS = 1955, 1841


@functools.lru_cache(maxsize=None)
def _load(name: str, **kwargs) -> np.ndarray:
    """Our loader's (F, H, W) array for a pydicom test file (cached: RG1 decodes are the slow part)."""
    return read_dicom_image(dicom_testfile(name), **kwargs)[0]


def _regions(img: np.ndarray) -> tuple[float, float, float]:
    """Mean of the two lateral lung fields and of a central (mediastinum/spine) column strip."""
    h, w = img.shape

    def box(r0, r1, c0, c1):
        return float(img[int(r0 * h) : int(r1 * h), int(c0 * w) : int(c1 * w)].mean())

    return box(0.2, 0.45, 0.15, 0.35), box(0.2, 0.45, 0.65, 0.85), box(0.2, 0.6, 0.45, 0.55)


class TestRG1ChestCR:
    """The NEMA WG04 RG1 chest PA: Philips CR, MONOCHROME1, 15 bits stored, 1955 rows x 1841 columns."""

    def test_shape_rows_first_and_meta(self):
        img, meta = read_dicom_image(dicom_testfile("RG1_UNCR.dcm"))
        assert img.shape == (1, RG1_ROWS, RG1_COLS)
        assert img.dtype == np.float32
        assert meta["original_shape"] == (RG1_ROWS, RG1_COLS)
        assert meta["photometric"] == "MONOCHROME1" and meta["inverted"] is True
        assert meta["bits_stored"] == 15 and meta["value_range"] == (0.0, 2.0**15 - 1)
        # RG1 stores PixelSpacing "0.000\0.000": unknown, so no spacing is reported
        assert "spacing" not in meta
        assert 0.0 <= img.min() and img.max() <= 1.0

    @pytest.mark.parametrize("lossless", ["RG1_J2KR.dcm"])
    def test_jpeg2000_lossless_is_pixel_identical(self, lossless):
        assert np.array_equal(_load("RG1_UNCR.dcm"), _load(lossless))

    def test_lossy_forms(self):
        unci, j2ki, uncr = _load("RG1_UNCI.dcm"), _load("RG1_J2KI.dcm"), _load("RG1_UNCR.dcm")
        # UNCI is the decompressed lossy J2KI stored uncompressed: the same pixels
        assert np.array_equal(unci, j2ki)
        # ... and close to, but not identical with, the original (max 403 of 32767 stored units)
        diff = np.abs(unci - uncr)
        assert diff.max() > 0
        assert diff.max() < 0.02 and diff.mean() < 0.003

    def test_monochrome1_inverted_lungs_dark(self):
        lung_r, lung_l, centre = _regions(_load("RG1_UNCR.dcm")[0])
        assert lung_r < centre - 0.15 and lung_l < centre - 0.15
        # without inversion (raw stored values) the relation is the other way round
        raw_r, raw_l, raw_c = _regions(raw_pixels("RG1_UNCR.dcm").astype(np.float32))
        assert raw_r > raw_c and raw_l > raw_c

    def test_bits_stored_scaling_not_data_max(self):
        raw = raw_pixels("RG1_UNCR.dcm").astype(np.float64)
        expected = 1.0 - raw / (2**15 - 1)
        np.testing.assert_allclose(_load("RG1_UNCR.dcm")[0], expected, atol=1e-6)
        assert _load("RG1_UNCR.dcm").min() > 0.1  # the data maximum is not stretched to 1

    def test_monai_pydicom_reader_transposes(self):
        from monai.transforms import LoadImage

        with pytest.warns(UserWarning):  # MONAI warns about missing orientation tags / codec plugins
            monai_img = LoadImage(reader="PydicomReader", image_only=True)(dicom_testfile("RG1_UNCR.dcm"))
        assert tuple(monai_img.shape) == (RG1_COLS, RG1_ROWS)
        ours = _load("RG1_UNCR.dcm")[0]
        # MONAI: transposed, not inverted, not scaled; ours = 1 - stored / (2**15 - 1), rows first
        np.testing.assert_allclose(ours, 1.0 - monai_img.numpy().T / (2**15 - 1), atol=1e-6)

    def test_voi_window_matches_pydicom_then_inverted(self):
        ours = _load("RG1_UNCR.dcm", apply_voi=True)[0]
        ds = pydicom.dcmread(dicom_testfile("RG1_UNCR.dcm"))
        windowed = apply_voi_lut(raw_pixels("RG1_UNCR.dcm"), ds)  # pydicom: [0, 2**15-1], not inverted
        np.testing.assert_allclose(ours, 1.0 - windowed / (2**15 - 1), atol=1e-5)
        assert not np.allclose(ours, _load("RG1_UNCR.dcm")[0], atol=1e-2)


def test_explicit_window():
    path = dicom_testfile("MR_small.dcm")
    raw = raw_pixels("MR_small.dcm").astype(np.float64)
    img, meta = read_dicom_image(path, window=(1000, 501))
    assert meta["voi_applied"] and meta["window_center"] == 1000
    # DICOM LINEAR: below c - 0.5 - (w-1)/2 -> 0, above c - 0.5 + (w-1)/2 -> 1
    assert np.all(img[0][raw <= 749.5] == 0) and np.all(img[0][raw > 1249.5] == 1)
    mid = (raw > 760) & (raw < 1240)
    np.testing.assert_allclose(img[0][mid], (raw[mid] - 999.5) / 500 + 0.5, atol=1e-6)


def test_voi_lut_sequence():
    img, meta = read_dicom_image(dicom_testfile("vlut_04.dcm"), apply_voi=True)
    ds = pydicom.dcmread(dicom_testfile("vlut_04.dcm"))
    lut_out = apply_voi_lut(raw_pixels("vlut_04.dcm"), ds).astype(np.float64)
    assert meta["voi_applied"] and meta["value_range"] == (0.0, 65535.0)
    np.testing.assert_allclose(img[0], lut_out / 65535.0, atol=1e-6)


def test_apply_voi_without_voi_in_file_changes_nothing():
    img, meta = read_dicom_image(dicom_testfile("emri_small.dcm"), apply_voi=True)
    assert meta["voi_applied"] is False
    np.testing.assert_array_equal(img, _load("emri_small.dcm"))


def test_siim_fake_monochrome1_is_inverse_of_original(shared_data):
    folder = shared_data / "dicom_cxr"
    mono2 = read_dicom_image(require(folder / "SIIM_CR_chest_PA_jpegbaseline.dcm"))[0]
    mono1, meta = read_dicom_image(require(folder / "SIIM_CR_chest_PA_jpegbaseline_FAKE_MONOCHROME1.dcm"))
    assert meta["photometric"] == "MONOCHROME1" and meta["bits_stored"] == 8
    assert mono2.shape == (1, 1024, 1024)
    np.testing.assert_allclose(mono1, 1.0 - mono2, atol=1e-6)
    assert mono2.std() > 0.1  # a real image, not a constant


def test_shared_rg1_copies_decode_like_pydicom_data(shared_data):
    ours = read_dicom_image(require(shared_data / "dicom_cxr" / "RG1_J2KI.dcm"))[0]
    np.testing.assert_array_equal(ours, _load("RG1_UNCI.dcm"))


@pytest.mark.parametrize(
    "name, reference",
    [
        ("MR_small_bigendian.dcm", "MR_small.dcm"),  # Explicit VR Big Endian
        ("MR_small_RLE.dcm", "MR_small.dcm"),  # RLE Lossless
        ("MR_small_jp2klossless.dcm", "MR_small.dcm"),  # JPEG 2000 lossless (openjpeg)
        ("MR_small_jpeg_ls_lossless.dcm", "MR_small.dcm"),  # JPEG-LS lossless (gdcm)
        ("emri_small_big_endian.dcm", "emri_small.dcm"),
        ("emri_small_RLE.dcm", "emri_small.dcm"),
        ("emri_small_jpeg_2k_lossless.dcm", "emri_small.dcm"),
    ],
)
def test_transfer_syntaxes_decode_identically(name, reference):
    ours, meta = read_dicom_image(dicom_testfile(name), frame="all")
    np.testing.assert_array_equal(ours, read_dicom_image(dicom_testfile(reference), frame="all")[0])
    assert meta["transfer_syntax"] == str(pydicom.dcmread(dicom_testfile(name), stop_before_pixels=True).file_meta.TransferSyntaxUID)


def test_12bit_scaled_by_bits_stored():
    img, meta = read_dicom_image(dicom_testfile("emri_small.dcm"))
    raw = raw_pixels("emri_small.dcm")[0].astype(np.float64)
    assert meta["bits_stored"] == 12 and meta["value_range"] == (0.0, 4095.0)
    np.testing.assert_allclose(img[0], raw / 4095.0, atol=1e-7)
    assert img.max() < 0.2  # max stored value 467: not stretched to 1


class TestModalityLUT:
    def test_negative_slope_inverts(self, tmp_path):
        ds = pydicom.dcmread(dicom_testfile("MR_small.dcm"))
        ds.RescaleSlope, ds.RescaleIntercept = -1, 0
        path = tmp_path / "neg_slope.dcm"
        ds.save_as(path)
        img, meta = read_dicom_image(path)
        assert meta["rescale_slope"] == -1.0 and meta["value_range"] == (-32767.0, 32768.0)
        np.testing.assert_allclose(img, 1.0 - _load("MR_small.dcm"), atol=1e-6)

    def test_range_beyond_bits_stored_uses_lut_output_range(self, tmp_path):
        # 12-bit stored values times 4: outputs reach 16380 > 4095, scaled by the LUT's output range
        ds = pydicom.dcmread(dicom_testfile("emri_small.dcm"))
        ds.RescaleSlope, ds.RescaleIntercept = 4, 100
        path = tmp_path / "slope4.dcm"
        ds.save_as(path)
        img, meta = read_dicom_image(path, frame="all")
        assert meta["value_range"] == (100.0, 4 * 4095 + 100.0)
        np.testing.assert_allclose(img, _load("emri_small.dcm", frame="all"), atol=1e-6)

    def test_modality_lut_sequence(self):
        img, meta = read_dicom_image(dicom_testfile("mlut_18.dcm"))
        ds = pydicom.dcmread(dicom_testfile("mlut_18.dcm"))
        expected = apply_modality_lut(raw_pixels("mlut_18.dcm"), ds).astype(np.float64) / 65535.0
        assert meta["value_range"] == (0.0, 65535.0)
        np.testing.assert_allclose(img[0], expected, atol=1e-6)

    def test_scale_false_returns_modality_values(self):
        img, meta = read_dicom_image(dicom_testfile("CT_small.dcm"), scale=False)
        raw = raw_pixels("CT_small.dcm").astype(np.float64)
        np.testing.assert_allclose(img[0], raw - 1024.0)  # Hounsfield units
        assert meta["inverted"] is False


class TestPixelPadding:
    PAD = -2000

    @pytest.fixture
    def padded(self, tmp_path):
        pixels = raw_pixels("MR_small.dcm").copy()
        pixels[:5, :] = self.PAD
        pixels[:, -3:] = self.PAD
        expected_mask = np.zeros(pixels.shape, bool)
        expected_mask[:5, :] = True
        expected_mask[:, -3:] = True
        return pixels, expected_mask, tmp_path

    @pytest.mark.parametrize("photometric", ["MONOCHROME2", "MONOCHROME1"])
    def test_padding_set_to_zero_and_mask_returned(self, padded, photometric):
        pixels, expected_mask, tmp_path = padded
        path = write_monochrome(
            tmp_path / f"pad_{photometric}.dcm", pixels, signed=True, PixelPaddingValue=self.PAD, PhotometricInterpretation=photometric
        )
        img, meta = read_dicom_image(path, return_padding_mask=True)
        np.testing.assert_array_equal(meta["padding_mask"][0], expected_mask)
        assert np.all(img[0][expected_mask] == 0.0)
        assert meta["padding_fraction"] == pytest.approx(expected_mask.mean())
        body = (pixels[~expected_mask].astype(np.float64) + 32768) / 65535
        if photometric == "MONOCHROME1":
            body = 1.0 - body
        np.testing.assert_allclose(img[0][~expected_mask], body, atol=1e-6)
        # without masking the padding keeps its scaled value
        unmasked = read_dicom_image(path, mask_padding=False)[0]
        pad_scaled = (self.PAD + 32768) / 65535
        pad_scaled = 1 - pad_scaled if photometric == "MONOCHROME1" else pad_scaled
        np.testing.assert_allclose(unmasked[0][expected_mask], pad_scaled, atol=1e-6)

    def test_padding_range_limit(self, tmp_path):
        pixels = np.full((8, 8), 1000, np.uint16)
        pixels[0] = 4095
        pixels[1] = 4000
        pixels[2] = 3990
        path = write_monochrome(tmp_path / "range.dcm", pixels, bits_stored=12, PixelPaddingValue=4095, PixelPaddingRangeLimit=4000)
        img, meta = read_dicom_image(path, return_padding_mask=True)
        assert meta["padding_mask"][0, :2].all() and not meta["padding_mask"][0, 2:].any()
        assert np.all(img[0, :2] == 0) and img[0, 2, 0] == pytest.approx(3990 / 4095)

    def test_dictionary_padding_mask_key(self, padded):
        pixels, expected_mask, tmp_path = padded
        path = write_monochrome(tmp_path / "pad.dcm", pixels, signed=True, PixelPaddingValue=self.PAD)
        out = LoadDicomXrayd("image", padding_mask_key="padding")({"image": path, "label": 1})
        assert out["label"] == 1
        assert out["padding"].dtype == torch.bool and tuple(out["padding"].shape) == (1, 64, 64)
        np.testing.assert_array_equal(out["padding"][0].numpy(), expected_mask)

    def test_no_padding_declared_gives_empty_mask(self):
        img, meta = read_dicom_image(dicom_testfile("MR_small.dcm"), return_padding_mask=True)
        assert meta["padding_mask"].shape == img.shape and not meta["padding_mask"].any()
        assert np.isnan(meta["padding_value"])


class TestMultiFrame:
    NAME = "emri_small.dcm"  # 10 frames, 64x64, 12 bits stored

    def test_frames_differ(self):
        frames = _load(self.NAME, frame="all")
        assert frames.shape == (10, 64, 64)
        assert not np.array_equal(frames[0], frames[3])

    @pytest.mark.parametrize("frame, index", [(None, 0), (0, 0), (3, 3), (-1, 9), ("middle", 5)])
    def test_frame_choice(self, frame, index):
        img, meta = read_dicom_image(dicom_testfile(self.NAME), frame=frame)
        assert img.shape == (1, 64, 64) and meta["frame"] == index and meta["num_frames"] == 10
        np.testing.assert_array_equal(img[0], _load(self.NAME, frame="all")[index])

    def test_all_frames_as_channels(self):
        img = LoadDicomXray(frame="all")(dicom_testfile(self.NAME))
        assert isinstance(img, MetaTensor) and tuple(img.shape) == (10, 64, 64)
        assert img.meta["frame"] == -1

    @pytest.mark.parametrize("frame", [10, -11])
    def test_frame_out_of_range(self, frame):
        with pytest.raises(DataError, match=r"emri_small\.dcm.*10 frame"):
            read_dicom_image(dicom_testfile(self.NAME), frame=frame)

    @pytest.mark.parametrize("frame", ["first", 1.5, True])
    def test_bad_frame_argument(self, frame):
        with pytest.raises(ValueError, match="frame"):
            read_dicom_image(dicom_testfile(self.NAME), frame=frame)


def test_rgb_dicom_collapsed_to_gray_with_warning():
    path = dicom_testfile("SC_rgb.dcm")
    with pytest.warns(UserWarning, match=re.escape(path)):
        img, meta = read_dicom_image(path)
    rgb = pydicom.dcmread(path).pixel_array.astype(np.float64)
    assert img.shape == (1, 100, 100) and meta["photometric"] == "RGB"
    np.testing.assert_allclose(img[0], (rgb @ [0.299, 0.587, 0.114]) / 255.0, atol=1e-5)


@pytest.mark.parametrize("name", ["JPEG-lossy.dcm", "JPGExtended.dcm"])
def test_12bit_jpeg_extended(name):
    """12-bit JPEG Extended: GDCM and Pillow refuse it; only the GPL pylibjpeg-libjpeg decodes it."""
    path = dicom_testfile(name)
    decoder = pydicom.pixels.get_decoder(pydicom.uid.JPEGExtended12Bit)
    if "pylibjpeg" in decoder.available_plugins:
        img, meta = read_dicom_image(path)
        assert img.shape == (1, 1024, 256) and meta["bits_stored"] == 12
        assert 0 <= img.min() and img.max() <= 1 and img.std() > 0
    else:
        with pytest.raises(DicomDecodeError) as err:
            read_dicom_image(path)
        msg = str(err.value)
        assert path in msg and "JPEG Extended" in msg and "1.2.840.10008.1.2.4.51" in msg
        assert "medfuse[codecs-gpl]" in msg and "\n" not in msg


class TestBadInput:
    def test_truncated_native_pixel_data(self):
        path = dicom_testfile("MR_truncated.dcm")
        with pytest.raises(DicomDecodeError, match=re.escape(path) + r".*truncated or corrupt"):
            read_dicom_image(path)

    @pytest.mark.parametrize("name", ["RG1_UNCR.dcm", "RG1_J2KR.dcm"])
    def test_cut_file(self, tmp_path, name):
        data = open(dicom_testfile(name), "rb").read()
        path = tmp_path / f"cut_{name}"
        path.write_bytes(data[: len(data) // 2])
        with pytest.raises(DicomDecodeError, match=re.escape(str(path)) + r".*(truncated|corrupt)"):
            with pytest.warns(UserWarning) if "J2K" in name else contextlib.nullcontext():
                read_dicom_image(path)

    @pytest.mark.parametrize("content", [b"\x89PNG\r\n\x1a\n" + bytes(200), b"just some text, not an image\n" * 10])
    def test_not_dicom(self, tmp_path, content):
        path = tmp_path / "fake.dcm"
        path.write_bytes(content)
        assert not is_dicom_file(path)
        with pytest.raises(DicomDecodeError, match=re.escape(str(path)) + r": not a DICOM file.*LoadXray"):
            LoadDicomXray()(path)

    def test_dicom_without_pixel_data(self):
        path = dicom_testfile("rtplan.dcm")
        with pytest.raises(DicomDecodeError, match=re.escape(path) + r".*no pixel data.*RTPLAN"):
            read_dicom_image(path)

    def test_missing_file(self, tmp_path):
        with pytest.raises(DataError, match="file not found"):
            read_dicom_image(tmp_path / "nope.dcm")

    def test_conflicting_arguments(self):
        with pytest.raises(ValueError, match="scale=False"):
            read_dicom_image(dicom_testfile("MR_small.dcm"), scale=False, apply_voi=True)
        with pytest.raises(ValueError, match="window"):
            read_dicom_image(dicom_testfile("MR_small.dcm"), window=(10, 0))

    def test_reader_warnings_name_the_file(self):
        path = dicom_testfile("MR_small_padded.dcm")  # pydicom warns about excess padding
        with pytest.warns(UserWarning, match=re.escape(path) + ".*excess padding"):
            img, _ = read_dicom_image(path)
        np.testing.assert_array_equal(img, _load("MR_small.dcm"))


def test_headerless_dicom_read(tmp_path):
    """A data set written without preamble, 'DICM' marker or file meta (old archives) still loads."""
    ds = pydicom.dcmread(dicom_testfile("MR_small.dcm"))
    ds.preamble = None
    del ds.file_meta
    path = tmp_path / "IM0001"
    pydicom.dcmwrite(path, ds, enforce_file_format=False, implicit_vr=True, little_endian=True)
    assert open(path, "rb").read(132)[128:132] != b"DICM"
    assert is_dicom_file(path)
    np.testing.assert_array_equal(read_dicom_image(path)[0], _load("MR_small.dcm"))


class TestLoadDicomXray:
    def test_metatensor_with_meta_and_affine(self):
        img = LoadDicomXray()(dicom_testfile("MR_small.dcm"))
        assert isinstance(img, MetaTensor) and img.dtype == torch.float32 and tuple(img.shape) == (1, 64, 64)
        assert img.meta["filename_or_obj"] == dicom_testfile("MR_small.dcm")
        assert img.meta["spacing"] == (0.3125, 0.3125)
        assert img.meta["original_channel_dim"] == 0
        np.testing.assert_allclose(img.affine.numpy(), np.diag([0.3125, 0.3125, 1.0, 1.0]))
        assert "padding_mask" not in img.meta

    def test_return_padding_mask_pair(self):
        img, mask = LoadDicomXray(return_padding_mask=True)(dicom_testfile("MR_small.dcm"))
        assert mask.dtype == torch.bool and mask.shape == img.shape

    def test_dictionary_version(self):
        out = LoadDicomXrayd(["a", "b"], allow_missing_keys=True)({"a": dicom_testfile("MR_small.dcm"), "label": 3})
        assert tuple(out["a"].shape) == (1, 64, 64) and out["label"] == 3 and "b" not in out

    def test_bad_frame_word(self):
        with pytest.raises(ValueError, match="frame"):
            LoadDicomXray(frame="last")
