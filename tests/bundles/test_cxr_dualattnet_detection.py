# Copyright (c) medfuse contributors
# Licensed under the Apache License, Version 2.0
"""bundles/cxr_dualattnet_detection: metadata, dense network I/O, train (attention on / off), evaluate (metrics,
FROC, boxes, report section), inference (manifest and folder, overlays), ckpt_export, bad boxes, torchrun.

Model-zoo unit-test style on the synthetic detection demo (24 images of 64 px, resnet18, FPN width 32, 1 epoch).
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
from tests.bundles.helpers import SCHEMA, configs, flat_config, layered, run_workflow, torchrun_multi_gpu
from tests.tiny import bundle_overrides

BUNDLE = "cxr_dualattnet_detection"
CFG = configs(BUNDLE)
CLASSES = ["opacity", "nodule"]
ARCHITECTURE = ("image_size", "backbone", "fpn_channels", "base_anchor_shapes", "attention")


def tiny_overrides(manifest, output_dir) -> dict:
    return bundle_overrides(BUNDLE, manifest, output_dir, learning_rate=0.001, amp=False)


def without_architecture(overrides: dict) -> dict:
    return {k: v for k, v in overrides.items() if k not in ARCHITECTURE}


@pytest.fixture(scope="module")
def trained(det_data, tmp_path_factory):
    out = tmp_path_factory.mktemp("det_runs")
    tiny = tiny_overrides(det_data, out)
    wf = run_workflow(CFG / "train.json", "train", run_name="tiny", pos_weight="balanced", **tiny)
    return {"run_dir": out / "tiny", "tiny": tiny, "workflow": wf, "out": out}


def _rows(path):
    with open(path) as f:
        return list(csv.DictReader(f))


def test_metadata(shared_data):
    verify_metadata(meta_file=str(CFG / "metadata.json"), filepath=str(shared_data / SCHEMA))


def test_net_in_out(det_data):
    """network_def is the single-tensor 'dense' mode: (B, K + 4, anchors)."""
    verify_net_in_out(net_id="network_def", meta_file=str(CFG / "metadata.json"), config_file=layered(CFG / "train.json"),
                      device="cpu", manifest=str(det_data), backbone="resnet18", fpn_channels=32)


def test_train_run_folder(trained):
    run = trained["run_dir"]
    for name in ("model.pt", "config.json", "run_info.json", "log.csv", "log.jsonl"):
        assert (run / name).is_file(), name
    rows = _rows(run / "log.csv")
    assert [r["epoch"] for r in rows] == ["1"]
    assert {"train_loss", "val_map", "val_ap50", "val_ap40", "val_image_auc", "lr", "time_s"} <= set(rows[0])
    for key in ("val_map", "val_ap50", "val_ap40", "val_image_auc"):
        assert 0.0 <= float(rows[0][key]) <= 1.0
    assert np.isfinite(float(rows[0]["train_loss"]))
    info = json.loads((run / "run_info.json").read_text())
    assert info["classes"] == CLASSES
    parser = trained["workflow"].parser
    assert parser.get_parsed_content("validate#evaluator").state.key_metric_name == "val_map"
    det = parser.get_parsed_content("detector")
    assert det.pos_weight is not None and det.pos_weight.shape == (2,)
    assert set(parser.get_parsed_content("loss").last) == {"classification", "box_regression", "attention"}
    state = torch.load(run / "model.pt", map_location="cpu", weights_only=True)
    p = ConfigParser()
    p.read_config(str(run / "config.json"))
    p.get_parsed_content("network_def").load_state_dict(state)


def test_baseline_without_attention(det_data, tmp_path):
    wf = run_workflow(CFG / "train.json", "train", run_name="plain", attention=False, **tiny_overrides(det_data, tmp_path))
    assert not wf.parser.get_parsed_content("network").attention_heads
    assert set(wf.parser.get_parsed_content("loss").last) == {"classification", "box_regression"}
    assert "val_map" in _rows(tmp_path / "plain" / "log.csv")[0]


def test_evaluate(trained):
    run_workflow([CFG / "train.json", CFG / "evaluate.json"], "train", run_name="tiny", n_boot=20, eval_overlays=2,
                 **without_architecture(trained["tiny"]))
    ev = trained["run_dir"] / "eval"
    n_test = len(read_manifest(trained["tiny"]["manifest"], validate=False)["test"])
    det = json.loads((ev / "detection_metrics.json").read_text())
    assert det["n_images"] == n_test and set(det["ap_iou"]) == {"0.40", "0.50"} and set(det["per_class"]) == set(CLASSES)
    assert det["iou_range"] == [0.5, 0.95, 0.05]
    fr = json.loads((ev / "froc.json").read_text())
    assert fr["iou_threshold"] == 0.4 and len(fr["sensitivity"]) == 7
    boxes = _rows(ev / "boxes.csv")
    assert list(boxes[0]) if boxes else True
    assert (ev / "boxes.csv").read_text().splitlines()[0] == "image,x1,y1,x2,y2,class,score"
    for b in boxes:
        assert b["class"] in CLASSES and 0 <= float(b["x1"]) <= float(b["x2"]) <= 64 and 0 <= float(b["y1"]) <= float(b["y2"]) <= 64
    header = (ev / "predictions.csv").read_text().splitlines()[0].split(",")
    assert header[:5] == ["image", "label_opacity", "label_nodule", "prob_opacity", "prob_nodule"]
    assert len(_rows(ev / "predictions.csv")) == n_test
    metrics = json.loads((ev / "metrics.json").read_text())
    assert metrics["detection"]["map"] == det["map"] and metrics["detection"]["froc"]["mean_sensitivity"] == fr["mean_sensitivity"]
    assert "<h2>Detection</h2>" in (ev / "index.html").read_text()
    assert len(list((ev / "overlays").glob("*.png"))) == 2


def test_inference_boxes_predictions_overlays(trained, tmp_path):
    run_workflow(CFG / "inference.json", "infer", run_name="tiny", inference_dir=str(tmp_path / "inf"), score_thresh=0.0,
                 **without_architecture(trained["tiny"]))
    n_test = len(read_manifest(trained["tiny"]["manifest"], validate=False)["test"])
    assert (tmp_path / "inf" / "boxes.csv").read_text().splitlines()[0] == "image,x1,y1,x2,y2,class,score"
    assert len(_rows(tmp_path / "inf" / "boxes.csv")) > 0  # score_thresh 0: every image keeps boxes
    preds = _rows(tmp_path / "inf" / "predictions.csv")
    assert len(preds) == n_test and {"prob_opacity", "prob_nodule"} <= set(preds[0])
    assert all(0.0 <= float(p["prob_nodule"]) <= 1.0 for p in preds)
    from PIL import Image

    overlays = sorted((tmp_path / "inf" / "overlays").glob("*.png"))
    assert len(overlays) == n_test and Image.open(overlays[0]).size == (64, 64)


def test_inference_on_a_folder(trained, det_data, tmp_path):
    folder = det_data.parent / "cxr_detection"
    run_workflow(CFG / "inference.json", "infer", run_name="tiny", input_dir=str(folder), save_overlays=False,
                 inference_dir=str(tmp_path / "folder"), max_items=5, **without_architecture(trained["tiny"]))
    preds = _rows(tmp_path / "folder" / "predictions.csv")
    assert len(preds) == 5 and "label_opacity" not in preds[0]
    assert not (tmp_path / "folder" / "overlays").exists()


def test_boxes_back_to_original_pixels():
    """Letterbox 200 x 100 (rows x columns) -> 64 and back: predicted boxes land on the stored image, x = column."""
    from medfuse.transforms.boxes import xyxy_to_monai
    from medfuse.workflows.detection import _to_original, boxes_to_original, detection_transforms

    from monai.data import MetaTensor

    import tempfile
    from pathlib import Path

    from PIL import Image

    with tempfile.TemporaryDirectory() as d:
        path = Path(d) / "a.png"
        Image.fromarray((np.random.default_rng(0).random((200, 100)) * 255).astype(np.uint8)).save(path)
        item = detection_transforms(64)({"image": str(path), "boxes": [[10.0, 20.0, 50.0, 180.0]], "box_labels": [0]})
    assert isinstance(item["image"], MetaTensor)
    back = boxes_to_original(item["boxes"], _to_original(item["image"]), (200, 100))
    np.testing.assert_allclose(back, [[10.0, 20.0, 50.0, 180.0]], atol=1e-3)
    assert xyxy_to_monai(back).shape == (1, 4)


@pytest.mark.parametrize("bad, expected", [
    ({"boxes": [[30.0, 10.0, 20.0, 40.0]], "box_labels": [0]}, "x_max >= x_min"),
    ({"boxes": [["a", 10.0, 20.0, 40.0]], "box_labels": [0]}, "numbers"),
    ({"boxes": [[1.0, 1.0, 20.0, 40.0]], "box_labels": [5]}, "['opacity', 'nodule']"),
])
def test_bad_boxes_are_one_line(det_data, tmp_path, bad, expected):
    from medfuse.errors import ManifestError
    from medfuse.workflows.detection import detection_items

    m = read_manifest(det_data, validate=False)
    for split in ("training", "validation", "test"):
        for it in m[split]:
            it["image"] = str((det_data.parent / it["image"]).resolve())
    m["training"][0].update(bad)
    p = tmp_path / "bad.json"
    p.write_text(json.dumps(m))
    with pytest.raises(RuntimeError) as err:  # MONAI wraps the error of a config expression
        run_workflow(CFG / "train.json", "train", run_name="bad", **tiny_overrides(p, tmp_path))
    cause = err.value
    while cause is not None and not isinstance(cause, ManifestError):
        cause = cause.__cause__
    assert isinstance(cause, ManifestError), "the bundle path must reach the manifest validator"
    with pytest.raises(ManifestError) as direct:
        detection_items(p, "training")
    text = str(direct.value)
    assert "\n" not in text and expected in text and "training[0]" in text


def test_ckpt_export_dense_round_trip(trained, tmp_path):
    run = trained["run_dir"]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        ckpt_export(net_id="network_def", filepath=str(tmp_path / "model.ts"), ckpt_file=str(run / "model.pt"),
                    meta_file=str(CFG / "metadata.json"), config_file=flat_config(CFG / "train.json", tmp_path / "flat"),
                    manifest=trained["tiny"]["manifest"], backbone="resnet18", fpn_channels=32)
        scripted = torch.jit.load(str(tmp_path / "model.ts"))
    p = ConfigParser()
    p.read_config(str(run / "config.json"))
    net = p.get_parsed_content("network_def")
    net.load_state_dict(torch.load(run / "model.pt", map_location="cpu", weights_only=True))
    x = torch.rand(2, 1, 64, 64)
    with torch.no_grad():
        ref = net.set_output("dense").eval()(x)
        assert ref.shape == (2, 6, 3 * (64 + 16 + 4 + 1))
        torch.testing.assert_close(scripted(x), ref, rtol=1e-4, atol=1e-5)


@pytest.mark.slow
def test_torchrun_multi_gpu_config_on_cpu(det_data, tmp_path):
    """multi_gpu_train.json with two processes (gloo on CPU): one run folder, validation metrics gathered."""
    run = torchrun_multi_gpu(CFG, tiny_overrides(det_data, tmp_path / "runs"), tmp_path)
    info = json.loads((run / "run_info.json").read_text())
    assert info["world_size"] == 2 and info["workflow"] == "multi_gpu_train"
    rows = [json.loads(r) for r in (run / "log.jsonl").read_text().splitlines()]
    assert len(rows) == 1 and 0 <= rows[0]["val_map"] <= 1
    assert (run / "model.pt").is_file()


def test_inference_on_dicom_overlays_on_the_stored_grid(trained, demo_data, tmp_path):
    """DICOM input: boxes and overlays on the stored Rows x Columns grid."""
    import pydicom
    from PIL import Image

    src = sorted((demo_data["cxr"].parent / "cxr" / "dicom").glob("*.dcm"))[0]
    ds = pydicom.dcmread(src)
    arr = ds.pixel_array[:, :40].copy()  # 64 rows x 40 columns: orientation matters
    ds.set_pixel_data(arr, photometric_interpretation=ds.PhotometricInterpretation, bits_stored=int(ds.BitsStored))
    (tmp_path / "in").mkdir()
    ds.save_as(tmp_path / "in" / "narrow.dcm")
    files = [tmp_path / "in" / "narrow.dcm"]
    run_workflow(CFG / "inference.json", "infer", run_name="tiny", input_dir=str(files[0].parent), score_thresh=0.0,
                 inference_dir=str(tmp_path / "dcm"), **without_architecture(trained["tiny"]))
    assert len(_rows(tmp_path / "dcm" / "predictions.csv")) == len(files)
    ds = pydicom.dcmread(files[0], stop_before_pixels=True)
    from medfuse.utils.images import image_stem

    overlay = Image.open(tmp_path / "dcm" / "overlays" / f"{image_stem(str(files[0]))}.png")
    assert overlay.size == (int(ds.Columns), int(ds.Rows)) == (40, 64)
    boxes = _rows(tmp_path / "dcm" / "boxes.csv")
    assert boxes
    for b in boxes:
        assert 0 <= float(b["x2"]) <= int(ds.Columns) and 0 <= float(b["y2"]) <= int(ds.Rows)
