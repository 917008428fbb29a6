# Copyright (c) medfuse contributors
# Licensed under the Apache License, Version 2.0
"""Reading a trained model's weights so that a broken file is named, never half-used.

* :func:`load_weights`: ``torch.load(weights_only=True)`` of a ``model.pt`` (or an initial / resume checkpoint) where
  a missing, truncated or corrupt file is one :class:`~medfuse.errors.CheckpointError` naming the file and the fix,
  a ``{"model": state}`` container and a ``module.`` (DDP / DataParallel) prefix are unwrapped, and non-finite
  weights are refused;
* :class:`CheckpointLoader`: MONAI's ``CheckpointLoader`` handler (evaluation, inference) reading through
  :func:`load_weights`.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Mapping

import torch
from ignite.engine import Engine
from ignite.handlers import Checkpoint
from monai.handlers import CheckpointLoader as _MonaiCheckpointLoader

from medfuse.errors import CheckpointError
from medfuse.workflows.guard import nonfinite_tensors

__all__ = ["read_checkpoint", "load_weights", "strip_module_prefix", "CheckpointLoader", "RETRAIN"]

#: what to do about a model file that cannot be used
RETRAIN = "re-export or re-train the model (or point --ckpt_path at a good model.pt)"


def read_checkpoint(path: str | os.PathLike, fix: str = RETRAIN, map_location: Any = "cpu") -> Any:
    """``torch.load(path, weights_only=True)`` with every failure as one :class:`CheckpointError` naming ``path``.

    ``torch.load`` reports a truncated zip as ``PytorchStreamReader failed reading zip archive`` without the file
    name, and a file that is not a checkpoint at all as an unpickling error: both mean "this file is broken".
    """
    p = Path(path)
    if not p.is_file():
        raise CheckpointError(f"{p}: checkpoint not found; {fix}")
    if p.stat().st_size == 0:
        raise CheckpointError(f"{p}: the checkpoint is empty (0 bytes, an interrupted copy or save); {fix}")
    try:
        return torch.load(p, map_location=map_location, weights_only=True)
    except Exception as err:  # zip, unpickling and EOF errors have many types: all mean a broken file here
        cause = " ".join(str(err).split())[:200]
        raise CheckpointError(
            f"{p}: cannot read the checkpoint, it is truncated or corrupt ({type(err).__name__}: {cause}); {fix}"
        ) from err


def strip_module_prefix(state: Mapping[str, Any]) -> dict[str, Any]:
    """``state`` without the ``module.`` prefix ``DistributedDataParallel`` / ``DataParallel`` put on every key."""
    keys = list(state)
    if keys and all(str(k).startswith("module.") for k in keys):
        return {str(k)[len("module.") :]: v for k, v in state.items()}
    return dict(state)


def load_weights(path: str | os.PathLike, fix: str = RETRAIN, map_location: Any = "cpu",
                 key: str = "model") -> dict[str, torch.Tensor]:
    """The model state dict in ``path``: read (:func:`read_checkpoint`), unwrapped, checked to be finite.

    A ``{key: state}`` container (a resume checkpoint, MONAI's ``CheckpointSaver`` with several objects) gives its
    ``key`` entry; a ``module.`` prefix is removed.

    Raises:
        CheckpointError: missing, empty, truncated or corrupt file, no state dict inside, or NaN/inf weights.
    """
    state = read_checkpoint(path, fix, map_location)
    if isinstance(state, Mapping) and isinstance(state.get(key), Mapping):
        state = state[key]
    if not isinstance(state, Mapping) or not any(torch.is_tensor(v) for v in state.values()):
        raise CheckpointError(f"{path}: holds no model state dict (a mapping of parameter names to tensors); {fix}")
    bad = nonfinite_tensors(state)
    if bad:
        raise CheckpointError(
            f"{path}: {len(bad)} weight tensor(s) hold NaN or inf ({', '.join(bad[:3])}"
            f"{' ...' if len(bad) > 3 else ''}); this model cannot be used: re-train it (lower --learning_rate)"
        )
    return strip_module_prefix(state)


class CheckpointLoader(_MonaiCheckpointLoader):
    """MONAI's ``CheckpointLoader`` for one model, reading through :func:`load_weights`.

    A broken, empty or non-finite ``load_path`` stops the workflow with one line naming it (MONAI's loader raises
    torch's ``PytorchStreamReader failed reading zip archive`` without the path); a ``module.``-prefixed state dict
    loads into a plain network. Several objects in ``load_dict`` (a trainer's resume state) are MONAI's business:
    the file is still checked first.
    """

    def __call__(self, engine: Engine) -> None:
        if len(self.load_dict) != 1 or not self.strict_shape:
            read_checkpoint(self.load_path)
            super().__call__(engine)
            return
        (name, obj), = self.load_dict.items()
        state = load_weights(self.load_path, key=name, map_location=self.map_location)
        Checkpoint.load_objects(to_load={name: obj}, checkpoint={name: state}, strict=self.strict)
        self.logger.info(f"Restored all variables from {self.load_path}")
