# Copyright (c) medfuse contributors
# Licensed under the Apache License, Version 2.0
"""Evaluate a ``predictions.csv``: ``eval/metrics.json`` and a short printed table.

This is the minimal evaluation layer used by the bundles' evaluate workflow; confidence
intervals, calibration and plots will build on the same ``metrics.json`` layout.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import numpy as np

from medfuse.evaluation.classification import classification_metrics, format_metrics
from medfuse.evaluation.predictions import read_predictions
from medfuse.utils.io import atomic_write_json

__all__ = ["metrics_from_predictions", "evaluate_predictions"]


def _mean(x: Any) -> float | None:
    if x is None:
        return None
    x = np.asarray(x, dtype=np.float64)
    x = x[np.isfinite(x)]
    return float(x.mean()) if x.size else None


def metrics_from_predictions(predictions: dict) -> dict:
    """Metrics of the labelled rows of :func:`~medfuse.evaluation.predictions.read_predictions` output.

    Raises:
        ValueError: when no row has a label.
    """
    labels = predictions["labels"]
    if labels is None or not np.any(labels >= 0):
        raise ValueError("the predictions have no labels: metrics need the true class of each image")
    keep = labels >= 0
    metrics = classification_metrics(labels[keep], predictions["probs"][keep], predictions["classes"])
    metrics["unlabelled"] = int((~keep).sum())
    metrics["uncertainty"] = {
        "mean_entropy": _mean(predictions["entropy"]),
        "mean_mutual_info": _mean(predictions["mutual_info"]),
    }
    return metrics


def evaluate_predictions(predictions_csv: str | os.PathLike, out_dir: str | os.PathLike | None = None, verbose: bool = True) -> dict:
    """Compute metrics from ``predictions_csv``; write ``<out_dir>/metrics.json`` and print a table.

    Args:
        predictions_csv: a file in the medfuse predictions format.
        out_dir: where ``metrics.json`` goes; defaults to the folder of ``predictions_csv``.
        verbose: print the table.

    Returns:
        the metrics dictionary (as written).
    """
    predictions_csv = Path(predictions_csv)
    metrics = metrics_from_predictions(read_predictions(predictions_csv))
    metrics["predictions"] = str(predictions_csv)
    out = Path(out_dir) if out_dir is not None else predictions_csv.parent
    atomic_write_json(out / "metrics.json", metrics)
    if verbose:
        print(format_metrics(metrics, title=f"evaluation of {predictions_csv}"))
    return metrics
