# Copyright (c) medfuse contributors
# Licensed under the Apache License, Version 2.0
import json
import subprocess
import sys
from pathlib import Path

import pytest
from monai.data import load_decathlon_datalist

from medfuse.commands.folder2manifest import main
from medfuse.data.manifest import read_manifest
from tests.conftest import require
from tests.data.synth import make_tree

REPO = Path(__file__).resolve().parents[2]


def _tree(root):
    files = {f"NORMAL/IM-{i:04d}-0001.png": None for i in range(6)}
    files.update({f"PNEUMONIA/person{i}_virus_{i}.png": None for i in range(6)})
    files["PNEUMONIA/broken.png"] = b"not a png"
    files["notes.txt"] = b"x"
    return make_tree(root, files)


def test_synthetic_run_prints_counts_and_skips(tmp_path, capsys):
    root = _tree(tmp_path / "d")
    out = tmp_path / "manifests" / "m.json"
    report = tmp_path / "report.json"
    rc = main([str(root), "--out", str(out), "--split", "0.5,0.25,0.25", "--seed", "3", "--report", str(report)])
    assert rc == 0
    text = capsys.readouterr().out
    assert "found 14 = written 12 + skipped 2" in text
    assert "unreadable image" in text and "PNEUMONIA/broken.png" in text
    assert "outside the class folders" in text
    manifest = read_manifest(out)
    assert manifest["provenance"]["arguments"]["seed"] == 3
    assert sum(len(manifest.get(s, [])) for s in ("training", "validation", "test")) == 12
    rep = json.loads(report.read_text())
    assert rep["found"] == 14 and rep["skipped_by_reason"]["unreadable image"] == 1


def test_classes_option_orders_labels(tmp_path, capsys):
    root = _tree(tmp_path / "d")
    out = tmp_path / "m.json"
    assert main([str(root), "--out", str(out), "--classes", "PNEUMONIA,NORMAL", "--split", "1"]) == 0
    m = read_manifest(out)
    assert m["classes"] == ["PNEUMONIA", "NORMAL"]
    assert {Path(it["image"]).parent.name: it["label"] for it in m["training"]} == {"PNEUMONIA": 0, "NORMAL": 1}


@pytest.mark.parametrize(
    "args, message",
    [
        (["{root}/missing"], "missing: folder not found"),
        (["{root}", "--classes", "NORMAL,TB"], "class 'TB' from --classes has no folder"),
        (["{root}", "--patient-regex", "(?P<x>a)"], "no named group 'patient'"),
    ],
)
def test_input_errors_are_one_line_exit_1(tmp_path, capsys, args, message):
    root = _tree(tmp_path / "d")
    argv = [a.format(root=root) for a in args] + ["--out", str(tmp_path / "m.json")]
    assert main(argv) == 1
    err = capsys.readouterr().err.strip()
    assert err.startswith("medfuse folder2manifest: error:") and message in err and "\n" not in err
    assert not (tmp_path / "m.json").exists()


@pytest.mark.parametrize(
    "split, message",
    [
        ("0.8,0.3,0.1", "must sum to 1, got 0.8, 0.3, 0.1 (sum 1.2)"),
        ("0.8,-0.1,0.3", "must be non-negative, got 0.8, -0.1, 0.3"),
        ("a,b", "'a,b': expected comma-separated numbers"),
    ],
)
def test_bad_split_is_an_argument_error(tmp_path, capsys, split, message):
    with pytest.raises(SystemExit) as e:
        main([str(tmp_path), "--out", str(tmp_path / "m.json"), "--split", split])
    assert e.value.code == 2
    err = capsys.readouterr().err
    assert "argument --split" in err and message in err


@pytest.mark.realdata
def test_kermany_real(shared_data, tmp_path, capsys):
    root = require(shared_data / "kermany_cxr_224")
    out = tmp_path / "kermany.json"
    assert main([str(root), "--out", str(out), "--val-fraction", "0.1", "--no-progress"]) == 0
    text = capsys.readouterr().out
    assert "found 5216 = written 5216 + skipped 0" in text
    assert "byte-identical files: 24 sets" in text
    m = read_manifest(out)
    per = {c: 0 for c in m["classes"]}
    for s in ("training", "validation"):
        for it in m[s]:
            per[m["classes"][it["label"]]] += 1
    assert per == {"NORMAL": 1341, "PNEUMONIA": 3875}
    val = load_decathlon_datalist(str(out), is_segmentation=False, data_list_key="validation")
    assert Path(val[0]["image"]).is_file()


def test_tool_script_runs(tmp_path):
    root = _tree(tmp_path / "d")
    out = tmp_path / "m.json"
    r = subprocess.run(
        [sys.executable, str(REPO / "tools" / "folder_to_manifest.py"), str(root), "--out", str(out), "--split", "1"],
        capture_output=True, text=True, timeout=120,
    )
    assert r.returncode == 0, r.stderr
    assert "written 12" in r.stdout and out.is_file()
