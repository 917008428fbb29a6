# Copyright (c) medfuse contributors
# Licensed under the Apache License, Version 2.0
"""Evaluation: classification metrics, the predictions file format, metric reports."""

from .classification import (
    binary_auc,
    binary_average_precision,
    classification_metrics,
    confusion_matrix,
    format_metrics,
)
from .predictions import PROB_PREFIX, entropy_of, prediction_columns, read_predictions, write_predictions
from .report import evaluate_predictions, metrics_from_predictions

__all__ = [
    "binary_auc",
    "binary_average_precision",
    "classification_metrics",
    "confusion_matrix",
    "format_metrics",
    "PROB_PREFIX",
    "entropy_of",
    "prediction_columns",
    "read_predictions",
    "write_predictions",
    "evaluate_predictions",
    "metrics_from_predictions",
]
