# Copyright (c) medfuse contributors
# Licensed under the Apache License, Version 2.0
"""predictions.csv round trip and evaluate_predictions."""

from __future__ import annotations

import csv
import json

import numpy as np
import pytest

from medfuse.evaluation import entropy_of, evaluate_predictions, read_predictions, write_predictions


def test_round_trip_with_uncertainty(tmp_path):
    probs = np.array([[0.7, 0.2, 0.1], [0.1, 0.3, 0.6]])
    path = write_predictions(
        tmp_path / "predictions.csv", ["/a.png", "/b.dcm"], probs, ["CNV", "DME", "NORMAL"],
        labels=[0, 2], mutual_info=[0.01, 0.2], extra={"patient_id": ["p1", "p2"]},
    )
    with open(path, newline="") as f:
        header = next(csv.reader(f))
    assert header == ["image", "label", "prob_CNV", "prob_DME", "prob_NORMAL", "pred", "entropy", "mutual_info", "patient_id"]
    back = read_predictions(path)
    assert back["classes"] == ["CNV", "DME", "NORMAL"]
    np.testing.assert_allclose(back["probs"], probs, rtol=1e-5)
    np.testing.assert_array_equal(back["labels"], [0, 2])
    np.testing.assert_array_equal(back["pred"], [0, 2])
    np.testing.assert_allclose(back["entropy"], entropy_of(probs), rtol=1e-5)
    np.testing.assert_allclose(back["mutual_info"], [0.01, 0.2], rtol=1e-5)
    assert back["extra"] == {"patient_id": ["p1", "p2"]}


def test_unlabelled_no_mc(tmp_path):
    path = write_predictions(tmp_path / "p.csv", ["x"], [[0.4, 0.6]], ["normal", "opacity"])
    with open(path, newline="") as f:
        rows = list(csv.DictReader(f))
    assert list(rows[0]) == ["image", "prob_normal", "prob_opacity", "pred", "entropy"]
    assert rows[0]["pred"] == "opacity"
    assert float(rows[0]["entropy"]) == pytest.approx(-(0.4 * np.log(0.4) + 0.6 * np.log(0.6)), rel=1e-5)
    assert read_predictions(path)["labels"] is None


def test_reads_integer_labels_from_other_tools(tmp_path):
    p = tmp_path / "other.csv"
    p.write_text("image,label,prob_a,prob_b\ni1,1,0.2,0.8\ni2,0,0.9,0.1\ni3,,0.5,0.5\n")
    back = read_predictions(p)
    np.testing.assert_array_equal(back["labels"], [1, 0, -1])
    assert back["entropy"] is None
    m = evaluate_predictions(p, tmp_path / "eval", verbose=False)
    assert m["n"] == 2 and m["unlabelled"] == 1 and m["auc"] == 1.0
    assert json.loads((tmp_path / "eval" / "metrics.json").read_text())["accuracy"] == 1.0


def test_errors(tmp_path):
    with pytest.raises(ValueError, match="2 columns but 3 classes"):
        write_predictions(tmp_path / "p.csv", ["a"], [[0.5, 0.5]], ["a", "b", "c"])
    p = tmp_path / "bad.csv"
    p.write_text("image,label,prob_a,prob_b\ni1,zebra,0.2,0.8\n")
    with pytest.raises(ValueError, match="neither a class name"):
        read_predictions(p)
    p.write_text("image,label,prob_a,prob_b\ni1,,0.2,0.8\n")
    with pytest.raises(ValueError, match="no labels"):
        evaluate_predictions(p, verbose=False)
