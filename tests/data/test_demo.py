# Copyright (c) medfuse contributors
# Licensed under the Apache License, Version 2.0
"""Synthetic demo data: phantoms, OCT B-scans, the written data set, its DICOM and manifests."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import numpy as np
import pydicom
import pytest
from PIL import Image

from medfuse.data.demo import (
    CXR_CLASSES,
    MANIFEST_NAMES,
    OCT_CLASSES,
    STAMP_NAME,
    cxr_anatomy,
    cxr_phantom,
    demo_data_is_current,
    gaussian_blur,
    make_demo_data,
    oct_bscan,
    oct_volume,
)
from medfuse.data.manifest import SPLITS, iter_items, read_manifest
from medfuse.errors import DataError

SMALL = dict(n_cxr=24, n_oct=16, image_size=64, seed=3, dicom_fraction=1.0)


def _rng(*key):
    return np.random.default_rng(list(key))


def _items(manifest):
    return [item for _, _, item in iter_items(manifest)]


def _files(root: Path) -> dict[str, str]:
    return {str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(root.rglob("*")) if p.is_file() and p.suffix in (".png", ".dcm")}


@pytest.fixture(scope="module")
def demo_dir(tmp_path_factory):
    out = tmp_path_factory.mktemp("demo") / "data"
    manifests = make_demo_data(out, **SMALL)
    assert set(manifests) == set(MANIFEST_NAMES)
    return out


# ------------------------------------------------------------------ chest phantoms
def test_cxr_phantom_deterministic():
    a_img, a_mask = cxr_phantom(_rng(0, 1), 64, positive=True)
    b_img, b_mask = cxr_phantom(_rng(0, 1), 64, positive=True)
    np.testing.assert_array_equal(a_img, b_img)
    np.testing.assert_array_equal(a_mask, b_mask)
    c_img, _ = cxr_phantom(_rng(0, 2), 64, positive=True)
    assert np.abs(a_img.astype(int) - c_img.astype(int)).mean() > 1.0
    # an int seed works like a Generator seeded with it
    np.testing.assert_array_equal(cxr_phantom(5, 48)[0], cxr_phantom(np.random.default_rng(5), 48)[0])


@pytest.mark.parametrize("size, shape", [(64, (64, 64)), ((80, 48), (80, 48)), (128, (128, 128))])
def test_cxr_phantom_shapes_dtypes(size, shape):
    img, mask = cxr_phantom(_rng(1), size)
    assert img.shape == mask.shape == shape
    assert img.dtype == np.uint8 and mask.dtype == np.uint8
    assert set(np.unique(mask)) == {0, 255}
    img12, mask12 = cxr_phantom(_rng(1), size, bits=12)
    assert img12.dtype == np.uint16 and int(img12.max()) <= 4095
    np.testing.assert_array_equal(mask, mask12)
    # every bit depth is a rounding of the 12-bit values
    np.testing.assert_array_equal(img, np.rint(img12 * (255 / 4095)).astype(np.uint8))
    assert img.std() > 20  # real contrast, not a flat image


def test_cxr_phantom_bad_arguments():
    with pytest.raises(ValueError, match="at least 32"):
        cxr_phantom(_rng(0), 16)
    with pytest.raises(ValueError, match="view"):
        cxr_phantom(_rng(0), 64, view="LATERAL")
    with pytest.raises(ValueError, match="bits"):
        cxr_phantom(_rng(0), 64, bits=17)


def test_cxr_mask_covers_dark_lungs():
    for i in range(6):
        img, mask = cxr_phantom(_rng(2, i), 96, positive=bool(i % 2))
        inside = mask > 0
        assert 0.12 < inside.mean() < 0.45
        # both lungs: mask pixels left and right of the centre
        assert inside[:, :40].sum() > 200 and inside[:, 56:].sum() > 200
        rows, cols = np.nonzero(inside)
        box = np.zeros_like(inside)
        box[rows.min(): rows.max() + 1, cols.min(): cols.max() + 1] = True
        around = box & ~inside  # mediastinum, heart, diaphragm, chest wall
        assert img[inside].mean() + 25 < img[around].mean()


def test_cxr_heart_right_of_centre():
    """The heart shadow lies on the image's right (the patient's left on a PA film)."""
    left, right = [], []
    for i in range(6):
        img, mask = cxr_phantom(_rng(3, i), 96)
        band = img[int(0.62 * 96): int(0.75 * 96)].astype(float)
        left.append(band[:, 25:40].mean())
        right.append(band[:, 56:71].mean())
    assert np.mean(right) > np.mean(left) + 20


def test_cxr_positives_brighter_in_lungs():
    pos, neg = [], []
    for i in range(10):
        anatomy = cxr_anatomy(_rng(4, i))
        img, mask, info = cxr_phantom(_rng(5, i), 96, positive=True, anatomy=anatomy, return_info=True)
        pos.append(img[mask > 0].mean())
        assert 1 <= len(info["boxes"]) <= 3
        for x0, y0, x1, y1 in info["boxes"]:
            assert 0 <= x0 < x1 <= 96 and 0 <= y0 < y1 <= 96
        img, mask, info = cxr_phantom(_rng(6, i), 96, positive=False, anatomy=anatomy, return_info=True)
        neg.append(img[mask > 0].mean())
        assert info["boxes"] == []
    assert np.mean(pos) > np.mean(neg) + 8


def test_cxr_views_and_anatomy():
    anatomy = cxr_anatomy(_rng(7), sex="M")
    assert anatomy["sex"] == "M" and 18 <= anatomy["age"] < 90
    pa = cxr_phantom(_rng(8), 64, anatomy=anatomy, view="PA")[0]
    ap = cxr_phantom(_rng(8), 64, anatomy=anatomy, view="ap")[0]
    assert not np.array_equal(pa, ap)


# --------------------------------------------------------------------- OCT B-scans
def _rpe_irregularity(img, info):
    """Rise of the brightest outer-retina row above its median: large over drusen / CNV."""
    f = gaussian_blur(img.astype(float), 1.0, 2.0)
    rows = np.arange(img.shape[0])[:, None]
    bm, ilm = info["bruch"], info["ilm"]
    band = (rows >= bm[None, :] - 0.55 * (bm - ilm)[None, :]) & (rows <= bm[None, :] + 2)
    elevation = bm - np.where(band, f, -1.0).argmax(axis=0)
    w = img.shape[1]
    inner = elevation[w // 10: w - w // 10]
    return inner.max() - np.median(inner)


def _dark_fraction(img, info):
    """Share of the retina (between surface and Bruch's membrane) as dark as the vitreous."""
    f = gaussian_blur(img.astype(float), 1.0)
    rows = np.arange(img.shape[0])[:, None]
    bm, ilm = info["bruch"], info["ilm"]
    vitreous = np.median(f[rows < ilm[None, :] - 4])
    inside = (rows > ilm[None, :] + 2) & (rows < bm[None, :] - 3)
    w = img.shape[1]
    inside[:, : w // 10] = inside[:, -(w // 10):] = False
    return (f[inside] < 1.6 * vitreous + 4).mean()


def test_oct_deterministic_shapes():
    a = oct_bscan(_rng(10), 64, "DME")
    np.testing.assert_array_equal(a, oct_bscan(_rng(10), 64, "dme"))
    np.testing.assert_array_equal(a, oct_bscan(_rng(10), 64, 1))
    assert not np.array_equal(a, oct_bscan(_rng(11), 64, "DME"))
    assert a.dtype == np.uint8 and a.shape == (64, 64)
    b = oct_bscan(_rng(10), (96, 64), "CNV", bits=12)
    assert b.dtype == np.uint16 and b.shape == (96, 64) and int(b.max()) <= 4095
    with pytest.raises(ValueError, match="unknown class"):
        oct_bscan(_rng(0), 64, "AMD")


def test_oct_layers_bright_retina_dark_vitreous():
    img, info = oct_bscan(_rng(12), 128, "NORMAL", return_info=True)
    rows = np.arange(128)[:, None]
    vitreous = img[rows < info["ilm"][None, :] - 4]
    retina = img[(rows > info["ilm"][None, :]) & (rows < info["bruch"][None, :])]
    assert retina.mean() > vitreous.mean() + 30
    # a foveal pit: the retina is thinnest near the fovea
    thickness = info["bruch"] - info["ilm"]
    fovea = int(round(info["fovea_col"]))
    assert thickness[fovea] < 0.75 * np.median(thickness)


def test_oct_classes_differ():
    irregular = {c: [] for c in OCT_CLASSES}
    dark = {c: [] for c in OCT_CLASSES}
    for c in OCT_CLASSES:
        for i in range(8):
            img, info = oct_bscan(_rng(13, i), 128, c, return_info=True)
            irregular[c].append(_rpe_irregularity(img, info))
            dark[c].append(_dark_fraction(img, info))
            if c == "NORMAL":
                assert info["lesions"] == []
            else:
                assert info["lesions"]
    mean = {c: float(np.mean(irregular[c])) for c in OCT_CLASSES}
    assert mean["CNV"] > mean["NORMAL"] + 3 and mean["DRUSEN"] > mean["NORMAL"] + 2, mean
    dark_mean = {c: float(np.mean(dark[c])) for c in OCT_CLASSES}
    assert dark_mean["DME"] > 2.5 * max(dark_mean[c] for c in ("CNV", "DRUSEN", "NORMAL")), dark_mean


def test_oct_volume():
    vol = oct_volume(_rng(14), 48, "DRUSEN", n_frames=3)
    assert vol.shape == (3, 48, 48) and vol.dtype == np.uint8
    np.testing.assert_array_equal(vol, oct_volume(_rng(14), 48, "DRUSEN", n_frames=3))
    with pytest.raises(ValueError):
        oct_volume(_rng(14), 48, "DRUSEN", n_frames=0)


def test_gaussian_blur_preserves_mass():
    a = np.zeros((30, 40))
    a[15, 20] = 1.0
    b = gaussian_blur(a, 2.0)
    assert b.sum() == pytest.approx(1.0)
    assert np.unravel_index(b.argmax(), b.shape) == (15, 20)
    np.testing.assert_array_equal(gaussian_blur(a, 0.0), a)


# ------------------------------------------------------------------------ data set
def test_manifests_valid_and_monai_readable(demo_dir):
    from monai.data import load_decathlon_datalist

    for key, name in MANIFEST_NAMES.items():
        path = demo_dir / name
        manifest = read_manifest(path, check_hashes=True)  # files, labels, patient leakage, hashes
        for split in SPLITS:
            if split in manifest:
                data = load_decathlon_datalist(str(path), is_segmentation=False, data_list_key=split)
                assert len(data) == len(manifest[split])
                assert all(Path(d["image"]).is_file() for d in data)
        for item in _items(manifest):
            assert not Path(item["image"]).is_absolute()
            assert isinstance(item["patient_id"], str) and item["patient_id"]
            assert len(item["sha256"]) == 64
    cxr = read_manifest(demo_dir / MANIFEST_NAMES["cxr"])
    assert cxr["task"] == "segmentation_classification" and cxr["classes"] == list(CXR_CLASSES)
    assert set(cxr) >= {"training", "validation", "test"}
    oct_ = read_manifest(demo_dir / MANIFEST_NAMES["oct"])
    assert oct_["task"] == "classification" and oct_["classes"] == list(OCT_CLASSES)
    assert oct_["provenance"]["tool"] == "medfuse demo-data"


def test_patients_classes_and_masks(demo_dir):
    cxr = read_manifest(demo_dir / MANIFEST_NAMES["cxr"])
    items = _items(cxr)
    assert len(items) == SMALL["n_cxr"]
    labels = [it["label"] for it in items]
    assert labels.count(0) == labels.count(1) == SMALL["n_cxr"] // 2
    per_patient: dict[str, set] = {}
    for it in items:
        per_patient.setdefault(it["patient_id"], set()).add(it["image"])
        mask = np.array(Image.open(demo_dir / it["mask"]))
        image = np.array(Image.open(demo_dir / it["image"]))
        assert mask.shape == image.shape == (64, 64) and set(np.unique(mask)) <= {0, 255}
        assert (len(it["boxes"]) > 0) == (it["label"] == 1) and len(it["box_labels"]) == len(it["boxes"])
        assert it["view"] in ("PA", "AP") and it["sex"] in ("F", "M")
    assert len(per_patient) < len(items)  # some patients have several images
    assert max(len(v) for v in per_patient.values()) >= 2
    oct_labels = [it["label"] for it in _items(read_manifest(demo_dir / MANIFEST_NAMES["oct"]))]
    assert [oct_labels.count(c) for c in range(4)] == [SMALL["n_oct"] // 4] * 4


def test_cr_dicom(demo_dir):
    from pydicom.uid import ExplicitVRLittleEndian, JPEG2000Lossless, RLELossless, UID

    manifest = read_manifest(demo_dir / MANIFEST_NAMES["cxr_dicom"])
    items = _items(manifest)
    assert len(items) == SMALL["n_cxr"]  # dicom_fraction=1.0
    seen = set()
    sops = set()
    for it in items:
        path = demo_dir / it["image"]
        raw = path.read_bytes()
        assert raw[128:132] == b"DICM"  # preamble + prefix: a proper Part 10 file
        ds = pydicom.dcmread(path)
        assert ds.Modality == "CR" and ds.BodyPartExamined == "CHEST" and ds.ViewPosition == it["view"]
        assert ds.SOPClassUID == pydicom.uid.ComputedRadiographyImageStorage
        assert ds.file_meta.MediaStorageSOPInstanceUID == ds.SOPInstanceUID == it["sop_uid"]
        assert ds.file_meta.TransferSyntaxUID == it["transfer_syntax"]
        assert ds.PhotometricInterpretation == it["photometric"]
        assert (ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation) == (16, 12, 11, 0)
        assert float(ds.RescaleSlope) == 1.0 and float(ds.RescaleIntercept) == 0.0
        assert str(ds.PatientName).startswith("DEMO^") and ds.PatientID == it["patient_id"]
        for uid in (ds.StudyInstanceUID, ds.SeriesInstanceUID, ds.SOPInstanceUID):
            assert UID(uid).is_valid
        sops.add(ds.SOPInstanceUID)
        stored = ds.pixel_array
        assert stored.dtype == np.uint16 and stored.shape == (64, 64) and int(stored.max()) <= 4095
        # lossless whatever the transfer syntax: the stored values are those written
        assert hashlib.sha256(stored.astype("<u2").tobytes()).hexdigest() == it["pixel_sha256"]
        values = 4095 - stored.astype(int) if ds.PhotometricInterpretation == "MONOCHROME1" else stored.astype(int)
        png = np.array(Image.open(demo_dir / it["png"]))
        np.testing.assert_array_equal(np.rint(values * (255 / 4095)).astype(np.uint8), png)
        if ds.PhotometricInterpretation == "MONOCHROME1":  # stored inverted: bright lungs, dark bones
            assert np.abs(np.rint(stored * (255 / 4095)) - png).mean() > 50
        seen.add((ds.PhotometricInterpretation, ds.file_meta.TransferSyntaxUID))
    assert len(sops) == len(items)
    for ts in (ExplicitVRLittleEndian, JPEG2000Lossless, RLELossless):
        for pi in ("MONOCHROME1", "MONOCHROME2"):
            assert (pi, ts) in seen, (pi, ts)


def test_oct_dicom(demo_dir):
    manifest = read_manifest(demo_dir / MANIFEST_NAMES["oct_dicom"])
    items = _items(manifest)
    assert items
    for it in items:
        ds = pydicom.dcmread(demo_dir / it["image"])
        assert ds.Modality == "OPT" and ds.SOPClassUID == pydicom.uid.OphthalmicTomographyImageStorage
        assert int(ds.NumberOfFrames) == it["frames"] == 5
        assert ds.ImageLaterality == it["laterality"]
        arr = ds.pixel_array
        assert arr.shape == (5, 64, 64) and arr.dtype == np.uint8
        assert hashlib.sha256(arr.tobytes()).hexdigest() == it["pixel_sha256"]
        assert len(ds.PerFrameFunctionalGroupsSequence) == 5


def test_deterministic_files_and_uids(demo_dir, tmp_path):
    again = tmp_path / "again"
    make_demo_data(again, **SMALL)
    assert _files(again) == _files(demo_dir)  # byte-identical PNG and DICOM
    a = json.loads((demo_dir / MANIFEST_NAMES["cxr_dicom"]).read_text())
    b = json.loads((again / MANIFEST_NAMES["cxr_dicom"]).read_text())
    assert a["training"] == b["training"]
    other = tmp_path / "other"
    make_demo_data(other, **{**SMALL, "seed": 4, "n_oct": 0})
    differ = _files(other)
    assert not set(differ.values()) & set(_files(demo_dir).values())
    assert not (other / MANIFEST_NAMES["oct"]).exists()


def test_stamp_rebuild_and_refusal(tmp_path):
    out = tmp_path / "d"
    params = dict(n_cxr=4, n_oct=4, image_size=48, seed=1, dicom=False)
    manifests = make_demo_data(out, **params)
    assert set(manifests) == {"cxr", "oct"}
    assert not list(out.rglob("*.dcm"))
    stamp = json.loads((out / STAMP_NAME).read_text())
    assert stamp["complete"] and stamp["parameters"]["image_size"] == [48, 48]
    assert demo_data_is_current(out, **params)
    assert not demo_data_is_current(out, **{**params, "seed": 2})
    assert not demo_data_is_current(tmp_path / "missing", **params)
    # a demo folder is rebuilt (old files go), with other parameters
    (out / "cxr" / "images" / "stale.png").write_bytes(b"x")
    make_demo_data(out, **{**params, "n_oct": 0})
    assert not (out / "cxr" / "images" / "stale.png").exists() and not (out / "oct").exists()
    # a folder medfuse did not make is refused
    foreign = tmp_path / "foreign"
    foreign.mkdir()
    (foreign / "keep.txt").write_text("mine")
    with pytest.raises(DataError, match="not a medfuse demo data folder"):
        make_demo_data(foreign, **params)
    assert (foreign / "keep.txt").read_text() == "mine"
    with pytest.raises(ValueError):
        make_demo_data(tmp_path / "n", n_cxr=0, n_oct=0)
    with pytest.raises(ValueError):
        make_demo_data(tmp_path / "n", n_cxr=-1)
    with pytest.raises(ValueError):
        make_demo_data(tmp_path / "n", dicom_fraction=0.0)


def test_optional_volumes_and_detection(tmp_path):
    """n_volumes / n_detection add their manifests; without them the stamp's parameters are the old ones."""
    from medfuse.data.demo import OPTIONAL_MANIFEST_NAMES, demo_data_is_current, read_demo_stamp
    from medfuse.data.manifest import read_manifest

    out = tmp_path / "demo"
    manifests = make_demo_data(out, n_cxr=4, n_oct=0, image_size=64, dicom=False, n_volumes=2, n_detection=3)
    assert set(manifests) == {"cxr", "volumes", "cxr_detection"}
    for key, name in OPTIONAL_MANIFEST_NAMES.items():
        assert manifests[key] == out / name
    assert read_manifest(manifests["volumes"])["task"] == "segmentation"
    assert read_manifest(manifests["cxr_detection"])["task"] == "detection"
    assert demo_data_is_current(out, n_cxr=4, n_oct=0, image_size=64, dicom=False, n_volumes=2, n_detection=3)
    assert not demo_data_is_current(out, n_cxr=4, n_oct=0, image_size=64, dicom=False)
    make_demo_data(out, n_cxr=4, n_oct=0, image_size=64, dicom=False)  # a rebuild without them removes them
    assert not (out / "volumes").exists() and not (out / OPTIONAL_MANIFEST_NAMES["cxr_detection"]).exists()
    assert "n_volumes" not in read_demo_stamp(out)["parameters"]
