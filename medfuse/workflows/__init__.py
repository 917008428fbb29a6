# Copyright (c) medfuse contributors
# Licensed under the Apache License, Version 2.0
"""Shared logic of the medfuse bundles, so that bundle configs stay short.

* :mod:`~medfuse.workflows.runs`: run folders, the executed config and run record;
* :mod:`~medfuse.workflows.data`: items from manifests or folders, classes, class balance;
* :mod:`~medfuse.workflows.engine`: device, bf16 AMP on CUDA, threads, determinism;
* :mod:`~medfuse.workflows.metrics`: validation metrics (AUC, AUPR, accuracy) as ignite metrics;
* :mod:`~medfuse.workflows.inferers`: plain or Monte-Carlo dropout inference;
* :mod:`~medfuse.workflows.handlers`: per-epoch log, predictions writer, progress bar, LR schedule;
* :mod:`~medfuse.workflows.bundle`: run a bundle's train / evaluate / inference from Python;
* :mod:`~medfuse.workflows.segmentation`: segmentation + classification glue (partly annotated items, joint
  transforms, two-output inferer and post-processing, Dice/IoU/HD95 evaluation, mask and lung-CAM writers);
* :mod:`~medfuse.workflows.gsa`: the global spatial attention bundle (classifier with or without the map, its
  loss, the image basis, map files); imported on use (``$import medfuse.workflows.gsa``).
"""

from .bundle import bundle_dir, compose_bundle, run_bundle
from .cam import CAMWriter
from .data import (
    CLASS_BALANCE_MODES,
    IMAGE_EXTENSIONS,
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
from .engine import amp_kwargs, flag, get_device, set_num_threads, setup_run, use_amp
from .handlers import LR_SCHEDULES, EpochLogger, PredictionWriter, ProgressBar, lr_schedule_handler
from .inferers import MCDropoutInferer, UnpackPredictiond, mc_dropout_outputs
from .metrics import METRIC_NAMES, ClassificationMetric
from .segmentation import (
    FillMissingMaskd,
    LungCAMWriter,
    MaskWriter,
    MultiOutputInferer,
    MultiOutputPostd,
    MultiOutputPrepareBatch,
    SegmentationEvaluator,
    SegmentationMetric,
    multi_output_inference_items,
    multi_output_items,
    multi_output_transforms,
)
from .runs import (
    CHECKPOINT_NAME,
    active_bundle_root,
    command_line_overrides,
    find_active_parser,
    find_active_workflow,
    find_checkpoint,
    find_run_dir,
    is_main_process,
    latest_run,
    make_run_name,
    new_run_dir,
    read_run_info,
    run_setting,
    save_executed_config,
)

__all__ = [
    "flag",
    "bundle_dir",
    "run_bundle",
    "compose_bundle",
    "CAMWriter",
    "CLASS_BALANCE_MODES",
    "IMAGE_EXTENSIONS",
    "balanced_sampler",
    "check_distributed_balance",
    "class_counts",
    "class_weights",
    "folder_items",
    "inference_items",
    "loss_class_weights",
    "manifest_classes",
    "resolve_classes",
    "split_items",
    "train_sampler",
    "amp_kwargs",
    "get_device",
    "set_num_threads",
    "setup_run",
    "use_amp",
    "LR_SCHEDULES",
    "EpochLogger",
    "PredictionWriter",
    "ProgressBar",
    "lr_schedule_handler",
    "MCDropoutInferer",
    "UnpackPredictiond",
    "mc_dropout_outputs",
    "METRIC_NAMES",
    "ClassificationMetric",
    "CHECKPOINT_NAME",
    "active_bundle_root",
    "command_line_overrides",
    "find_active_parser",
    "find_active_workflow",
    "find_checkpoint",
    "find_run_dir",
    "is_main_process",
    "latest_run",
    "make_run_name",
    "new_run_dir",
    "read_run_info",
    "run_setting",
    "save_executed_config",
    "FillMissingMaskd",
    "LungCAMWriter",
    "MaskWriter",
    "MultiOutputInferer",
    "MultiOutputPostd",
    "MultiOutputPrepareBatch",
    "SegmentationEvaluator",
    "SegmentationMetric",
    "multi_output_inference_items",
    "multi_output_items",
    "multi_output_transforms",
]
