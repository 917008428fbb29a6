# Copyright (c) medfuse contributors
# Licensed under the Apache License, Version 2.0
"""Detection converters: a hand-written VinDr-CSV (3 readers, No finding, overlaps, min-readers), the COCO
converter on the TBX11K sample (real data), the commands, and the detection rules of the validator."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from monai.data import load_decathlon_datalist
from PIL import Image

from medfuse.commands import coco2manifest, vindr2manifest
from medfuse.data.layouts.detection import coco_to_manifest, fuse_reader_boxes, vindr_to_manifest
from medfuse.data.manifest import load_split, read_manifest, validate_manifest, write_manifest
from medfuse.errors import DataError, ManifestError
from tests.conftest import require

SPLITS = ("training", "validation", "test")

# Kaggle column order; image a: two readers agree on a nodule, a third draws it elsewhere, all three see an
# effusion that overflows the 100 x 80 image; image b: all "No finding"; image c: one reader, one finding
VINDR_CSV = """image_id,class_name,class_id,rad_id,x_min,y_min,x_max,y_max
a,Nodule/Mass,8,R1,10,10,30,30
a,Nodule/Mass,8,R2,12,11,32,31
a,Nodule/Mass,8,R3,60,60,70,70
a,Pleural effusion,10,R1,50,20,90,60
a,Pleural effusion,10,R2,52,22,105,61
a,Pleural effusion,10,R3,55,25,92,58
b,No finding,14,R1,,,,
b,No finding,14,R2,,,,
b,No finding,14,R3,,,,
c,Aortic enlargement,0,R2,5,5,5,20
c,Aortic enlargement,0,R2,40,0,60,10
"""


def _items(manifest):
    return {it["image_id"]: it for s in SPLITS for it in manifest.get(s, [])}


@pytest.fixture()
def vindr(tmp_path):
    images = tmp_path / "images"
    images.mkdir()
    for name, value in (("a", 10), ("b", 20), ("c", 30)):  # 80 rows x 100 columns, distinct bytes
        Image.fromarray(np.full((80, 100), value, np.uint8)).save(images / f"{name}.png")
    csv = tmp_path / "train.csv"
    csv.write_text(VINDR_CSV)
    return csv, images, tmp_path / "out" / "vindr.json"


def test_fuse_reader_boxes():
    fused = fuse_reader_boxes([[0, 0, 10, 10], [1, 1, 11, 11], [50, 50, 60, 60]], ["R1", "R2", "R1"], 0.4, 2)
    assert fused == [([0.5, 0.5, 10.5, 10.5], ["R1", "R2"])]
    assert len(fuse_reader_boxes([[0, 0, 10, 10], [1, 1, 11, 11]], ["R1", "R2"], iou=0.9)) == 2


def test_vindr_wbf_min_readers(vindr):
    csv, images, out = vindr
    manifest, report = vindr_to_manifest(csv, images, out, merge="wbf", merge_iou=0.4, min_readers=2,
                                         image_ext=".png", split="0.34,0.33,0.33")
    write_manifest(manifest, out)
    back = read_manifest(out)
    assert back["task"] == "detection"
    assert back["classes"] == ["Aortic enlargement", "Nodule/Mass", "Pleural effusion"]  # class_id order
    items = _items(back)
    a = items["a"]
    assert a["readers"] == ["R1", "R2", "R3"]
    # nodule: R1 + R2 fused (R3's lone box dropped by min-readers 2); effusion: all three, clipped to x <= 100
    assert a["box_labels"] == [1, 2]
    np.testing.assert_allclose(a["boxes"][0], [11, 10.5, 31, 30.5])
    np.testing.assert_allclose(a["boxes"][1], [(50 + 52 + 55) / 3, (20 + 22 + 25) / 3, (90 + 100 + 92) / 3, (60 + 61 + 58) / 3],
                               atol=0.01)
    assert items["b"]["boxes"] == [] and items["b"]["box_labels"] == []  # No finding -> negative
    assert items["c"]["boxes"] == []  # one reader only, and its zero-area box is dropped
    counts = back["provenance"]["counts"]["boxes"]
    assert counts["dropped: no area (after clipping)"] == 1 and counts["clipped to the image"] == 1
    assert counts["boxes written"] == 2
    text = report.format()
    assert "no patient ids" in text and "per image" in text
    # the multi-hot image label comes from the box labels on loading
    loaded = {Path(it["image"]).stem: it for s in SPLITS for it in load_split(out, s)}
    assert loaded["a"]["label"] == [0, 1, 1] and loaded["b"]["label"] == [0, 0, 0]
    for s in SPLITS:
        if s in back:
            assert len(load_decathlon_datalist(str(out), is_segmentation=False, data_list_key=s)) == len(back[s])


def test_vindr_keep_all_and_first_reader(vindr):
    csv, images, out = vindr
    m, _ = vindr_to_manifest(csv, images, out, merge="keep_all", image_ext=".png")
    items = _items(m)
    assert len(items["a"]["boxes"]) == 6 and len(items["c"]["boxes"]) == 1
    m, _ = vindr_to_manifest(csv, images, out, merge="first_reader", image_ext=".png")
    assert _items(m)["a"]["boxes"] == [[10.0, 10.0, 30.0, 30.0], [50.0, 20.0, 90.0, 60.0]]
    m, _ = vindr_to_manifest(csv, images, out, merge="wbf", image_ext=".png")  # min-readers 1: R3's box kept
    assert _items(m)["a"]["box_labels"] == [1, 1, 2]


def test_vindr_errors(vindr, tmp_path):
    csv, images, out = vindr
    with pytest.raises(DataError, match=r"class name\(s\) \['Aortic enlargement', 'Pleural effusion'\] not in --classes"):
        vindr_to_manifest(csv, images, out, classes="Nodule/Mass", image_ext=".png")
    bad = tmp_path / "bad.csv"
    bad.write_text("image_id,rad_id,class_name\nx,R1,No finding\n")
    with pytest.raises(DataError, match=r"missing column\(s\) \['x_min'"):
        vindr_to_manifest(bad, images, out, image_ext=".png")
    with pytest.raises(DataError, match="check --image-ext"):
        vindr_to_manifest(csv, images, out)  # default .dicom: nothing found


def test_vindr_command_physionet_columns(vindr, capsys):
    csv, images, out = vindr
    lines = VINDR_CSV.splitlines()
    rows = [line.split(",") for line in lines[1:]]
    physionet = ["image_id,rad_id,class_name,x_min,y_min,x_max,y_max"]
    physionet += [",".join([r[0], r[3], r[1], *r[4:]]) for r in rows]
    csv.write_text("\n".join(physionet) + "\n")
    rc = vindr2manifest.main([str(csv), str(images), "--out", str(out), "--image-ext", ".png", "--min-readers", "2",
                              "--classes", "Nodule/Mass,Pleural effusion,Aortic enlargement", "--seed", "1"])
    assert rc == 0
    printed = capsys.readouterr().out
    assert "clipped to the image" in printed and "wrote" in printed
    back = read_manifest(out)
    assert back["classes"] == ["Nodule/Mass", "Pleural effusion", "Aortic enlargement"]
    assert _items(back)["a"]["box_labels"] == [0, 1]
    rc = vindr2manifest.main([str(csv), str(images), "--out", str(out), "--image-ext", ".png", "--classes", "Nodule/Mass"])
    assert rc == 1
    assert "not in --classes" in capsys.readouterr().err


def test_validator_detection_rules():
    m = {"schema_version": "1.0", "task": "detection", "classes": ["nodule"], "provenance": {},
         "training": [{"image": "a.png", "boxes": [[0, 0, 5, 5]], "box_labels": [0]}, {"image": "b.png"}]}
    with pytest.raises(ManifestError, match=r"training\[1\].*without 'boxes'"):
        validate_manifest(m, check_files=False)
    m["training"][1] = {"image": "b.png", "boxes": [[5, 0, 1, 5], [0, 0, "x", 3]], "box_labels": [0, 3]}
    with pytest.raises(ManifestError) as e:
        validate_manifest(m, check_files=False)
    problems = e.value.problems
    assert len(problems) == 3
    assert "box 0 [5, 0, 1, 5]" in problems[0] and "box 1 [0, 0, 'x', 3]" in problems[1]
    assert "training[1] ('b.png'): box_labels[1] = 3: not class indices into classes ['nodule']" in problems[2]
    m["training"][1] = {"image": "b.png", "boxes": [], "box_labels": [], "label": [0]}
    with pytest.raises(ManifestError, match="is a list but the task is 'detection'"):
        validate_manifest(m, check_files=False)
    del m["training"][1]["label"]
    validate_manifest(m, check_files=False)  # a negative


@pytest.mark.realdata
def test_coco_tbx11k(shared_data, tmp_path, capsys):
    root = require(shared_data / "cxr_misc" / "torchxrayvision_tests" / "tbx11k_test_data")
    ann = root / "annotations" / "json" / "TBX11K_train.json"
    out = tmp_path / "tbx.json"
    manifest, report = coco_to_manifest(ann, root / "imgs", out)
    write_manifest(manifest, out)
    back = read_manifest(out)
    assert back["classes"] == ["ActiveTuberculosis", "ObsoletePulmonaryTuberculosis", "PulmonaryTuberculosis"]
    items = {Path(it["image"]).name: it for s in SPLITS for it in back.get(s, [])}
    assert sorted(items) == ["h0001.png", "tb0005.png", "tb0007.png"]
    assert sum(len(it["boxes"]) for it in items.values()) == 3
    assert items["h0001.png"]["boxes"] == []
    assert items["tb0007.png"]["box_labels"] == [1, 1]
    x, y, w, h = 381.8337097167969, 126.8733901977539, 40.236907958984375, 44.565773010253906
    np.testing.assert_allclose(items["tb0005.png"]["boxes"][0], [x, y, x + w, y + h], atol=0.01)
    assert "no patient ids" in report.format()
    # command, with iscrowd counted and an unknown class refused
    coco = json.loads(ann.read_text())
    coco["annotations"][0]["iscrowd"] = 1
    crowd = tmp_path / "crowd.json"
    crowd.write_text(json.dumps(coco))
    assert coco2manifest.main([str(crowd), str(root / "imgs"), "--out", str(out), "--split", "0.5,0.5,0"]) == 0
    assert "skipped: iscrowd 1" in capsys.readouterr().out
    assert sum(len(it["boxes"]) for s in SPLITS for it in read_manifest(out).get(s, [])) == 2
    assert coco2manifest.main([str(ann), str(root / "imgs"), "--out", str(out), "--classes", "ActiveTuberculosis"]) == 1
    assert "ObsoletePulmonaryTuberculosis" in capsys.readouterr().err


@pytest.mark.realdata
def test_vindr_dicom_header_size(shared_data, tmp_path):
    src = require(shared_data / "dicom_cxr" / "RG1_UNCR.dcm")  # 1955 rows x 1841 columns
    images = tmp_path / "images"
    images.mkdir()
    (images / "rg1.dicom").write_bytes(Path(src).read_bytes())
    csv = tmp_path / "train.csv"
    csv.write_text("image_id,class_name,class_id,rad_id,x_min,y_min,x_max,y_max\n"
                   "rg1,Nodule/Mass,8,R1,1800,1900,1900,2000\n")
    m, _ = vindr_to_manifest(csv, images, tmp_path / "m.json")
    item = _items(m)["rg1"]
    assert (item["rows"], item["columns"]) == (1955, 1841)
    assert item["boxes"] == [[1800.0, 1900.0, 1841.0, 1955.0]]
