# Copyright (c) medfuse contributors
# Licensed under the Apache License, Version 2.0
"""Evaluate a predictions file into a report folder: ``metrics.json``, ``per_case.csv``, figures, ``index.html``.

:func:`evaluate_predictions` is what every bundle's evaluate workflow and ``medfuse evaluate`` call.
For the labelled rows of a predictions file (medfuse's format, or another tool's with the same
columns) it computes

* discrimination: AUC and AUPR per class and macro (one-vs-rest), with seeded, stratified
  bootstrap 95 % intervals (:mod:`~medfuse.evaluation.bootstrap`);
* decisions: accuracy (with interval), balanced accuracy, F1, sensitivity / specificity, confusion
  matrix, at the decision in force (the validated threshold when a calibration is known, else the
  arg-max / the file's ``pred`` column), at the plain arg-max, and at the validated threshold;
* calibration before / after temperature scaling: ECE, MCE (equal-width and equal-mass), Brier, NLL;
* every headline metric per subgroup (:mod:`~medfuse.evaluation.subgroups`);
* uncertainty: entropy, mutual information, selective prediction (:mod:`~medfuse.evaluation.uncertainty`);

and writes them with the figures of :mod:`~medfuse.evaluation.plots` and an ``index.html``
(:mod:`~medfuse.evaluation.html`) that shows everything next to the run's configuration and data summary.

Sections by task: the report has one section per task output the run has, and only those. Classification is
computed here from the predictions file (its keys stay at the top level of ``metrics.json``, where readers
have always found them); every other task is a results file its evaluator wrote, listed in
:data:`TASK_SECTIONS` and passed by keyword (``segmentation=``, ``detection=``), stored in ``metrics.json``
under the task's name and drawn by :data:`medfuse.evaluation.html.SECTIONS` ``[task]``.
``metrics.json["tasks"]`` lists the sections present. A run without class predictions (``predictions_csv=None``)
gets a report of its other sections alone. Adding a task: one entry here, one renderer there.

Calibration sources (``metrics.json["calibration"]["source"]``):

* ``validation_csv`` given: temperature and threshold are fitted on it and applied to the
  (uncalibrated) test probabilities;
* ``calibration`` given (a ``calibration.json``): with ``calibration_applied=True`` (the bundles,
  whose predictions writer already applied it) the file's probabilities are the calibrated ones
  and the uncalibrated ones are recovered by inverting the temperature; otherwise it is applied here;
* neither: T = 1 and the arg-max (or the file's ``pred``), said so in the report.
"""

from __future__ import annotations

import csv
import io
import json
import logging
import os
from pathlib import Path
from typing import Any, Mapping, Sequence

import numpy as np

from medfuse.errors import DataError
from medfuse.evaluation.bootstrap import bootstrap_metrics, stratified_indices
from medfuse.evaluation.calibration import (
    apply_calibration,
    calibration_summary,
    decide,
    fit_calibration,
    load_calibration,
    reliability_bins,
    uncalibrate,
)
from medfuse.evaluation.classification import (
    binary_operating_point,
    classification_metrics,
    decision_metrics,
    format_metrics,
    multilabel_metrics,
)
from medfuse.evaluation.predictions import read_predictions
from medfuse.evaluation.subgroups import core_metrics, subgroup_metrics
from medfuse.evaluation.uncertainty import predictive_entropy, selective_prediction
from medfuse.utils.io import atomic_write_json, atomic_write_text

__all__ = ["metrics_from_predictions", "evaluate_predictions", "FIGURES", "TASK_SECTIONS"]

logger = logging.getLogger(__name__)

#: figure file names written under ``<out_dir>/figures``
FIGURES = {
    "roc": "roc.png",
    "pr": "pr.png",
    "reliability": "reliability.png",
    "confusion": "confusion_matrix.png",
    "entropy": "entropy_histogram.png",
    "risk_coverage": "risk_coverage.png",
    "gallery": "uncertain_gallery.png",
}

#: The task sections beside classification, in report order: the keyword of :func:`evaluate_predictions` (and
#: the key of ``metrics.json``) -> the file the task's evaluator writes in the evaluation folder. The detection
#: results (``eval/detection_metrics.json``, see docs/architecture.md) are drawn once ``html.SECTIONS`` has a
#: ``"detection"`` renderer; until then as a plain JSON block.
TASK_SECTIONS = {"segmentation": "segmentation_metrics.json", "detection": "detection_metrics.json"}


def _mean(x: Any) -> float | None:
    if x is None:
        return None
    x = np.asarray(x, dtype=np.float64)
    x = x[np.isfinite(x)]
    return float(x.mean()) if x.size else None


def _labelled(pred: dict) -> np.ndarray:
    labels = pred["labels"]
    if labels is None:
        return np.zeros(len(pred["images"]), dtype=bool)
    if pred["task"] == "multi-label":
        return np.all(labels >= 0, axis=1)
    return labels >= 0


def metrics_from_predictions(predictions: dict) -> dict:
    """Discrimination metrics of the labelled rows of :func:`~medfuse.evaluation.predictions.read_predictions` output.

    The light part of the report (no bootstrap, calibration or figures), used for quick tables.

    Raises:
        DataError: when no row has a label.
    """
    keep = _labelled(predictions)
    if not keep.any():
        raise DataError("the predictions have no labels: metrics need the true class of each image "
                        "(a 'label' column, or label_<class> columns for multi-label)")
    if predictions["task"] == "multi-label":
        metrics = multilabel_metrics(predictions["labels"][keep], predictions["probs"][keep], predictions["classes"])
    else:
        metrics = classification_metrics(predictions["labels"][keep], predictions["probs"][keep], predictions["classes"])
    metrics["unlabelled"] = int((~keep).sum())
    metrics["not_scored"] = predictions.get("not_scored", {})  # rows the input check refused: left out of every metric
    metrics["uncertainty"] = {
        "mean_entropy": _mean(predictions["entropy"]),
        "mean_mutual_info": _mean(predictions["mutual_info"]),
    }
    return metrics


def _ci_text(value: Any, ci: Mapping | None) -> str:
    if value is None:
        return "-"
    if ci and ci.get("n_too_small"):
        return f"{value:.4f} [n too small: < {ci.get('min_per_class')} per class]"
    if ci and ci.get("low") is not None:
        return f"{value:.4f} [{ci['low']:.4f}, {ci['high']:.4f}]"
    return f"{value:.4f}"


def _summary_text(m: dict) -> str:
    ci = m.get("ci", {})
    lines = [
        f"AUC {_ci_text(m.get('auc'), ci.get('auc'))}   AUPR {_ci_text(m.get('aupr'), ci.get('aupr'))}   "
        f"accuracy {_ci_text(m.get('accuracy'), ci.get('accuracy'))}",
    ]
    d = m.get("decision", {})
    extra = [f"{k} {v:.4f}" for k, v in (("balanced accuracy", m.get("balanced_accuracy")), ("sensitivity", d.get("sensitivity")),
                                          ("specificity", d.get("specificity")), ("F1", m.get("f1"))) if v is not None]
    if extra:
        lines.append("   ".join(extra) + f"   (decision: {d.get('rule', '?')})")
    cal = m.get("calibration", {})
    after = cal.get("after") or cal.get("before") or {}
    if after:
        head = (f"calibration: T = {cal.get('temperature', 1.0):.3f} ({cal.get('source')})" if cal.get("applied")
                else "calibration: none (T = 1)")
        lines.append(f"{head}; ECE {after.get('ece') or 0:.4f}, Brier {after.get('brier') or 0:.4f}, NLL {after.get('nll') or 0:.4f}")
    sel = m.get("selective") or {}
    if sel.get("aurc") is not None:
        ref = "; ".join(f"refer {k}: acc {v['accuracy']:.3f}" for k, v in sel["referral"].items() if v["accuracy"] is not None)
        lines.append(f"selective prediction by {sel['measure']}: AURC {sel['aurc']:.4f}; {ref}")
    return "\n".join(lines)


def _load_json(path: str | os.PathLike | None) -> dict | None:
    if not path:
        return None
    p = Path(path)
    if not p.is_file():
        return None
    try:
        with open(p, encoding="utf-8") as f:
            return json.load(f)
    except (OSError, ValueError):
        return None


def _data_summary(manifest: str | os.PathLike | None) -> dict | None:
    if not manifest or not Path(manifest).is_file():
        return None
    try:
        from medfuse.data.manifest import format_summary, read_manifest, summarize_manifest

        summary = summarize_manifest(read_manifest(manifest, validate=False))
        return {"manifest": str(manifest), "summary": summary, "text": format_summary(summary)}
    except Exception as e:  # the report must not fail on a manifest it only describes
        logger.warning("could not summarise %s for the report: %s", manifest, e)
        return {"manifest": str(manifest), "error": str(e)}


def _write_per_case(path: Path, pred: dict, rows: np.ndarray, probs: np.ndarray, raw: np.ndarray, decision: np.ndarray,
                    entropy: np.ndarray, correct: np.ndarray | None, uncertainty_rank: np.ndarray) -> Path:
    classes = pred["classes"]
    multilabel = pred["task"] == "multi-label"
    cols = ["image"]
    cols += [f"label_{c}" for c in classes] if multilabel else ["label"]
    cols += [f"prob_{c}" for c in classes] + [f"raw_prob_{c}" for c in classes]
    cols += [f"pred_{c}" for c in classes] if multilabel else ["pred", "confidence"]
    cols += ["correct", "entropy"] + (["mutual_info"] if pred["mutual_info"] is not None else []) + ["uncertainty_rank"]
    cols += list(pred["extra"])
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    w.writerow(cols)
    labels = pred["labels"]
    for j, i in enumerate(rows):
        r: list[Any] = [pred["images"][i]]
        if multilabel:
            r += [int(v) if v >= 0 else "" for v in labels[i]]
        else:
            r.append(classes[labels[i]] if labels is not None and labels[i] >= 0 else "")
        r += [f"{v:.6g}" for v in probs[j]] + [f"{v:.6g}" for v in raw[j]]
        if multilabel:
            r += [int(v) for v in decision[j]]
        else:
            r += [classes[int(decision[j])], f"{probs[j, int(decision[j])]:.6g}"]
        r.append("" if correct is None or correct[j] is None else int(bool(correct[j])))
        r.append(f"{entropy[j]:.6g}")
        if pred["mutual_info"] is not None:
            mi = pred["mutual_info"][i]
            r.append("" if not np.isfinite(mi) else f"{mi:.6g}")
        r.append(int(uncertainty_rank[j]))
        r += [pred["extra"][c][i] for c in pred["extra"]]
        w.writerow(r)
    return atomic_write_text(path, buf.getvalue())


def evaluate_predictions(
    predictions_csv: str | os.PathLike | None,
    out_dir: str | os.PathLike | None = None,
    verbose: bool = True,
    *,
    classes: Sequence[str] | None = None,
    validation_csv: str | os.PathLike | None = None,
    calibration: str | os.PathLike | Mapping | None = None,
    calibration_applied: bool = True,
    target_sensitivity: float = 0.9,
    positive_class: str | None = None,
    n_boot: int = 1000,
    seed: int = 0,
    n_bins: int = 15,
    max_groups: int = 20,
    cam_dir: str | os.PathLike | None = None,
    config: str | os.PathLike | Mapping | None = None,
    run_info: str | os.PathLike | Mapping | None = None,
    manifest: str | os.PathLike | None = None,
    title: str | None = None,
    figures: bool = True,
    html: bool = True,
    segmentation: str | os.PathLike | Mapping | None = None,
    detection: str | os.PathLike | Mapping | None = None,
    localization: str | os.PathLike | Sequence[Mapping] | None = None,
) -> dict:
    """Evaluate ``predictions_csv`` and the other task results of the run, and write the report folder.

    Args:
        predictions_csv: the class predictions (see :func:`~medfuse.evaluation.predictions.read_predictions`);
            ``None`` for a run without a classification output (then ``out_dir`` and another task are needed).
        out_dir: report folder; defaults to the folder of ``predictions_csv``.
        verbose: print the summary and the table.
        classes: class order (needed when the header names classes by index).
        validation_csv: validation predictions (uncalibrated) to fit temperature and threshold on.
        calibration: a ``calibration.json`` (path or dictionary) to report / apply.
        calibration_applied: the probabilities in ``predictions_csv`` already went through
            ``calibration`` (the bundles). Defaults to True; ignored without ``calibration``.
        target_sensitivity: sensitivity the validated threshold is chosen for (with ``validation_csv``).
        positive_class: positive class of a binary task (index 1 when ``None``).
        n_boot: bootstrap resamples for the intervals (0: none). Defaults to 1000.
        seed: bootstrap seed. Defaults to 0.
        n_bins: calibration bins at most (fewer for few cases: :func:`~medfuse.evaluation.calibration.reliability_bins`).
            Defaults to 15.
        max_groups: grouping columns with more distinct values are skipped.
        cam_dir: folder with a CAM ``index.csv`` (:func:`~medfuse.evaluation.gallery.write_uncertain_cams`)
            shown as the gallery of uncertain cases.
        config: the run's executed config (path or dictionary) shown in the report.
        run_info: the run record (``run_info.json``) shown in the report.
        manifest: the manifest, summarised in the report.
        title: report title.
        figures: write the PNG figures. Defaults to True.
        html: write ``index.html``. Defaults to True.
        segmentation: segmentation results of the same run (a ``segmentation_metrics.json`` path or its
            dictionary: ``per_class`` Dice / IoU / HD95 summaries as
            :func:`~medfuse.evaluation.segmentation.segmentation_metrics` gives them, optionally
            ``cam_inside_lungs``), added to ``metrics.json`` and shown in the report.
        detection: detection results of the same run (an ``eval/detection_metrics.json`` path or its dictionary,
            as the detection task layer writes it), added to ``metrics.json["detection"]`` and shown in the
            report's detection section; nothing is drawn without it.
        localization: does the CAM look at the finding: rows of
            :func:`~medfuse.evaluation.localization.localization_records` (written to ``localization.csv``) or the path
            of such a CSV; summarised per class with bootstrap intervals into ``metrics.json["localization"]``
            (pointing game, CAM mass inside the boxes and the lungs) and the report's "Does the CAM look at the
            finding?" section; gallery cases whose CAM peak misses their boxes are marked.

    Returns:
        the metrics dictionary, as written to ``metrics.json``.

    Raises:
        DataError: for unreadable or inconsistent inputs (the message names the file, column and row), or
            nothing to evaluate.
    """
    calibration = calibration or None  # "" (a bundle run with --calibration_file '') means none
    if predictions_csv is None and out_dir is None:
        raise ValueError("out_dir is needed when there is no predictions_csv")
    out = Path(out_dir) if out_dir is not None else Path(predictions_csv).parent  # type: ignore[arg-type]
    out.mkdir(parents=True, exist_ok=True)
    metrics: dict[str, Any] = {}
    tasks = []
    if predictions_csv is not None:
        metrics = _classification_section(
            Path(predictions_csv), out, classes=classes, validation_csv=validation_csv, calibration=calibration,
            calibration_applied=calibration_applied, target_sensitivity=target_sensitivity,
            positive_class=positive_class, n_boot=n_boot, seed=seed, n_bins=n_bins, max_groups=max_groups,
            cam_dir=cam_dir, figures=figures)
        tasks.append("classification")
    if localization is not None:
        from medfuse.evaluation.localization import localization_summary, read_localization_csv, write_localization_csv

        rows = read_localization_csv(localization) if isinstance(localization, (str, os.PathLike)) else list(localization)
        if not isinstance(localization, (str, os.PathLike)):
            write_localization_csv(out / "localization.csv", rows)
        names = metrics.get("classes") or sorted({str(r["class"]) for r in rows})
        metrics["localization"] = {**localization_summary(rows, names, n_boot=int(n_boot or 0), seed=seed),
                                   "file": "localization.csv" if not isinstance(localization, (str, os.PathLike))
                                   else str(localization)}
    given = {"segmentation": segmentation, "detection": detection}
    for task in TASK_SECTIONS:
        if given[task] is not None:
            metrics[task] = _task_results(task, given[task])
            tasks.append(task)
    if not tasks:
        raise DataError(f"nothing to evaluate in {out}: give the class predictions or another task's results "
                        f"({', '.join(TASK_SECTIONS)})")
    metrics["tasks"] = tasks
    metrics.setdefault("files", {})["metrics"] = "metrics.json"
    if html:
        from medfuse.evaluation.html import write_html

        cfg = config if isinstance(config, Mapping) else _load_json(config)
        info = run_info if isinstance(run_info, Mapping) else _load_json(run_info)
        data = _data_summary(manifest)
        training = None
        if info and info.get("run_dir"):
            training = _load_json(Path(info["run_dir"]) / "config.json")
        name = Path(predictions_csv).name if predictions_csv is not None else out.name
        write_html(out / "index.html", metrics, config=cfg, run_info=info, data=data,
                   title=title or f"Evaluation of {name}", training=training)
        metrics["files"]["html"] = "index.html"
    atomic_write_json(out / "metrics.json", _json_clean(metrics))
    if verbose:
        if "classification" in tasks:
            multilabel = metrics.get("task") == "multi-label"
            print(format_metrics(metrics, title=f"evaluation of {predictions_csv}") if not multilabel
                  else f"evaluation of {predictions_csv}")
            print(_summary_text(metrics))
            left = metrics.get("not_scored") or {}
            if left.get("count"):
                reasons = ", ".join(f"{k} {v}" for k, v in left["reasons"].items())
                print(f"left out: {left['count']} row(s) whose input_check is not ok ({reasons})")
        print(f"report: {out / 'index.html' if html else out / 'metrics.json'}")
    return metrics


def _task_results(task: str, value: str | os.PathLike | Mapping) -> dict:
    """The results of one task section (:data:`TASK_SECTIONS`) as stored in ``metrics.json`` (no per-case rows)."""
    res = value if isinstance(value, Mapping) else _load_json(value)
    if res is None:
        raise DataError(f"{value}: {task} results not found or unreadable; evaluate the {task} first (the bundle's "
                        f"evaluator writes {TASK_SECTIONS[task]}) or leave it out")
    return {k: v for k, v in res.items() if k != "per_case"}


def _classification_section(
    predictions_csv: Path,
    out: Path,
    *,
    classes: Sequence[str] | None,
    validation_csv: str | os.PathLike | None,
    calibration: str | os.PathLike | Mapping | None,
    calibration_applied: bool,
    target_sensitivity: float,
    positive_class: str | None,
    n_boot: int,
    seed: int,
    n_bins: int,
    max_groups: int,
    cam_dir: str | os.PathLike | None,
    figures: bool,
) -> dict:
    """The classification metrics of :func:`evaluate_predictions` (top-level keys of ``metrics.json``), with
    ``per_case.csv`` and the figures written into ``out``."""
    pred = read_predictions(predictions_csv, classes=classes)
    classes = pred["classes"]
    multilabel = pred["task"] == "multi-label"
    keep = _labelled(pred)
    if not keep.any():
        raise DataError(f"{predictions_csv} has no labels (no row has a true class), so nothing can be evaluated; add the true class in a "
                        "'label' column (or label_<class> 0/1 columns for multi-label)")
    rows = np.flatnonzero(keep)
    y = pred["labels"][rows]
    file_probs = pred["probs"][rows]

    # ---- calibration: which probabilities are raw, which are calibrated, which decision is in force
    cal_info: dict[str, Any]
    cal = None
    if validation_csv is not None:
        val = read_predictions(validation_csv, classes=classes)
        if val["task"] != pred["task"]:
            raise DataError(f"{validation_csv}: a {val['task']} file cannot calibrate the {pred['task']} {predictions_csv}")
        vkeep = _labelled(val)
        if not vkeep.any():
            raise DataError(f"{validation_csv}: the validation predictions have no labels; calibration needs them")
        cal = fit_calibration(val["labels"][vkeep], val["probs"][vkeep], classes, multilabel=multilabel,
                              target_sensitivity=target_sensitivity, positive_class=positive_class,
                              fitted_on={"source": str(validation_csv), "split": "validation"})
        raw = file_probs
        probs, decision = apply_calibration(raw, cal, multilabel)
        source = f"fitted on {validation_csv}"
        atomic_write_json(out / "calibration.json", cal)
    elif calibration is not None:
        cal = load_calibration(calibration, classes)
        t = float(cal["temperature"])
        if calibration_applied:
            probs, raw = file_probs, uncalibrate(file_probs, t, multilabel)
            decision = pred["pred"][rows] if pred["has_pred"] and not multilabel else decide(probs, cal, multilabel)
        else:
            raw = file_probs
            probs, decision = apply_calibration(raw, cal, multilabel)
        source = str(calibration) if not isinstance(calibration, Mapping) else "given"
    else:
        raw = probs = file_probs
        decision = pred["pred"][rows] if (pred["has_pred"] and not multilabel) else decide(probs, None, multilabel)
        source = None
    if cal is None:
        rule = "file's pred column" if pred["has_pred"] and not multilabel else ("0.5 per class" if multilabel else "argmax")
        cal_info = {"source": None, "temperature": 1.0, "applied": False, "decision": rule,
                    "note": "no calibration.json beside the checkpoint and no validation predictions: "
                            "probabilities are not temperature-scaled (T = 1) and the decision is the " + rule}
    else:
        cal_info = {"source": source, "applied": True, "temperature": float(cal["temperature"]),
                    "decision": cal["decision"], "threshold": cal.get("threshold"), "positive_class": cal.get("positive_class"),
                    "per_class_thresholds": cal.get("per_class_thresholds"), "target_sensitivity": cal.get("target_sensitivity"),
                    "fitted_on": cal.get("fitted_on"), "validation": cal.get("validation")}
    bins = reliability_bins(y.size, n_bins)  # y.size: cases, or cases x labels (the events binned) for multi-label
    before = calibration_summary(y, raw, multilabel, bins)
    after = calibration_summary(y, probs, multilabel, bins) if cal is not None else None
    cal_info.update(before=before, after=after, n_bins_requested=int(n_bins))

    # ---- discrimination and decisions
    if multilabel:
        thr = None
        if cal is not None:
            thr = [cal["per_class_thresholds"].get(c) if cal["per_class_thresholds"].get(c) is not None else 0.5 for c in classes]
        metrics = multilabel_metrics(y, probs, classes, thresholds=thr)
        correct = np.all(decision == y, axis=1)
        dm = None
    else:
        metrics = classification_metrics(y, probs, classes)
        dm = decision_metrics(y, decision, classes)
        correct = decision == y
        metrics.update(accuracy=dm["accuracy"], balanced_accuracy=dm["balanced_accuracy"], f1_macro=dm["f1_macro"],
                       confusion_matrix=dm["confusion_matrix"])
        for c in classes:
            metrics["per_class"][c].update({k: dm["per_class"][c][k] for k in ("sensitivity", "specificity", "ppv", "npv", "f1")})
            # precision / recall of the decision in force (classification_metrics gives the arg-max's)
            metrics["per_class"][c].update(precision=dm["per_class"][c]["ppv"], recall=dm["per_class"][c]["sensitivity"])
    metrics["task"] = pred["task"]
    headline = core_metrics(y, probs, decision, classes, multilabel)
    metrics["f1"] = headline["f1"]
    decision_rule = cal_info["decision"] if cal is None else (
        f"threshold {cal['threshold']:.4g} on p({cal['positive_class']})" if cal.get("decision") == "threshold" else cal["decision"])
    metrics["decision"] = {"rule": decision_rule, "sensitivity": headline["sensitivity"], "specificity": headline["specificity"]}

    # operating points of a binary task: arg-max (0.5), the validated threshold, the decision in force
    if not multilabel and len(classes) == 2:
        pos = classes.index(cal["positive_class"]) if cal is not None and cal.get("positive_class") in classes else 1
        ops = {"argmax": {"threshold": 0.5, **binary_operating_point(y == pos, probs.argmax(1) == pos)}}
        if cal is not None and cal.get("threshold") is not None:
            ops["validated"] = {"threshold": float(cal["threshold"]), "target_sensitivity": cal.get("target_sensitivity"),
                                **binary_operating_point(y == pos, probs[:, pos] >= float(cal["threshold"]))}
        ops["decision"] = {"rule": decision_rule, **binary_operating_point(y == pos, decision == pos)}
        metrics["operating_points"] = ops
    elif not multilabel and cal is not None:
        ops = {}
        for k, c in enumerate(classes):
            t = cal["per_class_thresholds"].get(c)
            if t is not None:
                ops[c] = {"threshold": float(t), **binary_operating_point(y == k, probs[:, k] >= float(t))}
        metrics["operating_points"] = {"one_vs_rest_validated": ops}

    # ---- confidence intervals
    if n_boot and n_boot > 0:
        metrics["ci"] = bootstrap_metrics(y, probs, classes, pred=decision, multilabel=multilabel, n_boot=n_boot, seed=seed)
    else:
        metrics["ci"] = {}

    # ---- uncertainty
    ent_file = pred["entropy"][rows] if pred["entropy"] is not None else None
    recomputed = (cal is not None and not calibration_applied) or validation_csv is not None
    if recomputed or ent_file is None or not np.all(np.isfinite(ent_file)):
        entropy = predictive_entropy(probs, multilabel)
        ent_source = "computed from the (calibrated) probabilities"
    else:
        entropy = ent_file
        ent_source = "entropy column of the predictions file"
    mi = pred["mutual_info"][rows] if pred["mutual_info"] is not None else None
    selective = selective_prediction(y, probs, decision, entropy, classes, multilabel, measure="entropy")
    uncertainty: dict[str, Any] = {
        "mean_entropy": _mean(entropy),
        "mean_entropy_correct": _mean(entropy[correct]),
        "mean_entropy_incorrect": _mean(entropy[~correct]),
        "entropy_source": ent_source,
        "mean_mutual_info": _mean(mi),
    }
    if mi is not None and np.isfinite(mi).any():
        uncertainty["selective_mutual_info"] = {k: v for k, v in selective_prediction(
            y, probs, decision, mi, classes, multilabel, measure="mutual_info").items() if k != "curve"}
    if not multilabel and cal is not None and cal.get("decision") == "threshold" and cal.get("threshold") is not None:
        # entropy measures doubt about the arg-max; with a threshold away from 0.5 the decision is least sure
        # near that threshold, so also rank by the distance of p(positive) to it (on the logit scale)
        pos = classes.index(cal["positive_class"])
        q = np.clip(probs[:, pos], 1e-12, 1 - 1e-12)
        t = min(max(float(cal["threshold"]), 1e-12), 1 - 1e-12)
        margin = -np.abs(np.log(q / (1 - q)) - np.log(t / (1 - t)))
        sel_margin = selective_prediction(y, probs, decision, margin, classes, multilabel, measure="threshold_margin")
        uncertainty["selective_threshold_margin"] = {k: v for k, v in sel_margin.items() if k != "curve"}
        selective["alternative"] = {"measure": "threshold_margin", "aurc": sel_margin["aurc"], "curve": sel_margin["curve"]}
    metrics["uncertainty"] = uncertainty
    metrics["selective"] = selective

    # ---- subgroups
    extra = {c: [v[i] for i in rows] for c, v in pred["extra"].items()}
    metrics["subgroups"] = subgroup_metrics(y, probs, decision, classes, extra, multilabel, max_groups=max_groups,
                                            n_boot=min(int(n_boot or 0), 500), seed=seed)
    metrics["calibration"] = cal_info
    metrics["unlabelled"] = int((~keep).sum())
    metrics["not_scored"] = pred["not_scored"]  # rows the input check refused: left out of every metric
    metrics["predictions"] = str(predictions_csv)
    metrics["bootstrap"] = {"n_boot": int(n_boot or 0), "seed": int(seed)}

    # ---- per-case table
    order = np.argsort(-np.where(np.isfinite(entropy), entropy, -np.inf), kind="stable")
    rank = np.empty(len(rows), dtype=np.int64)
    rank[order] = np.arange(1, len(rows) + 1)
    _write_per_case(out / "per_case.csv", pred, rows, probs, raw, decision, entropy, correct, rank)

    # ---- figures
    figs: dict[str, str] = {}
    if figures:
        figs = _figures(out / "figures", y, probs, decision, correct, entropy, classes, multilabel, metrics, before, after,
                        cam_dir, n_boot, seed)
    metrics["figures"] = figs
    gallery = []
    if cam_dir is not None:
        from medfuse.evaluation.gallery import read_cam_index

        for r in read_cam_index(cam_dir):
            if r.get("overlay"):
                r["overlay_path"] = os.path.relpath(Path(cam_dir) / r["overlay"], out)
            gallery.append(r)
    metrics["gallery"] = gallery
    metrics["files"] = {"metrics": "metrics.json", "per_case": "per_case.csv"}
    return metrics


def _json_clean(obj: Any) -> Any:
    if isinstance(obj, Mapping):
        return {str(k): _json_clean(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_json_clean(v) for v in obj]
    if isinstance(obj, np.generic):
        obj = obj.item()
    if isinstance(obj, float) and not np.isfinite(obj):
        return None
    if isinstance(obj, Path):
        return str(obj)
    return obj


def _figures(fig_dir: Path, y, probs, decision, correct, entropy, classes, multilabel, metrics, before, after, cam_dir,
             n_boot, seed) -> dict:
    from medfuse.evaluation import plots

    figs: dict[str, str] = {}
    idx = stratified_indices(y, min(int(n_boot or 0), 200), seed) if n_boot and len(y) else None
    targets = y.astype(bool) if multilabel else np.stack([y == k for k in range(len(classes))], axis=1)
    show = [1] if (not multilabel and len(classes) == 2) else list(range(len(classes)))
    roc, pr, labels, prev = {}, {}, {}, {}
    for k in show:
        name = classes[k]
        pc = metrics["per_class"][name]
        roc[name] = plots.curve_bands(targets[:, k], probs[:, k], idx, "roc")
        pr[name] = plots.curve_bands(targets[:, k], probs[:, k], idx, "pr")
        labels[name] = f"{name}: AUC {pc['auc']:.3f}" if pc.get("auc") is not None else f"{name}: AUC undefined"
        prev[name] = float(targets[:, k].mean())
    plabels = {n: (f"{n}: AUPR {metrics['per_class'][n]['aupr']:.3f}" if metrics["per_class"][n].get("aupr") is not None
                   else f"{n}: AUPR undefined") for n in roc}
    if any(v is not None for v in roc.values()):
        figs["roc"] = str(plots.plot_roc(roc, fig_dir / FIGURES["roc"], labels).relative_to(fig_dir.parent))
    if any(v is not None for v in pr.values()):
        figs["pr"] = str(plots.plot_pr(pr, fig_dir / FIGURES["pr"], plabels, prev).relative_to(fig_dir.parent))
    b = dict(before, label="uncalibrated" if after is not None else "as given")
    a = dict(after, label="temperature-scaled") if after is not None else None
    figs["reliability"] = str(plots.plot_reliability(
        b, a, fig_dir / FIGURES["reliability"], xmin=0.0 if multilabel else (1.0 / len(classes) if classes else 0.0)).relative_to(fig_dir.parent))
    if not multilabel:
        rule = metrics.get("decision", {}).get("rule", "")
        figs["confusion"] = str(plots.plot_confusion(metrics["confusion_matrix"], classes, fig_dir / FIGURES["confusion"],
                                                     title=f"Confusion matrix\n(decision: {rule})").relative_to(fig_dir.parent))
    figs["entropy"] = str(plots.plot_entropy(entropy, correct, fig_dir / FIGURES["entropy"]).relative_to(fig_dir.parent))
    figs["risk_coverage"] = str(plots.plot_risk_coverage(metrics["selective"], fig_dir / FIGURES["risk_coverage"]).relative_to(fig_dir.parent))
    if cam_dir is not None:
        from medfuse.evaluation.gallery import read_cam_index

        entries = [{"png": Path(cam_dir) / r["overlay"]} for r in read_cam_index(cam_dir) if r.get("overlay")]
        g = plots.plot_gallery(entries, fig_dir / FIGURES["gallery"], columns=3,
                               title="Most uncertain cases (Grad-CAM of the decided class)")
        if g is not None:
            figs["gallery"] = str(g.relative_to(fig_dir.parent))
    return figs
