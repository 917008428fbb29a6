# Copyright (c) medfuse contributors
# Licensed under the Apache License, Version 2.0
"""The medfuse ``predictions.csv`` format, shared by every classifier.

Columns, in this order:

* ``image``: the input file (absolute path as given to the model);
* ``label``: the true class name, only when labels are known;
* ``prob_<class>``: the predicted probability of each class, in class-index order
  (the mean over Monte-Carlo dropout passes when those were used);
* ``pred``: the predicted class name (arg-max of the probabilities);
* ``entropy``: predictive entropy of the probabilities, in nats;
* ``mutual_info``: mutual information between prediction and weights (epistemic part of the
  entropy), only when Monte-Carlo dropout was used;
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

from medfuse.utils.io import atomic_write_text

__all__ = ["PROB_PREFIX", "prediction_columns", "write_predictions", "read_predictions", "entropy_of"]

PROB_PREFIX = "prob_"


def entropy_of(probs: Any, eps: float = 1e-12) -> np.ndarray:
    """Predictive entropy ``-sum_c p_c log p_c`` (nats) of each row of ``probs`` (N, C)."""
    p = np.clip(np.asarray(probs, dtype=np.float64), eps, 1.0)
    return -(np.asarray(probs, dtype=np.float64) * np.log(p)).sum(axis=1)


def prediction_columns(classes: Sequence[str], has_label: bool, has_mutual_info: bool, extra: Sequence[str] = ()) -> list:
    """Header of a predictions file with these properties."""
    cols = ["image"] + (["label"] if has_label else []) + [f"{PROB_PREFIX}{c}" for c in classes] + ["pred", "entropy"]
    if has_mutual_info:
        cols.append("mutual_info")
    return cols + [e for e in extra if e not in cols]


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
    """
    classes = [str(c) for c in classes]
    p = np.asarray(probs, dtype=np.float64).reshape(len(images), -1) if len(images) else np.zeros((0, len(classes)))
    if p.shape[1] != len(classes):
        raise ValueError(f"probs has {p.shape[1]} columns but {len(classes)} classes were given")
    ent = entropy_of(p) if entropy is None else np.asarray(entropy, dtype=np.float64).reshape(-1)
    extra = dict(extra or {})
    for name, values in [("labels", labels), ("entropy", ent), ("mutual_info", mutual_info)] + list(extra.items()):
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
        row["pred"] = classes[int(p[i].argmax())] if len(classes) else ""
        row["entropy"] = _num(ent[i])
        if mutual_info is not None:
            row["mutual_info"] = _num(mutual_info[i])
        for name, values in extra.items():
            v = values[i]
            row[name] = "" if v is None else v
        writer.writerow([row.get(c, "") for c in cols])
    return atomic_write_text(path, buf.getvalue())


def _class_index(value: str, classes: list[str], where: str) -> int:
    if value in classes:
        return classes.index(value)
    try:
        idx = int(value)
    except ValueError:
        raise ValueError(f"{where}: {value!r} is neither a class name {classes} nor a class index") from None
    if not 0 <= idx < len(classes):
        raise ValueError(f"{where}: class index {idx} is outside 0..{len(classes) - 1}")
    return idx


def read_predictions(path: str | os.PathLike) -> dict:
    """Read a ``predictions.csv``.

    Returns:
        ``{"classes", "images", "probs" (N, C), "labels" (N,) or None, "pred" (N,),
        "entropy" (N,) or None, "mutual_info" (N,) or None, "extra": {column: [str]}}``.
        Rows whose ``label`` cell is empty get label -1.

    Raises:
        ValueError: when required columns are missing or cells cannot be read.
    """
    path = Path(path)
    with open(path, newline="", encoding="utf-8") as f:
        reader = csv.DictReader(f)
        cols = list(reader.fieldnames or [])
        rows = list(reader)
    classes = [c[len(PROB_PREFIX):] for c in cols if c.startswith(PROB_PREFIX)]
    if "image" not in cols or not classes:
        raise ValueError(f"{path}: a predictions file needs an 'image' column and one 'prob_<class>' column per class")
    known = {"image", "label", "pred", "entropy", "mutual_info"} | {f"{PROB_PREFIX}{c}" for c in classes}
    probs = np.array([[float(r[f"{PROB_PREFIX}{c}"]) for c in classes] for r in rows], dtype=np.float64)
    probs = probs.reshape(len(rows), len(classes))
    labels = None
    if "label" in cols:
        labels = np.array(
            [_class_index(r["label"], classes, f"{path} row {i + 2}") if r["label"] != "" else -1 for i, r in enumerate(rows)],
            dtype=np.int64,
        )
    if "pred" in cols:
        pred = np.array([_class_index(r["pred"], classes, f"{path} row {i + 2}") for i, r in enumerate(rows)], dtype=np.int64)
    else:
        pred = probs.argmax(axis=1) if len(rows) else np.zeros(0, dtype=np.int64)

    def _floats(name):
        if name not in cols:
            return None
        return np.array([float(r[name]) if r[name] != "" else np.nan for r in rows], dtype=np.float64)

    return {
        "classes": classes,
        "images": [r["image"] for r in rows],
        "probs": probs,
        "labels": labels,
        "pred": pred,
        "entropy": _floats("entropy"),
        "mutual_info": _floats("mutual_info"),
        "extra": {c: [r[c] for r in rows] for c in cols if c not in known},
    }
