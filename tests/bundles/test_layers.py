# Copyright (c) medfuse contributors
# Licensed under the Apache License, Version 2.0
"""Layered bundle configs: a bundle holds only what differs from its base, and runs alone, layered or exported."""

from __future__ import annotations

import difflib
import itertools
import json
from pathlib import Path

import pytest
from monai.bundle import ConfigParser, ConfigWorkflow

from medfuse.workflows.bundle import (
    compose_layers,
    config_layers,
    flatten_configs,
    layered_config_arg,
    workflow_files,
)
from tests.bundles.helpers import BUNDLES, configs, layered, tiny_overrides

LAYERED = ["oct_dual_cross_attention", "cxr_multi_output_unet", "cxr_gsa_classifier", "cxr_dualattnet_detection",
           "difm_segmentation"]
BRACES = ("", "{", "}", "[", "]", "},", "],")


def _shared_lines(a: Path, b: Path) -> int:
    la = [x.strip() for x in a.read_text().splitlines() if x.strip() not in BRACES]
    lb = [x.strip() for x in b.read_text().splitlines() if x.strip() not in BRACES]
    return sum(m.size for m in difflib.SequenceMatcher(None, la, lb, autojunk=False).get_matching_blocks())


def test_no_two_bundles_share_more_than_40_config_lines():
    """Identical lines in order, brace-only lines and metadata.json left out (the issue's measure)."""
    bundles = sorted(p.parent.name for p in BUNDLES.glob("*/configs"))
    worst = []
    for a, b in itertools.combinations(bundles, 2):
        for name in sorted({p.name for p in (BUNDLES / a / "configs").glob("*.json")}
                           & {p.name for p in (BUNDLES / b / "configs").glob("*.json")} - {"metadata.json"}):
            worst.append((_shared_lines(BUNDLES / a / "configs" / name, BUNDLES / b / "configs" / name), a, b, name))
    worst.sort(reverse=True)
    assert worst and worst[0][0] <= 40, worst[:3]


@pytest.mark.parametrize("bundle", LAYERED)
def test_layers_base_first(bundle):
    for name in ("train.json", "evaluate.json", "inference.json", "multi_gpu_train.json"):
        layers = config_layers(bundle, name)
        assert layers[0].parent.parent.name == "cxr_dual_cross_attention" and layers[-1].parent.parent.name == bundle
    assert workflow_files(bundle, "evaluate")[:2] == [str(p) for p in config_layers(bundle, "train.json")]
    assert layered_config_arg("cxr_dual_cross_attention", "train").endswith("train.json")  # a complete bundle: one file


def test_compose_layers_merges_like_monai(tmp_path):
    base = {"a": 1, "train": {"loader": {"shuffle": False, "bs": 2}, "x": 1}, "initialize": ["$1"]}
    over = {"+train": {"x": 2}, "+train#loader": {"shuffle": True}, "+initialize": ["$2"], "train#y": 3, "b": [1]}
    (tmp_path / "base.json").write_text(json.dumps(base))
    (tmp_path / "over.json").write_text(json.dumps(over))
    files = [str(tmp_path / "base.json"), str(tmp_path / "over.json")]
    ours = compose_layers(files)
    assert ours == ConfigParser.load_config_files(files)
    assert ours["train"] == {"loader": {"shuffle": True, "bs": 2}, "x": 2, "y": 3} and ours["initialize"] == ["$1", "$2"]
    # two override files compose into one override file (nested keys without a parent stay literal)
    (tmp_path / "o2.json").write_text(json.dumps({"validate#data": 5}))
    assert compose_layers([str(tmp_path / "o2.json"), str(tmp_path / "over.json")])["validate#data"] == 5


@pytest.mark.parametrize("bundle", LAYERED)
def test_own_files_alone_equal_all_layers(bundle, demo_data, tmp_path, request):
    """`--config_file bundles/<b>/configs/train.json` (the README command) runs the same config as the layers."""
    manifests = {"oct_dual_cross_attention": demo_data["oct"], "cxr_dualattnet_detection": None}
    manifest = manifests.get(bundle, demo_data["cxr"]) or request.getfixturevalue("det_data")
    results = []
    for mode, files in (("alone", [str(configs(bundle) / "train.json")]), ("layered", layered(configs(bundle) / "train.json"))):
        wf = ConfigWorkflow(config_file=files if len(files) > 1 else files[0], workflow_type="train", logging_file=False,
                            meta_file=str(configs(bundle) / "metadata.json"), run_name=mode,
                            **tiny_overrides(manifest, tmp_path))
        wf.initialize()
        assert not wf.check_properties()
        config = wf.parser.get()
        config.pop("initialize")
        config["run_name"] = "-"
        results.append(config)
        assert json.loads((tmp_path / mode / "config.json").read_text())["bundle_name"] == bundle
    assert results[0] == results[1]


@pytest.mark.parametrize("bundle", LAYERED)
def test_flattened_configs_stand_alone(bundle, tmp_path):
    names = flatten_configs(bundle, tmp_path / "configs")
    assert {"train.json", "evaluate.json", "inference.json", "multi_gpu_train.json", "logging.conf"} <= set(names)
    flat = json.loads((tmp_path / "configs" / "train.json").read_text())
    assert flat == compose_layers(config_layers(bundle, "train.json"))
    assert "trainer" in flat["train"] and flat["bundle_name"] == bundle
