# Copyright (c) medfuse contributors
# Licensed under the Apache License, Version 2.0
"""benchmarks/site_shift.py: the Shenzhen -> Montgomery manifest (train on one hospital, test on the other)."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from medfuse.errors import DataError

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def site_shift():
    spec = importlib.util.spec_from_file_location("site_shift", REPO / "benchmarks" / "site_shift.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _folder(root: Path, names) -> Path:
    (root / "cxr").mkdir(parents=True)
    (root / "masks").mkdir()
    for i, name in enumerate(names):
        Image.fromarray(np.full((16, 16), 10 * i, np.uint8)).save(root / "cxr" / f"{name}.png")
        mask = np.zeros((16, 16), np.uint8)
        mask[4:12, 4:12] = 255
        Image.fromarray(mask).save(root / "masks" / f"{name}.png")
    return root


def test_build_puts_every_montgomery_case_in_test(site_shift, tmp_path, capsys):
    names = [f"CHNCXR_{i:04d}_{i % 2}" for i in range(1, 13)] + [f"MCUCXR_{i:04d}_{i % 2}" for i in range(1, 6)]
    folder = _folder(tmp_path / "lung", names)
    out = tmp_path / "m" / "manifest.json"
    assert site_shift.main(["build", str(folder), "--out", str(out), "--val-fraction", "0.25"]) == 0
    m = json.loads(out.read_text())
    assert {Path(it["image"]).name[:7] for it in m["test"]} == {"MCUCXR_"} and len(m["test"]) == 5
    train_val = m["training"] + m["validation"]
    assert {Path(it["image"]).name[:7] for it in train_val} == {"CHNCXR_"} and len(train_val) == 12
    assert len(m["validation"]) == 3 and {it["label"] for it in m["validation"]} == {0, 1}
    assert {it["site"] for it in train_val} == {"shenzhen"} and {it["site"] for it in m["test"]} == {"montgomery"}
    assert not {it["patient_id"] for it in m["training"]} & {it["patient_id"] for it in m["validation"]}
    printed = capsys.readouterr().out
    assert "test       montgomery    5  normal 2, tuberculosis 3" in printed


def test_build_refuses_a_folder_it_cannot_split(site_shift, tmp_path):
    with pytest.raises(DataError, match="is not a folder"):
        site_shift.build_site_manifest(tmp_path, tmp_path / "m.json")
    folder = _folder(tmp_path / "one_site", [f"CHNCXR_{i:04d}_{i % 2}" for i in range(1, 5)])
    with pytest.raises(DataError, match="no montgomery images"):
        site_shift.build_site_manifest(folder, tmp_path / "m.json")
    other = _folder(tmp_path / "other", ["CHNCXR_0001_0", "MCUCXR_0001_1", "xyz_0001_0"])
    with pytest.raises(DataError, match="xyz_0001_0.png: no site prefix"):
        site_shift.build_site_manifest(other, tmp_path / "m2.json")


def test_build_on_the_real_folder(site_shift, shared_data, tmp_path):
    from tests.conftest import require

    folder = Path(require(shared_data / "lung_seg_cxr"))
    res = site_shift.build_site_manifest(folder, tmp_path / "manifest.json")
    counts = res["counts"]
    shenzhen = sum(sum(counts[s]["shenzhen"].values()) for s in ("training", "validation"))
    assert shenzhen == 426 and sum(counts["test"]["montgomery"].values()) == 138 and res["skipped"] == 0
    assert set(counts["test"]) == {"montgomery"}
    assert counts["test"]["montgomery"] == {"normal": 80, "tuberculosis": 58}


def test_compare_adds_the_paired_difference_of_the_arms(site_shift, tmp_path, capsys):
    from medfuse.evaluation.predictions import write_predictions

    y = np.array([0] * 12 + [1] * 10)
    rng = np.random.default_rng(1)
    scores = {"plain": rng.random(22), "shift_augment": np.clip(y * 0.5 + rng.random(22) * 0.6, 0, 1)}
    arms = {}
    for arm, p in scores.items():
        run = f"site_shift_{arm}_seed0"
        (tmp_path / run / "eval").mkdir(parents=True)
        write_predictions(tmp_path / run / "eval" / "predictions.csv", [f"MCUCXR_{i:04d}_0.png" for i in range(22)],
                          np.stack([1 - p, p], 1), ["normal", "tuberculosis"], labels=y)
        arms[arm] = {"run_name": run}
    result = tmp_path / "site_shift.json"
    result.write_text(json.dumps({"arms": arms}))
    assert site_shift.main(["compare", str(result), "--output_dir", str(tmp_path), "--n-boot", "200"]) == 0
    paired = json.loads(result.read_text())["paired_difference"]
    assert paired["what"] == "shift_augment - plain" and paired["n_images"] == 22 and paired["n_boot"] == 200
    from sklearn.metrics import roc_auc_score

    assert paired["auc"]["diff"] == pytest.approx(roc_auc_score(y, scores["shift_augment"]) - roc_auc_score(y, scores["plain"]))
    assert "shift_augment - plain: dauc" in capsys.readouterr().out
