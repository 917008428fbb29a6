# Copyright (c) medfuse contributors
# Licensed under the Apache License, Version 2.0
"""From a DICOM folder + label CSV to a trained classifier: dicom2manifest, then the DCAT bundle (tiny)."""

from __future__ import annotations

import csv
import json
import shutil

import pytest

from medfuse.commands.dicom2manifest import main
from tests.bundles.helpers import configs, run_workflow, tiny_overrides


@pytest.fixture(scope="module")
def hospital_export(demo_data, tmp_path_factory):
    """The demo CR DICOM files laid out like a CD export (no extensions) plus a label CSV keyed by PatientID."""
    tmp = tmp_path_factory.mktemp("dicom_train")
    demo = demo_data
    source = json.loads(demo["cxr_dicom"].read_text())
    export = tmp / "CD" / "DICOM"
    rows = []
    for split in ("training", "validation", "test"):
        for k, item in enumerate(source.get(split, [])):
            dst = export / f"PAT{item['patient_id'][-4:]}" / f"IM{k:04d}{split[0]}"
            dst.parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(demo["cxr_dicom"].parent / item["image"], dst)
            rows.append((item["patient_id"], source["classes"][item["label"]]))
    (export / "README.TXT").write_text("CD export\n")
    labels = tmp / "labels.csv"
    with open(labels, "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["PatientID", "diagnosis"])
        w.writerows(sorted(set(rows)))
    return tmp, export, labels, source["classes"]


def test_dicom_folder_and_csv_train_the_classifier(hospital_export, capsys):
    tmp, export, labels, classes = hospital_export
    out = tmp / "manifests" / "cxr.json"
    rc = main([str(export.parent), "--out", str(out), "--labels", str(labels), "--label-column", "diagnosis",
               "--classes", ",".join(classes), "--split", "0.6,0.2,0.2", "--cache-dir", str(tmp / "cache"),
               "--workers", "2", "--no-progress"])
    assert rc == 0
    report = json.loads(out.with_name("cxr.report.json").read_text())
    assert report["excluded_by_reason"] == {"not_dicom": 1}  # README.TXT
    manifest = json.loads(out.read_text())
    assert manifest["classes"] == classes and {"training", "validation"} <= set(manifest)
    assert all(it["image"].endswith(".png") for it in manifest["training"])

    runs = tmp / "runs"
    run_workflow(configs("cxr_dual_cross_attention") / "train.json", "train", run_name="from_dicom",
                 **tiny_overrides(out, runs))
    run = runs / "from_dicom"
    assert (run / "model.pt").is_file()
    with open(run / "log.csv") as f:
        rows = list(csv.DictReader(f))
    assert len(rows) == 1 and float(rows[0]["train_loss"]) > 0
    assert json.loads((run / "config.json").read_text())["manifest"] == str(out)
