# Copyright (c) medfuse contributors
# Licensed under the Apache License, Version 2.0
"""Segmentation metrics per case and per class with MONAI: Dice, IoU and the 95th-percentile Hausdorff distance.

``pred`` and ``target`` are integer label maps ``(N, H, W[, D])`` or one-hot arrays
``(N, C, H, W[, D])`` (numpy or torch). A case whose ground truth is empty for a class has no
defined Dice / IoU / HD95 for that class: it gets NaN (with a warning naming the case and
class), and the summaries are taken over the defined cases. HD95 is in pixels, or in the units
of ``spacing`` when given; it is NaN (not infinity) when the prediction is empty but the
ground truth is not, and that is counted in ``per_class[c]["hd95"]["n_undefined"]``.

Example::

    >>> m = segmentation_metrics(pred_labels, true_labels, class_names=["lung"])
    >>> m["per_class"]["lung"]["dice"]["mean"], m["per_case"][0]["lung"]["hd95"]
"""

from __future__ import annotations

import warnings
from typing import Any, Sequence

import numpy as np

__all__ = ["segmentation_metrics", "to_one_hot"]


def _tensor(x: Any):
    import torch

    if isinstance(x, torch.Tensor):
        return x.detach().cpu()
    return torch.as_tensor(np.asarray(x))


def _is_one_hot(t, spatial_dims: int | None) -> bool:
    import torch

    if spatial_dims is not None:
        return t.ndim == spatial_dims + 2
    if t.ndim < 4:
        return False
    if t.ndim == 5:
        return True
    # 4-D: a 2-D one-hot (N, C, H, W) or a 3-D label map (N, H, W, D): one-hot has 0/1 values summing to 1
    vals = torch.unique(t)
    return bool(((vals == 0) | (vals == 1)).all() and torch.all(t.sum(1) == 1))


def to_one_hot(x: Any, num_classes: int | None = None, spatial_dims: int | None = None):
    """``(N, C, ...)`` float one-hot tensor of a label map ``(N, ...)`` or an already one-hot array."""
    import torch
    from monai.networks.utils import one_hot

    t = _tensor(x)
    if _is_one_hot(t, spatial_dims):
        return t.float()
    if t.is_floating_point() and not torch.all(t == t.round()):
        raise ValueError("a label map must hold integer class indices (threshold or argmax probabilities first)")
    t = t.long()
    if t.numel() and t.min() < 0:
        raise ValueError(f"label maps must not hold negative values, got {int(t.min())}")
    c = int(num_classes) if num_classes is not None else int(t.max()) + 1 if t.numel() else 1
    return one_hot(t.unsqueeze(1), num_classes=max(c, 2)).float()


def _stats(values: np.ndarray) -> dict:
    ok = values[np.isfinite(values)]
    return {
        "mean": float(ok.mean()) if ok.size else None,
        "std": float(ok.std()) if ok.size else None,
        "median": float(np.median(ok)) if ok.size else None,
        "n": int(ok.size),
        "n_undefined": int(values.size - ok.size),
    }


def segmentation_metrics(
    pred: Any,
    target: Any,
    class_names: Sequence[str] | None = None,
    include_background: bool = False,
    spacing: Any = None,
    case_ids: Sequence[str] | None = None,
    spatial_dims: int | None = None,
) -> dict:
    """Dice, IoU and HD95 of every case and class (MONAI ``DiceMetric``, ``MeanIoU``, ``HausdorffDistanceMetric``).

    Args:
        pred: predicted label map ``(N, H, W[, D])`` or one-hot ``(N, C, H, W[, D])``.
        target: ground truth in the same form.
        class_names: names of the reported classes (without the background unless
            ``include_background``); ``class_1``, ``class_2`` ... when ``None``.
        include_background: also report channel 0. Defaults to False.
        spacing: pixel / voxel size (one number or one per spatial axis) for HD95 in physical units.
        case_ids: names of the N cases in ``per_case``; ``0..N-1`` when ``None``.
        spatial_dims: 2 or 3 when the input form is ambiguous (a 4-D array is read as 2-D one-hot
            when its values are 0/1 and sum to one over axis 1, as a 3-D label map otherwise).

    Returns:
        ``{"per_case": [{"case": id, <class>: {"dice", "iou", "hd95"}}, ...],
        "per_class": {<class>: {"dice": {"mean", "std", "median", "n", "n_undefined"}, "iou": ..., "hd95": ...}},
        "mean": {"dice", "iou", "hd95"}, "classes": [...], "n": N, "hd95_units": "pixels" | "spacing"}``;
        ``mean`` is the mean over classes of the per-class means.

    Raises:
        ValueError: when the shapes of ``pred`` and ``target`` disagree, or names do not match the classes.
    """
    from monai.metrics import DiceMetric, HausdorffDistanceMetric, MeanIoU

    p_raw, t_raw = _tensor(pred), _tensor(target)
    n_classes = None
    if not _is_one_hot(p_raw, spatial_dims) and not _is_one_hot(t_raw, spatial_dims):
        both = [int(x.max()) for x in (p_raw, t_raw) if x.numel()]
        n_classes = (max(both) + 1) if both else 2
        if class_names is not None:
            n_classes = max(n_classes, len(class_names) + (0 if include_background else 1))
    p, t = to_one_hot(p_raw, n_classes, spatial_dims), to_one_hot(t_raw, n_classes, spatial_dims)
    if p.shape != t.shape:
        raise ValueError(f"pred {tuple(p.shape)} and target {tuple(t.shape)} differ (after one-hot encoding); "
                         "give both as label maps or both one-hot with the same classes")
    channels = list(range(p.shape[1])) if include_background else list(range(1, p.shape[1]))
    names = [str(c) for c in class_names] if class_names is not None else [f"class_{k}" for k in channels]
    if len(names) != len(channels):
        raise ValueError(f"{len(names)} class names for {len(channels)} classes "
                         f"({'with' if include_background else 'without'} the background): {names}")
    n = p.shape[0]
    ids = [str(c) for c in case_ids] if case_ids is not None else [str(i) for i in range(n)]
    if len(ids) != n:
        raise ValueError(f"{len(ids)} case ids for {n} cases")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # MONAI warns about empty masks; we warn once per case and class below
        dice = DiceMetric(include_background=include_background, reduction="none", ignore_empty=True)(p, t)
        iou = MeanIoU(include_background=include_background, reduction="none", ignore_empty=True)(p, t)
        hd = HausdorffDistanceMetric(include_background=include_background, percentile=95, reduction="none")(
            p, t, spacing=spacing)
    dice, iou, hd = (np.asarray(x.cpu().numpy(), dtype=np.float64).reshape(n, len(channels)) for x in (dice, iou, hd))
    gt_empty = (t[:, channels].reshape(n, len(channels), -1).sum(-1) == 0).numpy()
    pred_empty = (p[:, channels].reshape(n, len(channels), -1).sum(-1) == 0).numpy()
    for i in range(n):
        for j, name in enumerate(names):
            if gt_empty[i, j]:
                dice[i, j] = iou[i, j] = hd[i, j] = np.nan
                warnings.warn(f"segmentation case {ids[i]}: class {name!r} is empty in the ground truth; "
                              "its Dice, IoU and HD95 are NaN and left out of the summaries", stacklevel=2)
            elif pred_empty[i, j] or not np.isfinite(hd[i, j]):
                hd[i, j] = np.nan
                warnings.warn(f"segmentation case {ids[i]}: class {name!r} is empty in the prediction; "
                              "its HD95 is undefined (NaN)", stacklevel=2)
    per_case = []
    for i in range(n):
        row: dict[str, Any] = {"case": ids[i]}
        for j, name in enumerate(names):
            row[name] = {k: (None if not np.isfinite(v[i, j]) else float(v[i, j])) for k, v in
                         (("dice", dice), ("iou", iou), ("hd95", hd))}
        per_case.append(row)
    per_class = {name: {"dice": _stats(dice[:, j]), "iou": _stats(iou[:, j]), "hd95": _stats(hd[:, j])}
                 for j, name in enumerate(names)}

    def _mean_of(metric: str):
        v = [per_class[c][metric]["mean"] for c in names if per_class[c][metric]["mean"] is not None]
        return float(np.mean(v)) if v else None

    return {
        "n": int(n),
        "classes": names,
        "per_case": per_case,
        "per_class": per_class,
        "mean": {m: _mean_of(m) for m in ("dice", "iou", "hd95")},
        "hd95_units": "pixels" if spacing is None else "spacing",
    }
