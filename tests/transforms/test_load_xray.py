# Copyright (c) medfuse contributors
# Licensed under the Apache License, Version 2.0
"""LoadXray / LoadXrayd: format detection, PNG/JPEG through Pillow, NIfTI through nibabel, DICOM dispatch."""

from __future__ import annotations

import re
import warnings

import nibabel as nib
import numpy as np
import pytest
import torch
from monai.data import MetaTensor, list_data_collate
from PIL import Image

from medfuse.errors import DataError, DicomDecodeError
from medfuse.transforms import (
    LoadDicomXray,
    LoadXray,
    LoadXrayd,
    ResizeWithPadd,
    detect_image_format,
    read_image,
    read_nifti_image,
)
from tests.conftest import require
from tests.transforms.helpers import dicom_testfile


def _kermany(shared_data, n=1):
    folder = require(shared_data / "kermany_cxr_224" / "train" / "NORMAL")
    files = sorted(folder.iterdir())[:n]
    assert files, f"no images in {folder}"
    return files


class TestDetectFormat:
    def test_by_content_not_name(self, tmp_path):
        png = tmp_path / "looks_like.dcm"
        Image.fromarray(np.zeros((4, 4), np.uint8)).save(png, format="PNG")
        assert detect_image_format(png) == "pil"
        dcm = tmp_path / "scan.png"
        dcm.write_bytes(open(dicom_testfile("MR_small.dcm"), "rb").read())
        assert detect_image_format(dcm) == "dicom"
        assert tuple(LoadXray()(dcm).shape) == (1, 64, 64)

    def test_nifti_gz_and_plain(self, tmp_path):
        vol = nib.Nifti1Image(np.zeros((3, 4, 5), np.float32), np.eye(4))
        for name in ("v.nii", "v.nii.gz"):
            nib.save(vol, tmp_path / name)
            assert detect_image_format(tmp_path / name) == "nifti"
        (tmp_path / "v.nii.gz").rename(tmp_path / "renamed.bin")
        assert detect_image_format(tmp_path / "renamed.bin") == "nifti"  # gzip + NIfTI magic

    def test_unsupported(self, tmp_path):
        path = tmp_path / "notes.txt"
        path.write_text("not an image\n")
        with pytest.raises(DataError, match=re.escape(str(path)) + r": unsupported image format"):
            LoadXray()(path)

    def test_missing(self, tmp_path):
        with pytest.raises(DataError, match="file not found"):
            LoadXray()(tmp_path / "missing.png")

    def test_extensionless_non_dicom_is_clear_error(self, tmp_path):
        path = tmp_path / "IM0001"
        path.write_bytes(b"\x00\x01garbage" * 40)
        with pytest.raises(DicomDecodeError, match=re.escape(str(path)) + r": not a DICOM file"):
            LoadXray()(path)


class TestPillowImages:
    def test_kermany_jpeg_rgb_equal_channels_become_one(self, shared_data):
        path = _kermany(shared_data)[0]
        with Image.open(path) as im:
            rgb = np.asarray(im)
        assert rgb.ndim == 3 and np.array_equal(rgb[..., 0], rgb[..., 2])  # stored as RGB with R=G=B
        with warnings.catch_warnings():
            warnings.simplefilter("error")  # equal channels: no colour warning
            img = LoadXray()(path)
        assert isinstance(img, MetaTensor) and tuple(img.shape) == (1, 224, 224) and img.dtype == torch.float32
        np.testing.assert_allclose(img[0].numpy(), rgb[..., 0] / 255.0, atol=1e-7)
        assert img.meta["photometric"] == "MONOCHROME2" and img.meta["pil_mode"] == "RGB"

    @pytest.mark.filterwarnings("ignore:NvImgCodecPydicomReader")
    def test_16bit_png_not_transposed(self, tmp_path):
        data = (np.arange(30 * 50, dtype=np.uint32).reshape(30, 50) * 43).astype(np.uint16)
        path = tmp_path / "x16.png"
        Image.fromarray(data).save(path)
        img = LoadXray()(path)
        assert tuple(img.shape) == (1, 30, 50)  # rows first
        np.testing.assert_allclose(img[0].numpy(), data / 65535.0, atol=1e-7)
        assert img.meta["bits_stored"] == 16 and img.meta["original_shape"] == (30, 50)
        from monai.transforms import LoadImage

        assert tuple(LoadImage(image_only=True)(path).shape) == (50, 30)  # MONAI's PILReader transposes

    def test_16bit_png_raw_values(self, tmp_path):
        data = np.array([[0, 1, 2], [3, 1000, 65535]], np.uint16)
        path = tmp_path / "labels.png"
        Image.fromarray(data).save(path)
        np.testing.assert_array_equal(LoadXray(scale=False)(path)[0].numpy(), data.astype(np.float32))

    def test_true_colour_to_luminance_with_warning(self, tmp_path):
        rgb = np.zeros((6, 8, 3), np.uint8)
        rgb[..., 0] = 200
        rgb[..., 1] = np.arange(8, dtype=np.uint8) * 20
        path = tmp_path / "colour.png"
        Image.fromarray(rgb).save(path)
        with pytest.warns(UserWarning, match=re.escape(str(path)) + ".*luminance"):
            img = LoadXray()(path)
        expected = rgb.astype(np.float64) @ [0.299, 0.587, 0.114] / 255.0
        np.testing.assert_allclose(img[0].numpy(), expected, atol=1e-6)
        assert img.meta["photometric"] == "RGB"

    def test_rgba_alpha_dropped(self, tmp_path):
        gray = np.tile(np.arange(0, 250, 25, dtype=np.uint8), (4, 1))
        rgba = np.stack([gray, gray, gray, np.full_like(gray, 7)], axis=-1)
        path = tmp_path / "alpha.png"
        Image.fromarray(rgba, mode="RGBA").save(path)
        with warnings.catch_warnings():
            warnings.simplefilter("error")
            img = LoadXray()(path)
        np.testing.assert_allclose(img[0].numpy(), gray / 255.0, atol=1e-7)

    @pytest.mark.parametrize("mode", ["L", "P", "1"])
    def test_other_modes(self, tmp_path, mode):
        gray = (np.indices((10, 12)).sum(0) * 10 % 256).astype(np.uint8)
        im = Image.fromarray(gray).convert(mode)
        path = tmp_path / f"m_{mode}.png"
        im.save(path)
        img = LoadXray()(path)
        expected = np.asarray(im.convert("L"), np.float32) / 255.0
        np.testing.assert_allclose(img[0].numpy(), expected, atol=1e-6)

    def test_truncated_jpeg(self, tmp_path, shared_data):
        data = _kermany(shared_data)[0].read_bytes()
        path = tmp_path / "cut.jpeg"
        path.write_bytes(data[: len(data) // 2])
        with pytest.raises(DataError, match=re.escape(str(path)) + r".*truncated"):
            LoadXray()(path)

    def test_real_png_masks_and_images(self, shared_data):
        folder = require(shared_data / "lung_seg_cxr")
        name = sorted((folder / "cxr").iterdir())[0].name
        img = LoadXray()(folder / "cxr" / name)
        mask = LoadXray()(folder / "masks" / name)
        assert img.shape == mask.shape == (1, 512, 512)
        binary = mask[0] > 0.5
        assert 0.05 < float(binary.float().mean()) < 0.6
        # lung fields (inside the mask) are darker than the rest of a MONOCHROME2 radiograph
        assert float(img[0][binary].mean()) < float(img[0][~binary].mean())


class TestNifti:
    @pytest.fixture
    def volume(self, tmp_path):
        data = np.arange(5 * 6 * 4, dtype=np.float32).reshape(5, 6, 4) - 10.0
        affine = np.diag([2.0, 3.0, 4.0, 1.0])
        path = tmp_path / "vol.nii.gz"
        nib.save(nib.Nifti1Image(data, affine), path)
        return path, data, affine

    def test_volume_file_order_and_volume_scale(self, volume):
        path, data, affine = volume
        img = LoadXray()(path)
        assert tuple(img.shape) == (1, 5, 6, 4)
        np.testing.assert_allclose(img[0].numpy(), (data - data.min()) / (data.max() - data.min()), atol=1e-6)
        np.testing.assert_allclose(img.affine.numpy(), affine)
        assert img.meta["spacing"] == (2.0, 3.0, 4.0)

    @pytest.mark.parametrize("index, k", [(2, 2), (-1, 3), ("middle", 2)])
    def test_slice(self, volume, index, k):
        path, data, affine = volume
        img = LoadXray(slice_index=index)(path)
        assert tuple(img.shape) == (1, 5, 6)
        # slices share the whole volume's scale
        np.testing.assert_allclose(img[0].numpy(), (data[:, :, k] - data.min()) / (data.max() - data.min()), atol=1e-6)
        assert img.affine[2, 3].item() == pytest.approx(4.0 * k)
        assert img.meta["slice_index"] == k and img.meta["spacing"] == (2.0, 3.0)

    def test_slice_out_of_range(self, volume):
        with pytest.raises(DataError, match=r"vol\.nii\.gz: slice 9 requested but the file has 4 slice"):
            LoadXray(slice_index=9)(volume[0])

    @pytest.mark.filterwarnings("ignore:NvImgCodecPydicomReader")
    def test_same_as_monai_nibabel_reader(self, volume):
        from monai.transforms import LoadImage

        path, data, _ = volume
        monai_img = LoadImage(reader="NibabelReader", image_only=True)(path)
        np.testing.assert_allclose(LoadXray(scale=False)(path)[0].numpy(), monai_img.numpy())

    def test_as_canonical(self, tmp_path):
        data = np.random.default_rng(0).random((4, 5, 3)).astype(np.float32)
        affine = np.diag([-1.0, 1.0, 1.0, 1.0])  # LAS: axis 0 runs right-to-left
        path = tmp_path / "las.nii"
        nib.save(nib.Nifti1Image(data, affine), path)
        native = read_nifti_image(path, scale=False)[0][0]
        canonical = read_nifti_image(path, scale=False, as_canonical=True)[0][0]
        np.testing.assert_allclose(native, data)
        np.testing.assert_allclose(canonical, data[::-1])

    def test_2d_and_labels(self, tmp_path):
        labels = np.array([[0, 1, 2], [3, 0, 1]], np.uint8)
        path = tmp_path / "labels.nii.gz"
        nib.save(nib.Nifti1Image(labels, np.eye(4)), path)
        img = LoadXray(scale=False)(path)
        assert tuple(img.shape) == (1, 2, 3)
        np.testing.assert_array_equal(img[0].numpy(), labels)

    def test_4d_rejected(self, tmp_path):
        path = tmp_path / "t.nii.gz"
        nib.save(nib.Nifti1Image(np.zeros((2, 3, 4, 5), np.float32), np.eye(4)), path)
        with pytest.raises(DataError, match=re.escape(str(path)) + r".*only 2D and 3D"):
            LoadXray()(path)


class TestDispatchAndDict:
    def test_dicom_same_as_dicom_loader(self):
        path = dicom_testfile("CT_small.dcm")
        np.testing.assert_array_equal(LoadXray()(path).numpy(), LoadDicomXray()(path).numpy())

    def test_forced_reader(self):
        with pytest.raises(DataError, match="cannot read the image"), warnings.catch_warnings():
            warnings.simplefilter("ignore")  # Pillow may warn about the bytes it tries to parse
            LoadXray(reader="pil")(dicom_testfile("CT_small.dcm"))
        with pytest.raises(ValueError, match="reader"):
            LoadXray(reader="itk")

    def test_padding_mask_for_non_dicom_is_empty(self, tmp_path):
        path = tmp_path / "a.png"
        Image.fromarray(np.full((3, 4), 9, np.uint8)).save(path)
        arr, meta = read_image(path, return_padding_mask=True)
        assert meta["padding_mask"].shape == arr.shape and not meta["padding_mask"].any()

    def test_dictionary_mixed_formats_collate(self, tmp_path, shared_data):
        png = tmp_path / "a.png"
        Image.fromarray((np.random.default_rng(1).random((40, 30)) * 255).astype(np.uint8)).save(png)
        items = [{"image": png, "label": 0}, {"image": dicom_testfile("MR_small.dcm"), "label": 1}]
        load = LoadXrayd("image")
        resize = ResizeWithPadd("image", size=32)
        batch = list_data_collate([resize(load(item)) for item in items])
        assert tuple(batch["image"].shape) == (2, 1, 32, 32)
        assert batch["label"].tolist() == [0, 1]
        assert list(batch["image"].meta["source_format"]) == ["PNG", "DICOM"]

    def test_dictionary_padding_mask_keys(self):
        out = LoadXrayd(["a", "b"], padding_mask_key="pad")({"a": dicom_testfile("MR_small.dcm"), "b": dicom_testfile("CT_small.dcm")})
        assert set(out) == {"a", "b", "a_pad", "b_pad"}
        assert out["b_pad"].shape == out["b"].shape


@pytest.mark.parametrize("kind", ["tiff_patch", "nifti_all_nan", "nifti_inf"])
def test_non_finite_pixels_are_an_input_error_naming_the_file(tmp_path, kind):
    arr = np.random.default_rng(0).random((32, 32)).astype(np.float32)
    if kind == "tiff_patch":
        arr[5:15, 5:15] = np.nan
        path = tmp_path / "float.tif"
        Image.fromarray(arr, mode="F").save(path)
    else:
        arr[...] = np.nan if kind == "nifti_all_nan" else arr
        arr[0, 0] = np.inf if kind == "nifti_inf" else arr[0, 0]
        path = tmp_path / "img.nii.gz"
        nib.save(nib.Nifti1Image(arr, np.eye(4)), str(path))
    bad = {"tiff_patch": 100, "nifti_all_nan": 1024, "nifti_inf": 1}[kind]
    with pytest.raises(DataError, match=rf"{re.escape(str(path))}: {bad} of 1024 pixels are NaN or inf; re-export"):
        LoadXray()(str(path))
