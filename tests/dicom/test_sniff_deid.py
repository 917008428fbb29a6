# Copyright (c) medfuse contributors
# Licensed under the Apache License, Version 2.0
"""Content sniffing, SOP-class and transfer-syntax rules, pseudonyms and the salt file, the tools script."""

from __future__ import annotations

import os
import stat
import struct
import subprocess
import sys
from pathlib import Path

import pytest

from medfuse.dicom.deid import keyed_hash, load_or_create_salt, path_mentions, phi_tokens, pseudonym
from medfuse.dicom.sniff import is_image_sop_class, is_lossy_transfer_syntax, sniff_dicom
from medfuse.errors import DataError

from .helpers import pydicom_file

REPO = Path(__file__).resolve().parents[2]


@pytest.mark.parametrize("name, kind", [
    ("CT_small.dcm", "part10"),
    ("ExplVR_LitEndNoMeta.dcm", "raw"),
    ("ExplVR_BigEndNoMeta.dcm", "raw"),
    ("no_meta.dcm", None),  # first byte damaged
])
def test_sniff_real_files(name, kind):
    data = Path(pydicom_file(name)).read_bytes()
    assert sniff_dicom(data[:132], len(data)) == kind


@pytest.mark.parametrize("head", [
    b"\x89PNG\r\n\x1a\n" + b"\x00" * 200,
    b"PK\x03\x04" + b"\x00" * 200,
    b"hello world, this is text\n" * 8,
    b"\xff\xd8\xff\xe0" + b"\x00" * 200,
    b"",
    b"\x08\x00",
])
def test_sniff_rejects_non_dicom(head):
    assert sniff_dicom(head[:132], len(head)) is None


def test_sniff_implicit_vr_little_endian_start():
    # (0008,0005) implicit VR, length 10, "ISO_IR 100"
    head = struct.pack("<HHI", 0x0008, 0x0005, 10) + b"ISO_IR 100"
    assert sniff_dicom(head, 1000) == "raw"
    assert sniff_dicom(head, 5) is None  # the element does not fit in the file


@pytest.mark.parametrize("uid, image", [
    ("1.2.840.10008.5.1.4.1.1.1", True),  # CR
    ("1.2.840.10008.5.1.4.1.1.1.1", True),  # DX for presentation
    ("1.2.840.10008.5.1.4.1.1.7", True),  # secondary capture (SIIM ships CR as SC)
    ("1.2.840.10008.5.1.4.1.1.77.1.5.4", True),  # ophthalmic tomography
    ("1.2.840.10008.5.1.4.1.1.88.33", False),  # comprehensive SR
    ("1.2.840.10008.5.1.4.1.1.88.59", False),  # key object selection
    ("1.2.840.10008.5.1.4.1.1.11.1", False),  # grayscale presentation state
    ("1.2.840.10008.5.1.4.1.1.481.5", False),  # RT plan
    ("1.2.840.10008.5.1.4.1.1.66.4", False),  # segmentation
    ("1.2.840.10008.5.1.4.1.1.104.1", False),  # encapsulated PDF
    ("1.2.840.10008.1.3.10", False),  # media storage directory (DICOMDIR)
    ("1.2.3.4.5.6.7.8", True),  # unknown: the pixel-data check decides
])
def test_image_sop_classes(uid, image):
    assert is_image_sop_class(uid) is image


def test_lossy_transfer_syntaxes():
    assert is_lossy_transfer_syntax("1.2.840.10008.1.2.4.50")
    assert is_lossy_transfer_syntax("1.2.840.10008.1.2.4.91")
    assert not is_lossy_transfer_syntax("1.2.840.10008.1.2.4.90")
    assert not is_lossy_transfer_syntax("1.2.840.10008.1.2.5")
    assert not is_lossy_transfer_syntax("1.2.840.10008.1.2.1")


def test_pseudonyms_depend_on_the_salt():
    a, b = keyed_hash(b"s1", "12345"), keyed_hash(b"s2", "12345")
    assert a != b and a == keyed_hash(b"s1", " 12345 ")
    assert pseudonym(a).startswith("P") and len(pseudonym(a)) == 17


def test_salt_file_created_private_then_reused(tmp_path):
    path = tmp_path / "m.salt"
    salt, where = load_or_create_salt(path)
    assert where.startswith("created") and stat.S_IMODE(os.stat(path).st_mode) == 0o600
    again, where2 = load_or_create_salt(path)
    assert again == salt and where2.startswith("read")
    assert load_or_create_salt(path, "given")[0] == b"given"
    path.write_text("")
    with pytest.raises(DataError, match="salt file is empty"):
        load_or_create_salt(path)


def test_phi_in_paths():
    tokens = phi_tokens("DOE^JOHN", "12345678", "ACC99")
    assert path_mentions("export/Doe_John/IM0001", tokens)
    assert path_mentions("export/12345678/IM0001", tokens)
    assert path_mentions("export/p_12345678_x/IM1", tokens)
    assert not path_mentions("export/Patient01/IM0001", tokens)
    assert not phi_tokens("", "", "")


def test_tools_script_and_cli_help():
    script = REPO / "tools" / "dicom_to_manifest.py"
    res = subprocess.run([sys.executable, str(script), "--help"], capture_output=True, text=True, timeout=120)
    assert res.returncode == 0 and "--verify-pixels" in res.stdout and "--label-key" in res.stdout
    from medfuse.cli import COMMANDS

    assert COMMANDS["dicom2manifest"] == "dicom2manifest"


def test_fast_header_path_matches_dcmread(messy, monkeypatch):
    """The raw-element fast path gives the same record as the plain ``dcmread`` path, file by file."""
    import medfuse.dicom.scan as scan

    root, expected = messy
    files = scan.iter_files(str(root))
    options = {"salt": b"salt", "hash": True}
    fast = [scan.scan_file(full, rel, options) for full, rel in files]
    monkeypatch.setattr(scan, "_fast_header", lambda fp, size: None)
    slow = [scan.scan_file(full, rel, options) for full, rel in files]
    assert len(fast) == len(expected)
    for a, b in zip(fast, slow):
        a, b = dict(a), dict(b)
        a.pop("warnings", None), b.pop("warnings", None)
        assert a == b, a["path"]
