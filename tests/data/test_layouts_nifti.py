# Copyright (c) medfuse contributors
# Licensed under the Apache License, Version 2.0
"""nifti_to_manifest / medfuse nifti2manifest on tiny ACDC, Synapse and pair trees, ACDC HDF5, demo volumes."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import jsonschema
import nibabel as nib
import numpy as np
import pytest
from monai.data import load_decathlon_datalist

from medfuse.commands.nifti2manifest import main
from medfuse.data.demo.volumes import make_demo_volumes
from medfuse.data.manifest import read_manifest, write_manifest
from medfuse.data.layouts.nifti import (
    SYNAPSE_CLASSES,
    SYNAPSE_LABEL_MAP,
    SYNAPSE_TEST_CASES,
    nifti_to_manifest,
    parse_label_map,
)
from medfuse.data.splits import find_leakage
from medfuse.errors import DataError
from tests.conftest import require

SPLITS = ("training", "validation", "test")
AFFINE = np.diag([1.5, 1.5, 8.0, 1.0])


def _save(path: Path, data: np.ndarray, affine=AFFINE) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    nib.save(nib.Nifti1Image(data, affine), str(path))
    return path


def _label(values, shape=(6, 5, 3)) -> np.ndarray:
    lab = np.zeros(shape, np.uint8)
    for i, v in enumerate(values):
        lab[i % shape[0], :, i % shape[2]] = v
    return lab


def _all(manifest):
    return [it for s in SPLITS for it in manifest.get(s, [])]


def _acdc_tree(root: Path, patients, folder: str | None = None, frames=(1, 9), values=(1, 2, 3)):
    for p in patients:
        d = root / (folder or "") / f"patient{p:03d}"
        for f in frames:
            _save(d / f"patient{p:03d}_frame{f:02d}.nii.gz", np.random.default_rng(p).random((6, 5, 3)).astype(np.float32))
            _save(d / f"patient{p:03d}_frame{f:02d}_gt.nii.gz", _label(values))
        _save(d / f"patient{p:03d}_4d.nii.gz", np.zeros((6, 5, 3, 2), np.float32))
        (d / "Info.cfg").write_text(f"ED: {frames[0]}\nES: {frames[-1]}\nGroup: {'DCM' if p % 2 else 'NOR'}\nNbFrame: 20\n")


def test_acdc_official_split_items_and_report(tmp_path):
    root = tmp_path / "ACDC" / "database"
    _acdc_tree(root, range(1, 21), "training")
    _acdc_tree(root, range(101, 104), "testing")
    out = tmp_path / "out" / "acdc.json"
    assert main([str(root), "--out", str(out), "--layout", "acdc", "--split", "official"]) == 0
    m = read_manifest(out)
    assert m["task"] == "segmentation" and m["classes"] == ["RV", "MYO", "LV"]
    assert {it["patient_id"] for it in m["test"]} == {"patient101", "patient102", "patient103"}
    assert len({it["patient_id"] for it in m["validation"]}) == 2  # 10 % of 20 training patients
    assert len(m["training"]) + len(m["validation"]) == 40
    assert not find_leakage({s: m[s] for s in SPLITS})
    item = m["training"][0]
    assert item["spacing"] == [1.5, 1.5, 8.0] and item["shape"] == [6, 5, 3] and item["frame"] in ("ED", "ES")
    assert item["image"].startswith("../ACDC/database/training/") and item["mask"].endswith("_gt.nii.gz")
    frames = {(it["patient_id"], it["frame"]) for it in _all(m)}
    assert ("patient001", "ED") in frames and ("patient001", "ES") in frames
    report = json.loads(out.with_name("acdc.report.json").read_text())
    assert report["found"] == 23 * 5 and report["skipped_by_reason"] == {"4D cine (ACDC _4d, not used)": 23}
    assert len(load_decathlon_datalist(str(out), is_segmentation=False, data_list_key="test")) == 6
    schema = json.loads((Path(__file__).resolve().parents[2] / "data_manifests" / "manifest.schema.json").read_text())
    jsonschema.validate(json.loads(out.read_text()), schema)


def test_acdc_label_map_writes_copies_and_unmapped_values_error(tmp_path):
    root = tmp_path / "acdc"
    _acdc_tree(root, [1, 2], values=(1, 2, 3))
    out = tmp_path / "m" / "lv.json"
    manifest, report = nifti_to_manifest(root, out, layout="acdc", label_map="1:0,2:0,3:1", classes="LV")
    write_manifest(manifest, out)
    assert manifest["classes"] == ["LV"]
    for it in _all(manifest):
        mask = out.parent / it["mask"]
        assert it["mask"].startswith("lv_labels/") and mask.is_file()
        assert set(np.unique(np.asarray(nib.load(str(mask)).dataobj)).tolist()) == {0, 1}
        np.testing.assert_allclose(nib.load(str(mask)).affine, AFFINE)
    assert any("remapped label NIfTI copies" in n for n in report.notes)
    # value 5 is neither an ACDC label nor in a given map: one error listing it and the file
    _save(root / "patient002" / "patient002_frame09_gt.nii.gz", _label((1, 5)))
    with pytest.raises(DataError, match=r"label values \[5\].*patient002_frame09_gt.*--label-map"):
        nifti_to_manifest(root, out, layout="acdc")
    with pytest.raises(DataError, match=r"\[5\].*in the label map"):
        nifti_to_manifest(root, out, layout="acdc", label_map="1:1,2:2,3:3")


def test_acdc_grid_mismatch_skipped_with_reason(tmp_path, capsys):
    root = tmp_path / "acdc"
    _acdc_tree(root, [1, 2, 3])
    _save(root / "patient002" / "patient002_frame01_gt.nii.gz", _label((1,), shape=(6, 5, 4)))
    shifted = AFFINE.copy()
    shifted[0, 3] = 0.5
    _save(root / "patient003" / "patient003_frame09_gt.nii.gz", _label((1, 2)), affine=shifted)
    out = tmp_path / "m.json"
    assert main([str(root), "--out", str(out), "--layout", "acdc"]) == 0
    m = read_manifest(out)
    assert len(_all(m)) == 4
    report = json.loads((tmp_path / "m.report.json").read_text())
    reasons = {(s["path"], s["reason"]): s["detail"] for s in report["skipped"]}
    detail = reasons[("patient002/patient002_frame01.nii.gz", "label grid unlike its image")]
    assert "(6, 5, 4) != image shape (6, 5, 3)" in detail and "resample the label" in detail
    assert "affine differs" in reasons[("patient003/patient003_frame09.nii.gz", "label grid unlike its image")]
    assert "label grid unlike its image" in capsys.readouterr().out
    # --split official without training/ and testing/ folders: an error saying what to do
    assert main([str(root), "--out", str(out), "--layout", "acdc", "--split", "official"]) == 1
    assert "training/ and testing/" in capsys.readouterr().err


def _btcv_tree(root: Path, cases, values=(1, 2, 3, 4, 5, 6, 7, 8, 11, 13)):
    for c in cases:
        _save(root / "img" / f"img{c}.nii.gz", np.full((6, 5, 3), int(c), np.int16))  # distinct files
        _save(root / "label" / f"label{c}.nii.gz", _btcv_label(values))


def _btcv_label(values) -> np.ndarray:
    lab = np.zeros((6, 5, 3), np.uint8)
    for i, v in enumerate(values):
        lab.flat[i * 7] = v
    return lab


def test_synapse_default_map_and_official_split(tmp_path):
    root = tmp_path / "btcv" / "RawData" / "Training"
    cases = ["0001", "0002", "0005", "0006", "0007", "0009", "0010", "0022", "0023", "0024", "0026", "0027"]
    _btcv_tree(root, cases)
    out = tmp_path / "synapse.json"
    manifest, report = nifti_to_manifest(tmp_path / "btcv", out, layout="synapse", val_fraction=0.2, seed=1)
    write_manifest(manifest, out)
    assert manifest["classes"] == list(SYNAPSE_CLASSES)
    assert {it["patient_id"] for it in manifest["test"]} == {"0001", "0002", "0022"}
    assert set(SYNAPSE_TEST_CASES) >= {it["patient_id"] for it in manifest["test"]}
    assert len(manifest["validation"]) == 2 and len(manifest["training"]) == 7
    item = manifest["test"][0]
    mapped = np.asarray(nib.load(str(tmp_path / item["mask"])).dataobj)
    source = _btcv_label((1, 2, 3, 4, 5, 6, 7, 8, 11, 13))
    expected = np.vectorize(lambda v: SYNAPSE_LABEL_MAP[int(v)])(source)
    np.testing.assert_array_equal(mapped, expected)
    assert set(np.unique(mapped).tolist()) == set(range(9))  # the 8 organs, esophagus and adrenal -> 0
    assert manifest["provenance"]["label_map"]["8"] == 1 and "synapse_labels/" in manifest["provenance"]["label_copies"]
    # an unknown BTCV value (14): error listing it
    _save(root / "label" / "label0027.nii.gz", _btcv_label((1, 14)))
    with pytest.raises(DataError, match=r"\[14\].*label0027"):
        nifti_to_manifest(tmp_path / "btcv", out, layout="synapse")


def test_pairs_layout(tmp_path):
    root = tmp_path / "pairs"
    for i, suffix in enumerate(("_gt", "_seg", "_label", "_gt")):
        _save(root / f"case{i}.nii.gz", np.zeros((6, 5, 3), np.float32))
        _save(root / f"case{i}{suffix}.nii.gz", _label((1, 2)))
    _save(root / "lonely.nii.gz", np.zeros((6, 5, 3), np.float32))
    _save(root / "imagesTr" / "liver_7.nii.gz", np.zeros((6, 5, 3), np.float32))
    _save(root / "labelsTr" / "liver_7.nii.gz", _label((1, 2)))
    manifest, report = nifti_to_manifest(root, tmp_path / "p.json", layout="pairs", split="1.0")
    assert manifest["classes"] == ["label_1", "label_2"] and len(manifest["training"]) == 5
    assert {it["mask"].split("/")[-1] for it in manifest["training"]} >= {"case1_seg.nii.gz", "liver_7.nii.gz"}
    assert [s[:2] for s in report.skipped] == [("lonely.nii.gz", "image without label")]
    with pytest.raises(DataError, match="no official split"):
        nifti_to_manifest(root, tmp_path / "p.json", layout="pairs", split="official")


def test_parse_label_map():
    assert parse_label_map("8:1, 4:2,5:0") == {8: 1, 4: 2, 5: 0, 0: 0}
    for bad in ("8-1", "a:1", "1:-2", "1:1,1:2", ""):
        with pytest.raises(DataError):
            parse_label_map(bad)


def _fake_h5(path: Path, z=3, y=6, x=5, values=(1, 2, 3)):
    import h5py

    with h5py.File(path, "w") as f:
        f["image"] = np.random.default_rng(0).random((z, y, x)).astype(np.float32)
        lab = np.zeros((z, y, x), np.uint8)
        for i, v in enumerate(values):
            lab[i % z, i % y] = v
        f["label"] = lab


def test_acdc_h5_split_reaches_60_10_10(tmp_path):
    pytest.importorskip("h5py")
    root = tmp_path / "h5"
    root.mkdir()
    for p in range(1, 81):
        for frame in (1, 12):
            _fake_h5(root / f"patient{p:03d}_frame{frame:02d}.h5", z=1, y=2, x=2)
    manifest, report = nifti_to_manifest(root, tmp_path / "o" / "a.json", layout="acdc_h5", split="0.75,0.125,0.125")
    patients = {s: {it["patient_id"] for it in manifest[s]} for s in SPLITS}
    assert [len(patients[s]) for s in SPLITS] == [60, 10, 10]
    assert not find_leakage({s: manifest[s] for s in SPLITS})
    assert {it["frame"] for it in manifest["training"]} == {"ED", "ES"}


@pytest.mark.realdata
def test_acdc_h5_real_files(shared_data, tmp_path, capsys):
    pytest.importorskip("h5py")
    import h5py

    src = require(shared_data / "acdc_volumes")
    root = tmp_path / "h5"
    root.mkdir()
    for name in ("patient001_frame01.h5", "patient001_frame12.h5"):
        shutil.copy(require(src / name), root / name)
    out = tmp_path / "out" / "acdc.json"
    assert main([str(root), "--out", str(out), "--layout", "acdc_h5", "--spacing", "1.6,1.6,10"]) == 0
    m = read_manifest(out)
    assert m["classes"] == ["RV", "MYO", "LV"] and m["provenance"]["assumed_spacing_mm"] == [1.6, 1.6, 10.0]
    items = {it["frame"]: it for it in _all(m)}
    assert set(items) == {"ED", "ES"} and items["ED"]["image"].endswith("patient001_frame01.nii.gz")
    img = nib.load(str(out.parent / items["ED"]["image"]))
    lab = nib.load(str(out.parent / items["ED"]["mask"]))
    with h5py.File(root / "patient001_frame01.h5", "r") as f:
        np.testing.assert_array_equal(np.asarray(img.dataobj), np.transpose(f["image"][:], (2, 1, 0)))
        np.testing.assert_array_equal(np.asarray(lab.dataobj), np.transpose(f["label"][:], (2, 1, 0)))
    np.testing.assert_allclose(np.diag(img.affine), [1.6, 1.6, 10.0, 1.0])
    assert items["ED"]["shape"] == list(img.shape) and set(np.unique(np.asarray(lab.dataobj)).tolist()) == {0, 1, 2, 3}
    assert "ASSUMED spacing" in capsys.readouterr().out


def test_demo_volumes(tmp_path):
    path = make_demo_volumes(tmp_path, n_volumes=5, seed=3)
    assert path == tmp_path / "vol_manifest.json"
    m = read_manifest(path)
    items = _all(m)
    assert len(items) == 5 and len({it["patient_id"] for it in items}) == 3 and m["classes"] == ["RV", "MYO", "LV"]
    it = items[0]
    img = nib.load(str(tmp_path / it["image"]))
    lab = np.asarray(nib.load(str(tmp_path / it["mask"])).dataobj)
    assert nib.aff2axcodes(img.affine) != ("R", "A", "S")
    assert 8 <= img.shape[2] <= 12 and img.shape[:2] == (64, 64) and it["spacing"] == [1.5, 1.5, 8.0]
    assert set(np.unique(lab).tolist()) == {0, 1, 2, 3}
    assert (tmp_path / "volumes" / it["patient_id"] / "Info.cfg").is_file()
    assert {i["frame"] for i in items} == {"ED", "ES"}
    with pytest.raises(ValueError, match="n_volumes"):
        make_demo_volumes(tmp_path, 0)


def test_command_argument_errors(tmp_path, capsys):
    with pytest.raises(SystemExit) as e:
        main([str(tmp_path), "--out", str(tmp_path / "m.json"), "--layout", "acdc", "--split", "0.5,0.1"])
    assert e.value.code == 2 and "sum to 1" in capsys.readouterr().err
    assert main([str(tmp_path), "--out", str(tmp_path / "m.json"), "--layout", "acdc", "--label-map", "8-1"]) == 1
    assert "SOURCE:TARGET" in capsys.readouterr().err
    assert main([str(tmp_path / "none"), "--out", str(tmp_path / "m.json"), "--layout", "synapse"]) == 1
    assert "folder not found" in capsys.readouterr().err
    assert main([str(tmp_path), "--out", str(tmp_path / "m.json"), "--layout", "acdc_h5", "--spacing", "1,2"]) == 1
    assert "three positive numbers" in capsys.readouterr().err
