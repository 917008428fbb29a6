# Copyright (c) medfuse contributors
# Licensed under the Apache License, Version 2.0
"""The real chest CR DICOM files of shared/data/dicom_cxr: duplicates, decoding, the cache."""

from __future__ import annotations

import numpy as np

from medfuse.dicom import dicom_to_manifest
from tests.conftest import require


def test_real_cxr_folder(shared_data, tmp_path):
    from medfuse.transforms import LoadXray

    folder = require(shared_data / "dicom_cxr")
    out = tmp_path / "m.json"
    manifest, report = dicom_to_manifest(folder, out, classes="normal,abnormal", verify_pixels=True,
                                         cache_dir=tmp_path / "cache", workers=2, progress=False)
    assert report.files_seen == 5 and report.included == 3
    # the SIIM file and its relabelled MONOCHROME1 copy share a SOP Instance UID: the first path is kept;
    # the lossless JPEG 2000 copy of RG1 (another SOP Instance UID) decodes to the same pixels: duplicate_pixels,
    # the uncompressed original kept
    assert sorted((e["path"], e["reason"]) for e in report.excluded) == [
        ("RG1_J2KR.dcm", "duplicate_pixels"), ("SIIM_CR_chest_PA_jpegbaseline_FAKE_MONOCHROME1.dcm", "duplicate_sop_instance")]
    (dup,) = [e for e in report.excluded if e["reason"] == "duplicate_pixels"]
    assert "the kept file RG1_UNCR.dcm" in dup["detail"]
    items = {it["source"].split("/")[-1]: it for it in manifest["test"]}
    assert set(items) == {"RG1_J2KI.dcm", "RG1_UNCR.dcm", "SIIM_CR_chest_PA_jpegbaseline.dcm"}
    rg1 = items["RG1_UNCR.dcm"]
    assert (rg1["rows"], rg1["columns"], rg1["photometric"], rg1["modality"]) == (1955, 1841, "MONOCHROME1", "CR")
    # the lossy JPEG 2000 copy decodes to other pixels: kept, its cached PNG differs
    assert items["RG1_J2KI.dcm"]["sha256"] != rg1["sha256"]
    load = LoadXray()
    for name in ("RG1_UNCR.dcm", "SIIM_CR_chest_PA_jpegbaseline.dcm"):
        it = items[name]
        cached = np.asarray(load(str(tmp_path / it["image"])))
        direct = np.asarray(load(str(tmp_path / it["source"])))
        assert cached.shape == direct.shape and np.abs(cached - direct).max() <= 1.0 / 65535
