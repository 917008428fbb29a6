# Copyright (c) medfuse contributors
# Licensed under the Apache License, Version 2.0
"""dicom2manifest's gaps: unreadable folders reported, non-UTF-8 file names kept, same pixels under other SOP
Instance UIDs reported as duplicate_pixels, --keep-phi outputs private."""

from __future__ import annotations

import json
import os
import stat
import sys

import numpy as np
import pytest

from medfuse.cli import main
from tests.dicom.helpers import write_cr


def _run(src, out, *extra):
    assert main(["dicom2manifest", str(src), "--out", str(out), "--workers", "1", "--no-progress",
                 "--classes", "normal,abnormal", *extra]) == 0
    return json.loads(out.with_name(out.stem + ".report.json").read_text(encoding="utf-8"))


def _folder(tmp_path, n=4):
    src = tmp_path / "pacs"
    for i in range(n):
        write_cr(src / f"p{i}" / "img.dcm", patient_id=f"PAT{i}", seed=i)
    return src


def test_unreadable_folder_is_reported(tmp_path, monkeypatch, capsys):
    src = _folder(tmp_path)
    write_cr(src / "locked" / "hidden.dcm", patient_id="PATX", seed=9)
    real = os.scandir
    locked = str(src / "locked")

    def scandir(path="."):  # root reads every folder: refuse the listing as a missing permission would
        if os.fspath(path) == locked:
            raise PermissionError(13, "Permission denied", locked)
        return real(path)

    monkeypatch.setattr(os, "scandir", scandir)
    report = _run(src, tmp_path / "m.json")
    assert report["unreadable_folders"] == 1 and report["files_seen"] == 4 and report["included"] == 4
    (entry,) = [e for e in report["excluded"] if e["reason"] == "unreadable_folder"]
    assert entry["path"] == "locked/" and "PermissionError" in entry["detail"]
    assert report["excluded_by_reason"] == {"unreadable_folder": 1}
    assert "folders that could not be read: 1" in capsys.readouterr().out


@pytest.mark.skipif(sys.platform != "linux", reason="needs a file system that takes any bytes in names")
def test_non_utf8_file_name_is_kept(tmp_path):
    src = _folder(tmp_path, 3)
    bad = os.path.join(os.fsencode(src), b"p0", b"caf\xe9.dcm")  # Latin-1, not UTF-8
    write_cr(os.fsdecode(bad), patient_id="PAT9", seed=7)
    out = tmp_path / "m.json"
    report = _run(src, out)
    assert report["files_seen"] == 4 and report["included"] == 4
    text = out.read_text(encoding="utf-8")  # valid UTF-8: the bad byte is escaped as \udce9
    assert "caf\\udce9.dcm" in text
    manifest = json.loads(text)
    images = [it["image"] for s in ("training", "validation", "test") for it in manifest.get(s, [])]
    (name,) = [im for im in images if "caf" in im]
    assert os.path.isfile(os.path.join(out.parent, name))  # the escape reads back to the real file name
    state = out.with_name("m.state.json").read_text(encoding="utf-8")
    assert "caf\\udce9.dcm" in state  # the same escape in every file


def test_same_pixels_under_other_uids_are_duplicate_pixels(tmp_path):
    src = tmp_path / "pacs"
    pixels = np.random.default_rng(3).integers(0, 4096, (64, 64), dtype=np.uint16)
    write_cr(src / "a" / "orig.dcm", patient_id="PAT1", pixels=pixels)
    for i in range(2):  # lossless copies under new SOP Instance UIDs: one re-export, one RLE re-encoding
        write_cr(src / "a" / f"copy{i}.dcm", patient_id="PAT1", pixels=pixels,
                 transfer_syntax="1.2.840.10008.1.2.5" if i else "1.2.840.10008.1.2.1")
    for i in range(3):
        write_cr(src / f"o{i}" / "img.dcm", patient_id=f"PAT{i + 2}", seed=10 + i)
    report = _run(src, tmp_path / "m.json", "--verify-pixels")
    dups = [e for e in report["excluded"] if e["reason"] == "duplicate_pixels"]
    assert report["included"] == 4 and len(dups) == 2
    assert all("the kept file a/copy0.dcm" in e["detail"] or "the kept file a/orig.dcm" in e["detail"] for e in dups)
    kept = {e["detail"].split("the kept file ")[1].split(" ")[0] for e in dups}
    assert len(kept) == 1 and kept.pop() not in {e["path"] for e in dups}


def test_keep_phi_outputs_are_private(tmp_path):
    src = _folder(tmp_path, 3)
    out = tmp_path / "m.json"
    _run(src, out, "--keep-phi")
    for name in ("m.json", "m.report.json", "m.state.json"):
        assert stat.S_IMODE(os.stat(tmp_path / name).st_mode) == 0o600, name
