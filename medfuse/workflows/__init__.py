# Copyright (c) medfuse contributors
# Licensed under the Apache License, Version 2.0
"""Shared logic of the medfuse bundles, so that bundle configs stay short; organised by task.

Task layers (each usable by any network of its task; bundle configs name them by full dotted path):

* :mod:`~medfuse.workflows.classification`: image classifiers: items and classes, class balance,
  :class:`ClassificationMetric`, Monte-Carlo dropout inferer, :class:`PredictionWriter`, :class:`CAMWriter`,
  calibration (the public home of those pieces; the code lives in ``data``, ``metrics``, ``inferers``,
  ``handlers``, ``cam``);
* :mod:`~medfuse.workflows.segmentation`: N-class segmentation: items with masks, label-map post-processing and
  clean-up, :class:`SegmentationMetric`, :class:`SegmentationEvaluator` (Dice / IoU / HD95 per class per case),
  :class:`MaskWriter` (PNG and NIfTI with the input's affine);
* :mod:`~medfuse.workflows.multi_output`: segmentation + diagnosis networks (the multi-output U-Net), built on the
  two: partly annotated items and joint transforms, two-output batch / inferer / post-processing, lung-CAM
  evaluator and writer, head calibration;
* :mod:`~medfuse.workflows.detection`: box detectors: items, collation, the trainer step, :class:`DetectionMetric`
  (``val_map`` ...), :class:`DetectionWriter` (``boxes.csv``, FROC, overlays); contract in ``docs/architecture.md``.

Task-neutral modules:

* :mod:`~medfuse.workflows.runs`: run folders, the executed config and run record;
* :mod:`~medfuse.workflows.data`: items from manifests or folders, classes, class balance;
* :mod:`~medfuse.workflows.engine`: device, bf16 AMP on CUDA, threads, determinism, the speed keys
  (:func:`speed_setup`), training datasets and loaders by cache / loader kind;
* :mod:`~medfuse.workflows.checkpoints`: model weights read so that a broken or non-finite file is named;
* :mod:`~medfuse.workflows.resume`: run status in run_info.json, resume.pt each epoch, resuming, per-epoch seeds;
* :mod:`~medfuse.workflows.guard`: non-finite inputs, losses, gradients and weights never pass (training);
* :mod:`~medfuse.workflows.metrics`: validation metrics (AUC, AUPR, accuracy) as ignite metrics;
* :mod:`~medfuse.workflows.inferers`: plain or Monte-Carlo dropout inference;
* :mod:`~medfuse.workflows.handlers`: per-epoch log, predictions writer, progress bar, LR schedule;
* :mod:`~medfuse.workflows.input_guard`: the input guard of inference (DICOM tags against the bundle's ``accepts``);
* :mod:`~medfuse.workflows.ood`: fitting a run's out-of-distribution model (``ood.json``), at the end of training
  or afterwards;
* :mod:`~medfuse.workflows.bundle`: layered bundle configs; run a bundle's train / evaluate / inference from Python;
* :mod:`~medfuse.workflows.gsa`: the global spatial attention bundle (classifier with or without the map, its
  loss, the image basis, map files); imported on use (``$import medfuse.workflows.gsa``).

The names below are re-exported here (``medfuse.workflows.ClassificationMetric``, as the configs write them).
``medfuse.workflows.segmentation.<name>`` still resolves the multi-output names that moved to
:mod:`~medfuse.workflows.multi_output`, for one release (bundles exported before the split).
"""

from .bad_images import BadImageLog, SkipBadImages, collate_present, screen_images
from .bundle import bundle_accepts, bundle_dir, compose_bundle, run_bundle
from .input_guard import InputGuard
from .ensemble import as_ensemble
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
from .checkpoints import CheckpointLoader, load_weights, read_checkpoint
from .resume import RunState, finish_run, resume_source
from .guard import FaultAt, FiniteCheckpointSaver, NonFiniteGuard, check_finite_state
from .engine import (
    amp_kwargs,
    default_threads,
    default_workers,
    flag,
    get_device,
    refuse_option,
    make_dataloader,
    make_dataset,
    scaled_learning_rate,
    set_num_threads,
    setup_run,
    speed_setup,
    use_amp,
)
from .handlers import LR_SCHEDULES, EpochLogger, PredictionWriter, ProgressBar, every_n_iterations, lr_schedule_handler
from .inferers import MCDropoutInferer, UnpackPredictiond, mc_dropout_outputs
from .metrics import METRIC_NAMES, ClassificationMetric
from .ood import fit_run_ood
from .multi_output import (
    FillMissingMaskd,
    LungCAMWriter,
    MultiOutputEvaluator,
    MultiOutputInferer,
    MultiOutputPostd,
    MultiOutputPrepareBatch,
    multi_output_inference_items,
    multi_output_items,
    multi_output_transforms,
)
from .segmentation import MaskWriter, SegmentationEvaluator, SegmentationMetric, SegmentationPostd, segmentation_items
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
    update_run_info,
    save_executed_config,
)

__all__ = [
    "BadImageLog",
    "SkipBadImages",
    "collate_present",
    "screen_images",
    "flag",
    "bundle_accepts",
    "RunState",
    "finish_run",
    "resume_source",
    "update_run_info",
    "CheckpointLoader",
    "load_weights",
    "read_checkpoint",
    "NonFiniteGuard",
    "FiniteCheckpointSaver",
    "FaultAt",
    "check_finite_state",
    "as_ensemble",
    "refuse_option",
    "bundle_dir",
    "InputGuard",
    "fit_run_ood",
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
    "default_threads",
    "default_workers",
    "make_dataloader",
    "make_dataset",
    "scaled_learning_rate",
    "speed_setup",
    "LR_SCHEDULES",
    "EpochLogger",
    "PredictionWriter",
    "ProgressBar",
    "every_n_iterations",
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
    "update_run_info",
    "FillMissingMaskd",
    "LungCAMWriter",
    "MaskWriter",
    "MultiOutputInferer",
    "MultiOutputPostd",
    "MultiOutputPrepareBatch",
    "MultiOutputEvaluator",
    "SegmentationEvaluator",
    "SegmentationMetric",
    "SegmentationPostd",
    "segmentation_items",
    "multi_output_inference_items",
    "multi_output_items",
    "multi_output_transforms",
]
