# Copyright (c) medfuse contributors
# Licensed under the Apache License, Version 2.0
"""The medfuse ``predictions.csv`` format, shared by every classifier.

Columns, in this order (:data:`SCHEMA` holds the named ones; a column is written only when it applies):

* ``image``: the input file (absolute path as given to the model);
* ``label``: the true class name, only when labels are known;
* ``prob_<class>``: the predicted probability of each class, in class-index order, after calibration
  (temperature) when the model has one (the mean over Monte-Carlo dropout passes when those were used);
* ``pred``: the predicted class name, from the calibrated probabilities (arg-max, or the validated
  threshold on the positive class when ``threshold`` is set);
* ``threshold``: the decision threshold on the positive class's probability used for ``pred``
  (0.5 for a two-class arg-max, the same decision; empty for an arg-max over more classes);
* ``temperature``: the temperature the probabilities were divided by (1: uncalibrated);
* ``entropy``: predictive entropy of the probabilities, in nats;
* ``mutual_info``: mutual information between prediction and weights (epistemic part of the
  entropy), only when Monte-Carlo dropout was used;
* input checks: ``input_check`` (``ok`` or why the input was not scored), ``ood_score``, ``ood``;
* ensembles: ``member_disagreement``, ``mutual_info_members``;
* any further grouping columns (``patient_id``, ``view``, ``sex``, ``site`` ...).

``label`` and ``pred`` hold class names; :func:`read_predictions` also accepts class
indices there, so files written by other tools can be read too.
"""

from __future__ import annotations

import csv
import io
import math
import os
from pathlib import Path
from typing import Any, Mapping, Sequence

import numpy as np

from medfuse.errors import DataError
from medfuse.utils.io import atomic_write_text

__all__ = ["OK_CHECK", "decision_columns", "PROB_PREFIX", "SCHEMA", "RESERVED", "prediction_columns", "write_predictions", "read_predictions", "entropy_of"]

PROB_PREFIX = "prob_"
#: ``input_check`` value of an input that was scored
OK_CHECK = "ok"

#: the named columns of ``predictions.csv`` in file order; ``prob_<class>`` columns follow ``label``.
#: Every column not named here (and not ``prob_*`` / ``label_*``) is a grouping column.
SCHEMA = (
    "image",
    "label",
    # prob_<class> ...
    "pred",
    "threshold",
    "temperature",
    "entropy",
    "mutual_info",
    "input_check",
    "ood_score",
    "ood",
    "member_disagreement",
    "mutual_info_members",
)
#: columns with a fixed meaning; every other column is a candidate grouping column
RESERVED = SCHEMA


def entropy_of(probs: Any, eps: float = 1e-12) -> np.ndarray:
    """Predictive entropy ``-sum_c p_c log p_c`` (nats) of each row of ``probs`` (N, C)."""
    p = np.clip(np.asarray(probs, dtype=np.float64), eps, 1.0)
    return -(np.asarray(probs, dtype=np.float64) * np.log(p)).sum(axis=1)


def prediction_columns(classes: Sequence[str], has_label: bool, has_mutual_info: bool, extra: Sequence[str] = ()) -> list:
    """Header of a predictions file with these properties: :data:`SCHEMA` order, grouping columns last."""
    present = {"image", "pred", "entropy"} | ({"label"} if has_label else set()) | (
        {"mutual_info"} if has_mutual_info else set()) | set(extra)
    named = [c for c in SCHEMA if c in present]
    cols = named[:2 if has_label else 1] + [f"{PROB_PREFIX}{c}" for c in classes] + named[2 if has_label else 1:]
    return cols + [e for e in extra if e not in cols]


def decision_columns(calibration: Mapping[str, Any] | None, num_classes: int, n: int) -> dict:
    """The ``threshold`` and ``temperature`` columns of ``n`` rows decided with ``calibration`` (None: T = 1, arg-max).

    ``threshold`` is the validated threshold on the positive class when the decision uses one; 0.5 for two classes
    decided by the arg-max (the same decision, a refused threshold included); empty otherwise.
    """
    cal = calibration or {}
    if cal.get("decision") == "threshold" and cal.get("threshold") is not None:
        thr: Any = f"{float(cal['threshold']):.6g}"
    else:
        thr = "0.5" if num_classes == 2 else ""
    return {"threshold": [thr] * n, "temperature": [f"{float(cal.get('temperature') or 1.0):.6g}"] * n}


def _num(v: float) -> str:
    return "" if v is None or (isinstance(v, float) and math.isnan(v)) else f"{float(v):.6g}"


def write_predictions(
    path: str | os.PathLike,
    images: Sequence[str],
    probs: Any,
    classes: Sequence[str],
    labels: Sequence[int] | None = None,
    entropy: Sequence[float] | None = None,
    mutual_info: Sequence[float] | None = None,
    extra: Mapping[str, Sequence[Any]] | None = None,
    pred: Sequence[int] | None = None,
) -> Path:
    """Write a ``predictions.csv`` (atomically).

    Args:
        path: output file.
        images: one image path per row.
        probs: (N, C) class probabilities.
        classes: the C class names.
        labels: true class indices, or ``None`` when unknown (then no ``label`` column);
            negative values mean "unknown" for that row and leave the cell empty.
        entropy: predictive entropy per row; computed from ``probs`` when ``None``.
        mutual_info: mutual information per row; the column is written only when given.
        extra: further columns, name -> values.
        pred: predicted class indices (e.g. from a validated threshold); the arg-max of
            ``probs`` when ``None``. A row whose probabilities are all NaN (an input that was not scored, see
            ``input_check``) gets empty probability, ``pred`` and ``entropy`` cells.
    """
    classes = [str(c) for c in classes]
    p = np.asarray(probs, dtype=np.float64).reshape(len(images), -1) if len(images) else np.zeros((0, len(classes)))
    if p.shape[1] != len(classes):
        raise ValueError(f"probs has {p.shape[1]} columns but {len(classes)} classes were given")
    ent = entropy_of(p) if entropy is None else np.asarray(entropy, dtype=np.float64).reshape(-1)
    extra = dict(extra or {})
    for name, values in [("labels", labels), ("entropy", ent), ("mutual_info", mutual_info), ("pred", pred)] + list(extra.items()):
        if values is not None and len(values) != len(images):
            raise ValueError(f"{name} has {len(values)} values but there are {len(images)} images")
    cols = prediction_columns(classes, labels is not None, mutual_info is not None, list(extra))
    buf = io.StringIO()
    writer = csv.writer(buf, lineterminator="\n")
    writer.writerow(cols)
    for i, image in enumerate(images):
        row: dict[str, Any] = {"image": str(image)}
        if labels is not None:
            lab = int(labels[i])
            row["label"] = classes[lab] if 0 <= lab < len(classes) else ""
        for k, c in enumerate(classes):
            row[f"{PROB_PREFIX}{c}"] = _num(p[i, k])
        scored = len(classes) and not np.isnan(p[i]).all()  # an input refused by the input check has no probabilities
        k_pred = (int(p[i].argmax()) if scored else -1) if pred is None else int(pred[i])
        row["pred"] = classes[k_pred] if scored and 0 <= k_pred < len(classes) else ""
        row["entropy"] = _num(ent[i])
        if mutual_info is not None:
            row["mutual_info"] = _num(mutual_info[i])
        for name, values in extra.items():
            v = values[i]
            row[name] = "" if v is None else v
        writer.writerow([row.get(c, "") for c in cols])
    return atomic_write_text(path, buf.getvalue())


def _class_index(value: str, classes: list[str], where: str) -> int:
    value = value.strip()
    if value in classes:
        return classes.index(value)
    try:
        f = float(value)
        if not f.is_integer():
            raise ValueError(value)
        idx = int(f)
    except ValueError:
        raise DataError(f"{where}: {value!r} is neither a class name {classes} nor a class index; "
                        "use one of the class names or 0..C-1") from None
    if not 0 <= idx < len(classes):
        raise DataError(f"{where}: class index {idx} is outside 0..{len(classes) - 1}")
    return idx


#: rows of a single-label file must sum to one within this tolerance (CSV rounding); they are then renormalised
SUM_TOLERANCE = 1e-2


def _resolve_classes(path: Path, cols: list[str], classes: Sequence[str] | None) -> tuple[list[str], list[str]]:
    """(class names, the prob column of each class) from the header and the optional ``classes``."""
    found = [c[len(PROB_PREFIX):] for c in cols if c.startswith(PROB_PREFIX)]
    if classes is None:
        if not found:
            raise DataError(f"{path}: no 'prob_<class>' column in the header {cols}; write one probability "
                            "column per class, named prob_<class name> (or prob_0, prob_1 ... with --classes)")
        return found, [f"{PROB_PREFIX}{c}" for c in found]
    classes = [str(c) for c in classes]
    if len(set(classes)) != len(classes):
        raise DataError(f"--classes {classes}: class names must be distinct")
    if all(f"{PROB_PREFIX}{c}" in cols for c in classes):
        extra = [c for c in found if c not in classes]
        if extra:
            raise DataError(f"{path}: columns {[PROB_PREFIX + c for c in extra]} are not among --classes {classes}; "
                            "name every class or drop those columns")
        return classes, [f"{PROB_PREFIX}{c}" for c in classes]
    by_index = [f"{PROB_PREFIX}{i}" for i in range(len(classes))]
    if all(c in cols for c in by_index) and len(found) == len(classes):
        return classes, by_index
    missing = [f"{PROB_PREFIX}{c}" for c in classes if f"{PROB_PREFIX}{c}" not in cols]
    raise DataError(f"{path}: column {missing[0]} is missing (header: {cols}); --classes {','.join(classes)} needs "
                    f"prob_<name> or prob_0..prob_{len(classes) - 1} columns")


def _float_cell(value: str, where: str, column: str) -> float:
    try:
        v = float(value)
    except (TypeError, ValueError):
        raise DataError(f"{where}, column {column}: {value!r} is not a number") from None
    if not math.isfinite(v):
        raise DataError(f"{where}, column {column}: {value!r} is not a finite number")
    return v


def read_predictions(path: str | os.PathLike, classes: Sequence[str] | None = None, validate: bool = True) -> dict:
    """Read and check a predictions file (medfuse's or another tool's).

    Single-label files have a ``label`` column (class name or index; empty = unknown);
    multi-label files have one ``label_<class>`` column per class holding 0 or 1. ``image``,
    ``pred``, ``entropy`` and ``mutual_info`` are optional; every other column is kept in
    ``extra`` (grouping columns such as ``view`` or ``site``).

    Args:
        path: the CSV file.
        classes: class order; needed when the header names classes by index
            (``prob_0``, ``prob_1``...), optional otherwise (it then fixes the order).
        validate: check that probabilities lie in [0, 1] and that single-label rows sum to one
            (within :data:`SUM_TOLERANCE`; they are renormalised).

    Returns:
        ``{"task": "single-label" | "multi-label", "classes", "images", "probs" (N, C),
        "labels" (N,) class indices (-1 = unknown) or (N, C) 0/1 for multi-label, or None,
        "pred" (N,) or (N, C) 0/1, "has_pred", "entropy" (N,) or None, "mutual_info" (N,) or None,
        "extra": {column: [str]}, "ood_score" (N,) or None, "not_scored": {"count", "reasons": {input_check: n}}}``.
        Rows whose ``input_check`` is set and is not ``ok`` (inputs the model refused) are left out of every
        array and counted in ``not_scored``.

    Raises:
        DataError: naming the file, column and row of the first problem found.
    """
    path = Path(path)
    if not path.is_file():
        raise DataError(f"{path}: no such predictions file; give the CSV written by the model (see docs/evaluation.md)")
    with open(path, newline="", encoding="utf-8-sig") as f:
        reader = csv.DictReader(f)
        cols = [c.strip() for c in (reader.fieldnames or [])]
        reader.fieldnames = cols
        rows = list(reader)
    # inputs refused by the input check (input_check other than "ok") carry no probabilities: left out, counted
    not_scored: dict[str, int] = {}
    if "input_check" in cols:
        kept = []
        for r in rows:
            check = (r.get("input_check") or "").strip()
            if check in ("", OK_CHECK):
                kept.append(r)
            else:
                not_scored[check] = not_scored.get(check, 0) + 1
        rows = kept
    classes, prob_cols = _resolve_classes(path, cols, classes)
    label_cols = [f"label_{c}" for c in classes]
    multilabel = any(c in cols for c in label_cols)
    if multilabel:
        missing = [c for c in label_cols if c not in cols]
        if missing:
            raise DataError(f"{path}: multi-label files need one label_<class> column per class; {missing[0]} is missing")
    task = "multi-label" if multilabel else "single-label"
    n, c = len(rows), len(classes)
    probs = np.zeros((n, c), dtype=np.float64)
    for i, r in enumerate(rows):
        where = f"{path} row {i + 1} (line {i + 2})"
        for k, col in enumerate(prob_cols):
            v = _float_cell(r.get(col) or "", where, col)
            if validate and not -1e-6 <= v <= 1 + 1e-6:
                raise DataError(f"{where}, column {col}: probability {v} is outside [0, 1]; "
                                "write probabilities (apply the softmax or sigmoid), not logits")
            probs[i, k] = min(max(v, 0.0), 1.0)
        if validate and task == "single-label" and c > 0:
            s = probs[i].sum()
            if abs(s - 1.0) > SUM_TOLERANCE:
                raise DataError(f"{where}, columns {','.join(prob_cols)}: probabilities sum to {s:.4g}, not 1; "
                                "single-label rows must sum to one (multi-label files need label_<class> columns)")
    if task == "single-label" and n:
        sums = probs.sum(1, keepdims=True)
        probs = np.where(sums > 0, probs / np.where(sums > 0, sums, 1), probs)
    labels = None
    if multilabel:
        labels = np.zeros((n, c), dtype=np.int64)
        for i, r in enumerate(rows):
            for k, col in enumerate(label_cols):
                v = (r.get(col) or "").strip()
                if v in ("", "nan"):
                    labels[i, k] = -1
                    continue
                try:
                    fv = float(v)
                except ValueError:
                    fv = -1
                if fv not in (0.0, 1.0):
                    raise DataError(f"{path} row {i + 1} (line {i + 2}), column {col}: {v!r} is not 0 or 1")
                labels[i, k] = int(fv)
    elif "label" in cols:
        labels = np.array(
            [_class_index(r["label"], classes, f"{path} row {i + 1} (line {i + 2}), column label")
             if (r["label"] or "").strip() != "" else -1 for i, r in enumerate(rows)],
            dtype=np.int64,
        )
    has_pred = "pred" in cols and not multilabel
    if has_pred:
        pred = np.array([_class_index(r["pred"], classes, f"{path} row {i + 1} (line {i + 2}), column pred")
                         for i, r in enumerate(rows)], dtype=np.int64)
    elif multilabel:
        pred = (probs >= 0.5).astype(np.int64)
    else:
        pred = probs.argmax(axis=1) if n else np.zeros(0, dtype=np.int64)

    def _floats(name):
        if name not in cols:
            return None
        out = np.full(n, np.nan)
        for i, r in enumerate(rows):
            if (r.get(name) or "").strip() != "":
                out[i] = _float_cell(r[name], f"{path} row {i + 1} (line {i + 2})", name)
        return out

    known = set(RESERVED) | set(prob_cols) | set(label_cols) | {c for c in cols if c.startswith(PROB_PREFIX)}
    images = [r.get("image") or f"row{i + 1}" for i, r in enumerate(rows)] if "image" in cols else [f"row{i + 1}" for i in range(n)]
    return {
        "task": task,
        "classes": classes,
        "images": images,
        "probs": probs,
        "labels": labels,
        "pred": pred,
        "has_pred": has_pred,
        "entropy": _floats("entropy"),
        "mutual_info": _floats("mutual_info"),
        "extra": {col: [r.get(col) or "" for r in rows] for col in cols if col not in known},
        "ood_score": _floats("ood_score"),
        "not_scored": {"count": sum(not_scored.values()), "reasons": dict(sorted(not_scored.items()))},
    }
