# Copyright (c) medfuse contributors
# Licensed under the Apache License, Version 2.0
"""Broken model files are named with the fix: truncated / empty / non-finite checkpoints, module. prefixes,
MONAI's CheckpointLoader, export, and calibration bound to the weights it was fitted on."""

from __future__ import annotations

import json
import re

import pytest
import torch
from monai.engines import SupervisedEvaluator

from medfuse.errors import CheckpointError, DataError, TrainingError
from medfuse.evaluation.calibration import find_calibration, save_calibration
from medfuse.utils.io import sha256_file
from medfuse.workflows import CheckpointLoader, load_weights


@pytest.fixture
def saved(tmp_path):
    torch.manual_seed(0)
    net = torch.nn.Sequential(torch.nn.Linear(3, 4), torch.nn.BatchNorm1d(4))
    path = tmp_path / "model.pt"
    torch.save(net.state_dict(), path)
    return net, path


def test_truncated_checkpoint_names_the_file_and_the_fix(saved):
    net, path = saved
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    with pytest.raises(CheckpointError, match=rf"^{re.escape(str(path))}: cannot read the checkpoint, it is truncated "
                                              r"or corrupt .*re-export or re-train"):
        load_weights(path)
    path.write_bytes(b"")
    with pytest.raises(CheckpointError, match=r"is empty \(0 bytes"):
        load_weights(path)


def test_module_prefix_and_container_load(saved, tmp_path):
    net, path = saved
    prefixed = tmp_path / "ddp.pt"
    torch.save({"model": {f"module.{k}": v for k, v in net.state_dict().items()}}, prefixed)
    state = load_weights(prefixed)
    assert set(state) == set(net.state_dict())
    fresh = torch.nn.Sequential(torch.nn.Linear(3, 4), torch.nn.BatchNorm1d(4))
    engine = SupervisedEvaluator(device=torch.device("cpu"), val_data_loader=[], network=fresh)
    CheckpointLoader(load_path=str(prefixed), load_dict={"model": fresh})(engine)
    assert torch.equal(fresh[0].weight, net[0].weight)


def test_non_finite_weights_are_refused_by_the_loader(saved):
    net, path = saved
    state = net.state_dict()
    state["0.weight"][0, 0] = float("nan")
    torch.save(state, path)
    engine = SupervisedEvaluator(device=torch.device("cpu"), val_data_loader=[], network=net)
    with pytest.raises(CheckpointError, match=rf"{re.escape(str(path))}: 1 weight tensor\(s\) hold NaN or inf \(0.weight\)"):
        CheckpointLoader(load_path=str(path), load_dict={"model": net})(engine)


def test_export_of_a_truncated_checkpoint_names_it(saved, tmp_path):
    from medfuse.zoo.export import export_bundle
    from tests.bundles.helpers import BUNDLES

    net, path = saved
    path.write_bytes(path.read_bytes()[:100])
    with pytest.raises(CheckpointError, match=rf"{re.escape(str(path))}: cannot read the checkpoint.*re-export or re-train"):
        export_bundle(BUNDLES / "cxr_dual_cross_attention", tmp_path / "zoo", weights=path, require_schema=False,
                      log=lambda *a: None)


def test_calibration_is_bound_to_its_weights(saved, tmp_path):
    net, path = saved
    cal = {"temperature": 2.0, "classes": ["a", "b"], "decision": "argmax",
           "fitted_on": {"checkpoint_sha256": sha256_file(path)}}
    save_calibration(tmp_path / "calibration.json", cal)
    assert find_calibration(path) == str(tmp_path / "calibration.json")
    torch.save({k: v + 1 for k, v in net.state_dict().items()}, path)  # re-trained weights, old calibration
    with pytest.raises(DataError, match=r"calibration.json: fitted on other weights than .*model.pt.*"
                                        r"--calibration_file '' to use T = 1 and argmax"):
        find_calibration(path)


def test_calibration_is_never_written_from_non_finite_statistics(tmp_path):
    target = tmp_path / "calibration.json"
    with pytest.raises(TrainingError, match=r"calibration.json: not written, temperature, threshold would be NaN"):
        save_calibration(target, {"temperature": float("nan"), "classes": ["a", "b"], "decision": "threshold",
                                  "threshold": float("nan")})
    assert not target.exists()
    save_calibration(target, {"temperature": 1.5, "classes": ["a", "b"], "decision": "argmax", "threshold": None})
    assert json.loads(target.read_text())["temperature"] == 1.5
