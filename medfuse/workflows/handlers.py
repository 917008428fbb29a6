# Copyright (c) medfuse contributors
# Licensed under the Apache License, Version 2.0
"""Ignite/MONAI handlers used by the bundles.

* :class:`EpochLogger`: one row per epoch (epoch, train loss, validation metrics, learning
  rate, time) appended to ``log.csv`` and ``log.jsonl`` in the run folder.
* :class:`PredictionWriter`: collects the evaluator's outputs and writes ``predictions.csv``
  in the medfuse predictions format (:mod:`medfuse.evaluation.predictions`).
* :class:`ProgressBar`: ignite's tqdm bar, or nothing when disabled.
* :func:`lr_schedule_handler`: MONAI ``LrScheduleHandler`` for a cosine or one-cycle schedule.

Early stopping uses MONAI's ``EarlyStopHandler`` directly (see the bundle configs).
"""

from __future__ import annotations

import json
import logging
import math
import os
import time
import weakref
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np
import torch
from ignite.engine import Engine, Events
from monai.handlers import LrScheduleHandler, from_engine

from medfuse.evaluation.predictions import decision_columns, write_predictions
from medfuse.networks.uncertainty import ENSEMBLE_KEYS
from medfuse.utils.io import atomic_write_csv

__all__ = ["EpochLogger", "PredictionWriter", "ProgressBar", "every_n_iterations", "lr_schedule_handler", "scheduler_of", "LR_SCHEDULES"]

LR_SCHEDULES = ("cosine", "onecycle", "constant", "none")
logger = logging.getLogger(__name__)


def _scalar(v: Any) -> Any:
    if isinstance(v, torch.Tensor):
        return v.detach().cpu().item() if v.numel() == 1 else v.detach().cpu().tolist()
    if isinstance(v, np.generic):
        return v.item()
    return v


def _finite_mean(values: list) -> float | None:
    """Mean of the finite values (a step the non-finite guard dropped has a NaN loss); None when there is none."""
    finite = [v for v in values if math.isfinite(v)]
    return float(np.mean(finite)) if finite else None


class EpochLogger:
    """Append one row per training epoch to ``<log_dir>/<name>.csv`` and ``<name>.jsonl``.

    Columns: ``epoch``, ``train_loss`` (mean over the epoch's steps that were not dropped), every metric of
    the evaluator's last run (``val_auc``, ``val_aupr``, ``val_acc`` ...), ``lr`` (of the first
    parameter group, as used during the epoch), ``best_val_metric``, ``skipped_steps`` (steps
    :class:`~medfuse.workflows.guard.NonFiniteGuard` dropped this epoch, when it guards the trainer), ``time_s`` (wall time of
    the epoch, validation included). Attach it to the trainer after the ``ValidationHandler``
    so validation has run when the row is written.

    Args:
        log_dir: folder of the log files (created).
        evaluator: the validation engine whose ``state.metrics`` are logged.
        optimizer: read for the learning rate; defaults to ``engine.optimizer``.
        name: base file name. Defaults to ``"log"``.
        formats: any of ``"csv"``, ``"jsonl"``.
        loss_transform: maps the trainer output to the loss; defaults to the MONAI ``loss`` key.
        extra_columns: more columns a bundle adds, ``{name: callable(engine) -> value}``, called at the end
            of each epoch after the evaluator's metrics (e.g. ``{"gsa_map_mean": ...}``); a callable that
            returns None leaves that row's cell empty.
    """

    def __init__(
        self,
        log_dir: str | os.PathLike,
        evaluator: Engine | None = None,
        optimizer: torch.optim.Optimizer | None = None,
        name: str = "log",
        formats: Sequence[str] = ("csv", "jsonl"),
        loss_transform: Callable = from_engine(["loss"], first=True),
        extra_columns: dict[str, Callable[[Engine], Any]] | None = None,
    ) -> None:
        bad = [f for f in formats if f not in ("csv", "jsonl")]
        if bad:
            raise ValueError(f"formats must be 'csv' and/or 'jsonl', got {bad}")
        not_callable = [k for k, fn in dict(extra_columns or {}).items() if not callable(fn)]
        if not_callable:
            raise ValueError(f"extra_columns values must be callables engine -> value, not for {not_callable}")
        self.extra_columns = dict(extra_columns or {})
        self.log_dir = Path(log_dir)
        self.evaluator = evaluator
        self.optimizer = optimizer
        self.name = name
        self.formats = tuple(formats)
        self.loss_transform = loss_transform
        self.rows: list[dict] = []
        self._losses: list[Any] = []
        self._t0 = 0.0
        self._lr: float | None = None

    @property
    def csv_path(self) -> Path:
        return self.log_dir / f"{self.name}.csv"

    @property
    def jsonl_path(self) -> Path:
        return self.log_dir / f"{self.name}.jsonl"

    def attach(self, engine: Engine) -> None:
        engine.add_event_handler(Events.STARTED, self.started)
        engine.add_event_handler(Events.EPOCH_STARTED, self.epoch_started)
        engine.add_event_handler(Events.ITERATION_COMPLETED, self.iteration_completed)
        engine.add_event_handler(Events.EPOCH_COMPLETED, self.epoch_completed)

    def _current_lr(self, engine: Engine) -> float | None:
        opt = self.optimizer or getattr(engine, "optimizer", None)
        if opt is None or not opt.param_groups:
            return None
        return float(opt.param_groups[0]["lr"])

    def started(self, engine: Engine) -> None:
        """On a resumed run (the trainer starts after epoch N): keep the logged rows of epochs 1..N, drop the rest.

        Registered after a resume handler's ``STARTED`` (which restores the epoch), so an epoch that was logged
        but not saved in ``resume.pt`` before a kill is logged once, when it is run again.
        """
        done = int(engine.state.epoch or 0)
        self.rows = []
        if done and self.jsonl_path.is_file():
            with open(self.jsonl_path, encoding="utf-8") as f:
                rows = [json.loads(line) for line in f if line.strip()]
            self.rows = [r for r in rows if int(r.get("epoch", 0)) <= done]
        if self.log_dir.is_dir() and (self.rows or not done):
            for path, fmt in ((self.jsonl_path, "jsonl"), (self.csv_path, "csv")):
                if fmt in self.formats and path.is_file():
                    path.unlink()
            for row in list(self.rows):
                self._write(row, keep=True)

    def epoch_started(self, engine: Engine) -> None:
        self._losses = []
        self._t0 = time.perf_counter()
        self._lr = self._current_lr(engine)

    def iteration_completed(self, engine: Engine) -> None:
        loss = self.loss_transform(engine.state.output)
        if loss is not None:
            # kept as a (detached, device) tensor: reading it here would wait for the GPU every step; a dropped
            # (non-finite) step is left out of the mean at epoch end and counted in skipped_steps
            self._losses.append(loss.detach() if isinstance(loss, torch.Tensor) else loss)

    def epoch_completed(self, engine: Engine) -> None:
        row: dict[str, Any] = {
            "epoch": int(engine.state.epoch),
            "train_loss": _finite_mean([float(_scalar(v)) for v in self._losses]),
        }
        if self.evaluator is not None:
            ev = self.evaluator.state
            if getattr(ev, "epoch", 0) and ev.metrics:
                for k, v in ev.metrics.items():
                    v = _scalar(v)
                    if isinstance(v, (int, float)):
                        row[k] = float(v)
                row["best_val_metric"] = _scalar(getattr(ev, "best_metric", None))
                row["best_val_epoch"] = _scalar(getattr(ev, "best_metric_epoch", None))
        if hasattr(engine.state, "skipped_steps"):  # set by NonFiniteGuard
            row["skipped_steps"] = int(engine.state.skipped_steps)
        for name, fn in self.extra_columns.items():
            row[name] = _scalar(fn(engine))
        row["lr"] = self._lr
        row["time_s"] = round(time.perf_counter() - self._t0, 3)
        self._write(row)

    def _write(self, row: dict, keep: bool = False) -> None:
        if not keep:
            self.rows.append(row)
        self.log_dir.mkdir(parents=True, exist_ok=True)
        if "jsonl" in self.formats:
            with open(self.jsonl_path, "a", encoding="utf-8") as f:
                f.write(json.dumps({k: (None if isinstance(v, float) and math.isnan(v) else v) for k, v in row.items()}) + "\n")
        if "csv" in self.formats:
            # the columns can grow (metrics appear after the first validation): rewrite the file
            cols: list[str] = []
            for r in self.rows:
                cols += [k for k in r if k not in cols]
            atomic_write_csv(self.csv_path, self.rows, cols)


def _item_value(item_out: Any, item_batch: Any, key: str) -> Any:
    for src in (item_out, item_batch):
        if isinstance(src, dict) and key in src and src[key] is not None:
            return src[key]
    return None


#: columns of the input checks (``medfuse.evaluation.predictions.SCHEMA``), written when the rows carry them
INPUT_CHECK_COLUMNS = ("input_check", "ood_score", "ood")


def _cell(v: Any) -> Any:
    return f"{v:.6g}" if isinstance(v, float) and math.isfinite(v) else ("" if isinstance(v, float) else v)


class PredictionWriter:
    """Write the evaluator's predictions to ``<output_dir>/<filename>`` (medfuse format).

    Each decollated item must carry ``pred`` as class probabilities (apply the softmax in the
    post-processing first); ``label`` is written when present, ``entropy`` and
    ``mutual_info`` when the inferer produced them (Monte-Carlo dropout), otherwise the
    entropy of the probabilities is written. Every row carries ``temperature`` (1: no calibration) and
    ``threshold`` (the validated threshold ``pred`` used; 0.5 for a two-class arg-max, empty for more classes), so the file says how ``pred``
    follows the calibrated probabilities. Rows are gathered from all ranks under
    ``torch.distributed``; only rank 0 writes.

    Args:
        output_dir: folder of the file (created).
        classes: class names, in index order.
        filename: defaults to ``predictions.csv``.
        image_key: item key holding the image path (``image_path`` from
            :mod:`medfuse.workflows.data`; the ``filename_or_obj`` meta of ``image`` otherwise).
        extra_keys: item keys written as extra columns (for example ``patient_id``) when the
            items carry them.
        calibration: a ``calibration.json`` (path or dictionary; see
            :mod:`medfuse.evaluation.calibration`): the probabilities are temperature-scaled and
            ``pred`` follows its validated threshold (the entropy is recomputed from the scaled
            probabilities; the mutual information is kept as measured). ``None`` or ``""``: no
            calibration (T = 1, arg-max), which is logged.
        input_guard: the workflow's :class:`~medfuse.workflows.input_guard.InputGuard`: the inputs it refused are
            written too, with their ``input_check`` reason and empty probabilities (scored rows get ``ok``).
            ``ood_score`` / ``ood`` columns are written when the inferer produced them (an OOD model was given).
    """

    def __init__(
        self,
        output_dir: str | os.PathLike,
        classes: Sequence[str],
        filename: str = "predictions.csv",
        image_key: str = "image_path",
        pred_key: str = "pred",
        label_key: str = "label",
        extra_keys: Sequence[str] = (),
        calibration: Any = None,
        input_guard: Any = None,
    ) -> None:
        from medfuse.evaluation.calibration import load_calibration

        self.output_dir = Path(output_dir)
        self.classes = [str(c) for c in classes]
        self.calibration_source = calibration if isinstance(calibration, (str, os.PathLike)) and calibration else None
        self.calibration = load_calibration(calibration or None, self.classes)
        self.filename = filename
        self.image_key = image_key
        self.pred_key = pred_key
        self.label_key = label_key
        self.extra_keys = tuple(extra_keys)
        self.input_guard = input_guard
        self.rows: list[dict] = []
        self.path: Path | None = None

    def attach(self, engine: Engine) -> None:
        engine.add_event_handler(Events.EPOCH_STARTED, self.reset)
        engine.add_event_handler(Events.ITERATION_COMPLETED, self.collect)
        engine.add_event_handler(Events.EPOCH_COMPLETED, self.write)

    def reset(self, engine: Engine | None = None) -> None:
        self.rows = []

    def _image_name(self, out: Any, batch: Any) -> str:
        name = _item_value(out, batch, self.image_key)
        if name is None:
            img = _item_value(batch, out, "image")
            meta = getattr(img, "meta", None)
            name = meta.get("filename_or_obj") if isinstance(meta, dict) else None
        return str(name) if name is not None else ""

    def collect(self, engine: Engine) -> None:
        outputs = engine.state.output
        batches = engine.state.batch
        if isinstance(outputs, dict):  # not decollated
            raise ValueError("PredictionWriter needs decollated outputs (the engine's decollate=True)")
        for i, out in enumerate(outputs):
            batch = batches[i] if isinstance(batches, (list, tuple)) and i < len(batches) else {}
            probs = _item_value(out, batch, self.pred_key)
            if probs is None:
                raise ValueError(f"item {i} has no '{self.pred_key}'")
            probs = torch.as_tensor(probs).detach().float().cpu().reshape(-1)
            if probs.numel() != len(self.classes):
                raise ValueError(f"prediction has {probs.numel()} values but there are {len(self.classes)} classes")
            row: dict[str, Any] = {"image": self._image_name(out, batch), "probs": probs.numpy()}
            label = _item_value(out, batch, self.label_key)
            if label is not None:
                label = torch.as_tensor(label).reshape(-1)
                row["label"] = int(label.argmax()) if label.numel() > 1 else int(label.item())
            for key in ("entropy", "mutual_info", "ood_score", *ENSEMBLE_KEYS):
                v = _item_value(out, batch, key)
                if v is not None:
                    row[key] = float(_scalar(v))
            v = _item_value(out, batch, "ood")
            if v is not None:
                row["ood"] = int(bool(_scalar(v)))
            v = _item_value(batch, out, "input_check")
            if v is not None:
                row["input_check"] = str(v)
            for key in self.extra_keys:
                v = _item_value(out, batch, key)
                if v is not None:
                    row[key] = _scalar(v)
            self.rows.append(row)

    def _all_rows(self) -> list[dict] | None:
        import torch.distributed as dist

        if dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1:
            gathered: list = [None] * dist.get_world_size()
            dist.all_gather_object(gathered, self.rows)
            if dist.get_rank() != 0:
                return None
            return [r for part in gathered for r in part]
        return self.rows

    def write(self, engine: Engine | None = None) -> Path | None:
        rows = self._all_rows()
        if rows is None:
            return None
        scored = len(rows)
        if self.input_guard is not None:  # refused inputs: a row each, no probabilities
            nan = np.full(len(self.classes), np.nan)
            rows = rows + [{"image": r["image"], "probs": nan, "input_check": r["input_check"]}
                           for r in self.input_guard.rejected]
        has_label = bool(rows) and all("label" in r for r in rows[:scored]) and scored > 0
        if not has_label and any("label" in r for r in rows):
            logger.warning("some items have labels and some do not: the label column is left out")
        has_mi = scored > 0 and all("mutual_info" in r for r in rows[:scored])
        has_entropy = scored > 0 and all("entropy" in r for r in rows[:scored])
        probs = np.stack([r["probs"] for r in rows]) if rows else np.zeros((0, len(self.classes)))
        pred = None
        entropy = [r.get("entropy", math.nan) for r in rows] if has_entropy else None
        if self.calibration is not None:
            from medfuse.evaluation.calibration import apply_calibration

            probs[:scored], pred_scored = apply_calibration(probs[:scored], self.calibration)
            pred = np.concatenate([np.asarray(pred_scored, dtype=np.int64).reshape(-1), np.full(len(rows) - scored, -1)])
            entropy = None  # recomputed from the temperature-scaled probabilities
            logger.info("predictions calibrated with %s: T=%.4g, decision %s", self.calibration_source or "the given calibration",
                        float(self.calibration["temperature"]), self.calibration["decision"])
        else:
            logger.warning("no calibration.json beside the checkpoint: probabilities are not temperature-scaled (T=1) "
                           "and pred is the arg-max")
        self.path = write_predictions(
            self.output_dir / self.filename,
            [r["image"] for r in rows],
            probs,
            self.classes,
            labels=[r.get("label", -1) for r in rows] if has_label else None,
            entropy=entropy,
            mutual_info=[r.get("mutual_info", math.nan) for r in rows] if has_mi else None,
            extra={**{k: [f"{r[k]:.6g}" if k in r else "" for r in rows] for k in ENSEMBLE_KEYS if any(k in r for r in rows)},
                   **decision_columns(self.calibration, len(self.classes), len(rows)),
                   **{k: [_cell(r.get(k, "")) for r in rows] for k in (*INPUT_CHECK_COLUMNS, *self.extra_keys)
                      if any(k in r for r in rows)}},
            pred=pred,
        )
        logger.info("wrote %d predictions to %s", len(rows), self.path)
        return self.path


class ProgressBar:
    """ignite's tqdm progress bar showing the loss; does nothing when ``enabled`` is False.

    Args:
        enabled: attach the bar.
        show_loss: show the ``loss`` next to the bar (set False for evaluators, whose outputs have no loss).
        persist: keep the finished bar on screen.
        every: update the bar (and read the loss, a host-device sync on a GPU) every ``every`` iterations.
            Defaults to 1.
    """

    def __init__(self, enabled: bool = True, show_loss: bool = True, persist: bool = False, every: int = 1) -> None:
        if int(every) < 1:
            raise ValueError(f"every must be >= 1, got {every!r}")
        self.enabled = bool(enabled)
        self.show_loss = bool(show_loss)
        self.persist = bool(persist)
        self.every = int(every)
        self.bar = None

    def attach(self, engine: Engine) -> None:
        if not self.enabled:
            return
        from ignite.handlers import ProgressBar as _IgniteBar

        self.bar = _IgniteBar(persist=self.persist)
        event = Events.ITERATION_COMPLETED(every=self.every)
        if self.show_loss:
            self.bar.attach(engine, output_transform=lambda out: {"loss": float(_scalar(from_engine(["loss"], first=True)(out)))},
                            event_name=event)
        else:
            self.bar.attach(engine, event_name=event)


def every_n_iterations(n: int = 1) -> Callable[[Engine, int], bool]:
    """An ignite event filter true on every ``n``-th iteration (for ``StatsHandler(iteration_log=...)``), so a
    per-iteration log reads the loss (a host-device sync on a GPU) only at that interval.

    Raises:
        ValueError: ``n`` < 1.
    """
    n = int(n)
    if n < 1:
        raise ValueError(f"log_interval must be >= 1, got {n}")
    return lambda engine, iteration: iteration % n == 0


_SCHEDULERS: "weakref.WeakKeyDictionary[torch.optim.Optimizer, Any]" = weakref.WeakKeyDictionary()


def _remember_scheduler(optimizer: torch.optim.Optimizer, handler: LrScheduleHandler) -> LrScheduleHandler:
    _SCHEDULERS[optimizer] = handler.lr_scheduler
    return handler


def scheduler_of(optimizer: torch.optim.Optimizer) -> Any:
    """The LR scheduler :func:`lr_schedule_handler` made for ``optimizer`` (saved in ``resume.pt``), or ``None``."""
    return _SCHEDULERS.get(optimizer)


def lr_schedule_handler(
    optimizer: torch.optim.Optimizer,
    schedule: str = "cosine",
    epochs: int = 1,
    steps_per_epoch: int = 1,
    min_lr_ratio: float = 0.01,
    pct_start: float = 0.3,
    print_lr: bool = False,
) -> LrScheduleHandler:
    """A MONAI ``LrScheduleHandler`` for ``schedule``.

    * ``cosine``: ``CosineAnnealingLR`` stepped once per epoch, from the optimizer's learning
      rate down to ``min_lr_ratio`` times it after ``epochs`` epochs.
    * ``onecycle``: ``OneCycleLR`` stepped every iteration, peaking at the optimizer's learning
      rate after ``pct_start`` of the ``epochs * steps_per_epoch`` steps.
    * ``constant`` (alias ``none``): the learning rate does not change.

    Raises:
        ValueError: for an unknown schedule or non-positive ``epochs`` / ``steps_per_epoch``.
    """
    schedule = str(schedule).lower()
    if schedule not in LR_SCHEDULES:
        raise ValueError(f"lr_schedule must be one of {list(LR_SCHEDULES)}, got {schedule!r}")
    if int(epochs) < 1 or int(steps_per_epoch) < 1:
        raise ValueError(f"epochs and steps_per_epoch must be >= 1, got {epochs} and {steps_per_epoch}")
    if schedule in ("constant", "none"):
        return _remember_scheduler(optimizer, LrScheduleHandler(
            torch.optim.lr_scheduler.LambdaLR(optimizer, lambda epoch: 1.0), print_lr=print_lr))
    base_lr = float(optimizer.param_groups[0]["lr"])
    if schedule == "cosine":
        sched = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=int(epochs), eta_min=base_lr * float(min_lr_ratio))
        return _remember_scheduler(optimizer, LrScheduleHandler(sched, print_lr=print_lr, epoch_level=True))
    sched = torch.optim.lr_scheduler.OneCycleLR(
        optimizer,
        max_lr=[g["lr"] for g in optimizer.param_groups],
        total_steps=int(epochs) * int(steps_per_epoch),
        pct_start=float(pct_start),
    )
    return _remember_scheduler(optimizer, LrScheduleHandler(sched, print_lr=print_lr, epoch_level=False))
