# Copyright (c) medfuse contributors
# Licensed under the Apache License, Version 2.0
"""bundles/cxr_multi_output_unet: metadata, network I/O, train (full and partial annotations), evaluate,
inference (masks, probabilities, lung-masked CAM overlays), TorchScript export.

Model-zoo unit-test style: ConfigWorkflow initialize / check_properties / run / finalize on the tiny synthetic
demo data (64 px chest phantoms with lung masks, a 4-16 channel BasicUNet, 2 epochs).
"""

from __future__ import annotations

import csv
import json
import warnings

import numpy as np
import pytest
import torch
from monai.bundle import ConfigParser, ckpt_export, verify_metadata, verify_net_in_out

from medfuse.data.manifest import read_manifest
from medfuse.evaluation import read_predictions
from tests.bundles.helpers import SCHEMA, configs, flat_config, layered, run_workflow, torchrun_multi_gpu
from tests.tiny import bundle_overrides

BUNDLE = "cxr_multi_output_unet"
CFG = configs(BUNDLE)
FEATURES = [4, 4, 8, 8, 16, 4]


def tiny_overrides(manifest, output_dir) -> dict:
    return bundle_overrides(BUNDLE, manifest, output_dir, epochs=2, learning_rate=0.01)


ARCHITECTURE = ("image_size", "features")


def without_architecture(overrides: dict) -> dict:
    return {k: v for k, v in overrides.items() if k not in ARCHITECTURE}


@pytest.fixture(scope="module")
def trained(demo_data, tmp_path_factory):
    out = tmp_path_factory.mktemp("mou_runs")
    tiny = tiny_overrides(demo_data["cxr"], out)
    wf = run_workflow(CFG / "train.json", "train", run_name="tiny", **tiny)
    return {"run_dir": out / "tiny", "tiny": tiny, "workflow": wf}


def test_metadata(shared_data):
    verify_metadata(meta_file=str(CFG / "metadata.json"), filepath=str(shared_data / SCHEMA))


def test_net_in_out(demo_data):
    """network_def is in the single-tensor 'seg' mode the metadata describes (2 channels, background + lung)."""
    verify_net_in_out(
        net_id="network_def", meta_file=str(CFG / "metadata.json"), config_file=layered(CFG / "train.json"),
        device="cpu", manifest=str(demo_data["cxr"]), features=FEATURES,
    )


def test_train_run_folder(trained):
    run = trained["run_dir"]
    for name in ("model.pt", "config.json", "run_info.json", "log.csv", "log.jsonl"):
        assert (run / name).is_file(), name
    with open(run / "log.csv") as f:
        rows = list(csv.DictReader(f))
    assert [r["epoch"] for r in rows] == ["1", "2"]
    assert {"train_loss", "val_dice", "val_iou", "val_auc", "val_acc", "lr", "time_s"} <= set(rows[0])
    for r in rows:
        assert 0.0 < float(r["val_dice"]) <= 1.0 and 0.0 < float(r["val_iou"]) <= float(r["val_dice"]) + 1e-9
    # the lung phantoms are easy: the segmentation learns within two tiny epochs
    assert max(float(r["val_dice"]) for r in rows) > 0.5
    info = json.loads((run / "run_info.json").read_text())
    assert info["classes"] == ["normal", "opacity"] and info["seg_classes"] == ["background", "lung"]
    state = torch.load(run / "model.pt", map_location="cpu", weights_only=True)
    parser = ConfigParser()
    parser.read_config(str(run / "config.json"))
    parser.get_parsed_content("network_def").load_state_dict(state)


def test_training_wiring(trained):
    parser = trained["workflow"].parser
    trainer = parser.get_parsed_content("train#trainer")
    assert parser.get_parsed_content("validate#evaluator").state.key_metric_name == "val_dice"
    assert parser.get_parsed_content("validate#early_stop")._handler.trainer is trainer
    loss = parser.get_parsed_content("loss")
    assert loss.seg_weight == 1.0 and loss.cls_weight == 0.5 and loss.class_weights.shape == (2,)
    assert loss.last["n_seg"] > 0 and loss.last["n_cls"] > 0
    assert parser.get_parsed_content("network").output == "both"  # restored after the head's calibration


def test_diagnosis_head_calibration(trained):
    """Training ends by fitting calibration.json on the labelled validation items with the class head alone."""
    run = trained["run_dir"]
    cal = json.loads((run / "calibration.json").read_text())
    n_val = len(read_manifest(trained["tiny"]["manifest"], validate=False)["validation"])
    assert cal["classes"] == ["normal", "opacity"] and cal["temperature"] > 0 and cal["fitted_on"]["n"] == n_val
    rows = (run / "validation_predictions.csv").read_text().splitlines()
    assert len(rows) == n_val + 1 and rows[0].split(",")[:2] == ["image", "label"]


def _partial_manifest(src, dst):
    """The demo manifest with the mask removed from every other training item and the label from the rest."""
    m = read_manifest(src, validate=False)
    for i, it in enumerate(m["training"]):
        it["image"] = str((src.parent / it["image"]).resolve())
        it["mask"] = str((src.parent / it["mask"]).resolve())
        del it[("mask", "label")[i % 2]]
    for split in ("validation", "test"):
        for it in m[split]:
            it["image"] = str((src.parent / it["image"]).resolve())
            it["mask"] = str((src.parent / it["mask"]).resolve())
    dst.write_text(json.dumps(m))
    return dst, len(m["training"])


def test_train_with_partial_annotations(demo_data, tmp_path):
    """Half the training items have only a mask, half only a label: each item feeds exactly its own term."""
    from ignite.engine import Events
    from monai.bundle import ConfigWorkflow

    manifest, n = _partial_manifest(demo_data["cxr"], tmp_path / "partial.json")
    wf = ConfigWorkflow(config_file=layered(CFG / "train.json"), meta_file=str(CFG / "metadata.json"), workflow_type="train",
                        run_name="partial", **{**tiny_overrides(manifest, tmp_path), "epochs": 1})
    wf.initialize()
    loss = wf.parser.get_parsed_content("loss")
    trainer = wf.parser.get_parsed_content("train#trainer")
    counts = {"n_seg": 0, "n_cls": 0, "finite": True}

    @trainer.on(Events.ITERATION_COMPLETED)
    def _count(engine):
        counts["n_seg"] += loss.last["n_seg"]
        counts["n_cls"] += loss.last["n_cls"]
        counts["finite"] &= bool(np.isfinite(engine.state.output[0]["loss"]))

    wf.run()
    wf.finalize()
    assert counts == {"n_seg": (n + 1) // 2, "n_cls": n // 2, "finite": True}
    with open(tmp_path / "partial" / "log.csv") as f:
        (row,) = list(csv.DictReader(f))
    assert float(row["val_dice"]) > 0  # validation items keep both annotations


def test_evaluate(trained):
    run_workflow([CFG / "train.json", CFG / "evaluate.json"], "train", run_name="tiny",
                 **without_architecture(trained["tiny"]))
    ev = trained["run_dir"] / "eval"
    metrics = json.loads((ev / "metrics.json").read_text())
    n_test = len(read_manifest(trained["tiny"]["manifest"], validate=False)["test"])
    assert metrics["n"] == n_test and metrics["classes"] == ["normal", "opacity"]
    seg = json.loads((ev / "segmentation_metrics.json").read_text())
    assert seg["n_cases"] == n_test and seg["skipped_without_mask"] == 0
    lung = seg["per_class"]["lung"]
    assert set(lung) == {"dice", "iou", "hd95"} and 0 < lung["dice"]["mean"] <= 1
    with open(ev / "segmentation_per_case.csv") as f:
        rows = list(csv.DictReader(f))
    assert len(rows) == n_test
    assert abs(np.mean([float(r["dice_lung"]) for r in rows]) - lung["dice"]["mean"]) < 1e-5
    cam = seg["cam_inside_lungs"]
    assert cam["n_images"] == n_test
    for key in ("unmasked", "lung_masked"):
        assert cam[key]["mean"] is None or 0.0 <= cam[key]["mean"] <= 1.0
    assert metrics["calibration"]["applied"] and metrics["calibration"]["source"].endswith("calibration.json")
    # the shared report carries the segmentation results next to the diagnosis
    assert metrics["segmentation"]["per_class"] == seg["per_class"]
    page = (ev / "index.html").read_text()
    assert "<h2>Segmentation</h2>" in page and f"{lung['dice']['mean']:.4f}" in page


def test_inference_masks_probabilities_and_cam(trained, demo_data, tmp_path):
    run_workflow(CFG / "inference.json", "infer", run_name="tiny", **without_architecture(trained["tiny"]),
                 inference_dir=str(tmp_path / "inf"), save_nifti=True)
    pred = read_predictions(tmp_path / "inf" / "predictions.csv")
    n = len(pred["images"])
    assert n > 0 and pred["labels"] is not None and abs(pred["probs"].sum(1) - 1).max() < 1e-4
    with open(tmp_path / "inf" / "masks" / "masks.csv") as f:
        masks = list(csv.DictReader(f))
    assert [m["image"] for m in masks] == pred["images"]
    from PIL import Image

    for m in masks:
        png = np.asarray(Image.open(tmp_path / "inf" / "masks" / m["mask"]))
        original = np.asarray(Image.open(m["image"]))
        assert png.shape == original.shape[:2] and set(np.unique(png)) <= {0, 255}
        assert (tmp_path / "inf" / "masks" / m["mask"].replace(".png", ".nii.gz")).is_file()
    with open(tmp_path / "inf" / "cam" / "index.csv") as f:
        cams = list(csv.DictReader(f))
    assert len(cams) == n and all((tmp_path / "inf" / "cam" / c["overlay"]).is_file() for c in cams)


def test_inference_on_a_dicom_folder(trained, demo_data, tmp_path):
    dicom_dir = demo_data["cxr"].parent / "cxr" / "dicom"
    files = sorted(dicom_dir.glob("*.dcm"))
    run_workflow(CFG / "inference.json", "infer", run_name="tiny", input_dir=str(dicom_dir),
                 inference_dir=str(tmp_path / "dcm"), save_cam=False, **without_architecture(trained["tiny"]))
    pred = read_predictions(tmp_path / "dcm" / "predictions.csv")
    assert len(pred["images"]) == len(files) and pred["labels"] is None
    assert pred["classes"] == ["normal", "opacity"]
    assert not (tmp_path / "dcm" / "cam").exists()
    assert len(list((tmp_path / "dcm" / "masks").glob("*_mask.png"))) == len(files)


@pytest.mark.parametrize("output", ["seg", "cls"])
def test_ckpt_export_round_trip(trained, tmp_path, output):
    run = trained["run_dir"]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        ckpt_export(
            net_id="network_def", filepath=str(tmp_path / "model.ts"), ckpt_file=str(run / "model.pt"),
            meta_file=str(CFG / "metadata.json"), config_file=flat_config(CFG / "train.json", tmp_path / "flat"),
            manifest=trained["tiny"]["manifest"], features=FEATURES, export_output=output,
        )
        scripted = torch.jit.load(str(tmp_path / "model.ts"))
    parser = ConfigParser()
    parser.read_config(str(run / "config.json"))
    net = parser.get_parsed_content("network_def")
    net.load_state_dict(torch.load(run / "model.pt", map_location="cpu", weights_only=True))
    x = torch.rand(2, 1, 64, 64)
    with torch.no_grad():
        seg, cls = net.eval().forward_all(x)
        torch.testing.assert_close(scripted(x), seg if output == "seg" else cls, rtol=1e-4, atol=1e-5)


@pytest.mark.slow
def test_torchrun_multi_gpu_config_on_cpu(demo_data, tmp_path):
    """multi_gpu_train.json with two processes (gloo on CPU): one run folder, metrics gathered, rank-0 files only."""
    run = torchrun_multi_gpu(CFG, tiny_overrides(demo_data["cxr"], tmp_path / "runs"), tmp_path)
    info = json.loads((run / "run_info.json").read_text())
    assert info["world_size"] == 2 and info["workflow"] == "multi_gpu_train"
    rows = [json.loads(r) for r in (run / "log.jsonl").read_text().splitlines()]
    assert len(rows) == 2 and all(0 < r["val_dice"] <= 1 for r in rows)
    assert (run / "model.pt").is_file()
    assert json.loads((run / "calibration.json").read_text())["temperature"] > 0  # rank 0, after training
