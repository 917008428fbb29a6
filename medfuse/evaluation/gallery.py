# Copyright (c) medfuse contributors
# Licensed under the Apache License, Version 2.0
"""Grad-CAM overlays of the most uncertain cases of a predictions file (the report's gallery).

:func:`write_uncertain_cams` ranks the rows of a ``predictions.csv`` by uncertainty (entropy by
default, or mutual information), reloads the top ``k`` images with the model's own evaluation
transform, computes the Grad-CAM of each image's predicted class (``pred`` column, i.e. after
the validated threshold) with :func:`medfuse.visualize.compute_cam` in batches, and writes
``<out_dir>/<rank>_<stem>_<pred>.png`` plus ``<out_dir>/index.csv`` (``rank, image, label, pred,
prob, entropy, mutual_info, overlay``), which :func:`medfuse.evaluation.report.evaluate_predictions`
shows as the gallery. Images that cannot be loaded are skipped and listed with the reason in
``index.csv``'s ``skipped`` rows (``overlay`` empty).
"""

from __future__ import annotations

import csv
import logging
import os
from pathlib import Path
from typing import Any, Callable

import numpy as np

from medfuse.utils.io import atomic_write_csv

__all__ = ["uncertainty_order", "write_uncertain_cams", "read_cam_index"]

logger = logging.getLogger(__name__)
INDEX_COLUMNS = ["rank", "image", "label", "pred", "prob", "entropy", "mutual_info", "overlay", "skipped"]


def uncertainty_order(predictions: dict, measure: str = "entropy") -> np.ndarray:
    """Row indices from most to least uncertain (``entropy``, ``mutual_info`` or ``confidence`` = 1 - max prob)."""
    if measure == "mutual_info" and predictions.get("mutual_info") is not None:
        u = predictions["mutual_info"]
    elif measure == "confidence":
        u = 1.0 - predictions["probs"].max(1)
    else:
        from medfuse.evaluation.uncertainty import predictive_entropy

        u = predictions["entropy"] if predictions.get("entropy") is not None else predictive_entropy(predictions["probs"])
    u = np.where(np.isfinite(u), u, -np.inf)
    return np.argsort(-u, kind="stable")


def write_uncertain_cams(
    predictions_csv: str | os.PathLike,
    network: Any,
    transform: Callable[[dict], dict],
    out_dir: str | os.PathLike,
    k: int = 12,
    measure: str = "entropy",
    device: Any = None,
    target_layer: str = "auto",
    method: str = "gradcam",
    batch_size: int = 8,
    image_key: str = "image",
) -> Path:
    """Write CAM overlays of the ``k`` most uncertain rows of ``predictions_csv`` and their ``index.csv``.

    Args:
        predictions_csv: a medfuse predictions file whose ``image`` column holds loadable paths.
        network: the classifier (weights loaded); left in eval mode afterwards.
        transform: the evaluation transform taking ``{"image": path}`` to ``{"image": (C, H, W)}``.
        out_dir: folder of the overlays (created; earlier ``*.png`` files of a gallery are replaced).
        k: number of cases. Defaults to 12.
        measure: ``entropy``, ``mutual_info`` or ``confidence``.
        device: where to run the network; its parameters' device when ``None``.
        target_layer: layer explained (see :func:`medfuse.visualize.compute_cam`); ``"auto"``: the model's
            ``cam_layer`` (see :func:`medfuse.visualize.default_target_layer`), else its last convolution.
        method: ``gradcam`` or ``gradcam++``.
        batch_size: images per CAM batch.
        image_key: key of the image in the transform's output.

    Returns:
        the path of ``index.csv``.
    """
    import torch

    from medfuse.evaluation.predictions import read_predictions
    from medfuse.utils.distributed import unwrap_module
    from medfuse.utils.images import image_stem
    from medfuse.utils.paths import safe_file_name
    from medfuse.visualize.cam import compute_cam, display_image, save_overlay

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    for old in out.glob("*.png"):
        old.unlink()
    pred = read_predictions(predictions_csv, validate=False)
    order = uncertainty_order(pred, measure)[: max(int(k), 0)]
    net = unwrap_module(network)
    dev = torch.device(device) if device is not None else next(net.parameters()).device
    classes = pred["classes"]
    rows: list[dict] = []
    loaded: list[tuple[int, int, torch.Tensor]] = []
    for rank, i in enumerate(order, 1):
        path = pred["images"][i]
        try:
            data = transform({image_key: path})
            loaded.append((rank, int(i), torch.as_tensor(data[image_key]).float()))
        except Exception as e:  # a missing or unreadable file must not stop the report
            rows.append({"rank": rank, "image": path, "overlay": "", "skipped": f"cannot load: {type(e).__name__}: {e}"[:200]})
    for a in range(0, len(loaded), max(int(batch_size), 1)):
        chunk = loaded[a:a + batch_size]
        images = torch.stack([t for _, _, t in chunk]).to(dev)
        targets = [int(pred["pred"][i]) for _, i, _ in chunk]
        cams = compute_cam(net, images, target_layer=target_layer, class_index=targets, method=method).cpu()
        for (rank, i, img), cam, c in zip(chunk, cams, targets):
            path = pred["images"][i]
            ent = None if pred["entropy"] is None else float(pred["entropy"][i])
            mi = None if pred["mutual_info"] is None else float(pred["mutual_info"][i])
            lab = pred["labels"][i] if pred["labels"] is not None and pred["task"] == "single-label" else -1
            label = classes[int(lab)] if lab >= 0 else ""
            name = f"{rank:02d}_{safe_file_name(image_stem(path))}_{safe_file_name(classes[c])}.png"
            caption = f"#{rank} true {label or '?'} / pred {classes[c]} (p={pred['probs'][i, c]:.2f})"
            if ent is not None:
                caption += f", H={ent:.2f}"
            save_overlay(out / name, display_image(img), cam[0], title=caption)
            rows.append({"rank": rank, "image": path, "label": label, "pred": classes[c],
                         "prob": round(float(pred["probs"][i, c]), 6), "entropy": ent, "mutual_info": mi,
                         "overlay": name, "skipped": ""})
    rows.sort(key=lambda r: r["rank"])
    index = out / "index.csv"
    atomic_write_csv(index, rows, INDEX_COLUMNS, extrasaction="ignore")
    done = sum(1 for r in rows if r.get("overlay"))
    logger.info("CAM gallery: %d overlays, %d skipped -> %s", done, len(rows) - done, out)
    net.eval()
    return index


def read_cam_index(cam_dir: str | os.PathLike) -> list[dict]:
    """Rows of a gallery's ``index.csv`` (also a :class:`~medfuse.workflows.CAMWriter` index), ``[]`` when absent."""
    index = Path(cam_dir) / "index.csv"
    if not index.is_file():
        return []
    with open(index, newline="", encoding="utf-8") as f:
        return list(csv.DictReader(f))
