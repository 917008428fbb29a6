# Copyright (c) medfuse contributors
# Licensed under the Apache License, Version 2.0
"""``zoo get --force`` never destroys a good bundle: the archive is verified in a temporary folder, then swapped
in; checksums cover every file (configs included); the exported OOD model and accepts travel with the bundle."""

from __future__ import annotations

import json
import zipfile

import pytest

from medfuse.errors import DataError
from medfuse.utils.io import sha256_file
from medfuse.zoo import export_bundle, get_bundle
from tests.zoo.conftest import REPO

CXR = "cxr_dual_cross_attention"


@pytest.fixture(scope="module")
def zoo(trained_run, schema, tmp_path_factory):
    zoo = tmp_path_factory.mktemp("safe_zoo") / "zoo"
    export_bundle(REPO / "bundles" / CXR, zoo, weights=trained_run(CXR) / "model.pt", schema=schema, log=lambda m: None)
    return zoo


def _rewrite(zoo, change):
    """Rewrite the release archive with ``change(name, data) -> data | None`` (None drops the member) and record the
    new archive checksum in the index, as a replaced-but-consistent archive would look."""
    info_path = zoo / "model_info.json"
    info = json.loads(info_path.read_text())
    key = f"{CXR}_v0.1.0"
    archive = zoo / info[key]["source"]
    with zipfile.ZipFile(archive) as zf:
        members = [(m, zf.read(m)) for m in zf.namelist()]
    with zipfile.ZipFile(archive, "w") as zf:
        for m, data in members:
            new = change(m, data)
            if new is not None:
                zf.writestr(m, new)
        extra = change("__extra__", b"")
        if extra is not None:
            zf.writestr(f"{CXR}/notes.txt", extra)
    info[key]["checksum"] = sha256_file(archive)
    info_path.write_text(json.dumps(info))


def test_the_export_lists_every_file_and_carries_ood_and_accepts(zoo, tmp_path):
    entry = json.loads((zoo / "model_info.json").read_text())[f"{CXR}_v0.1.0"]
    assert entry["files_complete"] and "configs/inference.json" in entry["files"] and "models/ood.json" in entry["files"]
    bundle = get_bundle(zoo, CXR, tmp_path / "out")
    assert json.loads((bundle / "configs" / "metadata.json").read_text())["accepts"]["Modality"] == ["CR", "DX", "DR"]
    assert json.loads((bundle / "models" / "ood.json").read_text())["threshold"] > 0
    (bundle / "configs" / "inference.json").write_text("{}")  # a local edit, replaced by a verified --force
    assert get_bundle(zoo, CXR, tmp_path / "out", force=True) == bundle
    assert sha256_file(bundle / "configs" / "inference.json") == entry["files"]["configs/inference.json"]
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == [CXR]


@pytest.mark.parametrize(
    "change, message",
    [
        (lambda m, d: d[: len(d) // 2] if m.endswith("models/model.pt") else (None if m == "__extra__" else d), "model.pt is missing or"),
        (lambda m, d: d.replace(b'"mc_samples": 20', b'"mc_samples": 0') if m.endswith("configs/inference.json")
         else (None if m == "__extra__" else d), "inference.json is missing or"),
        (lambda m, d: b"added later" if m == "__extra__" else d, "notes.txt is not among the files"),
    ],
    ids=["truncated_weights", "changed_config", "added_file"],
)
def test_refused_archive_leaves_the_bundle_untouched(zoo, tmp_path_factory, change, message):
    local = tmp_path_factory.mktemp("zoo_copy")
    import shutil

    shutil.copytree(zoo, local / "zoo")
    out = local / "out"
    bundle = get_bundle(local / "zoo", CXR, out)
    before = {p.relative_to(bundle).as_posix(): sha256_file(p) for p in bundle.rglob("*") if p.is_file()}
    _rewrite(local / "zoo", change)
    with pytest.raises(DataError, match=message):
        get_bundle(local / "zoo", CXR, out, force=True)
    after = {p.relative_to(bundle).as_posix(): sha256_file(p) for p in bundle.rglob("*") if p.is_file()}
    assert after == before  # the good bundle is still there, unchanged
    assert sorted(p.name for p in out.iterdir()) == [CXR]  # nothing half-unpacked beside it
