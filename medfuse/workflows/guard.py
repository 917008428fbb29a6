# Copyright (c) medfuse contributors
# Licensed under the Apache License, Version 2.0
"""Training that never lets a non-finite value through: :class:`NonFiniteGuard`, finite-only savers, fault injection.

* :class:`NonFiniteGuard` is both the trainer's ``iteration_update`` and one of its handlers. A batch whose input
  holds NaN/inf never reaches the network (its non-finite values are zeroed before the forward, so every handler
  still gets a well-formed output, and its step is dropped; its logged loss is NaN); a step whose loss or gradient is non-finite is dropped (parameters,
  optimiser state and the network's buffers, BatchNorm statistics included, keep their values from before the
  step); a step that MONAI's ``GradScaler`` skipped is counted too. The decision is a masked update on the device
  (``torch.where`` against a copy taken before the step, as ``GradScaler`` keeps the decision on the device): no
  host synchronisation per step. Its counters are read every ``log_interval`` iterations and at the end of each
  epoch; ``limit`` bad steps in a row stop the run with :class:`~medfuse.errors.TrainingError` naming the epoch,
  the iteration and the images of the batch.
* :class:`FiniteCheckpointSaver`: MONAI's saver that refuses to write non-finite weights (the previous file stays).
* :func:`check_finite_state`: the check the savers, evaluation, inference and export share.
* :class:`FaultAt`: test-only handler (bundle key ``fault_at: "epoch:iteration"``) that ends the process with
  ``os._exit(137)`` there, as ``kill -9`` would.
"""

from __future__ import annotations

import collections
import functools
import logging
import os
from typing import Any, Mapping, Sequence

import torch
from ignite.engine import Engine, Events
from monai.engines.utils import IterationEvents
from monai.handlers import CheckpointSaver as _MonaiCheckpointSaver

from medfuse.errors import TrainingError

__all__ = ["NonFiniteGuard", "FiniteCheckpointSaver", "FaultAt", "check_finite_state", "nonfinite_tensors"]

logger = logging.getLogger(__name__)


def nonfinite_tensors(state: Mapping[str, Any]) -> list[str]:
    """Names of the floating-point tensors of ``state`` (a state dict, nested dicts allowed) holding NaN or inf."""
    bad: list[str] = []
    for name, value in state.items():
        if isinstance(value, Mapping):
            bad += [f"{name}.{n}" for n in nonfinite_tensors(value)]
        elif isinstance(value, torch.Tensor) and value.is_floating_point() and not bool(torch.isfinite(value).all()):
            bad.append(str(name))
    return bad


def check_finite_state(state: Mapping[str, Any] | torch.nn.Module, source: Any = "the model", fix: str = "") -> None:
    """Raise :class:`~medfuse.errors.TrainingError` when the weights in ``state`` hold NaN or inf.

    Args:
        state: a state dict (or a module, whose ``state_dict()`` is checked).
        source: what to name in the message (a checkpoint path).
        fix: what to do, appended to the message; defaults to re-training with a lower learning rate.
    """
    if isinstance(state, torch.nn.Module):
        state = state.state_dict()
    bad = nonfinite_tensors(state)
    if bad:
        shown = ", ".join(bad[:3]) + (f" and {len(bad) - 3} more" if len(bad) > 3 else "")
        raise TrainingError(
            f"{source}: {len(bad)} weight tensor(s) hold NaN or inf ({shown}); "
            f"{fix or 'this model cannot be used: re-train it (lower --learning_rate, check the training images)'}"
        )


def _batch_paths(batch: Any, keys: Sequence[str]) -> list[str]:
    """The image paths of a collated batch (``image_path``, else the image's ``filename_or_obj`` meta)."""
    if isinstance(batch, (list, tuple)) and batch and isinstance(batch[0], Mapping):  # detection: a list of items
        return [p for item in batch for p in _batch_paths(item, keys)]
    if not isinstance(batch, Mapping):
        return []
    for key in keys:
        value = batch.get(key)
        if value is None:
            continue
        if isinstance(value, str):
            return [value]
        if isinstance(value, (list, tuple)) and value and all(isinstance(v, str) for v in value):
            return list(value)
    image = batch.get("image")
    meta = getattr(image, "meta", None)
    found = meta.get("filename_or_obj") if isinstance(meta, Mapping) else None
    if isinstance(found, str):
        return [found]
    return [str(v) for v in found] if isinstance(found, (list, tuple)) else []


def _tensors(batch: Any) -> list[torch.Tensor]:
    if isinstance(batch, torch.Tensor):
        return [batch]
    if isinstance(batch, Mapping):
        return [t for v in batch.values() for t in _tensors(v)]
    if isinstance(batch, (list, tuple)):
        return [t for v in batch for t in _tensors(v)]
    return []


def _distributed() -> bool:
    import torch.distributed as dist

    return dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1


class NonFiniteGuard:
    """Skip non-finite inputs and drop non-finite steps; stop after ``limit`` bad steps in a row.

    Give the same object to the trainer as ``iteration_update`` and first in its ``train_handlers`` (the task base
    config does). For each iteration:

    1. the floating-point tensors of the batch are checked where they are (the data loader's CPU tensors: no
       device synchronisation); NaN/inf values are zeroed before the forward and the step is dropped (the forward
       still runs, on zeros: skipping it would leave the metrics, the post-processing and the logs without an
       output, and under ``torch.distributed`` would stall the other ranks' gradient all-reduce);
    2. the network's buffers are copied, the engine's own iteration runs, and the loss (``LOSS_COMPLETED``) and the
       gradients (when the optimiser steps; ``torch.nn.utils.get_total_norm``) are checked as device tensors;
    3. the optimiser step, wrapped on the instance, is a masked update: parameters and optimiser state are copied
       before ``step()`` and put back with ``torch.where`` when the step is bad; the buffers likewise after the
       iteration. A step ``GradScaler`` skipped (it does not call ``step()``) counts as bad (the scaler already
       synchronised to decide).

    Bad steps are counted on the device (in a row, the most in a row, in total, per epoch) and read every
    ``log_interval`` iterations and at each epoch end, when ``engine.state.skipped_steps`` (this epoch) and
    ``engine.state.skipped_steps_total`` are set for the logger and the run record.

    Args:
        limit: bad steps in a row that stop the run. Defaults to 3 (bundle key ``nonfinite_limit``).
        log_interval: iterations between reads of the counters. Defaults to 10.
        path_keys: batch keys holding the image paths named in the error. Defaults to ``("image_path",)``.

    Raises:
        ValueError: when ``limit`` or ``log_interval`` is below 1.
        TrainingError: (while running) after ``limit`` bad steps in a row.
    """

    def __init__(self, limit: int = 3, log_interval: int = 10, path_keys: Sequence[str] = ("image_path",)) -> None:
        if int(limit) < 1:
            raise ValueError(f"nonfinite_limit must be at least 1, got {limit}.")
        if int(log_interval) < 1:
            raise ValueError(f"log_interval must be at least 1, got {log_interval}.")
        self.limit = int(limit)
        self.log_interval = int(log_interval)
        self.path_keys = tuple(path_keys)
        self.engine: Engine | None = None
        self._paths: collections.OrderedDict[int, list[str]] = collections.OrderedDict()
        self._counters: dict[str, torch.Tensor] = {}
        self._ok: torch.Tensor | None = None
        self._stepped = False
        self._epoch_start_total = 0
        self.skipped_total = 0

    # ------------------------------------------------------------------ wiring
    def attach(self, engine: Engine) -> None:
        """Register the checks on ``engine`` (a MONAI trainer with ``network`` and ``optimizer``)."""
        self.engine = engine
        engine.add_event_handler(IterationEvents.LOSS_COMPLETED, self._loss_completed)
        engine.add_event_handler(Events.ITERATION_COMPLETED(every=self.log_interval), self.check)
        engine.add_event_handler(Events.EPOCH_STARTED, self._epoch_started)
        engine.add_event_handler(Events.EPOCH_COMPLETED, self._epoch_completed)

    def _device(self) -> torch.device:
        engine = self.engine
        device = getattr(getattr(engine, "state", None), "device", None) or getattr(engine, "device", None)
        return torch.device(device) if device is not None else torch.device("cpu")

    def _counter(self, name: str) -> torch.Tensor:
        if name not in self._counters:
            self._counters[name] = torch.zeros((), dtype=torch.long, device=self._device())
        return self._counters[name]

    # ------------------------------------------------------------------ per iteration
    def __call__(self, engine: Engine, batch: Any) -> Any:
        """The trainer's ``iteration_update``: the guarded form of ``engine``'s own iteration."""
        if self.engine is None:
            self.attach(engine)
        optimizer = getattr(engine, "optimizer", None)  # set after the handlers are attached (MONAI's __init__)
        if optimizer is not None and not getattr(optimizer.step, "_medfuse_guarded", False):
            optimizer.step = self._guarded_step(optimizer, optimizer.step)
        iteration = int(engine.state.iteration)
        self._paths[iteration] = _batch_paths(batch, self.path_keys)
        while len(self._paths) > max(self.log_interval, self.limit) + 1:
            self._paths.popitem(last=False)
        device = self._device()
        self._ok = torch.ones((), dtype=torch.bool, device=device)
        self._stepped = False
        input_ok = True
        for t in _tensors(batch):
            if not t.is_floating_point():
                continue
            if t.device.type == "cpu":  # the data loader's tensors: checked without touching the device
                if not bool(torch.isfinite(t).all()):
                    input_ok = False
                    torch.nan_to_num_(t, nan=0.0, posinf=0.0, neginf=0.0)
            else:  # already on the device: folded into the step's flag, no host sync
                self._ok = self._ok & torch.isfinite(t).all()
                torch.nan_to_num_(t, nan=0.0, posinf=0.0, neginf=0.0)
        if not input_ok:
            self._ok = self._ok & False
        network = getattr(engine, "network", None)
        buffers = [b for b in network.buffers()] if network is not None else []
        saved = [b.detach().clone() for b in buffers]
        # MONAI's own iteration of this trainer class (SupervisedTrainer, DetectionTrainer ...): the one it
        # would run without an ``iteration_update``.
        output = type(engine)._iteration(engine, engine, batch)
        if self._scaler_skipped(engine):
            self._ok = self._ok & False
        ok = self._agreed(self._ok)
        with torch.no_grad():
            for b, s in zip(buffers, saved):
                b.copy_(torch.where(ok, b, s))
        self._record(ok, iteration)
        if not input_ok:  # the logs show the batch as not learned from
            item = output[0] if isinstance(output, list) and output else output
            if isinstance(item, dict):
                item["loss"] = torch.full_like(item["loss"], float("nan")) if "loss" in item else None
        return output

    def _scaler_skipped(self, engine: Engine) -> bool:
        """True when the trainer's ``GradScaler`` ran and did not call ``optimizer.step()`` although a step was due."""
        if not (getattr(engine, "amp", False) and getattr(engine, "scaler", None) is not None) or self._stepped:
            return False
        acc = int(getattr(engine, "accumulation_steps", 1) or 1)
        if acc <= 1:
            return True
        length = engine.state.epoch_length or 0
        local = (int(engine.state.iteration) - 1) % length if length else int(engine.state.iteration) - 1
        return (local + 1) % acc == 0 or (length and local + 1 == length)

    @staticmethod
    def _agreed(ok: torch.Tensor) -> torch.Tensor:
        """``ok`` of every rank together (a device all-reduce, no host sync); ``ok`` itself outside distributed."""
        if not _distributed():
            return ok
        import torch.distributed as dist

        flag = ok.to(torch.int32)
        dist.all_reduce(flag, op=dist.ReduceOp.MIN)
        return flag.bool()

    def _loss_completed(self, engine: Engine) -> None:
        output = engine.state.output
        loss = output.get("loss") if isinstance(output, Mapping) else None
        if isinstance(loss, torch.Tensor) and self._ok is not None:
            self._ok = self._ok & torch.isfinite(loss.detach()).all()

    def _guarded_step(self, optimizer: torch.optim.Optimizer, step):
        guard = self

        # wraps: keeps the marks torch's LR schedulers put on the step they wrapped (else they warn it was replaced)
        @functools.wraps(step)
        def guarded_step(*args, **kwargs):
            guard._stepped = True
            params = [p for group in optimizer.param_groups for p in group["params"]]
            grads = [p.grad for p in params if p.grad is not None]
            ok = guard._ok if guard._ok is not None else torch.ones((), dtype=torch.bool, device=guard._device())
            if grads:
                ok = ok & torch.isfinite(torch.nn.utils.get_total_norm(grads, error_if_nonfinite=False))
            ok = guard._agreed(ok)
            guard._ok = ok
            with torch.no_grad():
                before = [p.detach().clone() for p in params]
                state_before = {
                    id(p): {k: v.detach().clone() for k, v in optimizer.state[p].items() if isinstance(v, torch.Tensor)}
                    for p in params
                    if p in optimizer.state
                }
            result = step(*args, **kwargs)
            with torch.no_grad():
                for p, old in zip(params, before):
                    p.copy_(torch.where(ok.to(p.device), p, old))
                for p in params:
                    if p not in optimizer.state:
                        continue
                    old_state = state_before.get(id(p), {})
                    for k, v in optimizer.state[p].items():
                        if not isinstance(v, torch.Tensor):
                            continue
                        # state created by this step (the first one) goes back to zeros, the optimisers' start
                        old = old_state.get(k, torch.zeros_like(v))
                        v.copy_(torch.where(ok.to(v.device), v, old))
            return result

        guarded_step._medfuse_guarded = True  # type: ignore[attr-defined]
        return guarded_step

    def _record(self, ok: torch.Tensor, iteration: int) -> None:
        bad = (~ok).to(torch.long)
        streak = self._counter("streak")
        worst = self._counter("worst")
        at = self._counter("at")
        streak.add_(1).mul_(bad)  # +1 on a bad step, 0 on a good one
        reached = (streak >= self.limit) & (at == 0)
        at.copy_(torch.where(reached, torch.full_like(at, iteration), at))
        worst.copy_(torch.maximum(worst, streak))
        self._counter("total").add_(bad)

    # ------------------------------------------------------------------ resume
    def state_dict(self) -> dict:
        """The count of dropped steps so far (``resume.pt``; the in-a-row streak restarts with the epoch)."""
        if self._counters:
            self.skipped_total = int(self._counter("total").item())
        return {"skipped_total": int(self.skipped_total)}

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        """Continue counting from a ``resume.pt``'s :meth:`state_dict`."""
        self.skipped_total = self._epoch_start_total = int(state["skipped_total"])
        self._counter("total").fill_(self.skipped_total)

    # ------------------------------------------------------------------ reads
    def _epoch_started(self, engine: Engine) -> None:
        self._epoch_start_total = self.skipped_total

    def _epoch_completed(self, engine: Engine) -> None:
        self.check(engine)
        engine.state.skipped_steps = self.skipped_total - self._epoch_start_total
        engine.state.skipped_steps_total = self.skipped_total

    def check(self, engine: Engine) -> None:
        """Read the counters (one host sync); raise when ``limit`` bad steps came in a row."""
        if not self._counters:
            return
        self.skipped_total = int(self._counter("total").item())
        at = int(self._counter("at").item())
        engine.state.skipped_steps_total = self.skipped_total
        if at:
            length = int(engine.state.epoch_length or 0) or 1
            epoch, it = (at - 1) // length + 1, (at - 1) % length + 1
            paths = self._paths.get(at, [])
            shown = ", ".join(paths[:8]) + (f" and {len(paths) - 8} more" if len(paths) > 8 else "")
            raise TrainingError(
                f"training stopped: {self.limit} steps in a row had a non-finite input, loss or gradient "
                f"(epoch {epoch}, iteration {it}; batch images: {shown or 'unknown'}); check those images, lower "
                f"--learning_rate, or raise --nonfinite_limit; the last checkpoint holds finite weights"
            )


class FiniteCheckpointSaver(_MonaiCheckpointSaver):
    """MONAI's ``CheckpointSaver`` that refuses non-finite weights: nothing is written and the previous file stays.

    Every save of MONAI's saver goes through its ignite ``Checkpoint`` objects; this checks the objects of
    ``save_dict`` first and raises :class:`~medfuse.errors.TrainingError` (naming the folder) when a floating-point
    tensor holds NaN or inf. Same arguments as ``monai.handlers.CheckpointSaver``.
    """

    def _check(self) -> None:
        for name, obj in self.save_dict.items():
            state = obj.state_dict() if hasattr(obj, "state_dict") else obj
            if isinstance(state, Mapping):
                check_finite_state(
                    state,
                    source=f"{self.save_dir}: not saving {name!r}",
                    fix="the previous checkpoint is kept; re-train (lower --learning_rate, check the images)",
                )

    def state_dict(self) -> dict:
        """The key-metric record (the best score and file) that MONAI's ``load_state_dict`` restores."""
        ckpt = getattr(self, "_key_metric_checkpoint", None)
        return ckpt.state_dict() if ckpt is not None else {}

    def completed(self, engine: Engine) -> None:
        self._check()
        super().completed(engine)

    def exception_raised(self, engine: Engine, e: Exception) -> None:
        try:
            self._check()
        except TrainingError:
            raise e from None
        super().exception_raised(engine, e)

    def metrics_completed(self, engine: Engine) -> None:
        self._check()
        super().metrics_completed(engine)

    def interval_completed(self, engine: Engine) -> None:
        self._check()
        super().interval_completed(engine)


class FaultAt:
    """Test-only: end the process with ``os._exit(137)`` (as ``kill -9`` leaves it) at ``"epoch:iteration"``.

    ``iteration`` counts from 1 within the epoch; ``""`` does nothing (bundle key ``fault_at``).
    """

    def __init__(self, fault_at: str = "") -> None:
        self.at: tuple[int, int] | None = None
        if fault_at:
            try:
                epoch, it = (int(v) for v in str(fault_at).split(":"))
            except ValueError:
                raise ValueError(f"fault_at must be 'epoch:iteration', got {fault_at!r}") from None
            self.at = (epoch, it)

    def attach(self, engine: Engine) -> None:
        if self.at is not None:
            engine.add_event_handler(Events.ITERATION_STARTED, self)

    def __call__(self, engine: Engine) -> None:
        length = int(engine.state.epoch_length or 0) or 1
        local = (int(engine.state.iteration) - 1) % length + 1
        if (int(engine.state.epoch), local) == self.at:
            logger.warning("fault_at %s: ending the process with status 137", self.at)
            os._exit(137)
