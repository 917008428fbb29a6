# Copyright (c) medfuse contributors
# Licensed under the Apache License, Version 2.0
"""Evaluation: metrics with confidence intervals, calibration, subgroups, uncertainty, segmentation and
detection metrics, figures and the HTML report (see docs/evaluation.md).

Heavy parts (MONAI metrics, matplotlib, torch) are imported inside the functions that need them.
"""

from .bootstrap import bootstrap_metrics, stratified_indices
from .calibration import (
    CALIBRATION_NAME,
    apply_calibration,
    calibration_summary,
    find_calibration,
    fit_calibration,
    fit_run_calibration,
    fit_temperature,
    load_calibration,
    save_calibration,
    temperature_scale,
)
from .classification import (
    binary_auc,
    binary_average_precision,
    binary_operating_point,
    classification_metrics,
    confusion_matrix,
    decision_metrics,
    format_metrics,
    multilabel_metrics,
    threshold_for_sensitivity,
)
from .gallery import write_uncertain_cams
from .ood import OOD_FILE, find_ood, fit_ood, load_ood, ood_flags, ood_scores, save_ood
from .predictions import PROB_PREFIX, entropy_of, prediction_columns, read_predictions, write_predictions
from .report import evaluate_predictions, metrics_from_predictions
from .subgroups import subgroup_metrics
from .uncertainty import mutual_information, predictive_entropy, risk_coverage, selective_prediction

__all__ = [
    "binary_auc",
    "binary_average_precision",
    "binary_operating_point",
    "classification_metrics",
    "confusion_matrix",
    "decision_metrics",
    "format_metrics",
    "multilabel_metrics",
    "threshold_for_sensitivity",
    "bootstrap_metrics",
    "stratified_indices",
    "CALIBRATION_NAME",
    "apply_calibration",
    "calibration_summary",
    "find_calibration",
    "fit_calibration",
    "fit_run_calibration",
    "fit_temperature",
    "load_calibration",
    "save_calibration",
    "temperature_scale",
    "write_uncertain_cams",
    "OOD_FILE",
    "find_ood",
    "fit_ood",
    "load_ood",
    "ood_flags",
    "ood_scores",
    "save_ood",
    "PROB_PREFIX",
    "entropy_of",
    "prediction_columns",
    "read_predictions",
    "write_predictions",
    "evaluate_predictions",
    "metrics_from_predictions",
    "subgroup_metrics",
    "mutual_information",
    "predictive_entropy",
    "risk_coverage",
    "selective_prediction",
]
