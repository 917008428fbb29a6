# Copyright (c) medfuse contributors
# Licensed under the Apache License, Version 2.0
"""Fail safe at the input, through the bundles: a PACS-like folder of mixed DICOM is not all scored as chest
X-rays; ood.json is fitted at the end of training, used by inference, fittable afterwards; evaluate leaves out
refused rows."""

from __future__ import annotations

import csv
import json
import shutil

import pytest

from medfuse.evaluation.ood import load_ood
from tests.bundles.helpers import configs, run_workflow, tiny_overrides
from tests.dicom.helpers import pydicom_file, write_cr

CFG = configs("cxr_dual_cross_attention")


@pytest.fixture(scope="module")
def trained(demo_data, tmp_path_factory):
    out = tmp_path_factory.mktemp("guard_runs")
    tiny = {**tiny_overrides(demo_data["cxr"], out), "mc_samples": 0}
    run_workflow(CFG / "train.json", "train", run_name="tiny", **tiny)
    return {"run_dir": out / "tiny", "tiny": tiny}


def test_training_fits_ood_json(trained):
    model = load_ood(trained["run_dir"] / "ood.json")
    assert model["n_train"] == 18 and model["n_validation"] >= 1 and model["percentile"] == 99.0
    assert len(model["precision"]) == 16  # hidden_size of the tiny network: the classifier's input


def test_inference_on_a_mixed_pacs_folder(trained, demo_data, tmp_path, capsys):
    folder = tmp_path / "pacs"
    folder.mkdir()
    for i, src in enumerate(sorted((demo_data["cxr"].parent / "cxr" / "dicom").glob("*.dcm"))[:3]):
        shutil.copy(src, folder / f"chest{i}.dcm")
    write_cr(folder / "hip.dcm", body_part="HIP")
    write_cr(folder / "us.dcm", modality="US")
    shutil.copy(pydicom_file("MR_small.dcm"), folder / "mr.dcm")
    shutil.copy(pydicom_file("CT_small.dcm"), folder / "ct.dcm")
    out = tmp_path / "pred"
    run_workflow(CFG / "inference.json", "infer", run_name="tiny", input_dir=str(folder), inference_dir=str(out),
                 **trained["tiny"])
    # the input check's count, then the bad-image line (none here) close the run
    closing, bad = capsys.readouterr().out.strip().splitlines()[-2:]
    assert bad == "skipped images: none"
    assert closing.endswith("7 input(s): 3 scored, 4 not scored (body_part_not_accepted:HIP 1, modality_not_accepted:CT 1, "
                            "modality_not_accepted:MR 1, modality_not_accepted:US 1; see the input_check column)"), closing
    with open(out / "predictions.csv") as f:
        rows = {r["image"].rsplit("/", 1)[-1]: r for r in csv.DictReader(f)}
    assert len(rows) == 7
    assert rows["mr.dcm"]["input_check"] == "modality_not_accepted:MR" and rows["mr.dcm"]["prob_normal"] == ""
    assert rows["mr.dcm"]["pred"] == "" and rows["hip.dcm"]["input_check"] == "body_part_not_accepted:HIP"
    for name in ("chest0.dcm", "chest1.dcm", "chest2.dcm"):
        assert rows[name]["input_check"] == "ok" and rows[name]["pred"] in ("normal", "opacity")
        assert float(rows[name]["ood_score"]) >= 0 and rows[name]["ood"] in ("0", "1")
    info = json.loads((out / "run_info.json").read_text())
    assert info["accepts"]["Modality"] == ["CR", "DX", "DR"] and info["ood"].endswith("ood.json")


def test_evaluate_leaves_out_refused_rows(trained, tmp_path, capsys):
    from medfuse.commands.evaluate import main

    path = tmp_path / "predictions.csv"
    path.write_text("image,label,prob_normal,prob_opacity,pred,entropy,input_check\n"
                    "a.png,normal,0.8,0.2,normal,0.5,ok\nb.png,opacity,0.3,0.7,opacity,0.6,ok\n"
                    "c.png,normal,0.6,0.4,normal,0.6,ok\nd.png,opacity,0.1,0.9,opacity,0.3,ok\n"
                    "mr.dcm,,,,,,modality_not_accepted:MR\nus.dcm,,,,,,modality_not_accepted:US\n")
    assert main(["--predictions", str(path), "--out", str(tmp_path / "ev"), "--no-figures", "--bootstrap", "0"]) == 0
    metrics = json.loads((tmp_path / "ev" / "metrics.json").read_text())
    assert metrics["n"] == 4 and metrics["not_scored"]["count"] == 2
    assert "left out: 2 row(s) whose input_check is not ok" in capsys.readouterr().out


def test_ood_fit_post_hoc_on_an_old_run(trained, tmp_path):
    """A run folder without ood.json (trained before this existed) gets one from its config.json."""
    from medfuse.cli import main

    run = tmp_path / "old_run"
    shutil.copytree(trained["run_dir"], run, ignore=shutil.ignore_patterns("ood.json", "inference", "eval"))
    assert not (run / "ood.json").exists()
    assert main(["ood-fit", str(run)]) == 0
    fresh, original = load_ood(run / "ood.json"), load_ood(trained["run_dir"] / "ood.json")
    assert fresh["n_train"] == original["n_train"]
    assert abs(fresh["threshold"] - original["threshold"]) <= 1e-4 * max(1.0, original["threshold"])  # batch size differs: float rounding
