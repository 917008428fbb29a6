# Copyright (c) medfuse contributors
# Licensed under the Apache License, Version 2.0
"""Fail-safe training on the classification base bundle: kill and resume, run status, finished-run folders."""

from __future__ import annotations

import csv
import json
import os
import subprocess
import sys

import pytest
import torch

from medfuse.errors import DataError
from medfuse.workflows.runs import latest_run
from tests.bundles.helpers import REPO, configs, run_workflow, tiny_overrides

CFG = configs("cxr_dual_cross_attention")
SMALL = {"epochs": 3, "max_items": 8, "image_size": 32, "calibrate": False, "early_stop_patience": 10}


def _cli_train(overrides: dict, cwd) -> subprocess.CompletedProcess:
    cmd = [sys.executable, "-m", "monai.bundle", "run", "--config_file", str(CFG / "train.json"),
           "--meta_file", str(CFG / "metadata.json")]
    for k, v in overrides.items():
        cmd += [f"--{k}", json.dumps(v) if isinstance(v, list) else str(v)]
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(REPO)}
    return subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, text=True, timeout=600)


def _final_weights(run):
    return torch.load(run / "resume.pt", map_location="cpu", weights_only=True)["model"]


@pytest.mark.parametrize("workers", [0, pytest.param(2, marks=pytest.mark.slow)])
def test_kill_and_resume_equals_an_uninterrupted_run(demo_data, tmp_path, workers):
    tiny = {**tiny_overrides(demo_data["cxr"], tmp_path / "runs"), **SMALL, "num_workers": workers}
    run_workflow(CFG / "train.json", "train", run_name="ref", **tiny)
    ref = tmp_path / "runs" / "ref"

    killed = _cli_train({**tiny, "run_name": "cut", "fault_at": "2:2"}, tmp_path)
    assert killed.returncode == 137, killed.stderr[-2000:]
    cut = tmp_path / "runs" / "cut"
    assert json.loads((cut / "run_info.json").read_text())["status"] == "running"
    assert latest_run(tmp_path / "runs") == ref  # the killed run is never "the latest model"
    best_before = (cut / "model.pt").read_bytes()
    run_workflow(CFG / "train.json", "train", run_name="cut", resume="auto", **tiny)
    info = json.loads((cut / "run_info.json").read_text())
    assert info["status"] == "finished" and info["resumed_from"].endswith("resume.pt") and info["skipped_steps"] == 0
    with open(cut / "log.csv") as f:
        rows = list(csv.DictReader(f))
    assert [r["epoch"] for r in rows] == ["1", "2", "3"] and all(r["skipped_steps"] == "0" for r in rows)
    with open(ref / "log.csv") as f:  # the LR schedule went on where it was (resume.pt after the scheduler's step)
        assert [r["lr"] for r in rows] == [r["lr"] for r in csv.DictReader(f)]
    # model.pt is replaced only by a better validation score than the best before the kill (epoch 1's)
    better = any(float(r["val_auc"]) > float(rows[0]["val_auc"]) for r in rows[1:])
    assert ((cut / "model.pt").read_bytes() != best_before) == better
    # 3 epochs in all, as if never interrupted: the same final weights as the uninterrupted run
    ref_w, cut_w = _final_weights(ref), _final_weights(cut)
    assert ref_w.keys() == cut_w.keys()
    diff = max(float((v.float() - cut_w[k].float()).abs().max()) for k, v in ref_w.items())
    assert diff <= 1e-6, f"resumed final weights differ from the uninterrupted run by {diff:.3g}"

def test_finished_run_folder_is_not_trained_into_again(demo_data, tmp_path):
    tiny = {**tiny_overrides(demo_data["cxr"], tmp_path / "runs"), "max_items": 8, "image_size": 32,
            "calibrate": False}
    run_workflow(CFG / "train.json", "train", run_name="done", **tiny)
    info = json.loads((tmp_path / "runs" / "done" / "run_info.json").read_text())
    assert info["status"] == "finished" and len(info["model_sha256"]) == 64
    with pytest.raises(Exception) as err:
        run_workflow(CFG / "train.json", "train", run_name="done", **tiny)
    cause = err.value
    while cause is not None and not isinstance(cause, DataError):
        cause = cause.__cause__
    assert cause is not None and "holds a finished run" in str(cause) and "--overwrite true" in str(cause)
    (tmp_path / "runs" / "done" / "marker.txt").write_text("old")
    run_workflow(CFG / "train.json", "train", run_name="done", overwrite=True, **tiny)
    assert not (tmp_path / "runs" / "done" / "marker.txt").exists()


def test_resume_auto_needs_a_run_name(tmp_path):
    from medfuse.workflows import resume_source

    with pytest.raises(DataError, match="--resume auto needs --run_name"):
        resume_source("auto", tmp_path, run_name="")
    assert resume_source("auto", tmp_path, run_name="x") is None  # nothing to resume: a fresh run
    with pytest.raises(DataError, match="no resume.pt"):
        resume_source("nope", tmp_path, output_dir=str(tmp_path))


def _manifest_with_a_corrupt_png(demo_data, tmp_path):
    """A copy of the demo CXR manifest (absolute paths) whose first training image is text named .png."""
    import hashlib

    src = demo_data["cxr"]
    manifest = json.loads(src.read_text())
    for split in ("training", "validation", "test"):
        for item in manifest[split]:
            for key in ("image", "mask"):
                if item.get(key):
                    item[key] = str(src.parent / item[key])
    bad = tmp_path / "CXR_bad.png"
    bad.write_text("this is a report, not an image")
    manifest["training"][0]["image"] = str(bad)
    manifest["training"][0]["sha256"] = hashlib.sha256(bad.read_bytes()).hexdigest()
    out = tmp_path / "manifest.json"
    out.write_text(json.dumps(manifest))
    return out, bad


def test_corrupt_png_stops_a_bundle_run_with_one_line_naming_the_file(demo_data, tmp_path):
    manifest, bad = _manifest_with_a_corrupt_png(demo_data, tmp_path)
    tiny = {**tiny_overrides(manifest, tmp_path / "runs"), "max_items": 8, "image_size": 32, "calibrate": False}
    proc = _cli_train({**tiny, "run_name": "bad"}, tmp_path)
    assert proc.returncode != 0
    last = proc.stderr.strip().splitlines()[-1]
    assert str(bad) in last and "--on_bad_image skip" in last, proc.stderr[-3000:]
    assert proc.stderr.count("Traceback") == 0, proc.stderr[-3000:]


def test_bad_images_skipped_in_training_and_inference_are_listed(demo_data, tmp_path, capsys):
    manifest, bad = _manifest_with_a_corrupt_png(demo_data, tmp_path)
    tiny = {**tiny_overrides(manifest, tmp_path / "runs"), "max_items": 8, "image_size": 32, "calibrate": False}
    run_workflow(CFG / "train.json", "train", run_name="r", on_bad_image="skip", max_bad_fraction=0.2, **tiny)
    run = tmp_path / "runs" / "r"
    with open(run / "skipped_images.csv") as f:
        rows = list(csv.DictReader(f))
    assert [(r["split"], r["image"], r["stage"]) for r in rows] == [("training", str(bad), "header")]
    info = json.loads((run / "run_info.json").read_text())
    assert info["status"] == "finished" and info["skipped_images"] == {"training": 1}
    assert capsys.readouterr().out.strip().splitlines()[-1] == (
        f"skipped 1 unreadable image(s) (training: 1); list: {run / 'skipped_images.csv'}")
    # inference over a folder with one non-image file: skipped (the default there), every other result written
    folder = tmp_path / "folder"
    folder.mkdir()
    for item in json.loads(manifest.read_text())["training"][1:4]:
        (folder / os.path.basename(item["image"])).write_bytes(open(item["image"], "rb").read())
    (folder / "notes.png").write_text("not an image")
    out = tmp_path / "pred"
    run_workflow(CFG / "inference.json", "infer", run_name="r", input_dir=str(folder), inference_dir=str(out),
                 max_bad_fraction=0.5, **{**tiny, "mc_samples": 0})
    with open(out / "predictions.csv") as f:
        images = [r["image"] for r in csv.DictReader(f)]
    assert len(images) == 3 and not any(i.endswith("notes.png") for i in images)
    with open(out / "skipped_images.csv") as f:
        assert [r["image"] for r in csv.DictReader(f)] == [str(folder / "notes.png")]
    assert capsys.readouterr().out.strip().splitlines()[-1].startswith("skipped 1 unreadable image(s) (inference: 1)")
