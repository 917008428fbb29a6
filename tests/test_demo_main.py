# Copyright (c) medfuse contributors
# Licensed under the Apache License, Version 2.0
"""``python -m medfuse.demo`` (what ``make demo`` runs): steps, data reuse, closing summary."""

import json
import subprocess
import sys
from pathlib import Path

import pytest

from medfuse import demo
from medfuse.data.demo import STAMP_NAME

REPO = Path(__file__).resolve().parents[1]
SMALL = ["--n-cxr", "8", "--n-oct", "8", "--size", "48"]
DATA_STEPS = ["--steps", "data,validate"]


def test_demo_builds_validates_then_reuses(tmp_path, capsys):
    out = tmp_path / "run"
    assert demo.main(["--out", str(out)] + SMALL + DATA_STEPS) == 0
    text = capsys.readouterr().out
    assert "[1/2] data" in text and "[2/2] validate" in text
    assert "generating 8 chest phantoms and 8 OCT B-scans" in text
    assert "task: segmentation_classification" in text  # the data summary
    assert "== medfuse demo done" in text and "status: built" in text
    for name in ("cxr_manifest.json", "cxr_dicom_manifest.json", "oct_manifest.json", "oct_dicom_manifest.json"):
        assert str(out / "data" / name) in text
    summary = json.loads((out / "demo_summary.json").read_text())
    assert summary["results"]["data"]["manifests"]["cxr"] == str(out / "data" / "cxr_manifest.json")
    assert summary["results"]["validate"]["valid_manifests"] == 4
    assert set(summary["seconds"]) == {"data", "validate"}
    stamp_before = (out / "data" / STAMP_NAME).read_text()

    # same parameters: the data are reused, not rebuilt
    assert demo.main(["--out", str(out)] + SMALL + DATA_STEPS) == 0
    text = capsys.readouterr().out
    assert "reusing" in text and "status: reused" in text
    assert (out / "data" / STAMP_NAME).read_text() == stamp_before

    # other parameters: rebuilt
    assert demo.main(["--out", str(out), "--steps", "data", "--seed", "5"] + SMALL) == 0
    text = capsys.readouterr().out
    assert "status: built" in text and "[1/1] data" in text
    assert json.loads((out / "data" / STAMP_NAME).read_text())["parameters"]["seed"] == 5


def test_steps_selection_and_errors(tmp_path, capsys):
    out = tmp_path / "run"
    assert demo.main(["--out", str(out), "--steps", "validate"] + SMALL) == 1  # no data yet
    assert "run the 'data' step first" in capsys.readouterr().err
    with pytest.raises(SystemExit) as e:
        demo.main(["--out", str(out), "--steps", "data,train_everything"])
    assert e.value.code == 2
    assert "unknown step" in capsys.readouterr().err
    with pytest.raises(SystemExit) as e:
        demo.main(["--out", str(out), "--n-cxr", "0", "--n-oct", "0"])
    assert e.value.code == 2
    foreign = tmp_path / "foreign"
    (foreign / "data").mkdir(parents=True)
    (foreign / "data" / "x.txt").write_text("x")
    assert demo.main(["--out", str(foreign), "--steps", "data"] + SMALL) == 1
    assert "not a medfuse demo data folder" in capsys.readouterr().err


def test_steps_are_extensible(tmp_path, capsys, monkeypatch):
    calls = []

    def step_extra(ctx):
        calls.append(sorted(ctx.results))
        return {"model": ctx.out / "model.pt", "accuracy": 1.0}

    monkeypatch.setattr(demo, "STEPS", demo.STEPS + [demo.DemoStep("extra", step_extra, "a later step")])
    assert demo.main(["--out", str(tmp_path / "run"), "--steps", "data,extra", "--no-dicom"] + SMALL) == 0
    text = capsys.readouterr().out
    assert calls == [["data"]]  # later steps see earlier results
    assert "[2/2] extra: a later step" in text and "accuracy: 1.0" in text
    assert f"model: {tmp_path / 'run' / 'model.pt'}" in text


def test_module_entry_point_help():
    r = subprocess.run([sys.executable, "-m", "medfuse.demo", "--help"], capture_output=True, text=True,
                       cwd=REPO, timeout=120)
    assert r.returncode == 0 and "--out" in r.stdout and "data, validate" in r.stdout


def test_full_demo_trains_evaluates_and_infers(tmp_path, capsys):
    """Every step of ``make demo``, with the tiny network: a trained run, metrics, DICOM-folder predictions."""
    out = tmp_path / "run"
    args = ["--out", str(out), "--n-cxr", "24", "--n-oct", "8", "--size", "64", "--tiny"]
    assert demo.main(args) == 0
    text = capsys.readouterr().out
    assert [s.name for s in demo.STEPS] == ["data", "validate", "train", "evaluate", "infer", "export", "predict"]
    assert "[5/7] infer" in text and "[6/7] export" in text and "[7/7] predict" in text
    summary = json.loads((out / "demo_summary.json").read_text())
    res = summary["results"]
    run_dir = out / "runs" / demo.DEMO_BUNDLE / "demo"
    assert res["train"]["run_dir"] == str(run_dir) and (run_dir / "model.pt").is_file()
    assert res["train"]["epochs_run"] == 1
    metrics = json.loads((run_dir / "eval" / "metrics.json").read_text())
    assert res["evaluate"]["auc"] == metrics["auc"] and 0.0 <= metrics["auc"] <= 1.0
    assert res["evaluate"]["n"] == metrics["n"] > 0
    dicoms = sorted((out / "data" / "cxr" / "dicom").glob("*.dcm"))
    assert res["infer"]["images"] == len(dicoms) > 0
    rows = (run_dir / "inference" / "predictions.csv").read_text().strip().splitlines()
    assert len(rows) == len(dicoms) + 1 and "mutual_info" in rows[0]
    # the closing summary names the metrics and the output paths
    assert str(run_dir / "eval" / "metrics.json") in text and "evaluate.auc" not in text
    assert "auc:" in text and str(run_dir / "inference" / "predictions.csv") in text
    # the export step: a local zoo under <out>/zoo, named in the closing summary
    zoo = out / "zoo"
    assert res["export"]["zoo"] == str(zoo) and f"zoo: {zoo}" in text
    assert (zoo / "releases" / f"{demo.DEMO_BUNDLE}_v0.1.0.zip").is_file()
    assert f"{demo.DEMO_BUNDLE}_v0.1.0" in json.loads((zoo / "model_info.json").read_text())
    # the metadata schema is checked where the shared data has it, and the summary says when it was not
    from medfuse.zoo.checks import default_schema_path

    expected = "checked" if default_schema_path() is not None else "NOT checked (no schema file)"
    assert res["export"]["metadata_schema"] == expected and f"metadata_schema: {expected}" in text
    # the demo ends with medfuse predict on one DICOM file, with the exported release
    assert res["predict"]["model"] == res["export"]["release"] and res["predict"]["input_check"] == "ok"
    assert res["predict"]["input"].endswith(".dcm") and res["predict"]["pred"] in ("normal", "opacity")
    assert "$ medfuse predict " in text and "inputs: 1, scored 1, skipped 0" in text
