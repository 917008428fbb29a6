# Copyright (c) medfuse contributors
# Licensed under the Apache License, Version 2.0
"""The bundles through the real command line: ``python -m monai.bundle run`` and ``torchrun``.

``python -m monai.bundle`` parses its command line with the ``fire`` package, an install
requirement of medfuse, so these tests run exactly what a user types.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from tests.bundles.helpers import REPO, configs

CXR = configs("cxr_dual_cross_attention")
TINY = {
    "image_size": "64", "backbones": "['efficientnet-b0','resnet10']", "hidden_size": "16", "num_heads": "2",
    "batch_size": "4", "epochs": "1", "num_workers": "0", "num_threads": "1", "progress": "false",  # lower case: read by medfuse.workflows.flag
}


def _args(**changes) -> list:
    return [a for k, v in {**TINY, **changes}.items() for a in (f"--{k}", v)]


def _env() -> dict:
    return dict(os.environ, OMP_NUM_THREADS="1", PYTHONPATH=str(REPO))


def _run(cmd, cwd) -> subprocess.CompletedProcess:
    proc = subprocess.run(cmd, cwd=cwd, env=_env(), capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    return proc


def test_monai_bundle_run_train(demo_data, tmp_path):
    """Default run folder under the working directory, suffix, overrides recorded."""
    cmd = [sys.executable, "-m", "monai.bundle", "run", "--config_file", str(CXR / "train.json"),
           "--manifest", str(demo_data["cxr"]), "--run_suffix", "cli", "--learning_rate", "0.0003"] + _args()
    _run(cmd, cwd=tmp_path)
    runs = list((tmp_path / "runs" / "cxr_dual_cross_attention").iterdir())
    assert len(runs) == 1 and runs[0].name.endswith("-cli")
    run = runs[0]
    assert (run / "model.pt").is_file() and (run / "log.csv").is_file()
    info = json.loads((run / "run_info.json").read_text())
    assert info["overrides"]["learning_rate"] == 0.0003 and info["overrides"]["epochs"] == 1
    assert info["argv"][1:3] == ["run", "--config_file"]
    config = json.loads((run / "config.json").read_text())
    assert config["learning_rate"] == 0.0003 and config["manifest"] == str(demo_data["cxr"])


@pytest.mark.slow
@pytest.mark.skipif(shutil.which("torchrun", path=os.path.dirname(sys.executable)) is None, reason="torchrun not found")
def test_torchrun_multi_gpu_config_on_cpu(demo_data, tmp_path):
    """multi_gpu_train.json with two processes (gloo on CPU): one run folder, rank-0 files only."""
    torchrun = shutil.which("torchrun", path=os.path.dirname(sys.executable))
    files = f"['{CXR / 'train.json'}','{CXR / 'multi_gpu_train.json'}']"
    cmd = [torchrun, "--standalone", "--nnodes=1", "--nproc_per_node=2", "-m", "monai.bundle", "run",
           "--config_file", files, "--manifest", str(demo_data["cxr"]), "--output_dir", str(tmp_path / "runs")]
    cmd += _args(epochs="2")
    _run(cmd, cwd=tmp_path)
    runs = list((tmp_path / "runs").iterdir())
    assert len(runs) == 1, runs  # rank 0 chose the name and broadcast it
    run = runs[0]
    info = json.loads((run / "run_info.json").read_text())
    assert info["world_size"] == 2 and info["workflow"] == "multi_gpu_train"
    rows = (run / "log.jsonl").read_text().splitlines()
    assert len(rows) == 2  # written by rank 0 only
    assert (run / "model.pt").is_file()
    # rank 0 alone fits the calibration, on the whole validation split, after training
    assert json.loads((run / "calibration.json").read_text())["temperature"] > 0
    n_val = len(json.loads(Path(demo_data["cxr"]).read_text())["validation"])
    assert len((run / "validation_predictions.csv").read_text().splitlines()) == n_val + 1
