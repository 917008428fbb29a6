# Copyright (c) medfuse contributors
# Licensed under the Apache License, Version 2.0
"""No silent typos in bundle overrides: unknown keys (did-you-mean) and wrong types stop a run before any work.

Each case failed on main: ``--epoch 1`` was ignored (30 epochs trained), ``--epochs abc`` ended in a long traceback.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from medfuse.errors import DataError
from medfuse.workflows.bundle import check_overrides, run_bundle, workflow_files

REPO = Path(__file__).resolve().parents[2]


@pytest.mark.parametrize(
    "overrides, message",
    [
        ({"epoch": 1}, "--epoch: no such key .* did you mean --epochs\\?"),
        ({"lable_smoothing": 0.1, "epochs": 1}, "--lable_smoothing: no such key"),
        ({"epochs": "abc"}, "--epochs 'abc': expected an integer \\(the config's value is 30\\)"),
        ({"amp": 3}, "--amp 3: expected true or false"),
        ({"learning_rate": "fast"}, "--learning_rate 'fast': expected a number"),
        ({"network_def#hidden_sise": 8}, "--network_def#hidden_sise: no such key .* did you mean --network_def#hidden_size\\?"),
    ],
)
def test_run_bundle_refuses_typos_and_wrong_types_before_any_work(overrides, message, tmp_path):
    with pytest.raises(DataError, match=message):
        run_bundle("cxr_dual_cross_attention", "train", manifest=str(tmp_path / "none.json"), **overrides)


def test_known_keys_are_those_of_every_layer():
    # the OCT bundle overrides the CXR base: keys of both layers are known, values keep their types
    files = workflow_files(REPO / "bundles" / "oct_dual_cross_attention", "train")
    check_overrides(files, {"epochs": 2, "oct_classes": ["a", "b"], "learning_rate": 1, "train#dataloader#batch_size": 2,
                            "manifest": "x.json", "network_def#hidden_size": 8, "run_name": "r", "progress": "false"})
    with pytest.raises(DataError, match="did you mean --oct_classes"):
        check_overrides(files, {"oct_clases": ["a"]})


@pytest.mark.parametrize("args, last_line", [
    (["--epoch", "1"], "monai.bundle run: error: --epoch: no such key in the config (cxr_dual_cross_attention/train.json, "
                       "oct_dual_cross_attention/train.json); did you mean --epochs? (a typo would otherwise be ignored silently)"),
    (["--epochs", "abc"], "monai.bundle run: error: --epochs 'abc': expected an integer (the config's value is 30)"),
])
def test_command_line_typo_is_one_line_and_status_2(args, last_line, tmp_path):
    cfg = REPO / "bundles" / "oct_dual_cross_attention" / "configs"
    cmd = [sys.executable, "-m", "monai.bundle", "run", "--config_file", str(cfg / "train.json"), "--meta_file",
           str(cfg / "metadata.json"), "--manifest", str(tmp_path / "none.json"), "--output_dir", str(tmp_path), *args]
    env = dict(os.environ, OMP_NUM_THREADS="1", PYTHONPATH=str(REPO))
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env, cwd=tmp_path, timeout=300)
    assert proc.returncode == 2, proc.stderr[-2000:]
    assert proc.stderr.strip().splitlines()[-1] == last_line
    assert not list(tmp_path.glob("*/model.pt")) and not (tmp_path / "log.csv").exists()
