# Copyright (c) medfuse contributors
# Licensed under the Apache License, Version 2.0
"""benchmarks/gpu_prepare.py and gpu_session.py: what travels to the GPU machine, and that the session's steps see
the wheels installed there."""

from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

from medfuse.utils.paths import checkout_env

REPO = Path(__file__).resolve().parents[1]


def _load(name: str):
    spec = importlib.util.spec_from_file_location(name, REPO / "benchmarks" / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def prep():
    return _load("gpu_prepare")


def _images(root: Path, per_class: dict[str, int], size: int = 100) -> list[Path]:
    files = []
    for cls, n in per_class.items():
        (root / cls).mkdir(parents=True, exist_ok=True)
        for i in range(n):
            f = root / cls / f"{cls}_{i:03d}.jpeg"
            f.write_bytes(b"x" * size)
            files.append(f)
    return sorted(files)


def test_thinned_keeps_the_class_balance_and_only_given_files(prep, tmp_path):
    files = _images(tmp_path, {"NORMAL": 30, "PNEUMONIA": 90})
    kept = prep.thinned(files, 0.5)
    normal = [f for f in kept if f.parent.name == "NORMAL"]
    assert (len(normal), len(kept) - len(normal)) == (15, 45)
    assert set(kept) <= set(files) and len(set(kept)) == len(kept)
    assert prep.thinned(files, 0.5) == kept  # deterministic
    assert prep.thinned(files, 1.0) == files


def test_copy_data_fits_the_room_and_reports_what_it_kept(prep, tmp_path):
    src = tmp_path / "shared"
    (src / "dicom_cxr").mkdir(parents=True)
    (src / "dicom_cxr" / "a.dcm").write_bytes(b"d" * 1000)
    _images(src / "kermany_cxr_224" / "train", {"NORMAL": 20, "PNEUMONIA": 60})  # 8000 bytes
    report = prep.copy_data(src, tmp_path / "dest", room=1000 + 4000)
    k = report["kermany_cxr_224"]
    assert report["dicom_cxr"] == {"files": 1, "bytes": 1000}
    assert k["of"] == 80 and k["kept_fraction"] == 0.5 and k["files"] == 40
    assert k["per_class"] == {"NORMAL": 10, "PNEUMONIA": 30}
    copied = list((tmp_path / "dest" / "kermany_cxr_224").rglob("*.jpeg"))
    assert len(copied) == 40 and sum(f.stat().st_size for f in copied) == k["bytes"] == 4000


def _wheel(path: Path, name: str, requires: list[str]) -> Path:
    w = path / f"{name}-1.0-py3-none-any.whl"
    with zipfile.ZipFile(w, "w") as z:
        z.writestr(f"{name}-1.0.dist-info/METADATA",
                   "Metadata-Version: 2.1\nName: " + name + "\n" + "".join(f"Requires-Dist: {r}\n" for r in requires))
    return w


def test_unmet_requirements_follow_markers_and_the_image_list(prep, tmp_path):
    wheels = [_wheel(tmp_path, "monai", ["numpy>=1.24", "torch>=2.4", "backport-x; python_version < '3.12'",
                                         "optional-y; extra == 'all'", "needs-z"]),
              _wheel(tmp_path, "pydicom", [])]
    assert prep.unmet_requirements(wheels, "3.12") == ["monai needs needs-z"]
    assert prep.unmet_requirements(wheels, "3.11") == ["monai needs backport-x; python_version < \"3.12\"",
                                                       "monai needs needs-z"]


def test_ignore_in_git_adds_the_folder_once(prep, tmp_path):
    subprocess.run(["git", "init", "-q", str(tmp_path)], check=True)
    (tmp_path / ".devcarry").mkdir()
    prep.ignore_in_git(tmp_path, tmp_path / ".devcarry")
    prep.ignore_in_git(tmp_path, tmp_path / ".devcarry")
    assert subprocess.run(["git", "check-ignore", "-q", ".devcarry"], cwd=tmp_path).returncode == 0
    assert (tmp_path / ".git" / "info" / "exclude").read_text().count("/.devcarry/") == 1


def test_checkout_env_puts_the_checkout_first_and_keeps_the_rest(monkeypatch):
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join([str(REPO), "/tmp/medfuse_site"]))
    env = checkout_env(OMP_NUM_THREADS="1")
    assert env["PYTHONPATH"].split(os.pathsep) == [str(REPO), "/tmp/medfuse_site"]
    assert env["OMP_NUM_THREADS"] == "1"


def test_session_steps_see_the_installed_wheels_and_a_failed_step_is_recorded(monkeypatch, tmp_path):
    # on the GPU machine MONAI lives in a pip --target folder on PYTHONPATH: a step must not lose it
    monkeypatch.setenv("PYTHONPATH", "/tmp/medfuse_site")
    gs = _load("gpu_session")
    s = gs.Session(tmp_path / "out", budget_s=300, environment="test env")
    rc = s.run("path", [sys.executable, "-c", "import os; print(os.environ['PYTHONPATH'])"], timeout=60)
    rc_fail = s.run("fails", [sys.executable, "-c", "import sys; sys.exit(3)"], timeout=60)
    record = json.loads((tmp_path / "out" / "session.json").read_text())
    assert (rc, rc_fail) == (0, 3)
    assert record["environment"] == "test env" and [r["rc"] for r in record["steps"]] == [0, 3]
    assert record["steps"][0]["tail"].strip().split(os.pathsep) == [str(REPO), "/tmp/medfuse_site"]
