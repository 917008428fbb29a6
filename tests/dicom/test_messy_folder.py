# Copyright (c) medfuse contributors
# Licensed under the Apache License, Version 2.0
"""The messy hospital export: every file accounted for, with the expected reason, file by file."""

from __future__ import annotations

import json
import os
import stat

import pytest

from medfuse.data.manifest import read_manifest
from medfuse.dicom import REASONS


def _item_sources(manifest):
    out = {}
    for split in ("training", "validation", "test"):
        for item in manifest.get(split, []):
            out[item.get("source", item["image"])] = (split, item)
    return out


def test_every_file_has_its_expected_fate(messy_run):
    root, expected, out, manifest, report, _ = messy_run
    got = {e["path"]: e["reason"] for e in report["excluded"]}
    included = {os.path.relpath(os.path.join(out.parent, p), root).replace(os.sep, "/") for p in _item_sources(manifest)}
    for rel, reason in sorted(expected.items()):
        if reason is None:
            assert rel in included, f"{rel} should be in the manifest, got {got.get(rel)!r}"
            assert rel not in got
        else:
            assert got.get(rel) == reason, f"{rel}: expected {reason}, got {got.get(rel)!r}"
    assert set(got) | included == set(expected)


def test_invariant_and_counts(messy_run):
    root, expected, out, manifest, report, _ = messy_run
    assert report["files_seen"] == len(expected)
    assert report["files_seen"] == report["included"] + len(report["excluded"])
    assert report["included"] == sum(len(manifest.get(s, [])) for s in ("training", "validation", "test"))
    assert sum(report["excluded_by_reason"].values()) == len(report["excluded"])
    assert set(report["excluded_by_reason"]) <= set(REASONS)
    paths = [e["path"] for e in report["excluded"]]
    assert len(paths) == len(set(paths))
    assert sum(v["seen"] for v in report["by_modality"].values()) == report["files_seen"]
    assert sum(v["included"] for v in report["by_modality"].values()) == report["included"]
    assert report["arguments"]["classes"] == "normal,abnormal"


def test_duplicate_details_name_the_kept_file(messy_run):
    _, _, _, _, report, _ = messy_run
    details = {e["path"]: e["detail"] for e in report["excluded"] if e["reason"] == "duplicate_sop_instance"}
    assert "kept file PACS/RG1/UNCI " in details["PACS/RG1/J2KI"]  # uncompressed copy over the JPEG 2000 one
    assert "kept file PACS/RG3/UNCI " in details["PACS/RG3/J2KI"]
    assert "kept file PACS/RG1/UNCR " in details["PACS/RG1/copy_of_uncr.dcm"]


def test_inference_manifest_validates_and_loads_with_monai(messy_run):
    from monai.data import load_decathlon_datalist

    _, _, out, manifest, _, _ = messy_run
    assert set(manifest) >= {"schema_version", "task", "classes", "provenance", "test"}
    assert "training" not in manifest and all("label" not in it for it in manifest["test"])
    read_manifest(out, check_hashes=True)
    items = load_decathlon_datalist(str(out), is_segmentation=False, data_list_key="test")
    assert len(items) == len(manifest["test"]) and all(os.path.isfile(it["image"]) for it in items)


def test_items_carry_the_fields_and_no_phi(messy_run):
    _, _, out, manifest, _, _ = messy_run
    text = out.read_text()
    for phi in ("DOE^JOHN", "PAT012", "ACC0001", "19600101", "9RG1", "CompressedSamples"):
        assert phi not in text, f"{phi} leaked into the manifest"
    for item in manifest["test"]:
        for key in ("image", "patient_id", "study_uid", "series_uid", "sop_uid", "sop_class_uid", "transfer_syntax_uid",
                    "sha256", "rows", "columns", "frames", "photometric", "window_center", "window_width", "view",
                    "body_part"):
            assert key in item, key
        assert item["patient_id"][0] in "PS" and len(item["patient_id"]) == 17
        assert "patient_name" not in item and "accession_number" not in item
    rg1 = next(it for it in manifest["test"] if it["image"].endswith("PACS/RG1/UNCR"))
    assert (rg1["rows"], rg1["columns"], rg1["photometric"], rg1["view"], rg1["body_part"]) == (
        1955, 1841, "MONOCHROME1", "PA", "CHEST")


def test_warnings_for_included_files(messy_run):
    _, _, _, _, report, _ = messy_run
    codes = {(w["path"], w["code"]) for w in report["warnings"]}
    assert ("made/no_patient_id", "missing_patient_id") in codes
    assert ("made/Doe_John/image1", "phi_in_path") in codes
    assert not any(w["path"] in {e["path"] for e in report["excluded"]} for w in report["warnings"])
    dicomdir = next(e for e in report["excluded"] if e["path"] == "cd/DICOMDIR")
    assert dicomdir["reason"] == "non_image_sop_class" and "hint only" in dicomdir["detail"]


def test_salt_file_is_private_and_summary_printed(messy_run):
    _, _, out, _, report, stdout = messy_run
    salt = out.with_name("m.salt")
    assert salt.is_file() and stat.S_IMODE(salt.stat().st_mode) == 0o600
    assert salt.read_text().strip() not in out.read_text()
    assert f"files seen {report['files_seen']} = included {report['included']} + excluded" in stdout
    assert "duplicate_sop_instance" in stdout and "wrote" in stdout


def test_selection_filters_are_opt_in(messy, tmp_path):
    from medfuse.dicom import dicom_to_manifest

    root, expected = messy
    _, report = dicom_to_manifest(root, tmp_path / "m.json", body_parts="CHEST", views="PA", classes="a,b",
                                  workers=1, progress=False, write=False)
    got = {e["path"]: e["reason"] for e in report.excluded}
    assert got["PACS/RG3/UNCR"] == "body_part_not_selected"  # EXTREMITY
    assert got["made/hand"] == "body_part_not_selected"
    assert got["made/lateral"] == "view_not_selected"
    # earlier reasons still win: the truncated file stays truncated, the CT stays modality_not_selected
    assert got["misc/MR_truncated"] == "truncated" and got["misc/CT_small"] == "modality_not_selected"
    assert report.files_seen == report.included + len(report.excluded)


def test_modality_and_sop_class_options(messy, tmp_path):
    from medfuse.dicom import dicom_to_manifest

    root, _ = messy
    manifest, report = dicom_to_manifest(root, tmp_path / "m.json", modalities="OT,US", classes="a,b",
                                         workers=1, progress=False, write=False)
    inc = {it["image"].split("/")[-1] for it in manifest["test"]}
    assert {"image_dfl", "OBXXXX1A_rle_2frame"} <= inc  # deflated and multi-frame files read fine
    us = next(it for it in manifest["test"] if it["image"].endswith("OBXXXX1A_rle_2frame"))
    assert us["frames"] == 2
    got = {e["path"]: e["reason"] for e in report.excluded}
    assert got["PACS/RG1/UNCR"] == "modality_not_selected"
    _, report = dicom_to_manifest(root, tmp_path / "m.json", sop_classes="1.2.840.10008.5.1.4.1.1.1.1",
                                  classes="a,b", workers=1, progress=False, write=False)
    got = {e["path"]: e["reason"] for e in report.excluded}
    assert got["PACS/RG1/UNCR"] == "sop_class_not_selected" and "made/lateral" not in got  # DX kept


def test_rerun_is_idempotent(messy_run, tmp_path):
    from medfuse.commands.dicom2manifest import main

    root, _, out, manifest, report, _ = messy_run
    out2 = tmp_path / "m.json"
    (tmp_path / "m.salt").write_text(out.with_name("m.salt").read_text())  # same salt -> same pseudonyms
    assert main([str(root), "--out", str(out2), "--classes", "normal,abnormal", "--workers", "1", "--no-progress"]) == 0
    again = json.loads(out2.read_text())
    for m in (manifest, again):
        m.pop("provenance")
    # image paths are relative to each manifest's folder: compare the items without them
    strip = lambda m: [{k: v for k, v in it.items() if k != "image"} for it in m["test"]]  # noqa: E731
    assert strip(again) == strip(manifest)
    report2 = json.loads(out2.with_name("m.report.json").read_text())
    assert report2["excluded"] == report["excluded"]


@pytest.mark.parametrize("args, message", [
    (["--classes", "a,b"], "not found"),
    ([], "--classes"),
])
def test_usage_errors(tmp_path, capsys, args, message):
    from medfuse.commands.dicom2manifest import main

    folder = tmp_path / "in"
    if message != "not found":
        folder.mkdir()
    rc = main([str(folder), "--out", str(tmp_path / "m.json"), "--no-progress"] + args)
    assert rc == 1
    assert message in capsys.readouterr().err


def test_bad_split_is_an_argument_error(tmp_path, capsys):
    from medfuse.commands.dicom2manifest import main

    with pytest.raises(SystemExit) as e:
        main([str(tmp_path), "--out", str(tmp_path / "m.json"), "--split", "0.9,0.9,0.1"])
    assert e.value.code == 2
    assert "--split" in capsys.readouterr().err
