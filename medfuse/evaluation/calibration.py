# Copyright (c) medfuse contributors
# Licensed under the Apache License, Version 2.0
"""Calibration: ECE / MCE, Brier score, NLL, temperature scaling and the validated operating threshold.

Calibration error
    The cases are binned by confidence (the top-label probability for single-label tasks, every
    class probability for multi-label tasks) into equal-width bins (``[0, 1/B], (1/B, 2/B], ...``)
    or equal-mass bins (edges at the quantiles of the confidences), the binning of
    :func:`sklearn.calibration.calibration_curve` with ``strategy="uniform"`` / ``"quantile"``.
    ECE is the case-weighted mean of ``|accuracy - confidence|`` over bins, MCE its maximum
    over non-empty bins (Guo et al., "On Calibration of Modern Neural Networks", ICML 2017).

Temperature scaling (Guo et al. 2017)
    One scalar ``T`` divides the logits: ``p_T = softmax(log p / T)`` for single-label tasks
    (log-probabilities are logits up to a per-row constant), ``sigmoid(logit(p) / T)`` per class
    for multi-label tasks. ``T`` minimises the negative log-likelihood on the validation split
    (bounded scalar search over ``log T``); it never changes the arg-max, only the confidence.

Operating threshold
    For two classes, the threshold on the calibrated probability of the positive class (index 1
    unless named) is the highest one whose validation sensitivity reaches ``target_sensitivity``
    (:func:`~medfuse.evaluation.classification.threshold_for_sensitivity`); ``pred`` is positive when
    ``p >= threshold``. For more than two single-label classes the decision stays the arg-max of
    the calibrated probabilities (a threshold per class cannot make one decision), and one-vs-rest
    thresholds at the target sensitivity are stored for reporting. For multi-label tasks each
    class is decided by its own threshold.

``calibration.json``
    Written beside the checkpoint (``<run_dir>/calibration.json``, ``models/calibration.json`` in an
    exported bundle) by :func:`fit_run_calibration` at the end of training; keys::

        format              "medfuse-calibration/1"
        task                "single-label" | "multi-label"
        classes             class names in index order
        temperature         fitted T (1.0 means no change)
        decision            "threshold" (binary), "argmax" (multi-class), "per-class-threshold" (multi-label)
        positive_class      name of the positive class (binary), else null
        threshold           threshold on the calibrated positive-class probability (binary), else null
        per_class_thresholds {class: threshold} one-vs-rest at the target sensitivity (null: no positives)
        target_sensitivity  the sensitivity the threshold was chosen for
        validation          {"sensitivity", "specificity", "nll_before", "nll_after", "ece_before", "ece_after"}
        fitted_on           {"source", "split", "n", "n_per_class", "mc_samples", "checkpoint"}
        created, medfuse_version
"""

from __future__ import annotations

import datetime as _dt
import logging
import math
import os
from pathlib import Path
from typing import Any, Mapping, Sequence

import numpy as np

from medfuse.errors import DataError, TrainingError
from medfuse.evaluation.classification import binary_operating_point, threshold_for_sensitivity

__all__ = [
    "CALIBRATION_NAME",
    "CALIBRATION_FORMAT",
    "calibration_bins",
    "expected_calibration_error",
    "calibration_summary",
    "brier_score",
    "negative_log_likelihood",
    "temperature_scale",
    "fit_temperature",
    "fit_calibration",
    "apply_calibration",
    "uncalibrate",
    "find_calibration",
    "load_calibration",
    "save_calibration",
    "fit_run_calibration",
]

logger = logging.getLogger(__name__)

CALIBRATION_NAME = "calibration.json"
CALIBRATION_FORMAT = "medfuse-calibration/1"
_EPS = 1e-12
_T_BOUNDS = (0.05, 20.0)


def calibration_bins(confidence: Any, correct: Any, n_bins: int = 15, strategy: str = "uniform") -> dict:
    """Per-bin counts, mean confidence and accuracy (``sklearn.calibration.calibration_curve`` binning).

    Args:
        confidence: (M,) predicted probabilities of the event.
        correct: (M,) 1 when the event happened (prediction correct / class present).
        n_bins: number of bins. Defaults to 15.
        strategy: ``"uniform"`` (equal width) or ``"quantile"`` (equal mass).

    Returns:
        ``{"edges", "count", "confidence", "accuracy"}`` (lists; empty bins have count 0 and NaN means).
    """
    conf = np.asarray(confidence, dtype=np.float64).reshape(-1)
    corr = np.asarray(correct, dtype=np.float64).reshape(-1)
    if conf.shape != corr.shape:
        raise ValueError(f"confidence has {conf.size} values but correct has {corr.size}")
    if int(n_bins) < 1:
        raise ValueError(f"n_bins must be >= 1, got {n_bins}")
    if strategy == "uniform":
        edges = np.linspace(0.0, 1.0, int(n_bins) + 1)
    elif strategy == "quantile":
        edges = np.percentile(conf, np.linspace(0, 100, int(n_bins) + 1)) if conf.size else np.linspace(0, 1, n_bins + 1)
    else:
        raise ValueError(f"strategy must be 'uniform' or 'quantile', got {strategy!r}")
    ids = np.searchsorted(edges[1:-1], conf)
    count = np.bincount(ids, minlength=len(edges) - 1).astype(np.float64)
    s_conf = np.bincount(ids, weights=conf, minlength=len(edges) - 1)
    s_corr = np.bincount(ids, weights=corr, minlength=len(edges) - 1)
    with np.errstate(invalid="ignore", divide="ignore"):
        mean_conf = np.where(count > 0, s_conf / count, np.nan)
        acc = np.where(count > 0, s_corr / count, np.nan)
    return {"edges": edges.tolist(), "count": count.astype(int).tolist(), "confidence": mean_conf.tolist(),
            "accuracy": acc.tolist()}


def expected_calibration_error(confidence: Any, correct: Any, n_bins: int = 15, strategy: str = "uniform") -> tuple:
    """``(ECE, MCE)`` of the binned confidences (``(None, None)`` without cases)."""
    b = calibration_bins(confidence, correct, n_bins, strategy)
    count = np.asarray(b["count"], dtype=np.float64)
    if count.sum() == 0:
        return None, None
    gap = np.abs(np.asarray(b["accuracy"]) - np.asarray(b["confidence"]))
    used = count > 0
    return float((count[used] * gap[used]).sum() / count.sum()), float(gap[used].max())


def _events(y: np.ndarray, probs: np.ndarray, multilabel: bool) -> tuple[np.ndarray, np.ndarray]:
    """(confidence, correct) pairs that the calibration error is computed over."""
    if multilabel:
        known = y >= 0
        return probs[known], y[known].astype(np.float64)
    return probs.max(1), (probs.argmax(1) == y).astype(np.float64)


def brier_score(y: Any, probs: Any, multilabel: bool = False) -> float | None:
    """Brier score.

    Two single-label classes: ``mean (p_1 - y)^2`` (``sklearn.metrics.brier_score_loss`` of the
    positive class). More classes: ``mean_i sum_c (p_ic - [y_i = c])^2`` (Brier 1950; twice the
    binary form for two classes). Multi-label: mean over known cells of ``(p - y)^2``.
    """
    p = np.asarray(probs, dtype=np.float64)
    y = np.asarray(y)
    if p.shape[0] == 0:
        return None
    if multilabel:
        known = y >= 0
        return float(((p - y) ** 2)[known].mean()) if known.any() else None
    y = y.astype(np.int64).reshape(-1)
    if p.shape[1] == 2:
        return float(((p[:, 1] - (y == 1)) ** 2).mean())
    onehot = np.eye(p.shape[1])[y]
    return float(((p - onehot) ** 2).sum(1).mean())


def negative_log_likelihood(y: Any, probs: Any, multilabel: bool = False, eps: float = 1e-15) -> float | None:
    """Mean negative log-likelihood in nats (``sklearn.metrics.log_loss``; probabilities clipped to [eps, 1 - eps])."""
    p = np.clip(np.asarray(probs, dtype=np.float64), eps, 1 - eps)
    y = np.asarray(y)
    if p.shape[0] == 0:
        return None
    if multilabel:
        known = y >= 0
        ll = y * np.log(p) + (1 - y) * np.log(1 - p)
        return float(-ll[known].mean()) if known.any() else None
    y = y.astype(np.int64).reshape(-1)
    p = p / p.sum(1, keepdims=True)
    return float(-np.log(p[np.arange(len(y)), y]).mean())


#: Fewest cases per calibration bin on average: with fewer, each bin's accuracy is a coin flip or two (15 bins for
#: 20 cases leave most bins empty or with one case) and ECE mostly measures the binning.
MIN_CASES_PER_BIN = 10


def reliability_bins(n_events: int, requested: int = 15) -> int:
    """The number of calibration bins for ``n_events`` probabilities (cases; cases x classes for multi-label):
    ``requested``, reduced so that bins hold :data:`MIN_CASES_PER_BIN` events on average, and never below 2.

    Example: ``reliability_bins(20, 15) == 2``, ``reliability_bins(100, 15) == 10``, ``reliability_bins(1000, 15) == 15``.
    """
    if int(requested) < 1:
        raise ValueError(f"the number of bins must be at least 1, got {requested}")
    return int(max(min(2, int(requested)), min(int(requested), int(n_events) // MIN_CASES_PER_BIN)))


def calibration_summary(y: Any, probs: Any, multilabel: bool = False, n_bins: int = 15) -> dict:
    """ECE and MCE (equal-width and equal-mass bins), Brier score and NLL, plus the bins for figures."""
    p = np.asarray(probs, dtype=np.float64)
    y = np.asarray(y)
    conf, corr = _events(y, p, multilabel)
    out: dict[str, Any] = {"n_bins": int(n_bins), "confidence": "per-class probability" if multilabel else "top-label probability"}
    for strategy, name in (("uniform", "equal_width"), ("quantile", "equal_mass")):
        ece, mce = expected_calibration_error(conf, corr, n_bins, strategy) if conf.size else (None, None)
        out[f"ece_{name}"], out[f"mce_{name}"] = ece, mce
    out["ece"], out["mce"] = out["ece_equal_width"], out["mce_equal_width"]
    out["brier"] = brier_score(y, p, multilabel)
    out["nll"] = negative_log_likelihood(y, p, multilabel)
    out["bins"] = calibration_bins(conf, corr, n_bins, "uniform") if conf.size else None
    return out


def temperature_scale(probs: Any, temperature: float, multilabel: bool = False) -> np.ndarray:
    """Probabilities with their logits divided by ``temperature``."""
    t = float(temperature)
    if not t > 0:
        raise ValueError(f"temperature must be > 0, got {temperature}")
    p = np.clip(np.asarray(probs, dtype=np.float64), _EPS, 1 - _EPS)
    if multilabel:
        return 1.0 / (1.0 + np.exp(-(np.log(p) - np.log1p(-p)) / t))
    z = np.log(p) / t
    z -= z.max(1, keepdims=True)
    e = np.exp(z)
    return e / e.sum(1, keepdims=True)


def uncalibrate(probs: Any, temperature: float, multilabel: bool = False) -> np.ndarray:
    """The probabilities before :func:`temperature_scale` with ``temperature`` (its inverse)."""
    return temperature_scale(probs, 1.0 / float(temperature), multilabel)


def fit_temperature(y: Any, probs: Any, multilabel: bool = False) -> float:
    """The temperature minimising the NLL of ``probs`` on targets ``y`` (1.0 without cases)."""
    from scipy.optimize import minimize_scalar

    p = np.asarray(probs, dtype=np.float64)
    y = np.asarray(y)
    if p.shape[0] == 0:
        return 1.0

    def nll(log_t: float) -> float:
        return negative_log_likelihood(y, temperature_scale(p, math.exp(log_t), multilabel), multilabel)

    res = minimize_scalar(nll, bounds=(math.log(_T_BOUNDS[0]), math.log(_T_BOUNDS[1])), method="bounded",
                          options={"xatol": 1e-5})
    t = float(math.exp(res.x))
    # keep T = 1 when scaling does not help (flat likelihood, e.g. constant scores)
    return t if nll(res.x) < nll(0.0) - 1e-12 else 1.0


def fit_calibration(
    y: Any,
    probs: Any,
    classes: Sequence[str],
    multilabel: bool = False,
    target_sensitivity: float = 0.9,
    positive_class: str | int | None = None,
    fitted_on: Mapping[str, Any] | None = None,
    min_cases: int = 0,
) -> dict:
    """Fit the temperature and the operating threshold(s) on validation predictions.

    Args:
        y: (N,) class indices, or (N, C) 0/1 (-1 unknown) for multi-label.
        probs: (N, C) uncalibrated probabilities.
        classes: class names.
        multilabel: the task is multi-label.
        target_sensitivity: sensitivity the threshold must reach on these cases. Defaults to 0.9.
        positive_class: the positive class of a binary task (name or index); index 1 when ``None``.
        fitted_on: what the predictions are (``source``, ``split``, ``mc_samples``, ``checkpoint``);
            ``n`` and ``n_per_class`` are added.
        min_cases: positives and negatives a two-class threshold needs at least (config key
            ``threshold_min_cases``); with fewer it is refused (``decision`` stays ``argmax``, ``threshold_refused``
            says why, see :mod:`medfuse.evaluation.thresholds`). 0: no minimum.

    Returns:
        the ``calibration.json`` dictionary (see the module docstring).

    Raises:
        DataError: when there are no labelled cases to fit on.
    """
    classes = [str(c) for c in classes]
    p = np.asarray(probs, dtype=np.float64)
    y = np.asarray(y)
    if not multilabel:
        y = y.astype(np.int64).reshape(-1)
        keep = y >= 0
        y, p = y[keep], p[keep]
    if p.shape[0] == 0:
        raise DataError("calibration needs labelled validation predictions, and none were given")
    t = fit_temperature(y, p, multilabel)
    pt = temperature_scale(p, t, multilabel)
    before, after = calibration_summary(y, p, multilabel), calibration_summary(y, pt, multilabel)
    per_class = {}
    for k, name in enumerate(classes):
        target = (y[:, k] == 1) if multilabel else (y == k)
        known = (y[:, k] >= 0) if multilabel else np.ones(len(y), bool)
        thr = threshold_for_sensitivity(target[known], pt[known, k], target_sensitivity)
        if thr is None:
            logger.warning("calibration: class %r has no positive validation case; no threshold for it", name)
        per_class[name] = thr
    validation: dict[str, Any] = {"nll_before": before["nll"], "nll_after": after["nll"],
                                  "ece_before": before["ece"], "ece_after": after["ece"]}
    cal: dict[str, Any] = {
        "format": CALIBRATION_FORMAT,
        "task": "multi-label" if multilabel else "single-label",
        "classes": classes,
        "temperature": t,
        "positive_class": None,
        "threshold": None,
        "per_class_thresholds": per_class,
        "target_sensitivity": float(target_sensitivity),
    }
    if multilabel:
        cal["decision"] = "per-class-threshold"
    elif len(classes) == 2:
        pos = 1 if positive_class is None else (classes.index(str(positive_class)) if str(positive_class) in classes else int(positive_class))
        thr = per_class[classes[pos]]
        from medfuse.evaluation.thresholds import refusal_message, threshold_support

        refused = refusal_message(*threshold_support(y == pos), int(min_cases), classes[pos]) if thr is not None else None
        if refused:
            logger.warning("calibration: %s", refused)
            print(f"calibration: {refused}")
            cal["threshold_refused"] = refused
            thr = None
        cal["threshold_min_cases"] = int(min_cases)
        cal.update(decision="threshold" if thr is not None else "argmax", positive_class=classes[pos], threshold=thr)
        if thr is not None:
            op = binary_operating_point(y == pos, pt[:, pos] >= thr)
            validation.update(sensitivity=op["sensitivity"], specificity=op["specificity"])
    else:
        cal["decision"] = "argmax"
    counts = np.sum(y == 1, axis=0) if multilabel else np.bincount(y, minlength=len(classes))
    cal["validation"] = validation
    cal["fitted_on"] = {**dict(fitted_on or {}), "n": int(p.shape[0]),
                        "n_per_class": {c: int(v) for c, v in zip(classes, counts)}}
    from medfuse import __version__

    cal["created"] = _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds")
    cal["medfuse_version"] = __version__
    return cal


def apply_calibration(probs: Any, calibration: Mapping[str, Any] | None, multilabel: bool = False) -> tuple:
    """``(calibrated probabilities, decisions)`` of uncalibrated ``probs``.

    Decisions are class indices (N,) for single-label tasks (the validated threshold on the
    positive class for two classes, the arg-max otherwise) and (N, C) 0/1 for multi-label ones.
    ``calibration=None`` means T = 1 and the arg-max (0.5 per class for multi-label).
    """
    p = np.asarray(probs, dtype=np.float64)
    if calibration is None:
        pt = p
    else:
        pt = temperature_scale(p, float(calibration.get("temperature") or 1.0), multilabel) if len(p) else p
    return pt, decide(pt, calibration, multilabel)


def decide(probs_calibrated: Any, calibration: Mapping[str, Any] | None, multilabel: bool = False) -> np.ndarray:
    """Decisions from already calibrated probabilities (see :func:`apply_calibration`)."""
    p = np.asarray(probs_calibrated, dtype=np.float64)
    if multilabel:
        thr = np.full(p.shape[1], 0.5)
        if calibration is not None:
            per = calibration.get("per_class_thresholds") or {}
            for k, c in enumerate(calibration.get("classes") or []):
                if per.get(c) is not None and k < len(thr):
                    thr[k] = float(per[c])
        return (p >= thr[None, :]).astype(np.int64)
    if not len(p):
        return np.zeros(0, dtype=np.int64)
    pred = p.argmax(1)
    if calibration is not None and calibration.get("decision") == "threshold" and calibration.get("threshold") is not None:
        pos = list(calibration["classes"]).index(calibration["positive_class"])
        pred = np.where(p[:, pos] >= float(calibration["threshold"]), pos, 1 - pos)
    return pred.astype(np.int64)


def find_calibration(checkpoint: str | os.PathLike | None) -> str | None:
    """The ``calibration.json`` beside ``checkpoint`` (a file, or a run folder), or ``None`` when there is none.

    A calibration is bound to the weights it was fitted on: when ``checkpoint`` is a file and the calibration
    records ``fitted_on.checkpoint_sha256``, the two must match (a run re-trained into the same folder that died
    before re-fitting would otherwise apply the old temperature and threshold to new weights). Files written before
    the hash was recorded are used with a warning.

    Raises:
        DataError: the calibration was fitted on other weights; the message says how to proceed (re-train, delete
            it, or ``--calibration_file ''`` for T = 1 and argmax).
    """
    if not checkpoint:
        return None
    c = Path(checkpoint)
    path = (c if c.is_dir() else c.parent) / CALIBRATION_NAME
    if not path.is_file():
        return None
    if c.is_file():
        import json

        from medfuse.utils.io import sha256_file

        try:
            with open(path, encoding="utf-8") as f:
                fitted = (json.load(f).get("fitted_on") or {}).get("checkpoint_sha256")
        except (OSError, ValueError, AttributeError):
            fitted = None  # load_calibration reports an unreadable file
        if fitted is None:
            logger.warning("%s records no checkpoint hash (written by an older medfuse): cannot check it belongs "
                           "to %s", path, c)
        elif fitted != sha256_file(c):
            raise DataError(
                f"{path}: fitted on other weights than {c} (sha256 {fitted[:12]}... vs {sha256_file(c)[:12]}...); "
                "re-train to refit it, delete it, or pass --calibration_file '' to use T = 1 and argmax"
            )
    return str(path)


def load_calibration(path: str | os.PathLike | Mapping | None, classes: Sequence[str] | None = None) -> dict | None:
    """Read and check a ``calibration.json`` (a dictionary is checked and returned; ``None`` stays ``None``).

    Raises:
        DataError: for an unreadable file, missing keys, or classes that differ from ``classes``.
    """
    if path is None or path == "":
        return None
    import json

    if isinstance(path, Mapping):
        cal, where = dict(path), "calibration"
    else:
        where = str(path)
        try:
            with open(path, encoding="utf-8") as f:
                cal = json.load(f)
        except (OSError, ValueError) as e:
            raise DataError(f"{where}: cannot read the calibration file ({e}); delete it to fall back to T=1 and "
                            "argmax, or re-run training to refit it") from None
    missing = [k for k in ("temperature", "classes", "decision") if k not in cal]
    if missing:
        raise DataError(f"{where}: calibration file lacks {missing}; refit it (medfuse.evaluation.fit_run_calibration)")
    if not float(cal["temperature"]) > 0:
        raise DataError(f"{where}: temperature {cal['temperature']} must be > 0")
    if classes is not None and [str(c) for c in classes] != list(cal["classes"]):
        if [str(c).lower() for c in classes] == [str(c).lower() for c in cal["classes"]]:
            raise DataError(f"{where}: the model's classes are {cal['classes']} but the data names them {list(classes)} "
                            "(they differ only in case); evaluate with medfuse evaluate --model RUN --data MANIFEST, "
                            "which maps them, or rename the classes in the manifest")
        raise DataError(f"{where}: fitted for classes {cal['classes']} but the model has {list(classes)}; "
                        "refit the calibration for this model")
    return cal


def _nonfinite_numbers(obj: Any, where: str = "") -> list[str]:
    if isinstance(obj, Mapping):
        return [b for k, v in obj.items() for b in _nonfinite_numbers(v, f"{where}.{k}" if where else str(k))]
    if isinstance(obj, (list, tuple)):
        return [b for i, v in enumerate(obj) for b in _nonfinite_numbers(v, f"{where}[{i}]")]
    if isinstance(obj, (float, np.floating)) and not math.isfinite(float(obj)):
        return [where]
    return []


def save_calibration(path: str | os.PathLike, calibration: Mapping[str, Any]) -> Path:
    """Write ``calibration`` as JSON (atomically); a NaN or inf anywhere in it is refused and nothing is written.

    Raises:
        TrainingError: naming the non-finite entries (the model's predictions were not finite).
    """
    from medfuse.utils.io import atomic_write_json

    bad = _nonfinite_numbers(calibration)
    if bad:
        raise TrainingError(f"{path}: not written, {', '.join(bad[:5])} would be NaN or inf (the model's validation "
                            "predictions are not finite); re-train the model")
    return atomic_write_json(path, dict(calibration))


def fit_run_calibration(
    run_dir: str | os.PathLike,
    network: Any,
    dataloader: Any,
    classes: Sequence[str],
    device: Any = "cpu",
    mc_samples: int = 0,
    target_sensitivity: float = 0.9,
    positive_class: str | None = None,
    checkpoint: str | os.PathLike | None = None,
    image_key: str = "image",
    label_key: str = "label",
    extra_keys: Sequence[str] = (),
    threshold_min_cases: int = 0,
    mc_seed: int | None = None,
) -> dict | None:
    """Fit ``<run_dir>/calibration.json`` on the validation split with the best checkpoint.

    Loads ``checkpoint`` (default ``<run_dir>/model.pt``) into ``network``, predicts every batch
    of ``dataloader`` (Monte-Carlo dropout with ``mc_samples`` passes when > 0, as evaluate and
    inference do, so the temperature is fitted on the same kind of probabilities it is applied
    to), writes those uncalibrated predictions to ``<run_dir>/validation_predictions.csv`` and
    the fitted calibration to ``<run_dir>/calibration.json``. Under ``torch.distributed`` only
    rank 0 works. ``threshold_min_cases``: see :func:`fit_calibration` (``min_cases``). ``mc_seed``: seeds
    the Monte-Carlo passes per item as evaluation does (the bundle's ``seed``), so re-evaluating the validation
    split reproduces the probabilities the calibration was fitted on.

    Returns:
        the calibration dictionary, or ``None`` on other ranks / without a checkpoint.
    """
    import torch

    from medfuse.evaluation.predictions import write_predictions
    from medfuse.networks.uncertainty import mc_dropout_outputs
    from medfuse.utils.distributed import is_main_process, unwrap_module
    from medfuse.utils.io import sha256_file

    if not is_main_process():
        return None
    run_dir = Path(run_dir)
    ckpt = Path(checkpoint) if checkpoint else run_dir / "model.pt"
    if not ckpt.is_file():
        logger.warning("no checkpoint at %s: calibration not fitted", ckpt)
        return None
    net = unwrap_module(network)
    state = torch.load(ckpt, map_location=device, weights_only=True)
    if isinstance(state, dict) and "model" in state and not any(k.endswith(".weight") for k in state):
        state = state["model"]
    net.load_state_dict(state)
    net.eval()
    images, probs, labels = [], [], []
    extra: dict[str, list] = {k: [] for k in extra_keys}
    with torch.no_grad():
        for batch in dataloader:
            x = batch[image_key].to(device)
            if int(mc_samples) > 0:
                p = mc_dropout_outputs(net, x, int(mc_samples), seed=mc_seed)["pred"].float().softmax(1)
            else:
                p = net(x).float().softmax(1)
            probs.append(p.cpu().numpy())
            lab = torch.as_tensor(batch[label_key])
            labels.append((lab.argmax(1) if lab.ndim > 1 and lab.shape[1] > 1 else lab.reshape(len(p))).long().cpu().numpy())
            names = batch.get("image_path")
            images += [str(s) for s in names] if names is not None else [f"val{len(images) + i}" for i in range(len(p))]
            for k in extra_keys:
                v = batch.get(k)
                extra[k] += [str(s) for s in v] if v is not None else [""] * len(p)
    probs_arr = np.concatenate(probs) if probs else np.zeros((0, len(classes)))
    if not np.isfinite(probs_arr).all():
        raise TrainingError(f"{ckpt}: the model's validation probabilities hold NaN or inf; calibration.json not "
                            "written; re-train the model (lower --learning_rate, check the training images)")
    labels_arr = np.concatenate(labels) if labels else np.zeros(0, dtype=np.int64)
    labelled = labels_arr >= 0  # items without a class (label -1, e.g. mask-only items) cannot calibrate
    if not labelled.all():
        probs_arr, labels_arr = probs_arr[labelled], labels_arr[labelled]
        images = [im for im, keep in zip(images, labelled) if keep]
        extra = {k: [v for v, keep in zip(vals, labelled) if keep] for k, vals in extra.items()}
    if not labels_arr.size:
        logger.warning("no labelled validation case: calibration not fitted")
        return None
    write_predictions(run_dir / "validation_predictions.csv", images, probs_arr, classes, labels=labels_arr.tolist(),
                      extra={k: v for k, v in extra.items() if any(v)})
    cal = fit_calibration(
        labels_arr, probs_arr, classes, target_sensitivity=float(target_sensitivity), positive_class=positive_class,
        fitted_on={"source": str(run_dir / "validation_predictions.csv"), "split": "validation",
                   "mc_samples": int(mc_samples), "mc_seed": mc_seed, "checkpoint": str(ckpt), "checkpoint_sha256": sha256_file(ckpt)},
        min_cases=int(threshold_min_cases),
    )
    save_calibration(run_dir / CALIBRATION_NAME, cal)
    logger.info("calibration: T=%.3f, threshold=%s (target sensitivity %.2f) on %d validation cases -> %s",
                cal["temperature"], cal["threshold"], target_sensitivity, cal["fitted_on"]["n"], run_dir / CALIBRATION_NAME)
    print(f"calibration: T = {cal['temperature']:.3f}, decision = {cal['decision']}, threshold = {cal['threshold']} "
          f"(target sensitivity {target_sensitivity}) fitted on {cal['fitted_on']['n']} validation cases -> "
          f"{run_dir / CALIBRATION_NAME}")
    return cal
