# Copyright (c) medfuse contributors
# Licensed under the Apache License, Version 2.0
"""medfuse.workflows by task: classification is the one public home of the classifier pieces (the same objects the
configs name as ``medfuse.workflows.X``), multi_output is built on segmentation, and the DDP unwrap exists once."""

from __future__ import annotations

import ast
from pathlib import Path

import medfuse.workflows as workflows
from medfuse.workflows import classification, multi_output, segmentation

PACKAGE = Path(workflows.__file__).resolve().parents[1]


def test_classification_layer_is_the_home_of_the_names_configs_use():
    for name in classification.__all__:
        obj = getattr(classification, name)
        if hasattr(workflows, name):
            assert getattr(workflows, name) is obj, name
    assert {"ClassificationMetric", "PredictionWriter", "MCDropoutInferer", "UnpackPredictiond", "CAMWriter",
            "split_items", "loss_class_weights", "train_sampler"} <= set(classification.__all__)


def test_multi_output_is_built_on_the_segmentation_layer():
    assert issubclass(multi_output.MultiOutputEvaluator, segmentation.SegmentationEvaluator)
    assert not set(multi_output.__all__) & (set(segmentation.__all__) - {"FillMissingMaskd"})
    assert set(segmentation.MOVED_TO_MULTI_OUTPUT) <= set(multi_output.__all__)


def test_the_ddp_unwrap_exists_once_and_cam_keeps_no_private_aliases():
    loops = []
    for path in PACKAGE.rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.While) and "DataParallel" in ast.unparse(node.test):
                loops.append(str(path.relative_to(PACKAGE)))
    assert loops == ["utils/distributed.py"]
    from medfuse.workflows import cam

    assert not {"_stem", "_safe", "_display"} & set(vars(cam))
