# Copyright (c) medfuse contributors
# Licensed under the Apache License, Version 2.0
"""Manifests saved as UTF-16 or UTF-8 with a byte order mark read as they are; other encodings are named."""

from __future__ import annotations

import json

import pytest

from medfuse.cli import main
from medfuse.data.manifest import read_manifest
from medfuse.errors import ManifestError

MANIFEST = {"schema_version": 1, "task": "classification", "classes": ["normal", "opacité"],
            "test": [{"image": "a.png", "label": 1}]}


@pytest.mark.parametrize("encoding", ["utf-16", "utf-16-le", "utf-8-sig", "utf-32"])
def test_utf16_and_bom_manifests_read(tmp_path, encoding):
    path = tmp_path / "m.json"
    path.write_bytes(json.dumps(MANIFEST, ensure_ascii=False).encode(encoding))
    assert read_manifest(path, check_files=False)["classes"] == ["normal", "opacité"]


def test_other_encodings_are_named_in_one_line(tmp_path, capsys):
    path = tmp_path / "m.json"
    path.write_bytes(json.dumps(MANIFEST, ensure_ascii=False).encode("latin-1"))
    with pytest.raises(ManifestError, match=r"not UTF-8/16/32 text \(byte 0xe9 at offset \d+ is not utf-8\); save the manifest as UTF-8"):
        read_manifest(path, check_files=False)
    assert main(["validate", str(path), "--no-files"]) != 0
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "save the manifest as UTF-8" in err[0]
