# Copyright (c) medfuse contributors
# Licensed under the Apache License, Version 2.0
"""Fitting a run's out-of-distribution model (``ood.json`` beside ``model.pt``).

:func:`fit_run_ood` is called at the end of training by the classification bundles (``fit_ood``, on by default):
the best checkpoint's pooled features of the training split (with the evaluation transforms, no augmentation)
fit the class-conditional Gaussians, the validation split sets the threshold (99th percentile), see
:mod:`medfuse.evaluation.ood`. :func:`fit_ood_for_run` does the same afterwards for a run folder that has none
(``medfuse ood-fit RUN``), rebuilding the network, items and transforms from the run's executed ``config.json``.
The inference workflow finds the file with ``medfuse.evaluation.find_ood(@ckpt_path)`` and the
``MCDropoutInferer`` writes ``ood_score`` / ``ood``.

Segmentation and detection bundles have no OOD model: only the DICOM input check guards them.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np
import torch

from medfuse.errors import DataError
from medfuse.evaluation.ood import OOD_FILE, OOD_PERCENTILE, fit_ood, save_ood
from medfuse.networks.features import pooled_features
from medfuse.utils.distributed import is_main_process, unwrap_module

__all__ = ["collect_features", "eval_loader", "fit_run_ood", "fit_ood_for_run", "load_weights"]

logger = logging.getLogger(__name__)


def load_weights(network: torch.nn.Module, checkpoint: str | os.PathLike, device: Any = "cpu") -> torch.nn.Module:
    """Load a medfuse checkpoint (a state dict, or ``{"model": state dict}``) into ``network`` (unwrapped)."""
    net = unwrap_module(network)
    state = torch.load(checkpoint, map_location=device, weights_only=True)
    if isinstance(state, dict) and "model" in state and not any(k.endswith(".weight") for k in state):
        state = state["model"]
    net.load_state_dict(state)
    return net


def collect_features(
    network: torch.nn.Module, batches: Any, device: Any = "cpu", image_key: str = "image", label_key: str = "label"
) -> tuple[np.ndarray, np.ndarray, list[str]]:
    """Pooled features ``(N, D)``, labels ``(N,)`` (-1 when absent) and image names of every batch."""
    feats, labels, names = [], [], []
    for batch in batches:
        x = batch[image_key].to(device)
        f = pooled_features(network, x).cpu().numpy()
        feats.append(f)
        lab = batch.get(label_key)
        if lab is None:
            labels.append(np.full(len(f), -1))
        else:
            lab = torch.as_tensor(lab)
            labels.append((lab.argmax(1) if lab.ndim > 1 and lab.shape[1] > 1 else lab.reshape(len(f))).long().numpy())
        paths = batch.get("image_path")
        names += [str(p) for p in paths] if paths is not None else [f"item{len(names) + i}" for i in range(len(f))]
    if not feats:
        return np.zeros((0, 0)), np.zeros(0, dtype=np.int64), []
    return np.concatenate(feats), np.concatenate(labels), names


def eval_loader(items: Sequence[dict], transform: Callable, batch_size: int, num_workers: int):
    """A plain, unshuffled MONAI loader of ``items`` through ``transform``."""
    from monai.data import DataLoader, Dataset

    return DataLoader(Dataset(list(items), transform=transform), batch_size=int(batch_size), shuffle=False,
                      num_workers=int(num_workers))


def fit_run_ood(
    run_dir: str | os.PathLike,
    network: torch.nn.Module,
    train_items: Sequence[dict],
    transform: Callable,
    val_dataloader: Any,
    device: Any = "cpu",
    checkpoint: str | os.PathLike | None = None,
    batch_size: int = 16,
    num_workers: int = 0,
    percentile: float = OOD_PERCENTILE,
) -> dict | None:
    """Fit ``<run_dir>/ood.json`` with the run's best checkpoint: training features (``train_items`` through the
    evaluation ``transform``), threshold from the ``val_dataloader`` features. Only rank 0 works.

    Returns:
        the OOD model, or ``None`` on other ranks / without a checkpoint (logged).
    """
    if not is_main_process():
        return None
    run_dir = Path(run_dir)
    ckpt = Path(checkpoint) if checkpoint else run_dir / "model.pt"
    if not ckpt.is_file():
        logger.warning("no checkpoint at %s: OOD model not fitted", ckpt)
        return None
    net = load_weights(network, ckpt, device)
    x, y, _ = collect_features(net, eval_loader(train_items, transform, batch_size, num_workers), device)
    v, _, _ = collect_features(net, val_dataloader, device)
    model = fit_ood(x, y, v, percentile=percentile, fitted_on={
        "run_dir": str(run_dir.resolve()), "checkpoint": ckpt.name, "features": "training split",
        "threshold": f"{percentile:g}th percentile of the validation split's scores"})
    path = save_ood(model, run_dir / OOD_FILE)
    logger.info("OOD model written to %s (threshold %.4g, %d training / %d validation images)", path,
                model["threshold"], model["n_train"], model["n_validation"])
    return model


def fit_ood_for_run(
    run_dir: str | os.PathLike,
    checkpoint: str | os.PathLike | None = None,
    manifest: str | os.PathLike | None = None,
    device: Any = "cpu",
    batch_size: int = 32,
    num_workers: int = 0,
    max_items: int | None = None,
) -> dict:
    """Fit ``ood.json`` for an existing run folder from its executed ``config.json`` (post hoc).

    Args:
        run_dir: a training run folder (``config.json`` and ``model.pt``).
        checkpoint: weights to use; ``<run_dir>/model.pt`` by default.
        manifest: the training manifest, when it moved since training (default: the one in ``config.json``).
        device: where to compute the features.
        batch_size, num_workers: of the feature passes.
        max_items: override the run's ``max_items`` (0: every item).

    Raises:
        DataError: no ``config.json`` or checkpoint in ``run_dir``, or a config without a classification network.
    """
    from monai.bundle import ConfigParser

    run_dir = Path(run_dir)
    config = run_dir / "config.json"
    ckpt = Path(checkpoint) if checkpoint else run_dir / "model.pt"
    if not config.is_file():
        raise DataError(f"{run_dir}: no config.json; give a training run folder written by a medfuse bundle")
    if not ckpt.is_file():
        raise DataError(f"{ckpt}: no such checkpoint; give --checkpoint or a run folder with model.pt")
    parser = ConfigParser()
    parser.read_config(str(config))
    parser["device"] = f"$torch.device({str(device)!r})"
    parser["run_dir"] = str(run_dir)
    if manifest:
        parser["manifest"] = str(manifest)
    if max_items is not None:
        parser["max_items"] = int(max_items)
    for key in ("network_def", "train#data", "validate#preprocessing", "validate#data"):
        if key not in parser:
            raise DataError(f"{config}: no '{key}' in the run's config; the OOD model is for classification bundles")
    network = parser.get_parsed_content("network_def", instantiate=True).to(device)
    transform = parser.get_parsed_content("validate#preprocessing", instantiate=True)
    train_items = parser.get_parsed_content("train#data", instantiate=True)
    val_items = parser.get_parsed_content("validate#data", instantiate=True)
    model = fit_run_ood(run_dir, network, train_items, transform, eval_loader(val_items, transform, batch_size, num_workers),
                        device=device, checkpoint=ckpt, batch_size=batch_size, num_workers=num_workers)
    if model is None:
        raise DataError(f"{run_dir}: the OOD model could not be fitted (see the log)")
    return model
