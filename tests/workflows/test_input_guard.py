# Copyright (c) medfuse contributors
# Licensed under the Apache License, Version 2.0
"""The input guard: what each bundle accepts (inherited metadata), check_accepts, InputGuard, predictions rows."""

from __future__ import annotations

import csv

import numpy as np
import pytest

from medfuse.dicom.accept import check_accepts, validate_accepts
from medfuse.errors import DataError
from medfuse.evaluation.predictions import read_predictions
from medfuse.workflows.bundle import bundle_accepts
from medfuse.workflows.input_guard import InputGuard
from tests.bundles.helpers import BUNDLES
from tests.dicom.helpers import pydicom_file, write_cr

CHEST = bundle_accepts(BUNDLES / "cxr_dual_cross_attention")


def test_bundles_declare_what_they_accept():
    # the chest value lives in the base bundle's metadata and is inherited; OCT and DIFM override it
    assert CHEST["Modality"] == ["CR", "DX", "DR"] and CHEST["BodyPartExamined"] == ["CHEST", None]
    for derived in ("cxr_gsa_classifier", "cxr_multi_output_unet", "cxr_dualattnet_detection"):
        assert bundle_accepts(BUNDLES / derived) == CHEST, derived
    assert bundle_accepts(BUNDLES / "oct_dual_cross_attention")["Modality"] == ["OPT", "OCT"]
    assert bundle_accepts(BUNDLES / "difm_segmentation")["Modality"] == ["MR", "CT"]


@pytest.mark.parametrize(
    "kwargs, expected",
    [
        ({}, "ok"),
        ({"modality": "DX"}, "ok"),
        ({"body_part": ""}, "ok"),  # BodyPartExamined empty: allowed
        ({"modality": "MR"}, "modality_not_accepted:MR"),
        ({"modality": "US"}, "modality_not_accepted:US"),
        ({"modality": "XA"}, "modality_not_accepted:XA"),
        ({"modality": "NM"}, "modality_not_accepted:NM"),
        ({"body_part": "HIP"}, "body_part_not_accepted:HIP"),
        ({"photometric": "RGB"}, "photometric_not_accepted:RGB"),
    ],
)
def test_check_accepts_chest(tmp_path, kwargs, expected):
    path = tmp_path / "x.dcm"
    write_cr(path, **kwargs)
    assert check_accepts(str(path), CHEST) == expected


def test_check_accepts_real_files_and_non_dicom(tmp_path):
    assert check_accepts(pydicom_file("MR_small.dcm"), CHEST) == "modality_not_accepted:MR"
    assert check_accepts(pydicom_file("CT_small.dcm"), CHEST) == "modality_not_accepted:CT"
    png = tmp_path / "a.png"
    png.write_bytes(b"\x89PNG\r\n\x1a\n" + b"\x00" * 64)
    assert check_accepts(str(png), CHEST) == "ok"  # no tags to check: the OOD score is what can flag it
    assert check_accepts(str(png), None) == "ok"
    # a structured report is not an image
    sr = tmp_path / "sr.dcm"
    write_cr(sr)
    import pydicom

    ds = pydicom.dcmread(sr)
    ds.SOPClassUID = "1.2.840.10008.5.1.4.1.1.88.11"
    assert check_accepts(ds, CHEST) == "sop_class_not_accepted:1.2.840.10008.5.1.4.1.1.88.11"
    with pytest.raises(ValueError, match="not a DICOM keyword"):
        validate_accepts({"Modalty": ["CR"]})


def test_guard_keeps_refused_inputs_and_writer_rows(tmp_path):
    from medfuse.workflows.handlers import PredictionWriter

    ok, mr = tmp_path / "chest.dcm", tmp_path / "head.dcm"
    write_cr(ok)
    write_cr(mr, modality="MR")
    guard = InputGuard(CHEST)
    items = guard.filter([{"image": str(ok), "image_path": str(ok)}, {"image": str(mr), "image_path": str(mr)}])
    assert [it["image"] for it in items] == [str(ok)] and items[0]["input_check"] == "ok"
    assert guard.rejected == [{"image": str(mr), "input_check": "modality_not_accepted:MR"}]
    assert guard.summary() == "2 input(s): 1 scored, 1 not scored (modality_not_accepted:MR 1; see the input_check column)"
    writer = PredictionWriter(tmp_path / "out", ["normal", "opacity"], input_guard=guard)
    writer.rows = [{"image": str(ok), "probs": np.array([0.25, 0.75], dtype=np.float32), "input_check": "ok",
                    "ood_score": 3.5, "ood": 0}]
    path = writer.write()
    with open(path) as f:
        rows = list(csv.DictReader(f))
    assert rows[0]["input_check"] == "ok" and rows[0]["pred"] == "opacity" and rows[0]["ood_score"] == "3.5"
    assert rows[1]["input_check"] == "modality_not_accepted:MR"
    assert rows[1]["prob_normal"] == rows[1]["prob_opacity"] == rows[1]["pred"] == rows[1]["entropy"] == ""
    pred = read_predictions(path)  # the refused row is left out, and counted
    assert pred["images"] == [str(ok)] and pred["not_scored"] == {"count": 1, "reasons": {"modality_not_accepted:MR": 1}}
    # nothing accepted: one clear line
    with pytest.raises(DataError, match="none of the 1 input"):
        InputGuard(CHEST).filter([{"image": str(mr)}])
