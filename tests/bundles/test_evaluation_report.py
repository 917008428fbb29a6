# Copyright (c) medfuse contributors
# Licensed under the Apache License, Version 2.0
"""Bundle integration of the evaluation layer: calibration.json after training, the evaluate report, and
inference that follows the validated threshold (tiny CXR runs on the synthetic demo data)."""

from __future__ import annotations

import json
import re
import shutil

import numpy as np
import pytest

from medfuse.evaluation import read_predictions, temperature_scale
from tests.bundles.helpers import configs, run_workflow, tiny_overrides, without_architecture

BUNDLE = "cxr_dual_cross_attention"
CFG = configs(BUNDLE)


@pytest.fixture(scope="module")
def trained(demo_data, tmp_path_factory):
    out = tmp_path_factory.mktemp("eval_runs")
    tiny = tiny_overrides(demo_data["cxr"], out)
    run_workflow(CFG / "train.json", "train", run_name="ev", **tiny)
    return {"run_dir": out / "ev", "tiny": tiny}


def test_training_writes_calibration_beside_the_checkpoint(trained):
    run = trained["run_dir"]
    cal = json.loads((run / "calibration.json").read_text())
    assert cal["format"] == "medfuse-calibration/1" and cal["classes"] == ["normal", "opacity"]
    assert cal["temperature"] > 0 and cal["target_sensitivity"] == 0.9
    assert cal["fitted_on"]["split"] == "validation" and cal["fitted_on"]["mc_samples"] == 3
    assert cal["fitted_on"]["checkpoint"] == str(run / "model.pt")
    val = read_predictions(run / "validation_predictions.csv")
    assert len(val["images"]) == cal["fitted_on"]["n"] == sum(cal["fitted_on"]["n_per_class"].values())
    if cal["threshold"] is not None:
        scaled = temperature_scale(val["probs"], cal["temperature"])
        pos = val["labels"] == 1
        # the CSV keeps 6 significant digits: allow that rounding at the threshold itself
        assert (scaled[pos, 1] >= cal["threshold"] - 1e-5).mean() >= 0.9


def test_evaluate_writes_the_full_report(trained):
    overrides = dict(without_architecture(trained["tiny"]), gallery_size=2, n_boot=100)
    run_workflow([CFG / "train.json", CFG / "evaluate.json"], "train", run_name="ev", **overrides)
    ev = trained["run_dir"] / "eval"
    m = json.loads((ev / "metrics.json").read_text())
    assert m["calibration"]["applied"] and m["calibration"]["source"] == str(trained["run_dir"] / "calibration.json")
    from medfuse.evaluation.bootstrap import MIN_CASES_PER_CLASS

    # the bootstrap is drawn only with enough cases of every class; the tiny demo test split may have fewer
    labels = read_predictions(ev / "predictions.csv")["labels"]
    drawn = min(int((labels == k).sum()) for k in (0, 1)) >= MIN_CASES_PER_CLASS
    assert (m["ci"]["n_boot"] == 100) == drawn and m["ci"].get("n_too_small", False) == (not drawn)
    assert "subgroups" in m and "selective" in m
    for key in ("roc", "reliability", "confusion", "entropy", "risk_coverage", "gallery"):
        assert (ev / m["figures"][key]).is_file(), key
    overlays = sorted((ev / "cam").glob("*.png"))
    assert len(overlays) == 2 and (ev / "cam" / "index.csv").is_file()
    html = (ev / "index.html").read_text()
    assert "cxr_dual_cross_attention" in html and "Run configuration" in html and "image_size" in html
    assert "cxr_manifest.json" in html  # data summary of the manifest
    for src in re.findall(r'<img src="([^"]+)"', html):
        assert (ev / src).is_file(), src
    # pred in the evaluation predictions follows the validated threshold
    cal = json.loads((trained["run_dir"] / "calibration.json").read_text())
    pred = read_predictions(ev / "predictions.csv")
    if cal["decision"] == "threshold":
        np.testing.assert_array_equal(pred["pred"], (pred["probs"][:, 1] >= cal["threshold"]).astype(int))
    info = json.loads((ev / "run_info.json").read_text())
    assert info["calibration"] == str(trained["run_dir"] / "calibration.json")


def test_inference_applies_calibration_and_falls_back_without_it(trained, tmp_path):
    tiny = dict(trained["tiny"], mc_samples=0)
    run_workflow(CFG / "inference.json", "infer", run_name="ev", **tiny)
    calibrated = read_predictions(trained["run_dir"] / "inference" / "predictions.csv")
    cal = json.loads((trained["run_dir"] / "calibration.json").read_text())
    # the same checkpoint without its calibration.json: raw probabilities and arg-max, and the record says so
    ckpt = tmp_path / "weights" / "model.pt"
    ckpt.parent.mkdir()
    shutil.copy(trained["run_dir"] / "model.pt", ckpt)
    out = tmp_path / "runs"
    run_workflow(CFG / "inference.json", "infer", ckpt_path=str(ckpt), classes=["normal", "opacity"],
                 **{**tiny, "output_dir": str(out)})
    (run,) = list(out.iterdir())
    raw = read_predictions(run / "inference" / "predictions.csv")
    assert json.loads((run / "inference" / "run_info.json").read_text())["calibration"].startswith("none")
    np.testing.assert_array_equal(raw["pred"], raw["probs"].argmax(1))
    np.testing.assert_allclose(calibrated["probs"], temperature_scale(raw["probs"], cal["temperature"]), atol=1e-5)
    if cal["decision"] == "threshold":
        np.testing.assert_array_equal(calibrated["pred"], (calibrated["probs"][:, 1] >= cal["threshold"]).astype(int))
    # an exported bundle keeps calibration.json beside models/model.pt: "beside the checkpoint" finds it there too
    models = tmp_path / "bundle" / "models"
    models.mkdir(parents=True)
    shutil.copy(trained["run_dir"] / "model.pt", models / "model.pt")
    shutil.copy(trained["run_dir"] / "calibration.json", models / "calibration.json")
    out2 = tmp_path / "runs2"
    run_workflow(CFG / "inference.json", "infer", ckpt_path=str(models / "model.pt"), classes=["normal", "opacity"],
                 **{**tiny, "output_dir": str(out2)})
    (run2,) = list(out2.iterdir())
    again = read_predictions(run2 / "inference" / "predictions.csv")
    np.testing.assert_allclose(again["probs"], calibrated["probs"], atol=1e-6)
    assert json.loads((run2 / "inference" / "run_info.json").read_text())["calibration"] == str(models / "calibration.json")
