# Copyright (c) medfuse contributors
# Licensed under the Apache License, Version 2.0
"""``medfuse.load_model`` and ``medfuse predict`` on the session's tiny trained CXR run and on its export.

The export is checked in a fresh process (as a user would run it), with ``DataLoader`` and the bundle config
parser made to fail, so the test proves neither is used.
"""

from __future__ import annotations

import csv
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from medfuse.evaluation.predictions import SCHEMA

REPO = Path(__file__).resolve().parents[2]
CXR = "cxr_dual_cross_attention"


@pytest.fixture(scope="module")
def run_dir(trained_run):
    return trained_run(CXR)


@pytest.fixture(scope="module")
def release(run_dir, tmp_path_factory):
    """The tiny run exported with ``medfuse export`` (schema check skipped: no shared data needed)."""
    from medfuse.zoo import export_bundle

    zoo = tmp_path_factory.mktemp("zoo_load") / "zoo"
    res = export_bundle(REPO / "bundles" / CXR, zoo, weights=run_dir / "model.pt", require_schema=False,
                        data_source="synthetic phantoms", data_license="Apache-2.0", log=lambda m: None)
    return zoo, Path(res.release)


def _demo_files(zoo_demo_data):
    cxr = Path(zoo_demo_data["cxr"]).parent / "cxr"
    return sorted((cxr / "images").glob("*.png")), sorted((cxr / "dicom").glob("*.dcm"))


def _rows(path):
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


def test_load_model_predicts_like_the_network_and_its_calibration(run_dir, zoo_demo_data):
    import torch

    import medfuse
    from medfuse.evaluation.calibration import apply_calibration, load_calibration

    pngs, dcms = _demo_files(zoo_demo_data)
    model = medfuse.load_model(run_dir, mc_samples=0)
    assert model.classes == json.loads((run_dir / "run_info.json").read_text())["classes"]
    res = model.predict([str(p) for p in pngs[:3]] + [str(dcms[0])])
    # the same numbers by hand: preset transforms, network, softmax, calibration.json
    x = torch.stack([model.transforms({"image": str(p)})["image"] for p in [*pngs[:3], dcms[0]]])
    with torch.no_grad():
        raw = model.network(x).softmax(1).numpy()
    cal = load_calibration(run_dir / "calibration.json", model.classes)
    expected, decisions = apply_calibration(raw, cal)
    got = np.array([[r["probabilities"][c] for c in model.classes] for r in res])
    np.testing.assert_allclose(got, expected, atol=1e-5)
    assert [r["pred"] for r in res] == [model.classes[d] for d in decisions]
    assert all(r["input_check"] == "ok" and r["temperature"] == pytest.approx(cal["temperature"]) for r in res)
    assert all(r["mutual_info"] is None for r in res)  # mc_samples=0: one pass
    # one path -> one dict; an array (H, W) goes through the preset without its loader
    single = model.predict(str(pngs[0]))
    assert isinstance(single, dict) and single["probabilities"] == pytest.approx(res[0]["probabilities"])
    arr = model.transforms.transforms[0]({"image": str(pngs[0])})["image"][0].numpy()
    assert model.predict(arr)["probabilities"] == pytest.approx(res[0]["probabilities"], abs=1e-5)
    assert len(model.predict(np.stack([arr, arr]))) == 2
    # MC dropout: mutual information, and the same numbers for the same input on a second call
    mc = medfuse.load_model(run_dir, mc_samples=3)
    a, b = mc.predict(str(pngs[0])), mc.predict(str(pngs[0]))
    assert a["mutual_info"] is not None and a["mutual_info"] >= 0 and a["probabilities"] == b["probabilities"]
    cams = model.cam([str(pngs[0]), str(pngs[1])])
    assert cams.shape == (2, *x.shape[2:]) and float(cams.max()) <= 1.0


def test_predict_command_on_files_folder_manifest_and_a_broken_file(run_dir, zoo_demo_data, tmp_path, capsys):
    from medfuse.commands.predict import main

    pngs, dcms = _demo_files(zoo_demo_data)
    broken = tmp_path / "broken.png"
    broken.write_bytes(b"not an image")
    folder = tmp_path / "folder"
    folder.mkdir()
    for p in pngs[:2]:
        (folder / p.name).write_bytes(p.read_bytes())
    out = tmp_path / "out"
    rc = main([str(dcms[0]), str(broken), str(folder), str(zoo_demo_data["cxr"]), "--model", str(run_dir),
               "--out", str(out), "--mc-samples", "2", "--cam", "--cam-max", "2", "--no-progress"])
    printed = capsys.readouterr().out
    assert rc == 0
    rows = _rows(out / "predictions.csv")
    n_test = len(json.loads(Path(zoo_demo_data["cxr"]).read_text())["test"])
    assert len(rows) == 1 + 1 + 2 + n_test
    header = list(rows[0])
    named = [c for c in header if c in SCHEMA]
    assert named == [c for c in SCHEMA if c in header]  # SCHEMA order
    assert {"label", "threshold", "temperature", "input_check", "mutual_info"} <= set(header)
    bad = [r for r in rows if r["image"].endswith("broken.png")]
    assert len(bad) == 1 and bad[0]["input_check"].startswith("unreadable: ") and bad[0]["pred"] == ""
    assert "broken.png" in bad[0]["input_check"]
    ok = [r for r in rows if r["input_check"] == "ok"]
    assert len(ok) == len(rows) - 1 and all(r["label"] for r in rows[-n_test:])
    for r in ok:  # pred follows the calibrated probabilities by the stated rule
        if r["threshold"]:
            assert r["pred"] == ("opacity" if float(r["prob_opacity"]) >= float(r["threshold"]) else "normal")
        else:
            assert r["pred"] == max(("normal", "opacity"), key=lambda c: float(r[f"prob_{c}"]))
    assert f"inputs: {len(rows)}, scored {len(ok)}, skipped 1" in printed and "unreadable" in printed
    assert len(_rows(out / "cam" / "index.csv")) == 2


def test_unknown_model_and_missing_input_are_one_line(run_dir, tmp_path, capsys):
    from medfuse.commands.predict import main

    assert main([str(tmp_path / "x.png"), "--model", str(tmp_path), "--out", str(tmp_path / "o")]) == 1
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and "not a model" in err
    assert main([str(tmp_path / "nothing.png"), "--model", str(run_dir), "--out", str(tmp_path / "o")]) == 1
    assert "no such file or folder" in capsys.readouterr().err


_FRESH = r"""
import json, sys
import torch.utils.data
def refuse(*a, **k):
    raise AssertionError("a DataLoader was started")
torch.utils.data.DataLoader.__init__ = refuse
import monai.bundle
monai.bundle.ConfigParser.__init__ = refuse
monai.bundle.ConfigWorkflow.__init__ = refuse
from medfuse.cli import main
rc = main(["predict", sys.argv[1], "--model", sys.argv[2], "--out", sys.argv[3], "--mc-samples", "0"])
import medfuse
m = medfuse.load_model(sys.argv[4], mc_samples=0)
print(json.dumps({"rc": rc, "folder": m.predict(sys.argv[1]), "bundle_module": "medfuse.workflows.bundle" in sys.modules}))
"""


def test_exported_release_and_bundle_folder_in_a_fresh_process(run_dir, release, zoo_demo_data, tmp_path, monkeypatch):
    import medfuse

    zoo, archive = release
    _, dcms = _demo_files(zoo_demo_data)
    folder = tmp_path / "got"
    from medfuse.zoo import get_bundle

    bundle = get_bundle(zoo, CXR, folder)
    env = dict(os.environ, MEDFUSE_CACHE=str(tmp_path / "cache"), OMP_NUM_THREADS="1", PYTHONPATH=str(REPO))
    proc = subprocess.run([sys.executable, "-c", _FRESH, str(dcms[0]), str(archive), str(tmp_path / "p"), str(bundle)],
                          capture_output=True, text=True, env=env, cwd=tmp_path, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    out = json.loads(proc.stdout.strip().splitlines()[-1])
    assert out["rc"] == 0 and out["bundle_module"] is False
    row = _rows(tmp_path / "p" / "predictions.csv")[0]
    expected = medfuse.load_model(run_dir, mc_samples=0).predict(str(dcms[0]))
    for c, p in expected["probabilities"].items():
        assert float(row[f"prob_{c}"]) == pytest.approx(p, abs=1e-5)
        assert out["folder"]["probabilities"][c] == pytest.approx(p, abs=1e-5)
    assert row["pred"] == expected["pred"] and out["folder"]["pred"] == expected["pred"]
    # zoo:NAME finds the same release
    monkeypatch.setenv("MEDFUSE_CACHE", str(tmp_path / "cache"))
    from_zoo = medfuse.load_model(f"zoo:{CXR}", mc_samples=0, zoo_dir=zoo)
    assert from_zoo.kind == "bundle" and from_zoo.predict(str(dcms[0]))["probabilities"] == pytest.approx(
        expected["probabilities"], abs=1e-5)


def _renamed_manifest(src, dst: Path, rename) -> Path:
    """A copy of the manifest ``src`` in ``dst`` with its class names renamed and image paths made absolute."""
    m = json.loads(Path(src).read_text())
    base = Path(src).parent
    m["classes"] = [rename(c) for c in m["classes"]]
    for split in ("training", "validation", "test"):
        for it in m.get(split, []):
            for key in ("image", "mask"):
                if isinstance(it.get(key), str):
                    it[key] = str((base / it[key]).resolve())
    path = dst / "renamed.json"
    path.write_text(json.dumps(m))
    return path


def test_evaluate_model_on_a_manifest_maps_case_and_names_the_fix_otherwise(run_dir, zoo_demo_data, tmp_path, capsys):
    """Fails on main (no --model mode; the bundle's evaluate stopped after a long traceback advising a refit)."""
    from medfuse.commands.evaluate import main

    upper = _renamed_manifest(zoo_demo_data["cxr"], tmp_path, str.upper)
    out = tmp_path / "eval_test"
    rc = main(["--model", str(run_dir), "--data", str(upper), "--out", str(out), "--bootstrap", "20", "--no-figures",
               "--quiet"])
    printed = capsys.readouterr().out
    assert rc == 0
    assert "class names matched ignoring case: NORMAL->normal, OPACITY->opacity" in printed
    metrics = json.loads((out / "metrics.json").read_text())
    rows = _rows(out / "predictions.csv")
    n_test = len(json.loads(Path(upper).read_text())["test"])
    assert len(rows) == n_test and {r["label"] for r in rows} <= {"normal", "opacity"}
    assert metrics["n"] == n_test and metrics["classes"] == ["normal", "opacity"] and 0.0 <= metrics["auc"] <= 1.0
    # the demo phantoms carry opacity boxes and lung masks: the report says whether the CAM looks at them
    test_items = json.loads(Path(upper).read_text())["test"]
    boxed = sum(1 for it in test_items if it.get("boxes"))
    loc = metrics["localization"]["per_class"]
    assert loc["opacity"]["pointing_game"]["n"] == boxed > 0 and 0.0 <= loc["opacity"]["pointing_game"]["mean"] <= 1.0
    assert 0.0 < loc["opacity"]["box_area"]["mean"] < 0.5 and 0.0 <= loc["opacity"]["box_mass"]["mean"] <= 1.0
    assert loc["normal"]["lung_mass"]["n"] == n_test - boxed and 0.1 < loc["normal"]["lung_area"]["mean"] < 0.6
    assert len(metrics["localization"]["misses"]) == round(boxed * (1 - loc["opacity"]["pointing_game"]["mean"]))
    print("demo CAM localization:", json.dumps({c: {k: v["mean"] for k, v in e.items()} for c, e in loc.items()}))
    # the validation split into a folder of its own: the test report is not overwritten
    assert main(["--model", str(run_dir), "--data", str(upper), "--split", "validation", "--out", str(tmp_path / "eval_val"),
                 "--bootstrap", "0", "--no-figures", "--quiet"]) == 0
    assert len(_rows(out / "predictions.csv")) == n_test
    # other names: one line naming both lists and --class-map; with the map it runs
    other = _renamed_manifest(zoo_demo_data["cxr"], tmp_path, lambda c: {"normal": "healthy"}.get(c, c))
    capsys.readouterr()
    assert main(["--model", str(run_dir), "--data", str(other), "--out", str(tmp_path / "e2")]) == 1
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and "['healthy', 'opacity']" in err and "['normal', 'opacity']" in err and "--class-map" in err
    assert main(["--model", str(run_dir), "--data", str(other), "--out", str(tmp_path / "e3"), "--class-map",
                 "healthy=normal", "--bootstrap", "0", "--no-figures", "--quiet"]) == 0
    # the two modes exclude each other
    with pytest.raises(SystemExit):
        main(["--model", str(run_dir), "--predictions", str(out / "predictions.csv"), "--out", str(tmp_path / "e4")])


def test_load_model_refuses_dicom_it_does_not_accept_and_scores_ood(run_dir, tmp_path, zoo_demo_data):
    """The model's input fail-safe in the API: an MR DICOM is not scored, a chest image gets an OOD score."""
    import medfuse
    from medfuse.commands import predict
    from tests.dicom.helpers import pydicom_file

    pngs, _ = _demo_files(zoo_demo_data)
    model = medfuse.load_model(run_dir, mc_samples=0)
    assert model.ood_model is not None, "training fits ood.json beside the weights"
    mr, chest = model.predict([pydicom_file("MR_small.dcm"), str(pngs[0])])
    assert mr["input_check"] == "modality_not_accepted:MR" and mr["probabilities"] is None and "ood" not in mr
    assert chest["input_check"] == "ok" and np.isfinite(chest["ood_score"]) and chest["ood"] in (0, 1)
    assert predict.main([pydicom_file("MR_small.dcm"), str(pngs[0]), "--model", str(run_dir),
                         "--out", str(tmp_path / "p")]) == 0  # skipped with its reason: still status 0
    rows = _rows(tmp_path / "p" / "predictions.csv")
    assert [r["input_check"] for r in rows] == ["modality_not_accepted:MR", "ok"]
    assert rows[0]["ood_score"] == "" and rows[1]["ood_score"] != "" and rows[1]["ood"] in ("0", "1")
