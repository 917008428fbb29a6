# Copyright (c) medfuse contributors
# Licensed under the Apache License, Version 2.0
"""``medfuse evaluate`` on CSV files written by hand, as another tool would write them."""

from __future__ import annotations

import json

import numpy as np
import pytest
from sklearn.metrics import roc_auc_score

from medfuse.cli import COMMANDS
from medfuse.cli import main as cli_main
from medfuse.commands.evaluate import main


def _softmax(z):
    e = np.exp(z - z.max(1, keepdims=True))
    return e / e.sum(1, keepdims=True)


def _other_tool_csv(path, n=90, seed=0, names=True):
    """A three-class CSV as another tool writes it: integer labels, 4-decimal probabilities, grouping columns."""
    rng = np.random.default_rng(seed)
    y = rng.integers(0, 3, n)
    z = rng.normal(0, 1, (n, 3))
    z[np.arange(n), y] += 1.5
    p = np.round(_softmax(z), 4)
    cols = ["CNV", "DME", "NORMAL"] if names else ["0", "1", "2"]
    lines = ["case,label," + ",".join(f"prob_{c}" for c in cols) + ",manufacturer,PatientAge"]
    for i in range(n):
        label = cols[y[i]] if names else str(y[i])
        lines.append(f"c{i},{label}," + ",".join(f"{v:.4f}" for v in p[i]) + f",{['Heidelberg', 'Zeiss'][i % 2]},{20 + i % 60:03d}Y")
    path.write_text("\n".join(lines) + "\n")
    return y, p


def test_registered():
    assert COMMANDS["evaluate"] == "evaluate"


def test_class_names_in_header(tmp_path, capsys):
    y, p = _other_tool_csv(tmp_path / "p.csv")
    assert main(["--predictions", str(tmp_path / "p.csv"), "--out", str(tmp_path / "r"), "--bootstrap", "100"]) == 0
    out = capsys.readouterr().out
    assert "report:" in out and "AUC" in out
    m = json.loads((tmp_path / "r" / "metrics.json").read_text())
    assert m["classes"] == ["CNV", "DME", "NORMAL"]
    macro = np.mean([roc_auc_score(y == k, p[:, k]) for k in range(3)])
    assert m["auc"] == pytest.approx(macro)
    assert set(m["subgroups"]["columns"]) == {"manufacturer", "PatientAge"}
    assert (tmp_path / "r" / "index.html").is_file()


def test_classes_option_names_index_columns(tmp_path, capsys):
    _other_tool_csv(tmp_path / "p.csv", names=False)
    rc = cli_main(["evaluate", "--predictions", str(tmp_path / "p.csv"), "--out", str(tmp_path / "r"),
                   "--classes", "CNV,DME,NORMAL", "--bootstrap", "0", "--no-figures", "--quiet"])
    assert rc == 0
    assert capsys.readouterr().out.strip().endswith("metrics.json")
    m = json.loads((tmp_path / "r" / "metrics.json").read_text())
    assert m["classes"] == ["CNV", "DME", "NORMAL"] and not (tmp_path / "r" / "index.html").exists()


def test_validation_and_multilabel(tmp_path):
    rng = np.random.default_rng(1)
    for name in ("test", "val"):
        y = rng.integers(0, 2, (60, 2))
        p = np.clip(0.55 * y + 0.45 * rng.random((60, 2)), 0.01, 0.99)
        lines = ["image,label_effusion,label_nodule,prob_effusion,prob_nodule,site"]
        lines += [f"x{i}.png,{y[i, 0]},{y[i, 1]},{p[i, 0]:.5f},{p[i, 1]:.5f},{'AB'[i % 2]}" for i in range(60)]
        (tmp_path / f"{name}.csv").write_text("\n".join(lines) + "\n")
    rc = main(["--predictions", str(tmp_path / "test.csv"), "--validation", str(tmp_path / "val.csv"),
               "--out", str(tmp_path / "r"), "--bootstrap", "50", "--target-sensitivity", "0.8", "--quiet"])
    assert rc == 0
    m = json.loads((tmp_path / "r" / "metrics.json").read_text())
    assert m["task"] == "multi-label" and m["calibration"]["decision"] == "per-class-threshold"
    assert json.loads((tmp_path / "r" / "calibration.json").read_text())["target_sensitivity"] == 0.8


@pytest.mark.parametrize(
    "content,message",
    [
        ("label,prob_a,prob_b\na,0.3,0.3\n", "row 1 (line 2), columns prob_a,prob_b: probabilities sum to 0.6"),
        ("label,prob_a,prob_b\na,0.5,0.5\nb,1.7,-0.7\n", "row 2 (line 3), column prob_a: probability 1.7 is outside [0, 1]"),
        ("label,prob_a,prob_b\na,0.5,abc\n", "row 1 (line 2), column prob_b: 'abc' is not a number"),
        ("label,prob_a,prob_b\nzebra,0.5,0.5\n", "row 1 (line 2), column label: 'zebra' is neither a class name"),
        ("label,score_a,score_b\na,0.5,0.5\n", "no 'prob_<class>' column"),
        ("label_a,prob_a,prob_b\n1,0.5,0.5\n", "label_b is missing"),
        ("label_a,label_b,prob_a,prob_b\n1,2,0.5,0.5\n", "column label_b: '2' is not 0 or 1"),
    ],
)
def test_bad_input_names_column_and_row(tmp_path, capsys, content, message):
    (tmp_path / "bad.csv").write_text(content)
    assert main(["--predictions", str(tmp_path / "bad.csv"), "--out", str(tmp_path / "r")]) == 1
    err = capsys.readouterr().err
    assert err.startswith("medfuse evaluate: error: ") and "bad.csv" in err and message in err


def test_argument_errors(tmp_path, capsys):
    assert main(["--predictions", str(tmp_path / "missing.csv"), "--out", str(tmp_path / "r")]) == 1
    assert "file not found (given as --predictions)" in capsys.readouterr().err
    (tmp_path / "p.csv").write_text("label,prob_a,prob_b\na,0.5,0.5\n")
    with pytest.raises(SystemExit):
        main(["--predictions", str(tmp_path / "p.csv"), "--out", "r", "--classes", "onlyone"])
    with pytest.raises(SystemExit):
        main(["--predictions", str(tmp_path / "p.csv"), "--out", "r", "--target-sensitivity", "1.5"])
    assert main(["--predictions", str(tmp_path / "p.csv"), "--out", str(tmp_path / "r"), "--classes", "x,y"]) == 1
    assert "column prob_x is missing" in capsys.readouterr().err
