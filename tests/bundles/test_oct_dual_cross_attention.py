# Copyright (c) medfuse contributors
# Licensed under the Apache License, Version 2.0
"""bundles/oct_dual_cross_attention: metadata, network I/O, fixed classes, train, evaluate, inference.

Model-zoo unit-test style on the tiny synthetic demo data (64 px B-scans, EfficientNet-B0 +
ResNet10, fusion width 16, 1 epoch).
"""

from __future__ import annotations

import json

import pytest
from monai.bundle import ConfigWorkflow, verify_metadata, verify_net_in_out

from medfuse.errors import ManifestError
from medfuse.evaluation import read_predictions
from medfuse.workflows import run_bundle
from tests.bundles.helpers import SCHEMA, configs, layered, run_workflow, tiny_overrides, without_architecture

BUNDLE = "oct_dual_cross_attention"
CFG = configs(BUNDLE)
OCT_CLASSES = ["CNV", "DME", "DRUSEN", "NORMAL"]


@pytest.fixture(scope="module")
def trained(demo_data, tmp_path_factory):
    """One tiny training run (inverse-frequency loss weights, cosine schedule), through run_bundle."""
    out = tmp_path_factory.mktemp("oct_runs")
    tiny = tiny_overrides(demo_data["oct"], out)
    result = run_bundle(BUNDLE, "train", run_suffix="tiny", **tiny)
    runs = [p for p in out.iterdir() if p.is_dir()]
    assert len(runs) == 1 and runs[0].name.endswith("-tiny")  # timestamp + suffix
    assert result["run_dir"] == runs[0] and result["checkpoint"].is_file()
    assert result["epochs_run"] == 1 and 0.0 <= result["best_val_auc"] <= 1.0
    assert result["key_metric"] == "val_auc" and result["best_val_metric"] == result["best_val_auc"]
    return {"run_dir": runs[0], "tiny": tiny}


def test_metadata(shared_data):
    verify_metadata(meta_file=str(CFG / "metadata.json"), filepath=str(shared_data / SCHEMA))


def test_net_in_out(demo_data):
    verify_net_in_out(
        net_id="network_def",
        meta_file=str(CFG / "metadata.json"),
        config_file=layered(CFG / "train.json"),
        device="cpu",
        manifest=str(demo_data["oct"]),
        backbones=["efficientnet-b0", "resnet10"],
        hidden_size=16,
        num_heads=2,
    )


def test_rejects_other_classes(demo_data, tmp_path):
    wf = ConfigWorkflow(
        config_file=layered(CFG / "train.json"), workflow_type="train", logging_file=False,
        **tiny_overrides(demo_data["cxr"], tmp_path),
    )
    with pytest.raises(RuntimeError) as err:  # MONAI wraps errors raised inside config expressions
        wf.initialize()
    cause = err.value
    while cause is not None and not isinstance(cause, ManifestError):
        cause = cause.__cause__
    assert cause is not None, err.value
    assert "do not match this bundle's classes ['CNV', 'DME', 'DRUSEN', 'NORMAL']" in str(cause)


def test_train_and_evaluate(trained):
    run = trained["run_dir"]
    assert (run / "model.pt").is_file() and (run / "log.jsonl").is_file()
    row = json.loads((run / "log.jsonl").read_text().splitlines()[0])
    assert row["epoch"] == 1 and 0.0 <= row["val_auc"] <= 1.0
    assert json.loads((run / "run_info.json").read_text())["classes"] == OCT_CLASSES
    # evaluate the latest run (no run name given) on the test split, with MC dropout
    run_workflow([CFG / "train.json", CFG / "evaluate.json"], "train", **trained["tiny"])
    metrics = json.loads((run / "eval" / "metrics.json").read_text())
    again = run_bundle(BUNDLE, "evaluate", logging=False, **without_architecture(trained["tiny"]))
    assert again["run_dir"] == run and again["metrics"]["n"] == 10
    assert metrics["n"] == 10 and metrics["positive_class"] is None and len(metrics["confusion_matrix"]) == 4
    assert set(metrics["per_class"]) == set(OCT_CLASSES)
    pred = read_predictions(run / "eval" / "predictions.csv")
    assert pred["classes"] == OCT_CLASSES and pred["mutual_info"] is not None


def test_inference_png_folder_and_dicom_volumes(trained, demo_data, tmp_path):
    # no manifest and no network keys: classes and architecture come from the training run
    tiny = {k: v for k, v in without_architecture(trained["tiny"]).items() if k != "manifest"}
    root = demo_data["oct"].parent / "oct"
    png = [p for p in root.rglob("*.png")]
    run_workflow(CFG / "inference.json", "infer", input_dir=str(root), inference_dir=str(tmp_path / "all"), **tiny)
    pred = read_predictions(tmp_path / "all" / "predictions.csv")
    volumes = list((root / "dicom").glob("*.dcm"))
    assert len(pred["images"]) == len(png) + len(volumes)  # B-scans and the middle frame of each volume
    assert pred["labels"] is None and pred["classes"] == OCT_CLASSES
    assert (pred["entropy"] >= 0).all() and (pred["mutual_info"] >= 0).all()
