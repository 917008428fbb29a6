# Copyright (c) medfuse contributors
# Licensed under the Apache License, Version 2.0
"""The wheel carries what an installed medfuse needs without a checkout: the bundles and the metadata schema."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
#: what `pip wheel` reads: the sdist's files (MANIFEST.in) and the package
_SOURCES = ("setup.py", "setup.cfg", "pyproject.toml", "README.md", "MANIFEST.in", "constraints.txt", "medfuse", "bundles")


def test_wheel_ships_bundles_and_schema(tmp_path):
    src = tmp_path / "src"
    src.mkdir()
    for name in _SOURCES:
        (shutil.copytree if (REPO / name).is_dir() else shutil.copy)(
            REPO / name, src / name, **({"ignore": shutil.ignore_patterns("__pycache__", "runs", "models")}
                                        if (REPO / name).is_dir() else {}))
    proc = subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "--no-index", "-q",
                           "-w", str(tmp_path / "wheel"), str(src)], capture_output=True, text=True, timeout=300)
    if proc.returncode != 0:
        pytest.skip(f"cannot build a medfuse wheel here: {proc.stderr.strip()[-300:]}")
    (wheel,) = (tmp_path / "wheel").glob("medfuse-*.whl")
    with zipfile.ZipFile(wheel) as zf:
        names = set(zf.namelist())
        zf.extractall(tmp_path / "site")
    bundles = sorted(p.name for p in (REPO / "bundles").iterdir() if (p / "configs" / "metadata.json").is_file())
    for b in bundles:
        for rel in ("LICENSE", "configs/metadata.json", "configs/inference.json", "docs/README.md"):
            assert f"medfuse/bundles/{b}/{rel}" in names, (b, rel)
    assert "medfuse/zoo/schema/meta_schema_20240725.json" in names
    assert not [n for n in names if "/runs/" in n or n.endswith((".pt", ".ts", ".pyc"))]
    # the installed package finds a layered bundle and its base by name, from a folder outside any checkout
    code = ("import json; from medfuse.workflows.bundle import bundle_dir, config_layers; "
            "from medfuse.zoo.checks import default_schema_path; "
            "print(json.dumps([str(bundle_dir('cxr_gsa_classifier')), [str(p) for p in config_layers('cxr_gsa_classifier', "
            "'train.json')], str(default_schema_path())]))")
    work = tmp_path / "elsewhere"
    work.mkdir()
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    env["PYTHONPATH"] = str(tmp_path / "site")
    out = subprocess.run([sys.executable, "-c", code], cwd=work, env=env, capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr[-2000:]
    found, layers, schema = json.loads(out.stdout.strip().splitlines()[-1])
    packaged = tmp_path / "site" / "medfuse" / "bundles"
    assert Path(found) == packaged / "cxr_gsa_classifier"
    assert [Path(p) for p in layers] == [packaged / "cxr_dual_cross_attention" / "configs" / "train.json",
                                         packaged / "cxr_gsa_classifier" / "configs" / "train.json"]
    assert Path(schema) == tmp_path / "site" / "medfuse" / "zoo" / "schema" / "meta_schema_20240725.json"
