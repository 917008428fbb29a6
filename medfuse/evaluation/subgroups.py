# Copyright (c) medfuse contributors
# Licensed under the Apache License, Version 2.0
"""Metrics per subgroup: per value of every grouping column (view, sex, age band, manufacturer, site ...).

A column is used as a grouping column when it has between 2 and ``max_groups`` distinct
values and is not an identifier (``image``, ``patient_id``, ``study_id`` ... or a column
whose values are nearly all distinct). Numeric age columns (``age``, ``patient_age``, DICOM
``PatientAge`` strings such as ``045Y``) become age bands. Every skipped column is reported
with the reason. Empty cells form the group ``(missing)``.
"""

from __future__ import annotations

import math
import re
from typing import Any, Mapping, Sequence

import numpy as np

from medfuse.evaluation.classification import (
    binary_operating_point,
    classification_metrics,
    decision_metrics,
    multilabel_metrics,
)

__all__ = ["IDENTIFIER_COLUMNS", "AGE_COLUMNS", "age_band", "core_metrics", "grouping_columns", "subgroup_metrics"]

IDENTIFIER_COLUMNS = ("image", "image_path", "patient_id", "study_id", "series_id", "accession", "sop_instance_uid",
                      "study_instance_uid", "series_instance_uid", "mask", "id", "case_id", "filename", "path")
AGE_COLUMNS = ("age", "patient_age", "patientage", "age_years")
MISSING = "(missing)"


def age_band(value: str, width: int = 20) -> str:
    """``"40-59"`` for ``"45"``, ``"045Y"`` (DICOM age string), ``"45.5"``; ``(missing)`` when unreadable.

    DICOM ages in months / weeks / days (``006M``) are converted to years.
    """
    v = str(value).strip()
    m = re.fullmatch(r"(\d{1,3})([DWMY])", v.upper())
    if m:
        years = int(m.group(1)) / {"D": 365.25, "W": 52.18, "M": 12.0, "Y": 1.0}[m.group(2)]
    else:
        try:
            years = float(v)
        except ValueError:
            return MISSING
    if not math.isfinite(years) or years < 0:
        return MISSING
    lo = int(years // width) * width
    return f"{lo}-{lo + width - 1}"


def core_metrics(y: Any, probs: Any, pred: Any, classes: Sequence[str], multilabel: bool = False) -> dict:
    """The headline numbers of one set of cases: AUC, AUPR, accuracy, balanced accuracy, F1, sensitivity, specificity.

    For two single-label classes sensitivity / specificity are those of the positive class
    (index 1) under ``pred``; for more classes they are the macro means over classes.
    """
    classes = [str(c) for c in classes]
    y = np.asarray(y)
    p = np.asarray(probs, dtype=np.float64)
    d = np.asarray(pred)
    if multilabel:
        m = multilabel_metrics(y, p, classes, thresholds=None)
        ops = [binary_operating_point(y[y[:, k] >= 0, k], d[y[:, k] >= 0, k]) for k in range(len(classes))]
        sens = [o["sensitivity"] for o in ops if o["sensitivity"] is not None]
        spec = [o["specificity"] for o in ops if o["specificity"] is not None]
        full = np.all(y >= 0, axis=1)
        acc = float(np.all(d[full] == y[full], axis=1).mean()) if full.any() else None
        return {"n": int(len(y)), "auc": m["auc"], "aupr": m["aupr"], "accuracy": acc, "balanced_accuracy": None,
                "f1": m["f1_macro"], "sensitivity": float(np.mean(sens)) if sens else None,
                "specificity": float(np.mean(spec)) if spec else None}
    m = classification_metrics(y, p, classes)
    dm = decision_metrics(y, d, classes)
    if len(classes) == 2:
        pc = dm["per_class"][classes[1]]
        sens, spec, f1 = pc["sensitivity"], pc["specificity"], pc["f1"]
    else:
        s = [v["sensitivity"] for v in dm["per_class"].values() if v["sensitivity"] is not None]
        t = [v["specificity"] for v in dm["per_class"].values() if v["specificity"] is not None]
        sens, spec, f1 = (float(np.mean(s)) if s else None), (float(np.mean(t)) if t else None), dm["f1_macro"]
    return {"n": int(len(y)), "auc": m["auc"], "aupr": m["aupr"], "accuracy": dm["accuracy"],
            "balanced_accuracy": dm["balanced_accuracy"], "f1": f1, "sensitivity": sens, "specificity": spec}


def grouping_columns(extra: Mapping[str, Sequence[str]], max_groups: int = 20) -> tuple[dict, dict]:
    """``({column: group value per case}, {skipped column: reason})`` from the predictions' extra columns."""
    used, skipped = {}, {}
    for col, values in extra.items():
        name = col.strip().lower()
        vals = [str(v).strip() for v in values]
        if name in AGE_COLUMNS:
            used[col] = [age_band(v) for v in vals]
            continue
        if name in IDENTIFIER_COLUMNS or name.endswith("_id") or name.endswith("_uid"):
            skipped[col] = "identifier column"
            continue
        present = {v for v in vals if v}
        if len(present) < 2:
            skipped[col] = f"{len(present)} distinct value(s): nothing to compare"
            continue
        if len(vals) >= 10 and len(present) > 0.5 * len(vals):
            skipped[col] = f"{len(present)} distinct values in {len(vals)} rows: looks like an identifier"
            continue
        if len(present) > max_groups:
            skipped[col] = f"{len(present)} distinct values (more than {max_groups}): not a grouping column"
            continue
        used[col] = [v if v else MISSING for v in vals]
    return used, skipped


def subgroup_metrics(
    y: Any,
    probs: Any,
    pred: Any,
    classes: Sequence[str],
    extra: Mapping[str, Sequence[str]],
    multilabel: bool = False,
    max_groups: int = 20,
    n_boot: int = 0,
    seed: int = 0,
) -> dict:
    """Every headline metric per value of every grouping column, with counts.

    Args:
        y, probs, pred, classes, multilabel: as for :func:`core_metrics` (labelled rows only).
        extra: candidate grouping columns (``read_predictions(...)["extra"]`` restricted to the same rows).
        max_groups: columns with more distinct values are skipped.
        n_boot: bootstrap resamples for AUC / accuracy intervals per group (0: none).
        seed: bootstrap seed.

    Returns:
        ``{"columns": {column: {value: {"n", "n_per_class", "auc", ..., ["ci"]}}}, "skipped": {column: reason}}``;
        groups are sorted by value, counts add up to the number of cases.
    """
    y = np.asarray(y)
    p = np.asarray(probs, dtype=np.float64)
    d = np.asarray(pred)
    used, skipped = grouping_columns(extra, max_groups)
    columns: dict[str, dict] = {}
    for col, values in used.items():
        vals = np.asarray(values, dtype=object)
        groups = {}
        for value in sorted(set(values)):
            rows = np.flatnonzero(vals == value)
            yy = y[rows]
            counts = (np.sum(yy == 1, axis=0) if multilabel else np.bincount(yy.astype(np.int64), minlength=len(classes)))
            entry = {"n": int(rows.size), "n_per_class": {c: int(k) for c, k in zip(classes, counts)},
                     **{k: v for k, v in core_metrics(yy, p[rows], d[rows], classes, multilabel).items() if k != "n"}}
            if n_boot > 0 and rows.size > 1:
                from medfuse.evaluation.bootstrap import bootstrap_metrics

                ci = bootstrap_metrics(yy, p[rows], classes, pred=d[rows], multilabel=multilabel, n_boot=n_boot, seed=seed)
                entry["ci"] = {k: ci[k] for k in ("auc", "accuracy")}
            groups[str(value)] = entry
        columns[col] = groups
    return {"columns": columns, "skipped": skipped}
