# Copyright (c) medfuse contributors
# Licensed under the Apache License, Version 2.0
"""Inference with ``save_cam=True`` in both dual cross-attention bundles: CAM overlays and ``cam/index.csv``.

A tiny run (EfficientNet-B0 + ResNet10, width 16, 64 px, one epoch) is trained per bundle on the synthetic
demo data, then ``inference.json`` runs with the CAMWriter handler enabled.
"""

from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from medfuse.evaluation import read_predictions
from tests.bundles.helpers import configs, run_workflow, tiny_overrides

BUNDLES = {"cxr": "cxr_dual_cross_attention", "oct": "oct_dual_cross_attention"}


@pytest.fixture(scope="module")
def tiny_runs(demo_data, tmp_path_factory):
    """``tiny_runs(key)``: one tiny training run of the ``cxr`` / ``oct`` bundle, made on first use."""
    made: dict = {}

    def get(key: str) -> dict:
        if key not in made:
            out = tmp_path_factory.mktemp(f"{key}_cam_runs")
            tiny = tiny_overrides(demo_data[key], out)
            run_workflow(configs(BUNDLES[key]) / "train.json", "train", run_name="tiny", **tiny)
            made[key] = {"key": key, "cfg": configs(BUNDLES[key]), "tiny": tiny, "manifest": Path(demo_data[key])}
        return made[key]

    return get


@pytest.fixture(params=sorted(BUNDLES))
def trained(request, tiny_runs):
    return tiny_runs(request.param)


def _index(cam_dir: Path) -> list[dict]:
    with open(cam_dir / "index.csv", newline="") as f:
        return list(csv.DictReader(f))


def _split_size(manifest: Path, split: str) -> int:
    return len(json.loads(manifest.read_text())[split])


@pytest.mark.parametrize("split,max_images", [("training", 5), ("test", 50)])
def test_inference_writes_cam_overlays(trained, tmp_path, split, max_images):
    inference_dir = tmp_path / "inference"
    wf = run_workflow(
        trained["cfg"] / "inference.json", "infer", run_name="tiny", split=split, inference_dir=str(inference_dir),
        save_cam=True, cam_max_images=max_images, **trained["tiny"],
    )
    handlers = [type(h).__name__ for h in wf.parser.get_parsed_content("handlers")]
    assert handlers == ["CheckpointLoader", "PredictionWriter", "CAMWriter"]
    n_images = _split_size(trained["manifest"], split)
    expected = min(n_images, max_images)
    assert expected >= 1 and (split != "training" or n_images > max_images)  # the cap is exercised

    cam_dir = inference_dir / "cam"
    rows = _index(cam_dir)
    assert len(rows) == expected
    assert sorted(p.name for p in cam_dir.glob("*.png")) == sorted(r["overlay"] for r in rows)
    pred = read_predictions(inference_dir / "predictions.csv")
    assert len(pred["images"]) == n_images
    by_image = {img: i for i, img in enumerate(pred["images"])}
    for row in rows:
        # the overlay explains the class predictions.csv reports, with the same probability
        i = by_image[row["image"]]
        assert row["pred"] == pred["classes"][int(pred["pred"][i])]
        # (pred follows the validated threshold when the calibration has one: not always the arg-max)
        assert float(row["prob"]) == pytest.approx(float(pred["probs"][i][int(pred["pred"][i])]), abs=1e-5)
        assert row["overlay"] == f"{Path(row['image']).stem}_{row['pred']}.png"
        with Image.open(cam_dir / row["overlay"]) as im:
            rgb = np.asarray(im.convert("RGB"))
        assert rgb.shape[1] > rgb.shape[0] > 64  # image | overlay, with a caption
        assert rgb.std() > 5  # not blank
    assert [r["image"] for r in rows] == pred["images"][:expected]


def test_no_cam_by_default(trained, tmp_path):
    inference_dir = tmp_path / "inference"
    wf = run_workflow(trained["cfg"] / "inference.json", "infer", run_name="tiny", inference_dir=str(inference_dir),
                      **{**trained["tiny"], "mc_samples": 0})
    assert wf.parser.get_parsed_content("save_cam") is False
    handlers = [type(h).__name__ for h in wf.parser.get_parsed_content("handlers")]
    assert handlers == ["CheckpointLoader", "PredictionWriter"]
    assert (inference_dir / "predictions.csv").is_file() and not (inference_dir / "cam").exists()


def test_cam_on_a_dicom_folder(tiny_runs, demo_data, tmp_path):
    """A folder of CXR DICOM files (no manifest): overlays named after the .dcm files."""
    trained = tiny_runs("cxr")
    dicom_dir = Path(demo_data["cxr"]).parent / "cxr" / "dicom"
    files = sorted(dicom_dir.glob("*.dcm"))
    assert files
    run_workflow(
        trained["cfg"] / "inference.json", "infer", run_name="tiny", input_dir=str(dicom_dir),
        inference_dir=str(tmp_path / "dicom_pred"), save_cam=True, cam_max_images=3,
        **{**trained["tiny"], "mc_samples": 0},
    )
    rows = _index(tmp_path / "dicom_pred" / "cam")
    assert len(rows) == min(len(files), 3)
    assert [Path(r["image"]).name for r in rows] == [f.name for f in files[: len(rows)]]
    assert all(r["overlay"].startswith(Path(r["image"]).stem + "_") for r in rows)
