# Copyright (c) medfuse contributors
# Licensed under the Apache License, Version 2.0
"""Runs that have a state and resume after a kill.

* :class:`RunState`: a trainer handler that keeps ``status`` in ``run_info.json`` (``running``, then ``failed`` or
  ``interrupted`` when the trainer stops on an exception; :func:`finish_run`, from the config's ``finalize``, sets
  ``finished`` with the sha256 of ``model.pt`` and the guard's ``skipped_steps``); every epoch it writes
  ``<run>/resume.pt`` atomically (temp file + ``os.replace``, the previous one kept as ``resume.prev.pt``) and,
  when resuming, restores it before the first epoch; each epoch's randomness is derived from ``(seed, epoch)``.
* :func:`resume_source`: what the bundle key ``resume`` names (``""``, ``"auto"``, a run name or folder).

``resume.pt`` holds plain tensors and containers only (``torch.load(weights_only=True)`` reads it): the model, the
optimiser, the LR scheduler, the ``GradScaler``, the trainer's epoch and iteration, the early-stop state, the
key-metric saver's record and the evaluator's best score. It holds no random state: an epoch's randomness is set
from ``(seed, epoch)`` when the epoch starts (torch, numpy, ``random``, the training transforms, the sampler's
generator), so an epoch interrupted by a kill is repeated exactly, with or without data-loader workers.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import Any

import torch
from ignite.engine import Engine, Events

from medfuse.errors import CheckpointError, DataError
from medfuse.utils.distributed import is_main_process, unwrap_module
from medfuse.utils.io import sha256_file
from medfuse.workflows.checkpoints import read_checkpoint, strip_module_prefix
from medfuse.workflows.handlers import scheduler_of
from medfuse.workflows.runs import CHECKPOINT_NAME, read_run_info, update_run_info

__all__ = ["RunState", "finish_run", "resume_source", "epoch_seed", "RESUME_NAME"]

RESUME_NAME = "resume.pt"
PREVIOUS_NAME = "resume.prev.pt"
logger = logging.getLogger(__name__)


def finish_run(run_dir: str | os.PathLike, trainer: Engine | None = None) -> None:
    """Mark a training run ``finished`` in its ``run_info.json``, with the sha256 of ``model.pt`` and skipped steps."""
    ckpt = Path(run_dir) / CHECKPOINT_NAME
    fields: dict[str, Any] = {"status": "finished", "model_sha256": sha256_file(ckpt) if ckpt.is_file() else None}
    state = getattr(trainer, "state", None)
    if state is not None and hasattr(state, "skipped_steps_total"):
        fields["skipped_steps"] = int(state.skipped_steps_total)
    update_run_info(run_dir, **fields)


def epoch_seed(seed: int, epoch: int) -> int:
    """The seed of ``epoch`` of a run seeded with ``seed`` (distinct per epoch, fits numpy's 32 bits)."""
    return (int(seed) * 100_003 + int(epoch) * 7_919) % (2**32)


def resume_source(resume: str, run_dir: str | os.PathLike, run_name: str = "", output_dir: str = "") -> Path | None:
    """The ``resume.pt`` the bundle key ``resume`` names, or ``None`` (start fresh).

    ``""``: none. ``"auto"``: ``<run_dir>/resume.pt`` of the run named by ``--run_name`` when it exists and the run
    is not finished (a new run otherwise); without ``--run_name`` an error, so that another run's or another fold's
    folder is never picked. Anything else: a run folder (a path, or a name under ``output_dir``) or a file.

    Raises:
        DataError: ``auto`` without ``--run_name``; a named run or file that does not exist or holds no resume.pt.
    """
    resume = str(resume or "").strip()
    if not resume:
        return None
    if resume == "auto":
        if not run_name:
            raise DataError("--resume auto needs --run_name NAME (the run folder to resume); it never guesses a run")
        path = Path(run_dir) / RESUME_NAME
        if not path.is_file() or read_run_info(run_dir).get("status") == "finished":
            return None
        return path
    cand = Path(resume)
    if not cand.exists() and output_dir:
        cand = Path(output_dir) / resume
    path = cand / RESUME_NAME if cand.is_dir() else cand
    if not path.is_file():
        raise DataError(f"--resume {resume}: no {RESUME_NAME} at {path}; give a run folder of an interrupted run")
    return path


class RunState:
    """Run status in ``run_info.json``, ``resume.pt`` every epoch, resume before the first epoch, per-epoch seeds.

    Attach to the trainer after the ``ValidationHandler`` (the saved state then holds the epoch's validation).

    Args:
        run_dir: the run folder.
        network, optimizer: what training changes.
        seed: the run's seed; each epoch re-seeds from ``(seed, epoch)`` (negative or None: not re-seeded).
        resume: the ``resume.pt`` to start from (:func:`resume_source`), or ``None``.
        early_stop: MONAI ``EarlyStopHandler`` whose patience counter is saved.
        key_saver: the key-metric ``CheckpointSaver`` whose best score is saved (so that ``model.pt`` is only
            replaced by a better epoch after a resume).
        evaluator: the validation engine, whose best metric is saved.
        guard: the trainer's :class:`~medfuse.workflows.guard.NonFiniteGuard`, whose count of dropped steps is saved
            (so that ``skipped_steps`` of a resumed run counts the steps dropped before the kill too).
    """

    def __init__(self, run_dir: str | os.PathLike, network: torch.nn.Module, optimizer: torch.optim.Optimizer,
                 seed: int | None = 0, resume: str | os.PathLike | None = None, early_stop: Any = None,
                 key_saver: Any = None, evaluator: Engine | None = None, guard: Any = None) -> None:
        self.run_dir = Path(run_dir)
        self.network = network
        self.optimizer = optimizer
        self.seed = None if seed is None or int(seed) < 0 else int(seed)
        self.resume = Path(resume) if resume else None
        self.early_stop = early_stop
        self.key_saver = key_saver
        self.evaluator = evaluator
        self.guard = guard

    def attach(self, engine: Engine) -> None:
        engine.add_event_handler(Events.STARTED, self.started)
        engine.add_event_handler(Events.EPOCH_STARTED, self.epoch_started)
        engine.add_event_handler(Events.EXCEPTION_RAISED, self.exception_raised)

    # ------------------------------------------------------------------ status
    def started(self, engine: Engine) -> None:
        # resume.pt is the state after EVERY epoch-end handler: registered now, ``save`` runs after the handlers
        # attached when the trainer was built. Saved before the epoch-level LR scheduler had stepped, a resumed run
        # would train its next epoch at the previous epoch's learning rate.
        if not engine.has_event_handler(self.save, Events.EPOCH_COMPLETED):
            engine.add_event_handler(Events.EPOCH_COMPLETED, self.save)
        update_run_info(self.run_dir, status="running", resumed_from=str(self.resume) if self.resume else None)
        if self.resume is not None:
            self.load(engine, self.resume)

    def exception_raised(self, engine: Engine, e: BaseException) -> None:
        status = "interrupted" if isinstance(e, KeyboardInterrupt) else "failed"
        fields: dict[str, Any] = {"status": status, "error": " ".join(str(e).split())[:500]}
        if hasattr(engine.state, "skipped_steps_total"):
            fields["skipped_steps"] = int(engine.state.skipped_steps_total)
        update_run_info(self.run_dir, **fields)
        raise e

    # ------------------------------------------------------------------ randomness
    def epoch_started(self, engine: Engine) -> None:
        if self.seed is None:
            return
        from monai.data.utils import set_rnd
        from monai.utils import set_determinism

        s = epoch_seed(self.seed, engine.state.epoch)
        set_determinism(seed=s)
        loader = getattr(engine, "data_loader", None)
        sampler = getattr(loader, "sampler", None)
        generator = getattr(sampler, "generator", None)
        if isinstance(generator, torch.Generator):
            generator.manual_seed(s)
        dataset = getattr(loader, "dataset", None)  # None for a plain list of batches
        if dataset is not None and not getattr(loader, "num_workers", 0):  # workers seed from torch, seeded above
            set_rnd(dataset, s)
        if engine.state.dataloader is not None:
            # a fresh iterator now, right after seeding: it draws the workers' base seed (and the sampler its order)
            # at the same point of the random stream whether this process ran the epochs before or resumed
            engine.set_data(engine.state.dataloader)

    # ------------------------------------------------------------------ resume.pt
    def _state(self, engine: Engine) -> dict:
        state: dict[str, Any] = {
            "model": unwrap_module(self.network).state_dict(),
            "optimizer": self.optimizer.state_dict(),
            "trainer": {"epoch": int(engine.state.epoch), "iteration": int(engine.state.iteration)},
        }
        sched = scheduler_of(self.optimizer)
        if sched is not None:
            state["lr_scheduler"] = sched.state_dict()
        scaler = getattr(engine, "scaler", None)
        if scaler is not None:
            state["scaler"] = scaler.state_dict()
        stopper = getattr(self.early_stop, "_handler", None)  # MONAI keeps ignite's EarlyStopping there
        if stopper is not None:
            state["early_stop"] = {"counter": int(stopper.counter),
                                   "best_score": None if stopper.best_score is None else float(stopper.best_score)}
        if self.key_saver is not None:
            state["key_saver"] = self.key_saver.state_dict()
        if self.evaluator is not None and getattr(self.evaluator.state, "best_metric", None) is not None:
            state["evaluator"] = {"best_metric": float(self.evaluator.state.best_metric),
                                  "best_metric_epoch": int(self.evaluator.state.best_metric_epoch)}
        if self.guard is not None:
            state["guard"] = self.guard.state_dict()
        return state

    def save(self, engine: Engine) -> None:
        """Write ``resume.pt`` atomically, keeping the previous one as ``resume.prev.pt`` (main process only)."""
        if not is_main_process():
            return
        self.run_dir.mkdir(parents=True, exist_ok=True)
        target, tmp = self.run_dir / RESUME_NAME, self.run_dir / f".{RESUME_NAME}.tmp"
        torch.save(self._state(engine), tmp)
        with open(tmp, "rb") as f:
            os.fsync(f.fileno())
        if target.is_file():
            os.replace(target, self.run_dir / PREVIOUS_NAME)
        os.replace(tmp, target)

    def load(self, engine: Engine, path: Path) -> None:
        fix = (f"resume from {path.parent / PREVIOUS_NAME} (--resume {path.parent / PREVIOUS_NAME}), "
               "or re-train without --resume")
        state = read_checkpoint(path, fix=fix)
        try:
            unwrap_module(self.network).load_state_dict(strip_module_prefix(state["model"]))
            self.optimizer.load_state_dict(state["optimizer"])
            sched = scheduler_of(self.optimizer)
            if sched is not None and "lr_scheduler" in state:
                sched.load_state_dict(state["lr_scheduler"])
            scaler = getattr(engine, "scaler", None)
            if scaler is not None and "scaler" in state:
                scaler.load_state_dict(state["scaler"])
            stopper = getattr(self.early_stop, "_handler", None)
            if stopper is not None and "early_stop" in state:
                stopper.counter = int(state["early_stop"]["counter"])
                stopper.best_score = state["early_stop"]["best_score"]
            if self.key_saver is not None and state.get("key_saver"):
                self.key_saver.load_state_dict(state["key_saver"])
            if self.evaluator is not None and "evaluator" in state:
                self.evaluator.state.best_metric = state["evaluator"]["best_metric"]
                self.evaluator.state.best_metric_epoch = state["evaluator"]["best_metric_epoch"]
            if self.guard is not None and "guard" in state:
                self.guard.load_state_dict(state["guard"])
                engine.state.skipped_steps_total = self.guard.skipped_total
            epoch, iteration = int(state["trainer"]["epoch"]), int(state["trainer"]["iteration"])
        except (KeyError, RuntimeError, ValueError, TypeError) as err:
            raise CheckpointError(f"{path}: does not match this run ({type(err).__name__}: "
                                  f"{' '.join(str(err).split())[:200]}); {fix}") from err
        engine.state.epoch, engine.state.iteration = epoch, iteration
        logger.info("resumed from %s after epoch %d", path, epoch)
        print(f"resumed from {path} after epoch {epoch}")
