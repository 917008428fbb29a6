# Copyright (c) medfuse contributors
# Licensed under the Apache License, Version 2.0
"""Run a medfuse bundle from Python: what ``python -m monai.bundle run`` does, plus the results.

:func:`run_bundle` builds the MONAI ``ConfigWorkflow`` of one of the bundle's workflows
(``train``, ``evaluate`` = train.json + evaluate.json, ``inference``), runs initialize /
run / finalize and returns where the outputs went, so scripts such as the demo can chain
training, evaluation and inference without shelling out.

Example::

    from medfuse.workflows.bundle import run_bundle

    small = {"image_size": 64, "backbones": ["efficientnet-b0", "resnet10"], "hidden_size": 16,
             "num_heads": 2, "epochs": 1, "num_workers": 0}
    trained = run_bundle("cxr_dual_cross_attention", "train", manifest="runs/demo/data/cxr_manifest.json",
                         output_dir="runs/demo/runs/cxr", run_name="demo", **small)
    report = run_bundle("cxr_dual_cross_attention", "evaluate", manifest="runs/demo/data/cxr_manifest.json",
                        output_dir="runs/demo/runs/cxr", run_name="demo", mc_samples=10)
    report["metrics"]["auc"]
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

__all__ = ["WORKFLOWS", "bundle_dir", "run_bundle"]

#: workflow name -> (config files, MONAI workflow type)
WORKFLOWS = {
    "train": (("train.json",), "train"),
    "evaluate": (("train.json", "evaluate.json"), "train"),
    "inference": (("inference.json",), "infer"),
}
_REPO_ROOT = Path(__file__).resolve().parents[2]


def bundle_dir(bundle: str | os.PathLike) -> Path:
    """The folder of ``bundle``: a path to a bundle folder, or a name under ``./bundles`` or the checkout's ``bundles``.

    Raises:
        FileNotFoundError: when no folder with ``configs/train.json`` is found.
    """
    candidates = [Path(bundle), Path.cwd() / "bundles" / str(bundle), _REPO_ROOT / "bundles" / str(bundle)]
    for c in candidates:
        if (c / "configs" / "train.json").is_file() or (c / "configs" / "inference.json").is_file():
            return c.resolve()
    raise FileNotFoundError(
        f"bundle {bundle!r} not found (looked in {', '.join(str(c) for c in candidates)}); "
        "give the path of a bundle folder"
    )


def run_bundle(bundle: str | os.PathLike, workflow: str = "train", logging: bool = True, **overrides: Any) -> dict:
    """Run one workflow of a bundle and return its outputs.

    Args:
        bundle: bundle folder, or its name (``cxr_dual_cross_attention``).
        workflow: ``train``, ``evaluate`` or ``inference``.
        logging: apply the bundle's ``configs/logging.conf`` (as the command line does).
        overrides: config keys, as on the command line (``manifest=...``, ``epochs=1`` ...).

    Returns:
        ``{"workflow", "bundle", "run_dir", ...}`` plus, for ``train``: ``checkpoint``,
        ``best_val_auc``, ``best_epoch``, ``epochs_run``, ``log``; for ``evaluate``:
        ``eval_dir``, ``metrics`` (the ``metrics.json`` content), ``predictions``; for
        ``inference``: ``predictions``.

    Raises:
        ValueError: for an unknown workflow.
    """
    from monai.bundle import ConfigWorkflow

    if workflow not in WORKFLOWS:
        raise ValueError(f"workflow must be one of {list(WORKFLOWS)}, got {workflow!r}")
    root = bundle_dir(bundle)
    files, kind = WORKFLOWS[workflow]
    config_files = [str(root / "configs" / f) for f in files]
    wf = ConfigWorkflow(
        config_file=config_files if len(config_files) > 1 else config_files[0],
        meta_file=str(root / "configs" / "metadata.json"),
        logging_file=str(root / "configs" / "logging.conf") if logging else False,
        workflow_type=kind,
        **overrides,
    )
    wf.initialize()
    wf.run()
    wf.finalize()
    parser = wf.parser
    run_dir = Path(parser.get_parsed_content("run_dir"))
    result: dict[str, Any] = {"workflow": workflow, "bundle": root.name, "run_dir": run_dir}
    if workflow == "train":
        evaluator = parser.get_parsed_content("validate#evaluator")
        trainer = parser.get_parsed_content("train#trainer")
        result.update(
            checkpoint=run_dir / "model.pt",
            best_val_auc=float(evaluator.state.best_metric),
            best_epoch=int(evaluator.state.best_metric_epoch),
            epochs_run=int(trainer.state.epoch),
            log=run_dir / "log.csv",
        )
    elif workflow == "evaluate":
        eval_dir = Path(parser.get_parsed_content("eval_dir"))
        with open(eval_dir / "metrics.json", encoding="utf-8") as f:
            metrics = json.load(f)
        result.update(eval_dir=eval_dir, metrics=metrics, predictions=eval_dir / "predictions.csv")
    else:
        result.update(predictions=Path(parser.get_parsed_content("inference_dir")) / "predictions.csv")
    return result
