# Copyright (c) medfuse contributors
# Licensed under the Apache License, Version 2.0
"""evaluate_predictions: the report folder (metrics.json, per_case.csv, figures, index.html) and calibration sources."""

from __future__ import annotations

import csv
import json
import re

import numpy as np
import pytest
from sklearn.metrics import average_precision_score, balanced_accuracy_score, brier_score_loss, log_loss, roc_auc_score

from medfuse.errors import DataError
from medfuse.evaluation import evaluate_predictions, fit_calibration, read_predictions, save_calibration, temperature_scale


def _write(path, header, rows):
    with open(path, "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(header)
        w.writerows(rows)
    return path


def _binary_rows(n, seed, scale=3.0):
    """(label, p_pos, view, sex) with an over-confident model (logits scaled by ``scale``)."""
    rng = np.random.default_rng(seed)
    y = rng.integers(0, 2, n)
    z = rng.normal(0, 1, n) + 1.2 * (2 * y - 1)
    p = 1 / (1 + np.exp(-scale * z))
    views = rng.choice(["PA", "AP"], n)
    sexes = rng.choice(["F", "M"], n)
    return y, p, views, sexes


@pytest.fixture()
def binary_files(tmp_path):
    header = ["image", "label", "prob_normal", "prob_pneumonia", "view", "sex", "patient_id"]
    out = {}
    for name, n, seed in (("test", 240, 0), ("val", 160, 1)):
        y, p, v, s = _binary_rows(n, seed)
        rows = [[f"/data/{name}{i}.png", ["normal", "pneumonia"][y[i]], f"{1 - p[i]:.6f}", f"{p[i]:.6f}", v[i], s[i], f"p{i}"]
                for i in range(n)]
        out[name] = _write(tmp_path / f"{name}.csv", header, rows)
        out[name + "_arrays"] = (y, np.c_[1 - p, p])
    return out


def test_report_folder_and_numbers_agree_with_sklearn(binary_files, tmp_path):
    out = tmp_path / "report"
    m = evaluate_predictions(binary_files["test"], out, verbose=False, n_boot=200, seed=0)
    y, probs = binary_files["test_arrays"]
    probs = np.round(probs, 6)
    assert m["auc"] == pytest.approx(roc_auc_score(y, probs[:, 1]), abs=1e-9)
    assert m["aupr"] == pytest.approx(average_precision_score(y, probs[:, 1]), abs=1e-9)
    assert m["balanced_accuracy"] == pytest.approx(balanced_accuracy_score(y, probs.argmax(1)))
    assert m["calibration"]["before"]["brier"] == pytest.approx(brier_score_loss(y, probs[:, 1]), abs=1e-9)
    assert m["calibration"]["before"]["nll"] == pytest.approx(log_loss(y, probs), abs=1e-6)
    assert m["calibration"]["applied"] is False and "T = 1" in m["calibration"]["note"]
    assert m["ci"]["auc"]["low"] < m["auc"] < m["ci"]["auc"]["high"] and m["ci"]["n_boot"] == 200
    # subgroups: view and sex used, patient_id skipped as an identifier; counts add up
    sg = m["subgroups"]
    assert set(sg["columns"]) == {"view", "sex"} and "patient_id" in sg["skipped"]
    assert sum(g["n"] for g in sg["columns"]["view"].values()) == 240
    for name in ("metrics.json", "per_case.csv", "index.html"):
        assert (out / name).is_file(), name
    for key in ("roc", "pr", "reliability", "confusion", "entropy", "risk_coverage"):
        assert (out / m["figures"][key]).is_file(), key
        assert (out / m["figures"][key]).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    saved = json.loads((out / "metrics.json").read_text())
    assert saved["auc"] == m["auc"] and saved["selective"]["referral"]["10%"]["referred"] == 24
    with open(out / "per_case.csv") as f:
        rows = list(csv.DictReader(f))
    assert len(rows) == 240 and {"correct", "entropy", "uncertainty_rank", "raw_prob_pneumonia", "view"} <= set(rows[0])
    assert sorted(int(r["uncertainty_rank"]) for r in rows) == list(range(1, 241))
    html = (out / "index.html").read_text()
    for section in ("Headline", "Calibration", "Subgroups", "Uncertainty and referral", "Run configuration", "Data"):
        assert f"<h2>{section}</h2>" in html
    for src in re.findall(r'<img src="([^"]+)"', html):
        assert (out / src).is_file(), src  # relative links that resolve


def test_validation_file_fits_temperature_and_threshold(binary_files, tmp_path):
    out = tmp_path / "cal"
    m = evaluate_predictions(binary_files["test"], out, verbose=False, validation_csv=binary_files["val"],
                             target_sensitivity=0.95, n_boot=0)
    cal = json.loads((out / "calibration.json").read_text())
    # the true log-odds are 2.4 z and the model reports 3 z: over-confident by T = 3 / 2.4 = 1.25
    assert 1.05 < cal["temperature"] < 1.5
    assert m["calibration"]["applied"] and m["calibration"]["temperature"] == cal["temperature"]
    assert m["calibration"]["after"]["nll"] < m["calibration"]["before"]["nll"]
    ops = m["operating_points"]
    assert ops["validated"]["threshold"] == cal["threshold"] and ops["decision"]["rule"].startswith("threshold")
    assert ops["validated"]["sensitivity"] == ops["decision"]["sensitivity"]
    y, raw = binary_files["test_arrays"]
    scaled = temperature_scale(np.round(raw, 6), cal["temperature"])
    expected_pred = (scaled[:, 1] >= cal["threshold"]).astype(int)
    assert m["accuracy"] == pytest.approx((expected_pred == y).mean())
    assert m["ci"] == {}


def test_calibration_already_applied_is_inverted_for_the_before_numbers(binary_files, tmp_path):
    yv, pv = binary_files["val_arrays"]
    cal = fit_calibration(yv, pv, ["normal", "pneumonia"])
    save_calibration(tmp_path / "calibration.json", cal)
    y, raw = binary_files["test_arrays"]
    scaled = temperature_scale(raw, cal["temperature"])
    pred = np.where(scaled[:, 1] >= cal["threshold"], 1, 0)
    f = _write(tmp_path / "cal_pred.csv", ["image", "label", "prob_normal", "prob_pneumonia", "pred"],
               [[f"i{i}", y[i], f"{scaled[i, 0]:.8f}", f"{scaled[i, 1]:.8f}", ["normal", "pneumonia"][pred[i]]]
                for i in range(len(y))])
    m = evaluate_predictions(f, tmp_path / "r", verbose=False, calibration=tmp_path / "calibration.json", n_boot=0, figures=False)
    none = evaluate_predictions(f, tmp_path / "n", verbose=False, calibration="", n_boot=0, figures=False, html=False)
    assert none["calibration"]["applied"] is False
    assert m["calibration"]["before"]["nll"] == pytest.approx(log_loss(y, raw), rel=1e-4)
    assert m["calibration"]["after"]["nll"] == pytest.approx(log_loss(y, scaled), rel=1e-4)
    assert m["accuracy"] == pytest.approx((pred == y).mean())


def test_multiclass_with_a_class_without_positives_and_unlabelled_rows(tmp_path):
    rows = [["a", 0.7, 0.2, 0.1], ["b", 0.2, 0.7, 0.1], ["a", 0.6, 0.3, 0.1], ["b", 0.1, 0.8, 0.1], ["", 0.3, 0.3, 0.4]]
    f = _write(tmp_path / "p.csv", ["label", "prob_a", "prob_b", "prob_c"], rows)
    m = evaluate_predictions(f, tmp_path / "r", verbose=False, n_boot=50)
    assert m["n"] == 4 and m["unlabelled"] == 1
    assert m["per_class"]["c"]["auc"] is None and m["auc"] == pytest.approx(1.0)
    assert (tmp_path / "r" / "index.html").is_file()


def test_constant_and_inverted_scores_do_not_crash(tmp_path):
    f = _write(tmp_path / "const.csv", ["label", "prob_n", "prob_p"], [[k % 2, 0.5, 0.5] for k in range(20)])
    m = evaluate_predictions(f, tmp_path / "c", verbose=False, n_boot=50)
    assert m["auc"] == 0.5 and m["ci"]["auc"]["low"] == 0.5
    f = _write(tmp_path / "inv.csv", ["label", "prob_n", "prob_p"],
               [[k % 2, 0.2 + 0.6 * (k % 2), 0.8 - 0.6 * (k % 2)] for k in range(10)])
    m = evaluate_predictions(f, tmp_path / "i", verbose=False, n_boot=50)
    assert m["auc"] == 0.0 and m["accuracy"] == 0.0


def test_multilabel_report(tmp_path):
    rng = np.random.default_rng(3)
    y = rng.integers(0, 2, (80, 2))
    p = np.clip(0.5 * y + 0.5 * rng.random((80, 2)), 0, 1)
    f = _write(tmp_path / "ml.csv", ["image", "label_effusion", "label_nodule", "prob_effusion", "prob_nodule"],
               [[f"x{i}", *y[i], *np.round(p[i], 6)] for i in range(80)])
    m = evaluate_predictions(f, tmp_path / "r", verbose=False, n_boot=50)
    assert m["task"] == "multi-label"
    assert m["auc"] == pytest.approx(roc_auc_score(y, np.round(p, 6), average="macro"))
    assert (tmp_path / "r" / "figures" / "roc.png").is_file() and "confusion" not in m["figures"]


def test_input_errors_name_file_column_and_row(tmp_path):
    bad = _write(tmp_path / "bad.csv", ["label", "prob_a", "prob_b"], [["a", 0.5, 0.5], ["b", 0.9, 0.9]])
    with pytest.raises(DataError, match=r"bad.csv row 2 \(line 3\).*sum to 1.8"):
        read_predictions(bad)
    with pytest.raises(DataError, match="no labels"):
        evaluate_predictions(_write(tmp_path / "nolab.csv", ["prob_a", "prob_b"], [[0.5, 0.5]]), tmp_path / "x", verbose=False)
    good = _write(tmp_path / "good.csv", ["label", "prob_a", "prob_b"], [["a", 0.5, 0.5]])
    other = _write(tmp_path / "ml.csv", ["label_a", "label_b", "prob_a", "prob_b"], [[1, 0, 0.5, 0.5]])
    with pytest.raises(DataError, match="cannot calibrate"):
        evaluate_predictions(good, tmp_path / "y", verbose=False, validation_csv=other)


_SEG = {"n_cases": 3, "skipped_without_mask": 1,
        "per_class": {"lung": {m: {"mean": 0.9, "std": 0.01, "median": 0.9, "n": 3} for m in ("dice", "iou", "hd95")}},
        "mean": {"dice": 0.9, "iou": 0.9, "hd95": 0.9}, "per_case": [{"case": "a"}]}


def test_report_sections_are_drawn_only_for_the_tasks_the_run_has(binary_files, tmp_path):
    """One section per task output: classification alone, classification + segmentation, segmentation alone."""
    alone = evaluate_predictions(binary_files["test"], tmp_path / "c", verbose=False, n_boot=0, figures=False)
    assert alone["tasks"] == ["classification"] and "segmentation" not in alone and "detection" not in alone
    page = (tmp_path / "c" / "index.html").read_text()
    assert "<h2>Headline</h2>" in page and "<h2>Segmentation</h2>" not in page and "Detection" not in page
    both = evaluate_predictions(binary_files["test"], tmp_path / "cs", verbose=False, n_boot=0, figures=False,
                                segmentation=_SEG)
    assert both["tasks"] == ["classification", "segmentation"] and "per_case" not in both["segmentation"]
    assert both["auc"] == alone["auc"]  # classification keys stay at the top level
    page = (tmp_path / "cs" / "index.html").read_text()
    assert page.index("<h2>Per class</h2>") < page.index("<h2>Segmentation</h2>") < page.index("<h2>Figures</h2>")
    seg_dir = tmp_path / "s"
    seg_dir.mkdir()
    (seg_dir / "segmentation_metrics.json").write_text(json.dumps(_SEG))
    only = evaluate_predictions(None, seg_dir, verbose=False, segmentation=seg_dir / "segmentation_metrics.json")
    assert only["tasks"] == ["segmentation"] and "auc" not in only and only["files"]["html"] == "index.html"
    assert json.loads((seg_dir / "metrics.json").read_text())["segmentation"]["n_cases"] == 3
    page = (seg_dir / "index.html").read_text()
    assert "<h2>Segmentation</h2>" in page and "<h2>Headline</h2>" not in page and "0.9000" in page
    with pytest.raises(DataError, match="nothing to evaluate"):
        evaluate_predictions(None, tmp_path / "empty", verbose=False)
    with pytest.raises(DataError, match="segmentation results not found"):
        evaluate_predictions(None, tmp_path / "x", verbose=False, segmentation=tmp_path / "missing.json")


def test_detection_hook_stores_results_and_uses_a_registered_renderer(tmp_path, monkeypatch):
    """evaluate_predictions(detection=...) keeps the results under "detection"; html.SECTIONS["detection"] draws
    them (a plain JSON block until the detection layer registers its renderer)."""
    from medfuse.evaluation import html

    det = {"map": 0.42, "ap50": 0.61, "per_class": {"nodule": {"ap": 0.42}}}
    m = evaluate_predictions(None, tmp_path / "d", verbose=False, detection=det)
    assert m["tasks"] == ["detection"] and m["detection"] == det
    page = (tmp_path / "d" / "index.html").read_text()
    assert "<h2>Detection</h2>" in page and "0.61" in page
    monkeypatch.setitem(html.SECTIONS, "detection", lambda mm: f"<h2>Boxes</h2><p>mAP {mm['detection']['map']}</p>")
    evaluate_predictions(None, tmp_path / "d2", verbose=False, detection=det)
    assert "<h2>Boxes</h2><p>mAP 0.42</p>" in (tmp_path / "d2" / "index.html").read_text()


def test_detection_results_join_the_report(tmp_path):
    """evaluate_predictions(detection=...) adds metrics.json['detection'] and a Detection section."""
    import json as _json

    from medfuse.evaluation import evaluate_predictions
    from medfuse.evaluation.detection import detection_metrics, froc

    rng = np.random.default_rng(0)
    rows = ["image,label_opacity,label_nodule,prob_opacity,prob_nodule"]
    for i in range(12):
        a, b = i % 2, (i // 2) % 2
        rows.append(f"img{i}.png,{a},{b},{0.3 + 0.4 * a + 0.1 * rng.random():.3f},{0.3 + 0.4 * b + 0.1 * rng.random():.3f}")
    (tmp_path / "predictions.csv").write_text("\n".join(rows) + "\n")
    args = ([[[0, 0, 10, 10]]], [[0]], [[0.9]], [[[0, 0, 10, 11]]], [[0]])
    det = detection_metrics(*args, classes=["opacity", "nodule"], iou_thresholds=(0.4, 0.5))
    det["froc"] = froc(*args)
    m = evaluate_predictions(tmp_path / "predictions.csv", tmp_path, verbose=False, n_boot=0, figures=False, detection=det)
    saved = _json.loads((tmp_path / "metrics.json").read_text())
    assert m["detection"]["map"] == saved["detection"]["map"] == det["map"]
    page = (tmp_path / "index.html").read_text()
    assert "<h2>Detection</h2>" in page and "FROC (IoU 0.4)" in page and page.rstrip().endswith("</html>")


def test_small_report_says_n_too_small_and_uses_fewer_bins(tmp_path):
    """20 cases, 4 of them positive: no bootstrap interval (the minimum is stated), 2 calibration bins instead of 15."""
    from medfuse.evaluation.bootstrap import MIN_CASES_PER_CLASS
    from medfuse.evaluation.calibration import reliability_bins

    assert [reliability_bins(n, 15) for n in (5, 20, 100, 1000)] == [2, 2, 10, 15]
    assert reliability_bins(20, 1) == 1
    y = np.r_[np.zeros(16, int), np.ones(4, int)]
    p = np.linspace(0.1, 0.9, 20)
    f = _write(tmp_path / "small.csv", ["image", "label", "prob_normal", "prob_pneumonia"],
               [[f"i{i}", y[i], f"{1 - p[i]:.4f}", f"{p[i]:.4f}"] for i in range(20)])
    m = evaluate_predictions(f, tmp_path / "r", verbose=False, n_boot=100)
    assert m["ci"]["n_too_small"] and m["ci"]["auc"]["low"] is None and m["ci"]["smallest_class"] == 4
    assert m["calibration"]["before"]["n_bins"] == 2 and m["calibration"]["n_bins_requested"] == 15
    assert len(m["calibration"]["before"]["bins"]["count"]) == 2
    html = (tmp_path / "r" / "index.html").read_text()
    assert "n too small" in html and f"fewer than the {MIN_CASES_PER_CLASS} per class" in html
    assert "2 bins (fewer than the 15 asked for" in html


def test_sensitivity_specificity_intervals_in_the_report(binary_files, tmp_path):
    m = evaluate_predictions(binary_files["test"], tmp_path / "r", verbose=False, n_boot=200, seed=0, figures=False)
    d, ci = m["decision"], m["ci"]
    assert ci["sensitivity"]["low"] <= d["sensitivity"] <= ci["sensitivity"]["high"]
    assert ci["specificity"]["low"] <= d["specificity"] <= ci["specificity"]["high"]
    html = (tmp_path / "r" / "index.html").read_text()
    row = re.search(r"<tr><td class=\"l\">sensitivity</td>.*?</tr>", html).group(0)
    assert f"{ci['sensitivity']['low']:.4f} &ndash; {ci['sensitivity']['high']:.4f}" in row
