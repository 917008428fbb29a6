# Copyright (c) medfuse contributors
# Licensed under the Apache License, Version 2.0
"""Shared pieces of the bundle tests: paths, tiny overrides, running a workflow."""

from __future__ import annotations

import os
from pathlib import Path

from monai.bundle import ConfigWorkflow

from tests.tiny import bundle_overrides

REPO = Path(__file__).resolve().parents[2]
BUNDLES = REPO / "bundles"
SCHEMA = "monai_schema/meta_schema_20240725.json"


def configs(bundle: str) -> Path:
    return BUNDLES / bundle / "configs"


def tiny_overrides(manifest: str | os.PathLike, output_dir: str | os.PathLike) -> dict:
    """Overrides that shrink a dual cross-attention bundle run to seconds on one CPU thread (``tests/tiny.py``)."""
    return bundle_overrides("cxr_dual_cross_attention", manifest, output_dir)


ARCHITECTURE_KEYS = ("image_size", "backbones", "hidden_size", "num_heads")


def without_architecture(overrides: dict) -> dict:
    """``overrides`` less the network keys: evaluation/inference must take them from the run."""
    return {k: v for k, v in overrides.items() if k not in ARCHITECTURE_KEYS}


def layered(config_file) -> list[str]:
    """``bundles/<b>/configs/<name>`` paths expanded into the layers that make them up (base first)."""
    from medfuse.workflows.bundle import config_layers

    files = config_file if isinstance(config_file, (list, tuple)) else [config_file]
    return [str(layer) for f in files for layer in config_layers(Path(f).parent.parent, Path(f).name)]


def flat_config(config_file, out_dir) -> str:
    """The bundle's configs with their base layers merged (as ``medfuse export`` writes them) under ``out_dir``:
    the path of ``config_file``'s flat copy (for MONAI tools that store configs by file name, e.g. ``ckpt_export``)."""
    from medfuse.workflows.bundle import flatten_configs

    config_file = Path(config_file)
    flatten_configs(config_file.parent.parent, Path(out_dir) / "configs")
    return str(Path(out_dir) / "configs" / config_file.name)


def run_workflow(config_file, workflow_type: str, **override) -> ConfigWorkflow:
    """initialize / check_properties / run / finalize, as the model-zoo unit tests do.

    ``config_file``: the bundle's own config path(s); a layered bundle's base layers are added.
    """
    from medfuse.workflows.bundle import config_layers

    first = Path(config_file[0] if isinstance(config_file, (list, tuple)) else config_file)
    files = layered(config_file)
    wf = ConfigWorkflow(
        config_file=files if len(files) > 1 else files[0],
        meta_file=str(first.parent / "metadata.json"),
        logging_file=str(config_layers(first.parent.parent, "logging.conf")[-1]),
        workflow_type=workflow_type,
        **override,
    )
    wf.initialize()
    missing = wf.check_properties()
    assert not missing, f"missing bundle properties: {missing}"
    wf.run()
    wf.finalize()
    return wf


def torchrun_multi_gpu(config_dir: Path, overrides: dict, cwd: Path, nproc: int = 2) -> Path:
    """``torchrun --nproc_per_node N -m monai.bundle run`` of a bundle's layered train + multi_gpu_train configs
    (gloo on CPU); skips when torchrun is not beside the Python executable. Returns the one run folder written
    under ``overrides["output_dir"]``."""
    import json
    import shutil
    import subprocess
    import sys

    import pytest

    torchrun = shutil.which("torchrun", path=os.path.dirname(sys.executable))
    if torchrun is None:
        pytest.skip("torchrun not found beside the Python executable")
    files = "[" + ",".join(f"'{f}'" for f in layered([config_dir / "train.json", config_dir / "multi_gpu_train.json"])) + "]"
    cmd = [torchrun, "--standalone", "--nnodes=1", f"--nproc_per_node={nproc}", "-m", "monai.bundle", "run",
           "--config_file", files, "--meta_file", str(config_dir / "metadata.json")]
    for k, v in overrides.items():
        cmd += [f"--{k}", json.dumps(v) if isinstance(v, list) else str(v)]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    proc = subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, text=True, timeout=300)
    runs = list(Path(overrides["output_dir"]).iterdir()) if Path(overrides["output_dir"]).is_dir() else []
    if proc.returncode != 0 and _finished_then_aborted_at_exit(proc.stderr, runs):
        # Seen once in five CI-style runs of the multi-output bundle under load: a rank aborts with std::terminate
        # while the interpreter shuts down, after the run recorded status "finished" (training, calibration and the
        # process-group teardown in finalize all done). It is a known gloo teardown race in PyTorch
        # (pytorch/pytorch#190489). Tolerated only in that exact case, loudly; the caller checks every output.
        import warnings

        warnings.warn(f"torchrun rank aborted at interpreter exit after a finished run (rc {proc.returncode})")
    else:
        assert proc.returncode == 0, proc.stderr[-3000:]
    (run,) = runs
    return run


def _finished_then_aborted_at_exit(stderr: str, runs: list) -> bool:
    """Whether a torchrun failure is only the exit-time abort of a rank after the run finished (see above)."""
    import json

    if "terminate called without an active exception" not in stderr or "Traceback (most recent call last)" in \
            stderr.split("terminate called without an active exception")[0]:
        return False
    if len(runs) != 1 or not (runs[0] / "run_info.json").is_file():
        return False
    return json.loads((runs[0] / "run_info.json").read_text()).get("status") == "finished"
