# Copyright (c) medfuse contributors
# Licensed under the Apache License, Version 2.0
"""Ignite metrics backed by :func:`medfuse.evaluation.classification_metrics`.

Validation during training reports the very numbers that ``medfuse evaluate`` computes
later: ``ClassificationMetric(classes, "auc")`` is the positive-class AUC for two classes
and the one-vs-rest macro AUC otherwise (likewise ``"aupr"``; ``"accuracy"`` is plain
accuracy). Under ``torch.distributed`` the predictions of all ranks are gathered first.
"""

from __future__ import annotations

import logging
import math
from typing import Callable, Sequence

import torch
from ignite.metrics import Metric
from monai.handlers import from_engine

from medfuse.evaluation.classification import classification_metrics

__all__ = ["ClassificationMetric", "METRIC_NAMES"]

METRIC_NAMES = ("auc", "aupr", "accuracy", "auc_macro", "aupr_macro")
logger = logging.getLogger(__name__)


def _gather(t: torch.Tensor) -> torch.Tensor:
    import torch.distributed as dist

    if dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1:
        from monai.utils import evenly_divisible_all_gather

        if dist.get_backend() == "nccl":  # NCCL gathers CUDA tensors only
            return evenly_divisible_all_gather(t.to(torch.device("cuda", torch.cuda.current_device())), concat=True).cpu()
        return evenly_divisible_all_gather(t, concat=True)
    return t


class ClassificationMetric(Metric):
    """One number of :func:`~medfuse.evaluation.classification_metrics` as an ignite metric.

    Args:
        classes: class names (or the number of classes).
        metric: one of ``auc``, ``aupr``, ``accuracy``, ``auc_macro``, ``aupr_macro``.
        output_transform: maps the engine output to ``(probs, labels)``; the default reads
            ``pred`` (probabilities, after the softmax post-transform) and ``label`` of each
            decollated item.
        undefined_value: reported when the metric is undefined (for example a validation split
            with a single class); a warning says why. Defaults to 0.0 so checkpointing and early
            stopping keep working.

    Example (in a bundle config)::

        "key_metric": {"val_auc": {"_target_": "medfuse.workflows.ClassificationMetric",
                                    "classes": "@classes", "metric": "auc"}}
    """

    def __init__(
        self,
        classes: Sequence[str] | int,
        metric: str = "auc",
        output_transform: Callable | None = None,
        undefined_value: float = 0.0,
        device: str | torch.device = "cpu",
    ) -> None:
        if metric not in METRIC_NAMES:
            raise ValueError(f"metric must be one of {list(METRIC_NAMES)}, got {metric!r}")
        self.classes = [f"class{k}" for k in range(classes)] if isinstance(classes, int) else [str(c) for c in classes]
        if len(self.classes) < 2:
            raise ValueError(f"a classifier needs at least 2 classes, got {self.classes}")
        self.metric = metric
        self.undefined_value = float(undefined_value)
        self._probs: list[torch.Tensor] = []
        self._labels: list[torch.Tensor] = []
        super().__init__(output_transform=output_transform or from_engine(["pred", "label"]), device=device)

    def reset(self) -> None:
        self._probs = []
        self._labels = []

    def update(self, output) -> None:
        y_pred, y = output
        if y is None or (isinstance(y, (list, tuple)) and any(v is None for v in y)):
            return  # unlabelled items (inference) do not count
        if isinstance(y_pred, (list, tuple)):
            y_pred = torch.stack([torch.as_tensor(p) for p in y_pred])
        if isinstance(y, (list, tuple)):
            y = torch.stack([torch.as_tensor(v) for v in y])
        y_pred = torch.as_tensor(y_pred).detach().float().reshape(-1, len(self.classes))
        y = torch.as_tensor(y).detach().reshape(-1)
        if y.numel() != y_pred.shape[0]:
            # one-hot labels
            y = torch.as_tensor(output[1]).detach().reshape(-1, len(self.classes)).argmax(-1)
        # kept on the device until compute(): a .cpu() here would wait for the GPU every training step
        self._probs.append(y_pred)
        self._labels.append(y.long())

    def compute(self) -> float:
        if self._probs:
            probs, labels = torch.cat([p.cpu() for p in self._probs]), torch.cat([v.cpu() for v in self._labels])
        else:
            probs, labels = torch.zeros(0, len(self.classes)), torch.zeros(0, dtype=torch.long)
        probs, labels = _gather(probs), _gather(labels)
        if labels.numel() == 0:
            logger.warning("ClassificationMetric(%s): no predictions were seen", self.metric)
            return self.undefined_value
        value = classification_metrics(labels.numpy(), probs.numpy(), self.classes)[self.metric]
        if value is None or (isinstance(value, float) and math.isnan(value)):
            present = sorted({self.classes[i] for i in labels.tolist()})
            logger.warning(
                "validation %s is undefined (the labels hold only %s); reporting %s",
                self.metric, present, self.undefined_value,
            )
            return self.undefined_value
        return float(value)
