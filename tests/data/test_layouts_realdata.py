# Copyright (c) medfuse contributors
# Licensed under the Apache License, Version 2.0
"""Converters on the real public data in ../shared/data (skipped when absent).

Expected counts are those of shared/data/README.md; every manifest must read back with
``read_manifest`` and with MONAI's ``load_decathlon_datalist``.
"""

import json
from collections import Counter
from pathlib import Path

import jsonschema
import numpy as np
import pytest
from monai.data import load_decathlon_datalist
from PIL import Image

from medfuse.data.layouts import folder_to_manifest, medmnist_to_manifest, pairs_to_manifest
from medfuse.data.manifest import read_manifest, summarize_manifest, write_manifest
from medfuse.data.splits import find_leakage
from tests.conftest import require

pytestmark = pytest.mark.realdata
SPLITS = ("training", "validation", "test")
SCHEMA = json.loads((Path(__file__).resolve().parents[2] / "data_manifests" / "manifest.schema.json").read_text())


def _roundtrip(manifest, out: Path) -> dict:
    out.parent.mkdir(parents=True, exist_ok=True)
    write_manifest(manifest, out)
    back = read_manifest(out)
    jsonschema.validate(json.loads(out.read_text()), SCHEMA)
    for split in SPLITS:
        if split in back:
            data = load_decathlon_datalist(str(out), is_segmentation=False, data_list_key=split)
            assert len(data) == len(back[split])
            assert Path(data[0]["image"]).is_file()
    return back


def _per_class(manifest, splits=SPLITS):
    counts = Counter()
    for s in splits:
        for it in manifest.get(s, []):
            counts[manifest["classes"][it["label"]]] += 1
    return counts


def _all(manifest):
    return [it for s in SPLITS for it in manifest.get(s, [])]


@pytest.fixture(scope="module")
def kermany(shared_data, tmp_path_factory):
    root = require(shared_data / "kermany_cxr_224")
    out = tmp_path_factory.mktemp("kermany") / "kermany_cxr.json"
    manifest, report = folder_to_manifest(root, out, val_fraction=0.1, seed=0, progress=False)
    return _roundtrip(manifest, out), report


def test_kermany_counts_and_patient_level_validation(kermany):
    manifest, report = kermany
    assert manifest["classes"] == ["NORMAL", "PNEUMONIA"]
    assert "test" not in manifest  # only the train folder is shared; validation is carved from it
    assert _per_class(manifest) == {"NORMAL": 1341, "PNEUMONIA": 3875}
    assert len(manifest["training"]) + len(manifest["validation"]) == 5216
    assert report.found == report.written == 5216 and not report.skipped
    assert 0.09 <= len(manifest["validation"]) / 5216 <= 0.11
    val = _per_class(manifest, ("validation",))
    assert abs(val["NORMAL"] - 134) <= 5 and abs(val["PNEUMONIA"] - 388) <= 5  # stratified
    assert find_leakage({s: manifest[s] for s in ("training", "validation")}) == []
    assert all(it["source_split"] == "train" and "patient_id" in it for it in _all(manifest))
    assert report.missing_patient_ids == 0


def test_kermany_duplicates_reported_and_kept_together(kermany):
    manifest, report = kermany
    # the README says a few files are exact duplicates: they form sets that never span splits
    assert len(report.duplicate_sets) == 24
    where = {}
    for s in ("training", "validation"):
        for it in manifest[s]:
            where.setdefault(it["sha256"], set()).add(s)
    assert sum(1 for v in where.values() if len(v) > 1) == 0
    assert len(where) == 5216 - sum(len(d) - 1 for d in report.duplicate_sets)


def test_lung_seg_pairs(shared_data, tmp_path):
    root = require(shared_data / "lung_seg_cxr")
    out = tmp_path / "lung.json"
    manifest, report = pairs_to_manifest(root / "cxr", root / "masks", out, progress=False)
    manifest = _roundtrip(manifest, out)
    items = _all(manifest)
    assert manifest["task"] == "segmentation_classification"
    assert manifest["classes"] == ["normal", "tuberculosis"]
    assert len(items) == 564 and all("mask" in it for it in items)
    names = [Path(it["image"]).name for it in items]
    assert sum(n.startswith("CHNCXR_") for n in names) == 426
    assert sum(n.startswith("MCUCXR_") for n in names) == 138
    n_tb_files = len(list((root / "cxr").glob("*_1.png")))
    assert n_tb_files == 274
    assert _per_class(manifest) == {"tuberculosis": n_tb_files, "normal": 564 - n_tb_files}
    assert all(Path(it["mask"]).name == Path(it["image"]).name for it in items)
    assert report.found == 1128 and report.paired == 564 and not report.skipped
    s = summarize_manifest(manifest)["splits"]
    assert [s[k]["items"] for k in SPLITS] == [451, 57, 56]


def test_oct_samples(shared_data, tmp_path):
    root = require(shared_data / "oct_kermany_samples")
    out = tmp_path / "sub" / "oct.json"
    manifest, report = folder_to_manifest(root, out, progress=False)
    manifest = _roundtrip(manifest, out)
    assert _per_class(manifest) == {"CNV": 9, "DME": 10, "DRUSEN": 10, "NORMAL": 10}
    assert len(_all(manifest)) == 39 and all(s in manifest for s in SPLITS)
    assert find_leakage({s: manifest[s] for s in SPLITS}) == []
    # DME-9583225-1 and -2 are one patient: one split
    where = {Path(it["image"]).name: s for s in SPLITS for it in manifest[s]}
    assert where["DME-9583225-1.jpeg"] == where["DME-9583225-2.jpeg"]


def test_pneumoniamnist(shared_data, tmp_path):
    npz = require(shared_data / "pneumoniamnist_trainval.npz")
    out = tmp_path / "pmnist"
    manifest, report = medmnist_to_manifest(npz, out, progress=False)
    manifest = _roundtrip(manifest, out / "manifest.json")
    assert manifest["classes"] == ["normal", "pneumonia"]
    assert "test" not in manifest
    assert _per_class(manifest, ("training",)) == {"normal": 1214, "pneumonia": 3494}
    assert _per_class(manifest, ("validation",)) == {"normal": 135, "pneumonia": 389}
    assert len(list(out.glob("images/*/*.png"))) == 5232
    arrays = np.load(npz)
    item = manifest["validation"][100]
    with Image.open(out / item["image"]) as im:
        assert im.mode == "L" and im.size == (28, 28)
        assert np.array_equal(np.asarray(im), arrays["val_images"][100])
    assert item["label"] == int(arrays["val_labels"][100, 0])
    # the official train and val arrays share 8 byte-identical images: kept, marked, reported
    marked = [it for it in _all(manifest) if it.get("cross_split_duplicate")]
    assert len(manifest["provenance"]["cross_split_duplicates"]) == 8
    assert {it["source_split"] for it in marked} == {"train", "val"}
    assert report.found == 5232 == report.written
