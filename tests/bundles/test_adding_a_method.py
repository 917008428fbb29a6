# Copyright (c) medfuse contributors
# Licensed under the Apache License, Version 2.0
"""docs/adding_a_method.md: its example bundle, built from the doc's own JSON blocks in a temporary folder outside
``bundles/``, layers on the classification base by name, holds only its differences, trains one epoch on the demo
data, evaluates and predicts."""

from __future__ import annotations

import csv
import json
import re

import pytest

from medfuse.workflows.bundle import config_layers, run_bundle
from tests.bundles.helpers import BUNDLES, REPO, tiny_overrides

DOC = REPO / "docs" / "adding_a_method.md"
#: ``<!-- file: <path> -->`` followed by a ```json block: a file of the example, as the doc shows it
FILE_BLOCK = re.compile(r"<!-- file: (\S+) -->\s*```json\n(.*?)```", re.S)


def doc_files() -> dict[str, dict]:
    return {path: json.loads(text) for path, text in FILE_BLOCK.findall(DOC.read_text(encoding="utf-8"))}


@pytest.fixture(scope="module")
def example(tmp_path_factory):
    root = tmp_path_factory.mktemp("my_methods")
    for path, content in doc_files().items():
        (root / path).parent.mkdir(parents=True, exist_ok=True)
        (root / path).write_text(json.dumps(content, indent=4), encoding="utf-8")
    return root / "cxr_densenet121"


def test_the_doc_shows_three_files_of_one_bundle():
    assert sorted(doc_files()) == ["cxr_densenet121/configs/inference.json", "cxr_densenet121/configs/metadata.json",
                                   "cxr_densenet121/configs/train.json"]


def test_the_example_layers_on_the_base_by_name_from_outside_bundles(example):
    base = BUNDLES / "cxr_dual_cross_attention" / "configs"
    assert not (example.parent / "cxr_dual_cross_attention").exists()
    assert config_layers(example, "train.json") == [base / "train.json", example / "configs" / "train.json"]
    assert config_layers(example, "evaluate.json") == [base / "evaluate.json"]
    own = json.loads((example / "configs" / "train.json").read_text())
    assert len(own) <= 6  # only its differences: the network and the bundle name (plus the layering keys)


def test_the_example_trains_evaluates_and_predicts(example, demo_data, tmp_path):
    runs = tmp_path / "runs"
    tiny = {k: v for k, v in tiny_overrides(demo_data["cxr"], runs).items()
            if k not in ("backbones", "hidden_size", "num_heads")}  # DCAT settings: the example has no use for them
    trained = run_bundle(example, "train", logging=False, run_name="tiny", **tiny)
    run = runs / "tiny"
    assert trained["bundle"] == "cxr_densenet121" and trained["epochs_run"] == 1 and (run / "model.pt").is_file()
    info = json.loads((run / "run_info.json").read_text())
    assert info["bundle"] == "cxr_densenet121"
    config = json.loads((run / "config.json").read_text())
    assert config["network_def"]["_target_"] == "monai.networks.nets.DenseNet121"
    later = {"manifest": str(demo_data["cxr"]), "output_dir": str(runs), "run_name": "tiny", "num_workers": 0,
             "num_threads": 1, "mc_samples": 2, "batch_size": 4}
    evaluated = run_bundle(example, "evaluate", logging=False, n_boot=20, gallery_size=2, **later)
    metrics = evaluated["metrics"]
    assert metrics["tasks"] == ["classification"] and 0.0 <= metrics["auc"] <= 1.0
    assert (run / "eval" / "index.html").is_file() and (run / "eval" / "predictions.csv").is_file()
    predicted = run_bundle(example, "inference", logging=False, **later)
    with open(predicted["predictions"]) as f:
        rows = list(csv.DictReader(f))
    assert rows and {"image", "pred", "entropy"} <= set(rows[0])
