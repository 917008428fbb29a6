# Copyright (c) medfuse contributors
# Licensed under the Apache License, Version 2.0
"""k-fold cross-validation of a bundle, fold by fold and resumable (``medfuse cv``).

The manifest's ``training`` split is cut into k patient-level, label-stratified folds
(:func:`medfuse.data.splits.kfold_assignment`); the ``validation`` split is kept for the ensemble's calibration
and ``test`` is never read. Fold i trains on the other folds and uses fold i as its validation split, so it
selects its checkpoint and fits its own ``calibration.json`` on its out-of-fold (OOF) cases. Layout::

    <output_dir>/cv/
        folds.json                fold of every training item, the seed, the source manifest
        manifests/fold_<i>.json   the fold's manifest (training: the other folds; validation: fold i)
        fold_<i>/                 an ordinary run folder (model.pt, calibration.json on its OOF cases,
                                  validation_predictions.csv = its OOF predictions, uncalibrated)
        fold_<i>/oof/             segmentation bundles: the evaluate workflow on fold i (per-case Dice)
        predictions.csv           pooled OOF predictions (medfuse format, a ``fold`` column), for ``medfuse evaluate``
        cv_summary.json           per-fold and pooled AUC / AUPR / accuracy (or Dice) with bootstrap intervals,
                                  and the threshold fitted on the pooled OOF predictions

A finished fold (:func:`fold_finished`) is not trained again; an unfinished fold folder is moved aside to
``fold_<i>.incomplete-<n>`` (nothing is deleted) and the fold is trained anew.
"""

from __future__ import annotations

import csv
import json
import os
from pathlib import Path
from typing import Any, Mapping, Sequence

import numpy as np

from medfuse.errors import DataError
from medfuse.utils.io import atomic_write_json

__all__ = ["CV_DIR", "FOLD_MARKER", "fold_finished", "mark_fold_finished", "make_folds", "run_cv", "summarise_cv",
           "SEGMENTATION_EVALUATORS", "scores_segmentation"]

CV_DIR = "cv"
#: written into a fold's run folder when its training returned (used while run folders carry no ``status``)
FOLD_MARKER = "cv_fold_finished.json"
#: evaluation handlers that write ``segmentation_per_case.csv``: a bundle whose evaluate workflow has one is also
#: scored by Dice (its evaluate workflow run on each held-out fold)
SEGMENTATION_EVALUATORS = ("SegmentationEvaluator", "SliceSegmentationEvaluator", "MultiOutputEvaluator")


def fold_finished(run_dir: str | os.PathLike) -> bool:
    """Whether the training run in ``run_dir`` finished: its ``run_info.json`` ``status`` when the run records one
    (``"finished"``), else the marker :func:`mark_fold_finished` writes. The one place that decides it."""
    from medfuse.workflows.runs import read_run_info

    info = read_run_info(run_dir)
    if "status" in info:
        return info["status"] == "finished"
    return (Path(run_dir) / FOLD_MARKER).is_file() and (Path(run_dir) / "model.pt").is_file()


def mark_fold_finished(run_dir: str | os.PathLike, record: Mapping[str, Any]) -> Path:
    """Write the fold marker (what was trained, when) into ``run_dir``."""
    import datetime as dt

    return atomic_write_json(Path(run_dir) / FOLD_MARKER,
                             {**dict(record), "finished": dt.datetime.now().astimezone().isoformat(timespec="seconds")})


def make_folds(manifest: str | os.PathLike, folds: int, seed: int, cv_dir: str | os.PathLike) -> list[Path]:
    """Write ``folds.json`` and one manifest per fold under ``cv_dir``; return the fold manifests.

    An existing ``folds.json`` must match (same manifest content, folds and seed): a resumed run never changes
    which items a finished fold was trained on.

    Raises:
        DataError: too few patients for the folds, an empty training split, or a ``folds.json`` of another setup.
    """
    from medfuse.data.manifest import load_split, read_manifest, write_manifest
    from medfuse.data.splits import kfold_assignment
    from medfuse.utils.io import sha256_file

    manifest = Path(manifest).resolve()
    source = read_manifest(manifest)
    items = load_split(manifest, "training")
    if not items:
        raise DataError(f"{manifest}: the training split is empty; cross-validation folds come from it")
    fold_of = kfold_assignment(items, folds, seed=seed)
    cv_dir = Path(cv_dir)
    record = {"manifest": str(manifest), "manifest_sha256": sha256_file(manifest), "folds": int(folds), "seed": int(seed),
              "fold_sizes": [fold_of.count(k) for k in range(folds)],
              "items": [{"image": it["image"], "fold": f + 1} for it, f in zip(items, fold_of)]}
    known = cv_dir / "folds.json"
    if known.is_file():
        with open(known, encoding="utf-8") as f:
            old = json.load(f)
        if {k: old.get(k) for k in ("manifest_sha256", "folds", "seed")} != {k: record[k] for k in ("manifest_sha256", "folds", "seed")}:
            raise DataError(f"{known}: these folds were made from another manifest, fold count or seed "
                            f"({old.get('folds')} folds, seed {old.get('seed')}); use another --output_dir, or delete "
                            "that cv folder to start over")
    atomic_write_json(known, record)
    paths = []
    for k in range(folds):
        fold_manifest = {key: value for key, value in source.items() if key not in ("training", "validation", "test")}
        fold_manifest["provenance"] = {"tool": "medfuse cv", "source_manifest": str(manifest), "fold": k + 1,
                                       "folds": int(folds), "seed": int(seed)}
        fold_manifest["training"] = [it for it, f in zip(items, fold_of) if f != k]
        fold_manifest["validation"] = [it for it, f in zip(items, fold_of) if f == k]
        paths.append(write_manifest(fold_manifest, cv_dir / "manifests" / f"fold_{k + 1}.json"))
    return paths


def scores_segmentation(bundle: str | os.PathLike) -> bool:
    """Whether the evaluate workflow of ``bundle`` writes segmentation metrics (one of :data:`SEGMENTATION_EVALUATORS`)."""
    from medfuse.workflows.bundle import compose_layers, workflow_files

    text = json.dumps(compose_layers(workflow_files(bundle, "evaluate")))
    return any(f".{name}\"" in text for name in SEGMENTATION_EVALUATORS)


def _move_aside(run_dir: Path) -> None:
    n = 1
    while run_dir.with_name(f"{run_dir.name}.incomplete-{n}").exists():
        n += 1
    target = run_dir.with_name(f"{run_dir.name}.incomplete-{n}")
    run_dir.rename(target)
    print(f"cv: {run_dir.name} did not finish; moved to {target.name} and training it again")


def _read_per_case_dice(path: Path) -> tuple[list[str], list[float]]:
    """(case, mean foreground Dice) from a ``segmentation_per_case.csv``."""
    with open(path, newline="", encoding="utf-8") as f:
        rows = list(csv.DictReader(f))
    cases, dice = [], []
    for i, r in enumerate(rows):
        values = [float(v) for c, v in r.items() if c.startswith("dice_") and c != "dice_background" and v not in ("", None)]
        if values:
            cases.append(r.get("image") or r.get("case") or f"row{i + 1}")
            dice.append(float(np.mean(values)))
    return cases, dice


def run_cv(
    bundle: str | os.PathLike,
    manifest: str | os.PathLike,
    folds: int = 5,
    seed: int = 0,
    output_dir: str | os.PathLike | None = None,
    overrides: Mapping[str, Any] | None = None,
    n_boot: int = 1000,
    ensemble: bool = True,
) -> dict:
    """Train the folds that are not finished, then summarise (and build the ensemble, see :mod:`.ensemble`).

    Args:
        bundle: bundle folder or name.
        manifest: the manifest; its ``training`` split is cut into folds.
        folds: k (>= 2).
        seed: seed of the fold assignment (the bundle's own ``seed`` key is an override like any other).
        output_dir: parent of the ``cv`` folder; default ``runs/<bundle name>``.
        overrides: bundle config keys for every fold (``epochs``, ``image_size`` ...).
        n_boot: bootstrap resamples of the summary's intervals.
        ensemble: also write the ensemble of the fold models into the ``cv`` folder (classification bundles; a
            bundle scored by Dice is cross-validated but not ensembled).

    Returns:
        ``{"cv_dir", "trained": [fold numbers trained by this call], "skipped": [...], "summary": dict}``.
    """
    from medfuse.workflows.bundle import bundle_dir, run_bundle

    root = bundle_dir(bundle)
    overrides = dict(overrides or {})
    for key in ("manifest", "output_dir", "run_name"):
        if key in overrides:
            raise DataError(f"--{key} is set by medfuse cv for every fold; leave it out of the bundle overrides")
    cv_dir = Path(output_dir if output_dir is not None else Path("runs") / root.name) / CV_DIR
    cv_dir.mkdir(parents=True, exist_ok=True)
    segmentation = scores_segmentation(root)
    fold_manifests = make_folds(manifest, folds, seed, cv_dir)
    trained, skipped = [], []
    for k, fold_manifest in enumerate(fold_manifests, start=1):
        run_dir = cv_dir / f"fold_{k}"
        if fold_finished(run_dir):
            skipped.append(k)
            print(f"cv: fold {k}/{folds} finished before, not trained again ({run_dir})")
        else:
            if run_dir.exists():
                _move_aside(run_dir)
            print(f"cv: training fold {k}/{folds} -> {run_dir}")
            run_bundle(root, "train", manifest=str(fold_manifest), output_dir=str(cv_dir), run_name=run_dir.name,
                       **overrides)
            mark_fold_finished(run_dir, {"fold": k, "folds": folds, "manifest": str(fold_manifest), "overrides": overrides})
            trained.append(k)
        if segmentation and not (run_dir / "oof" / "segmentation_per_case.csv").is_file():
            keep = {key: v for key, v in overrides.items() if key in ("num_workers", "num_threads", "batch_size", "progress", "amp")}
            run_bundle(root, "evaluate", manifest=str(fold_manifest), output_dir=str(cv_dir), run_name=run_dir.name,
                       eval_split="validation", eval_dir=str(run_dir / "oof"), n_boot=0, gallery_size=0, **keep)
    summary = summarise_cv(cv_dir, n_boot=n_boot, seed=seed,
                           target_sensitivity=float(overrides.get("target_sensitivity", 0.9)),
                           min_cases=int(overrides.get("threshold_min_cases", _config_value(root, "threshold_min_cases", 50))))
    result = {"cv_dir": cv_dir, "trained": trained, "skipped": skipped, "summary": summary}
    if ensemble and segmentation:
        print("cv: the fold ensemble (EnsembleNet) takes single-output classifiers; this bundle's folds are not ensembled")
    elif ensemble and (cv_dir / "predictions.csv").is_file():
        from medfuse.workflows.ensemble import build_cv_ensemble

        result["ensemble"] = build_cv_ensemble(cv_dir, bundle=root, manifest=manifest, overrides=overrides)
    return result


def _config_value(root: Path, key: str, default: Any) -> Any:
    from medfuse.workflows.bundle import compose_layers, workflow_files

    value = compose_layers(workflow_files(root, "train")).get(key, default)
    return value if isinstance(value, (int, float)) else default


def _metrics_with_ci(y: np.ndarray, probs: np.ndarray, classes: Sequence[str], n_boot: int, seed: int) -> dict:
    from medfuse.evaluation.bootstrap import bootstrap_metrics
    from medfuse.evaluation.classification import classification_metrics

    m = classification_metrics(y, probs, classes)
    out = {"n": m["n"], "auc": m["auc"], "aupr": m["aupr"], "accuracy": m["accuracy"]}
    if n_boot > 0 and m["n"]:
        ci = bootstrap_metrics(y, probs, classes, n_boot=n_boot, seed=seed)
        out.update(auc_ci=ci["auc"], aupr_ci=ci["aupr"], accuracy_ci=ci["accuracy"])
    return out


def _mean_ci(values: Sequence[float], n_boot: int, seed: int) -> dict:
    from medfuse.evaluation.bootstrap import percentile_interval

    v = np.asarray(values, dtype=np.float64)
    out: dict[str, Any] = {"n": int(v.size), "dice": float(v.mean()) if v.size else None}
    if n_boot > 0 and v.size:
        idx = np.random.default_rng(seed).integers(0, v.size, size=(int(n_boot), v.size))
        out["dice_ci"] = percentile_interval(v[idx].mean(1))
    return out


def summarise_cv(cv_dir: str | os.PathLike, n_boot: int = 1000, seed: int = 0, target_sensitivity: float = 0.9,
                 min_cases: int = 50) -> dict:
    """Pool the folds' OOF predictions into ``predictions.csv`` and write ``cv_summary.json``.

    Accuracy is the arg-max's (each fold's own threshold was fitted on the very cases it would be scored on). The
    pooled threshold (two classes) is fitted on the pooled OOF probabilities when ``min_cases`` positives and
    negatives back it (:func:`medfuse.evaluation.thresholds.validated_threshold`), else refused.
    """
    from medfuse.evaluation.predictions import read_predictions, write_predictions
    from medfuse.evaluation.thresholds import validated_threshold

    cv_dir = Path(cv_dir)
    with open(cv_dir / "folds.json", encoding="utf-8") as f:
        folds = json.load(f)
    per_fold, pooled_parts, dice_all = [], [], []
    for k in range(1, int(folds["folds"]) + 1):
        run_dir = cv_dir / f"fold_{k}"
        entry: dict[str, Any] = {"fold": k, "run_dir": str(run_dir), "finished": fold_finished(run_dir)}
        oof = run_dir / "validation_predictions.csv"
        if oof.is_file():
            pred = read_predictions(oof)
            keep = pred["labels"] >= 0
            entry.update(_metrics_with_ci(pred["labels"][keep], pred["probs"][keep], pred["classes"], n_boot, seed))
            pooled_parts.append((k, pred))
        seg = run_dir / "oof" / "segmentation_per_case.csv"
        if seg.is_file():
            _, dice = _read_per_case_dice(seg)
            entry["segmentation"] = _mean_ci(dice, n_boot, seed)
            dice_all += dice
        per_fold.append(entry)
    summary: dict[str, Any] = {"folds": int(folds["folds"]), "seed": int(folds["seed"]), "manifest": folds["manifest"],
                               "fold_sizes": folds["fold_sizes"], "n_boot": int(n_boot), "per_fold": per_fold,
                               "accuracy_rule": "arg-max of the uncalibrated out-of-fold probabilities"}
    missing = [e["fold"] for e in per_fold if not e["finished"]]
    if missing:
        summary["unfinished_folds"] = missing
    if pooled_parts:
        classes = pooled_parts[0][1]["classes"]
        images, probs, labels, entropy, mi, fold_col = [], [], [], [], [], []
        extra_names = sorted({c for _, p in pooled_parts for c in p["extra"]})
        extra: dict[str, list] = {c: [] for c in extra_names}
        for k, p in pooled_parts:
            if p["classes"] != classes:
                raise DataError(f"{cv_dir}/fold_{k}: classes {p['classes']} differ from fold 1's {classes}")
            images += p["images"]
            probs.append(p["probs"])
            labels.append(p["labels"])
            entropy.append(p["entropy"] if p["entropy"] is not None else np.full(len(p["images"]), np.nan))
            mi.append(p["mutual_info"])
            fold_col += [k] * len(p["images"])
            for c in extra_names:
                extra[c] += p["extra"].get(c, [""] * len(p["images"]))
        probs_a, labels_a = np.concatenate(probs), np.concatenate(labels)
        has_mi = all(m is not None for m in mi)
        write_predictions(cv_dir / "predictions.csv", images, probs_a, classes, labels=labels_a.tolist(),
                          entropy=np.concatenate(entropy), mutual_info=np.concatenate(mi) if has_mi else None,
                          extra={**extra, "fold": fold_col})
        keep = labels_a >= 0
        summary["pooled"] = _metrics_with_ci(labels_a[keep], probs_a[keep], classes, n_boot, seed)
        summary["predictions"] = str(cv_dir / "predictions.csv")
        summary["classes"] = classes
        if len(classes) == 2:
            summary["threshold"] = {"positive_class": classes[1], **validated_threshold(
                labels_a[keep] == 1, probs_a[keep, 1], target_sensitivity, min_cases, n_boot, seed, positive=classes[1])}
            if summary["threshold"]["refused"]:
                print(f"cv: pooled out-of-fold {summary['threshold']['refused']}")
    if dice_all:
        summary["pooled_segmentation"] = _mean_ci(dice_all, n_boot, seed)
    atomic_write_json(cv_dir / "cv_summary.json", summary)
    return summary
