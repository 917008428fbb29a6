# Copyright (c) medfuse contributors
# Licensed under the Apache License, Version 2.0
"""--update (incremental), atomic writes, --cache-dir and --verify-pixels."""

from __future__ import annotations

import json
import os
import time

import numpy as np
import pytest

from medfuse.dicom import dicom_to_manifest
from medfuse.errors import DataError

from .helpers import write_cr


@pytest.fixture()
def folder(tmp_path):
    root = tmp_path / "in"
    for p in range(10):
        for k in range(2):
            write_cr(root / f"p{p}" / f"i{k}", f"U{p:02d}", seed=p * 2 + k,
                     transfer_syntax=("1.2.840.10008.1.2.1", "1.2.840.10008.1.2.5", "1.2.840.10008.1.2.4.90")[(p + k) % 3])
    csv = tmp_path / "labels.csv"
    csv.write_text("PatientID,label\n" + "\n".join(f"U{p:02d},{'a' if p % 2 else 'b'}" for p in range(12)) + "\n")
    return root, csv


def _splits(manifest):
    return {it.get("source", it["image"]): s for s in ("training", "validation", "test") for it in manifest.get(s, [])}


def test_update_reads_only_new_or_changed_files_and_keeps_splits(folder, tmp_path):
    root, csv = folder
    out = tmp_path / "out" / "m.json"
    kw = dict(labels=csv, classes="a,b", workers=2, progress=False)
    first, r1 = dicom_to_manifest(root, out, **kw)
    assert r1.scanned == 20 and r1.reused == 0
    # add two images of a known patient and two of a new one; touch one file (same bytes, new mtime)
    write_cr(root / "p3" / "i2", "U03", seed=100)
    write_cr(root / "p11" / "i0", "U11", seed=101)
    write_cr(root / "p11" / "i1", "U11", seed=102)
    later = time.time() + 5
    os.utime(root / "p0" / "i0", (later, later))
    second, r2 = dicom_to_manifest(root, out, update=out, **kw)
    assert (r2.scanned, r2.reused) == (4, 19)  # 3 new + 1 touched (re-hashed, same content)
    s1, s2 = _splits(first), _splits(second)
    assert all(s2[k] == v for k, v in s1.items())  # earlier assignments kept
    assert s2["../in/p3/i2"] == s1["../in/p3/i0"]  # a known patient's new image joins the patient's split
    assert s2["../in/p11/i0"] == s2["../in/p11/i1"]
    assert r2.files_seen == r2.included + len(r2.excluded) == 23
    # a changed file is read again
    write_cr(root / "p0" / "i0", "U00", seed=555)
    third, r3 = dicom_to_manifest(root, out, update=out, **kw)
    assert r3.scanned == 1
    old_sha = next(it["sha256"] for it in second["training"] + second.get("validation", []) + second.get("test", [])
                   if it["image"].endswith("p0/i0"))
    new_sha = next(it["sha256"] for s in ("training", "validation", "test") for it in third.get(s, [])
                   if it["image"].endswith("p0/i0"))
    assert old_sha != new_sha


def test_update_refuses_another_folder_or_salt(folder, tmp_path):
    root, csv = folder
    out = tmp_path / "m.json"
    dicom_to_manifest(root, out, labels=csv, workers=1, progress=False)
    other = tmp_path / "other"
    other.mkdir()
    with pytest.raises(DataError, match="was made from"):
        dicom_to_manifest(other, out, labels=csv, workers=1, progress=False, update=out)
    with pytest.raises(DataError, match="salt differs"):
        dicom_to_manifest(root, out, labels=csv, workers=1, progress=False, update=out, salt="another")
    with pytest.raises(DataError, match="no scan state"):
        dicom_to_manifest(root, tmp_path / "x.json", labels=csv, workers=1, progress=False, update=tmp_path / "n.json")


def test_interrupted_run_leaves_the_old_manifest(folder, tmp_path, monkeypatch):
    import medfuse.utils.io as io_utils

    root, csv = folder
    out = tmp_path / "m.json"
    dicom_to_manifest(root, out, labels=csv, workers=1, progress=False)
    before = {p.name: p.read_bytes() for p in tmp_path.glob("m.*")}
    write_cr(root / "p20" / "i0", "U20", seed=7)

    def interrupted(*a, **k):  # Ctrl-C arrives while the new files are being put in place
        raise KeyboardInterrupt

    monkeypatch.setattr(io_utils.os, "replace", interrupted)
    with pytest.raises(KeyboardInterrupt):
        dicom_to_manifest(root, out, labels=csv, workers=1, progress=False)
    monkeypatch.undo()
    assert {p.name: p.read_bytes() for p in tmp_path.glob("m.*")} == before
    assert not [p for p in tmp_path.iterdir() if p.name.endswith(".tmp")]


def test_cache_matches_the_dicom_decode(folder, tmp_path):
    from monai.data import load_decathlon_datalist

    from medfuse.data.manifest import read_manifest
    from medfuse.transforms import LoadXray

    root, csv = folder
    out = tmp_path / "out" / "m.json"
    cache = tmp_path / "out" / "cache"
    manifest, report = dicom_to_manifest(root, out, labels=csv, classes="a,b", cache_dir=cache, workers=2,
                                         progress=False)
    assert report.included == 20
    read_manifest(out, check_hashes=True)  # sha256 is the cached file's
    items = [it for s in ("training", "validation", "test") for it in manifest.get(s, [])]
    load = LoadXray()
    for it in items[:6]:
        assert it["image"].startswith("cache/P") and it["image"].endswith(".png")
        assert it["source"].startswith("../in/p") and len(it["source_sha256"]) == 64
        assert it["preprocessing"]["format"] == "png16" and it["preprocessing"]["voi_applied"] is False
        cached = np.asarray(load(str(out.parent / it["image"])))
        direct = np.asarray(load(str(out.parent / it["source"])))
        assert cached.shape == direct.shape == (1, 64, 64)
        assert np.abs(cached - direct).max() <= 1.0 / 65535
    assert all("U0" not in it["image"] for it in items)  # cache names are pseudonyms
    datalist = load_decathlon_datalist(str(out), is_segmentation=False, data_list_key="training")
    assert all(os.path.isfile(d["image"]) for d in datalist)
    # update with the cache: nothing is decoded again
    again, r2 = dicom_to_manifest(root, out, labels=csv, classes="a,b", cache_dir=cache, workers=1, progress=False,
                                  update=out)
    assert r2.timings["decode"] < 2.0 and json.dumps(again["training"]) == json.dumps(manifest["training"])


def test_multiframe_cache_is_a_tiff(tmp_path):
    from medfuse.transforms import LoadOCT

    root = tmp_path / "in"
    write_cr(root / "oct1", "E1", modality="OPT", frames=5, seed=3)
    manifest, report = dicom_to_manifest(root, tmp_path / "m.json", classes="normal,cnv", cache_dir=tmp_path / "c",
                                         workers=1, progress=False)
    item = manifest["test"][0]
    assert item["image"].endswith(".tiff") and item["frames"] == 5 and item["preprocessing"]["frame"] == "all"
    cached = np.asarray(LoadOCT()(str(tmp_path / item["image"])))
    direct = np.asarray(LoadOCT()(str(tmp_path / item["source"])))
    assert cached.shape == direct.shape == (5, 64, 64)
    assert np.abs(cached - direct).max() <= 1.0 / 65535


def test_verify_pixels_rejects_undecodable_files(folder, tmp_path):
    root, csv = folder
    write_cr(root / "p5" / "broken", "U05", transfer_syntax="garbage-j2k")
    manifest, report = dicom_to_manifest(root, tmp_path / "m.json", labels=csv, workers=2, progress=False,
                                         verify_pixels=True)
    got = {e["path"]: e for e in report.excluded}
    assert got["p5/broken"]["reason"] == "undecodable_transfer_syntax"
    assert "1.2.840.10008.1.2.4.90" in got["p5/broken"]["detail"]
    assert report.included == 20
    # without --verify-pixels the header is fine, so the file is included
    _, plain = dicom_to_manifest(root, tmp_path / "n.json", labels=csv, workers=1, progress=False)
    assert plain.included == 21
