# Copyright (c) medfuse contributors
# Licensed under the Apache License, Version 2.0
"""Labels from a CSV or folders, patient-level stratified splits, pinned test patients."""

from __future__ import annotations

import json
from collections import Counter

import pytest

from medfuse.data.manifest import read_manifest
from medfuse.dicom import dicom_to_manifest
from medfuse.errors import DataError

from .helpers import write_cr


@pytest.fixture()
def labelled(tmp_path):
    """20 patients x 2 images (CR), a label CSV keyed by PatientID; P19 has no row, P18 an unknown label."""
    root = tmp_path / "in"
    rows = ["PatientID,finding"]
    for p in range(20):
        pid = f"P{p:02d}"
        for k in range(2):
            write_cr(root / f"study{p:02d}" / f"img{k}", pid, patient_name=f"NAME{p}^X", seed=p * 10 + k)
        if p < 18:
            rows.append(f"{pid},{'pneumonia' if p % 2 else 'normal'}")
    rows.append("P18,fracture")
    rows.append("NOT_IN_FOLDER,normal")
    csv = tmp_path / "labels.csv"
    csv.write_text("\n".join(rows) + "\n")
    return root, csv


def _split_of(manifest):
    return {it["source"] if "source" in it else it["image"]: s
            for s in ("training", "validation", "test") for it in manifest.get(s, [])}


def test_csv_labels_missing_and_unknown(labelled, tmp_path):
    root, csv = labelled
    out = tmp_path / "out" / "m.json"
    manifest, report = dicom_to_manifest(root, out, labels=csv, label_column="finding", classes="normal,pneumonia",
                                         workers=1, progress=False)
    got = {e["path"]: (e["reason"], e["detail"]) for e in report.excluded}
    assert got["study19/img0"][0] == "label_missing" and "labels.csv" in got["study19/img0"][1]
    assert got["study18/img1"][0] == "label_unknown" and "fracture" in got["study18/img1"][1]
    assert report.included == 36 and report.files_seen == 40
    assert any("1 of 20 keys in the label CSV matched no file" in n for n in report.notes)
    m = read_manifest(out)
    assert m["classes"] == ["normal", "pneumonia"]
    labels = Counter(it["label"] for s in ("training", "validation", "test") for it in m.get(s, []))
    assert labels == {0: 18, 1: 18}
    # patient-level: both images of a patient share a split; every split has both classes (stratified)
    by_patient = {}
    for s in ("training", "validation", "test"):
        for it in m[s]:
            by_patient.setdefault(it["patient_id"], set()).add(s)
        assert {it["label"] for it in m[s]} == {0, 1}
    assert all(len(v) == 1 for v in by_patient.values())
    assert len(m["training"]) > len(m["validation"]) and report.by_split["training"]["per_class"]["normal"] > 0


def test_classes_default_to_sorted_labels_and_key_is_hashed(labelled, tmp_path):
    root, csv = labelled
    out = tmp_path / "m.json"
    manifest, _ = dicom_to_manifest(root, out, labels=csv, label_column="finding", workers=1, progress=False)
    assert manifest["classes"] == ["fracture", "normal", "pneumonia"]
    state = out.with_name("m.state.json").read_text()
    for raw in ('"P05"', "NAME5", "ACC0001", "19600101"):  # no raw identifiers in the scan state either
        assert raw not in state


def test_label_key_and_column_errors(labelled, tmp_path):
    root, csv = labelled
    with pytest.raises(DataError, match="no column 'diagnosis'"):
        dicom_to_manifest(root, tmp_path / "m.json", labels=csv, label_column="diagnosis", progress=False)
    bad = tmp_path / "bad.csv"
    bad.write_text("PatientID,finding\nP01,normal\nP01,pneumonia\n")
    with pytest.raises(DataError, match="line 3"):
        dicom_to_manifest(root, tmp_path / "m.json", labels=bad, label_column="finding", progress=False)


def test_label_by_sop_instance_uid(tmp_path):
    root = tmp_path / "in"
    uids = [write_cr(root / f"f{i}", f"Q{i}", seed=i)["sop_uid"] for i in range(6)]
    csv = tmp_path / "l.csv"
    csv.write_text("SOPInstanceUID;label\n" + "\n".join(f"{u};{'a' if i < 3 else 'b'}" for i, u in enumerate(uids)))
    manifest, report = dicom_to_manifest(root, tmp_path / "m.json", labels=csv, label_key="SOPInstanceUID",
                                         split="0.5,0.5,0", workers=1, progress=False, write=False)
    assert report.included == 6 and manifest["classes"] == ["a", "b"]
    assert "test" not in manifest


def test_label_from_folder(tmp_path):
    root = tmp_path / "in"
    for i in range(8):
        cls = "NORMAL" if i % 2 else "PNEUMONIA"
        write_cr(root / cls / f"patient{i}" / "img", f"F{i}", seed=i)
    write_cr(root / "loose_file", "F99", seed=99)
    manifest, report = dicom_to_manifest(root, tmp_path / "m.json", label_from_folder=1, workers=1, progress=False)
    assert manifest["classes"] == ["NORMAL", "PNEUMONIA"]
    assert {e["path"]: e["reason"] for e in report.excluded} == {"loose_file": "label_missing"}


def test_test_patients_are_pinned(labelled, tmp_path):
    root, csv = labelled
    pinned = tmp_path / "test_patients.txt"
    pinned.write_text("# held-out patients\nP00\nP01\nP02\n")
    manifest, report = dicom_to_manifest(root, tmp_path / "m.json", labels=csv, label_column="finding",
                                         classes="normal,pneumonia", test_patients=pinned, workers=1, progress=False)
    test_sources = {it["image"].split("/")[-2] for it in manifest["test"]}
    assert test_sources == {"study00", "study01", "study02"}
    assert len(manifest["training"]) + len(manifest["validation"]) == 30


def test_same_seed_same_split_other_seed_differs(labelled, tmp_path):
    root, csv = labelled
    kw = dict(labels=csv, label_column="finding", classes="normal,pneumonia", workers=1, progress=False, salt="s")
    a, _ = dicom_to_manifest(root, tmp_path / "a.json", seed=0, **kw)
    b, _ = dicom_to_manifest(root, tmp_path / "b.json", seed=0, **kw)
    c, _ = dicom_to_manifest(root, tmp_path / "c.json", seed=1, **kw)
    assert _split_of(a) == _split_of(b)
    assert _split_of(a) != _split_of(c)


def test_keep_phi(labelled, tmp_path):
    root, csv = labelled
    manifest, _ = dicom_to_manifest(root, tmp_path / "m.json", labels=csv, label_column="finding",
                                    classes="normal,pneumonia", keep_phi=True, workers=1, progress=False)
    item = manifest["training"][0]
    assert item["patient_id"].startswith("P") and len(item["patient_id"]) == 3
    assert item["patient_name"].startswith("NAME") and item["birth_date"] == "19600101"
    assert item["accession_number"] == "ACC0001"
    text = json.dumps(manifest)
    assert "NAME" in text
