# Copyright (c) medfuse contributors
# Licensed under the Apache License, Version 2.0
"""The classification task layer: what any image classifier needs in a bundle config, in one place.

The DCAT bundles (``cxr_dual_cross_attention``, ``oct_dual_cross_attention``) and any other classifier (a MONAI
``DenseNet121``, a :class:`~medfuse.networks.nets.GlobalSpatialAttentionNet` ...) use these; the code stays in the
modules that hold each kind of piece, so that no bundle config or import path changes (``medfuse.workflows.X``
and ``medfuse.workflows.<module>.X`` keep working), and this module is their public home by task:

* items and classes: :func:`split_items`, :func:`inference_items`, :func:`folder_items`, :func:`manifest_classes`,
  :func:`resolve_classes` (:mod:`medfuse.workflows.data`);
* class balance: :func:`class_counts`, :func:`class_weights`, :func:`loss_class_weights`,
  :func:`balanced_sampler`, :func:`train_sampler`, :func:`check_distributed_balance`;
* validation metrics: :class:`ClassificationMetric` (AUC, AUPR, accuracy; :mod:`medfuse.workflows.metrics`);
* inference: :class:`MCDropoutInferer` (plain or Monte-Carlo dropout) and :class:`UnpackPredictiond`
  (:mod:`medfuse.workflows.inferers`);
* outputs: :class:`PredictionWriter` (``predictions.csv``, calibrated; :mod:`medfuse.workflows.handlers`) and
  :class:`CAMWriter` (Grad-CAM overlays; :mod:`medfuse.workflows.cam`);
* calibration after training: :func:`fit_run_calibration` (:mod:`medfuse.evaluation.calibration`).

Task-neutral pieces (run folders, the engine switches, ``EpochLogger``, ``ProgressBar``, LR schedules, bundle
layering) stay in :mod:`medfuse.workflows` itself. The other task layers are :mod:`medfuse.workflows.segmentation`,
:mod:`medfuse.workflows.multi_output` (built on the two) and, per ``docs/architecture.md``, ``detection``.
"""

from __future__ import annotations

from medfuse.evaluation.calibration import fit_run_calibration
from medfuse.workflows.cam import CAMWriter
from medfuse.workflows.data import (
    CLASS_BALANCE_MODES,
    balanced_sampler,
    check_distributed_balance,
    class_counts,
    class_weights,
    folder_items,
    inference_items,
    loss_class_weights,
    manifest_classes,
    resolve_classes,
    split_items,
    train_sampler,
)
from medfuse.workflows.handlers import PredictionWriter
from medfuse.workflows.inferers import MCDropoutInferer, UnpackPredictiond
from medfuse.workflows.metrics import METRIC_NAMES, ClassificationMetric

__all__ = [
    "split_items",
    "inference_items",
    "folder_items",
    "manifest_classes",
    "resolve_classes",
    "CLASS_BALANCE_MODES",
    "class_counts",
    "class_weights",
    "loss_class_weights",
    "balanced_sampler",
    "train_sampler",
    "check_distributed_balance",
    "METRIC_NAMES",
    "ClassificationMetric",
    "MCDropoutInferer",
    "UnpackPredictiond",
    "PredictionWriter",
    "CAMWriter",
    "fit_run_calibration",
]
