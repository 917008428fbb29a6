# Copyright (c) medfuse contributors
# Licensed under the Apache License, Version 2.0
"""``medfuse cv``: patient-level folds, a 3-fold tiny run that trains, resumes without retraining, and summarises."""

from __future__ import annotations

import json
from collections import Counter

import pytest

from medfuse.commands.cv import main as cv_main
from medfuse.commands.cv import parse_overrides
from medfuse.data.splits import kfold_assignment
from medfuse.errors import DataError
from medfuse.evaluation import read_predictions
from medfuse.workflows.cv import FOLD_MARKER, fold_finished, run_cv
from tests.tiny import PER_BUNDLE, RUN_SIZE

BUNDLE = "cxr_dual_cross_attention"


def _override_args(d: dict) -> list[str]:
    out = []
    for k, v in d.items():
        out += [f"--{k}", json.dumps(v)]
    return out


def test_kfold_assignment_is_patient_level_and_stratified():
    items = [{"image": f"{i}.png", "label": i % 2, "patient_id": f"p{i // 3}"} for i in range(60)]
    items[5]["sha256"] = items[40]["sha256"] = "same-file"  # a duplicate joins two patients
    fold = kfold_assignment(items, 4, seed=3)
    assert sorted(Counter(fold).values()) == [15, 15, 15, 15] or max(Counter(fold).values()) - min(Counter(fold).values()) <= 3
    by_patient = {}
    for f, it in zip(fold, items):
        by_patient.setdefault(it["patient_id"], set()).add(f)
    assert all(len(v) == 1 for v in by_patient.values())
    assert fold[5] == fold[40]
    for k in range(4):  # both labels in every fold, roughly half each
        labels = Counter(it["label"] for f, it in zip(fold, items) if f == k)
        assert labels[0] >= 5 and labels[1] >= 5
    assert kfold_assignment(items, 4, seed=3) == fold
    with pytest.raises(DataError, match="at least 5 patients"):
        kfold_assignment(items[:6], 5)


def test_parse_overrides():
    assert parse_overrides(["--epochs", "3", "--backbones", '["a", "b"]', "--fusion=concat"]) == {
        "epochs": 3, "backbones": ["a", "b"], "fusion": "concat"}
    # the Python literals that monai.bundle run reads on its command line (the bundle READMEs' form) too
    assert parse_overrides(["--backbones", "['efficientnet-b0','resnet18']", "--progress", "False", "--name", "a b"]) == {
        "backbones": ["efficientnet-b0", "resnet18"], "progress": False, "name": "a b"}


@pytest.fixture(scope="module")
def cv_run(demo_data, tmp_path_factory):
    out = tmp_path_factory.mktemp("cv")
    tiny = {**RUN_SIZE, **PER_BUNDLE[BUNDLE]}
    args = [BUNDLE, "--manifest", str(demo_data["cxr"]), "--folds", "3", "--seed", "1", "--output_dir", str(out),
            "--bootstrap", "50", *_override_args(tiny)]
    assert cv_main(args) == 0
    return {"out": out, "cv": out / "cv", "args": args, "tiny": tiny, "manifest": demo_data["cxr"]}


def test_cv_trains_every_fold_and_summarises(cv_run):
    cv = cv_run["cv"]
    folds = json.loads((cv / "folds.json").read_text())
    manifest = json.loads(cv_run["manifest"].read_text())
    assert len(folds["items"]) == len(manifest["training"]) == sum(folds["fold_sizes"])
    for k in (1, 2, 3):
        run = cv / f"fold_{k}"
        assert fold_finished(run) and (run / "model.pt").is_file() and (run / "calibration.json").is_file()
        fm = json.loads((cv / "manifests" / f"fold_{k}.json").read_text())
        train_p = {it["patient_id"] for it in fm["training"]}
        val_p = {it["patient_id"] for it in fm["validation"]}
        assert train_p and val_p and not train_p & val_p  # patient-level
        assert "test" not in fm  # the test split is never touched
    pooled = read_predictions(cv / "predictions.csv")
    assert len(pooled["images"]) == len(manifest["training"])  # every training item once, out of fold
    assert sorted(set(pooled["extra"]["fold"])) == ["1", "2", "3"]
    s = json.loads((cv / "cv_summary.json").read_text())
    assert [f["n"] for f in s["per_fold"]] == folds["fold_sizes"]
    assert s["pooled"]["n"] == len(manifest["training"])
    for key in ("auc", "aupr", "accuracy"):
        assert 0.0 <= s["pooled"][key] <= 1.0
        ci = s["pooled"][f"{key}_ci"]
        # 9 cases per class is below the bootstrap's minimum of 10 per class: no interval, said so
        assert ci["low"] is None and ci["high"] is None and ci["n_too_small"]
    # the pooled threshold: 9 + 9 cases back it under threshold_min_cases=1
    assert s["threshold"]["threshold"] is not None and s["threshold"]["sensitivity"] >= 0.9
    assert s["threshold"]["specificity_ci"]["n_boot"] == 50


def test_cv_resumes_without_retraining(cv_run, capsys):
    cv = cv_run["cv"]
    stamps = {k: (cv / f"fold_{k}" / "model.pt").stat().st_mtime_ns for k in (1, 2, 3)}
    assert cv_main(cv_run["args"] + ["--no-ensemble"]) == 0
    assert "trained folds none, finished before [1, 2, 3]" in capsys.readouterr().out
    assert stamps == {k: (cv / f"fold_{k}" / "model.pt").stat().st_mtime_ns for k in (1, 2, 3)}


def test_cv_retrains_only_an_unfinished_fold(cv_run, tmp_path):
    import shutil

    cv = tmp_path / "cv"
    shutil.copytree(cv_run["cv"], cv)
    (cv / "fold_2" / FOLD_MARKER).unlink(missing_ok=True)  # as if fold 2 had been interrupted:
    info = json.loads((cv / "fold_2" / "run_info.json").read_text())
    (cv / "fold_2" / "run_info.json").write_text(json.dumps({**info, "status": "interrupted"}))  # the run's own status
    res = run_cv(BUNDLE, cv_run["manifest"], folds=3, seed=1, output_dir=tmp_path, overrides=cv_run["tiny"], n_boot=0,
                 ensemble=False)
    assert res["trained"] == [2] and res["skipped"] == [1, 3]
    assert (cv / "fold_2.incomplete-1" / "model.pt").is_file()  # moved aside, not deleted
    with pytest.raises(DataError, match="another manifest, fold count or seed"):
        run_cv(BUNDLE, cv_run["manifest"], folds=3, seed=2, output_dir=tmp_path, overrides=cv_run["tiny"], ensemble=False)


# --- the fold ensemble ---------------------------------------------------------------------------------------


def test_cv_folder_is_a_calibrated_ensemble(cv_run):
    from medfuse.utils.io import sha256_file

    cv = cv_run["cv"]
    info = json.loads((cv / "ensemble.json").read_text())
    assert [m.split("/")[-1] for m in info["members"]] == ["fold_1", "fold_2", "fold_3"]
    cal = json.loads((cv / "calibration.json").read_text())
    assert cal["fitted_on"]["split"] == "validation" and cal["fitted_on"]["model"] == "ensemble"
    assert [m["sha256"] for m in cal["fitted_on"]["members"]] == [sha256_file(cv / f"fold_{k}" / "model.pt") for k in (1, 2, 3)]
    assert cal["fitted_on"]["model_sha256"] == cal["fitted_on"]["checkpoint_sha256"] == sha256_file(cv / "model.pt")
    # every fold model is calibrated on its own out-of-fold cases
    fold_cal = json.loads((cv / "fold_2" / "calibration.json").read_text())
    fold_manifest = json.loads((cv / "manifests" / "fold_2.json").read_text())
    assert fold_cal["fitted_on"]["n"] == len(fold_manifest["validation"])


def test_ensemble_evaluates_with_member_uncertainty_and_reproducible_mc(cv_run):
    import numpy as np

    from medfuse.workflows.bundle import run_bundle

    small = {k: cv_run["tiny"][k] for k in ("num_workers", "num_threads", "progress")}
    runs = []
    for batch in (4, 3):  # other batches, same items: per-item seeded MC dropout gives the same numbers
        res = run_bundle(BUNDLE, "evaluate", manifest=str(cv_run["manifest"]), output_dir=str(cv_run["out"]),
                         run_name="cv", eval_split="validation", eval_dir=str(cv_run["out"] / f"val_b{batch}"),
                         mc_samples=3, n_boot=0, gallery_size=0, batch_size=batch, **small)
        runs.append(read_predictions(res["predictions"]))
    a, b = runs
    np.testing.assert_allclose(a["probs"], b["probs"], atol=1e-5)
    np.testing.assert_allclose(a["mutual_info"], b["mutual_info"], atol=1e-6)
    with open(res["predictions"]) as f:
        header = f.readline().strip().split(",")
    assert header.index("member_disagreement") < header.index("mutual_info_members") < header.index("patient_id")
    assert header.index("threshold") < header.index("temperature") < header.index("entropy")
    import csv

    rows = list(csv.DictReader(open(res["predictions"])))
    for r in rows:
        assert 0.0 <= float(r["member_disagreement"]) < 1.0
        # all epistemic uncertainty (members x dropout passes) >= the members' part alone
        assert float(r["mutual_info"]) >= float(r["mutual_info_members"]) - 1e-6
        assert float(r["temperature"]) == pytest.approx(json.loads((cv_run["cv"] / "calibration.json").read_text())["temperature"], rel=1e-5)


def test_ensemble_evaluates_and_infers_with_test_time_augmentation(cv_run):
    import numpy as np

    from medfuse.workflows.bundle import run_bundle

    small = {k: cv_run["tiny"][k] for k in ("num_workers", "num_threads", "progress")}
    common = {"manifest": str(cv_run["manifest"]), "output_dir": str(cv_run["out"]), "run_name": "cv", "mc_samples": 0}
    probs = {}
    for tta in (0, 2):
        res = run_bundle(BUNDLE, "evaluate", eval_split="validation", eval_dir=str(cv_run["out"] / f"val_tta{tta}"),
                         n_boot=0, gallery_size=0, batch_size=4, tta=tta, **common, **small)
        probs[tta] = read_predictions(res["predictions"])["probs"]
        info = json.loads((cv_run["out"] / f"val_tta{tta}" / "run_info.json").read_text())
        assert info["tta"] == tta
    assert probs[2].shape == probs[0].shape and np.isfinite(probs[2]).all()
    np.testing.assert_allclose(probs[2].sum(axis=1), 1.0, atol=1e-5)
    assert not np.allclose(probs[2], probs[0], atol=1e-6)  # the views were averaged in
    small.pop("progress")  # a training key: the inference config has none (an unknown key is refused)
    res = run_bundle(BUNDLE, "inference", split="validation", batch_size=3, tta=2, **common, **small)
    # inference (other batches, the same per-item seeded views) gives evaluate's probabilities
    np.testing.assert_allclose(read_predictions(res["predictions"])["probs"], probs[2], atol=1e-5)


def test_load_ensemble_matches_the_ensemble_weights(cv_run):
    import torch

    from medfuse.networks.nets import EnsembleNet
    from medfuse.workflows.ensemble import as_ensemble, load_ensemble

    net, classes = load_ensemble(cv_run["cv"])
    assert isinstance(net, EnsembleNet) and len(net.members) == 3 and classes == ["normal", "opacity"]
    same, _ = load_ensemble(",".join(str(cv_run["cv"] / f"fold_{k}") for k in (1, 2, 3)))
    x = torch.rand(2, 1, 64, 64)
    with torch.no_grad():
        p = net(x).exp()
        torch.testing.assert_close(p, same(x).exp())
        torch.testing.assert_close(p.sum(1), torch.ones(2))
        # the mean of the members' probabilities
        torch.testing.assert_close(p, torch.stack([m(x).softmax(1) for m in net.members]).mean(0))
    wrapped = as_ensemble(net.members[0], cv_run["cv"])
    wrapped.load_state_dict(torch.load(cv_run["cv"] / "model.pt", weights_only=True))
    with torch.no_grad():
        torch.testing.assert_close(wrapped.eval()(x).exp(), p)


def test_ensemble_exports_with_torchscript_round_trip(cv_run, tmp_path):
    from medfuse.commands.export import main as export_main

    zoo = tmp_path / "zoo"
    assert export_main(["bundles/" + BUNDLE, "--out", str(zoo), "--weights", str(cv_run["cv"] / "model.pt")]) == 0
    exported = zoo / BUNDLE
    infer = json.loads((exported / "configs" / "inference.json").read_text())
    assert infer["network_def"]["_target_"] == "medfuse.networks.nets.EnsembleNet" and infer["network_def"]["num_members"] == 3
    assert (exported / "models" / "ensemble.json").is_file()
    # export stops on a failed round trip; the TorchScript of the averaged model is among the release's large files
    assert "models/model.ts" in (exported / "large_files.yml").read_text()
    # the exported ensemble loads as the cv/ folder does (members, calibration)
    import numpy as np

    from medfuse import load_model

    image = str(cv_run["manifest"].parent / json.loads(cv_run["manifest"].read_text())["validation"][0]["image"])
    (release,) = zoo.rglob(f"{BUNDLE}_v*.zip")  # the folder in the zoo lists its weights as large files; the zip has them
    a, b = load_model(release, mc_samples=0), load_model(cv_run["cv"], mc_samples=0)
    assert a.is_ensemble and a.calibration is not None and a.temperature == pytest.approx(b.temperature)
    np.testing.assert_allclose(list(a.predict(image)["probabilities"].values()),
                               list(b.predict(image)["probabilities"].values()), atol=1e-5)


def test_load_model_and_predict_use_the_ensemble(cv_run, tmp_path):
    import csv

    import numpy as np

    from medfuse import load_model
    from medfuse.commands.predict import main as predict_main
    from medfuse.workflows.bundle import run_bundle

    small = {k: cv_run["tiny"][k] for k in ("num_workers", "num_threads", "progress")}
    res = run_bundle(BUNDLE, "evaluate", manifest=str(cv_run["manifest"]), output_dir=str(cv_run["out"]), run_name="cv",
                     eval_split="validation", eval_dir=str(tmp_path / "val"), mc_samples=0, n_boot=0, gallery_size=0,
                     batch_size=4, **small)
    bundle_rows = list(csv.DictReader(open(res["predictions"])))
    model = load_model(cv_run["cv"], mc_samples=0)
    assert model.is_ensemble and len(model.network.members) == 3 and model.calibration is not None
    images = [r["image"] for r in bundle_rows]
    got = model.predict(images)
    # the cv/ folder loads as the calibrated ensemble the bundle evaluates: same probabilities, same member columns
    np.testing.assert_allclose([[g["probabilities"][c] for c in model.classes] for g in got],
                               [[float(r[f"prob_{c}"]) for c in model.classes] for r in bundle_rows], atol=1e-4)
    for key in ("member_disagreement", "mutual_info_members", "mutual_info"):
        np.testing.assert_allclose([g[key] for g in got], [float(r[key]) for r in bundle_rows], atol=1e-4)
    # run1,run2,run3: the same members combined in memory, uncalibrated (T = 1, arg-max)
    runs = ",".join(str(cv_run["cv"] / f"fold_{k}") for k in (1, 2, 3))
    loose = load_model(runs, mc_samples=0)
    assert loose.is_ensemble and loose.calibration is None and loose.temperature == 1.0
    raw = read_predictions(tmp_path / "val" / "predictions.csv")  # calibrated; undo T to compare the mean probabilities
    import torch

    with torch.no_grad():
        x = torch.stack([torch.as_tensor(loose.preprocess(i)[0]) for i in images[:3]])
        expected = torch.stack([m(x).softmax(1) for m in model.network.members]).mean(0).numpy()
    np.testing.assert_allclose([[g["probabilities"][c] for c in loose.classes] for g in loose.predict(images[:3])],
                               expected, atol=1e-5)
    assert raw["probs"].shape[0] == len(images)
    cams = model.cam(images[:2])
    assert cams.shape == (2, 64, 64) and float(cams.max()) == pytest.approx(1.0)
    # medfuse predict --model run1,run2,run3 writes the ensemble columns
    out = tmp_path / "pred"
    assert predict_main([images[0], images[1], "--model", runs, "--out", str(out), "--mc-samples", "0", "--cam"]) == 0
    header = (out / "predictions.csv").read_text().splitlines()[0].split(",")
    assert {"member_disagreement", "mutual_info_members"} <= set(header)
    assert len(list((out / "cam").glob("*.png"))) == 2
    with pytest.raises(DataError, match="two or more"):
        load_model(str(cv_run["cv"] / "fold_1") + ",")
    with pytest.raises(DataError, match="itself an ensemble"):
        load_model(f"{cv_run['cv']},{cv_run['cv'] / 'fold_1'}")


def test_load_model_refuses_ensembles_it_cannot_trust(cv_run, tmp_path):
    """Members that differ in classes or input size, an ensemble.json of one member, an EnsembleNet config without
    the member_def to rebuild it: each is one DataError naming the folder, never a model."""
    import shutil

    from medfuse import load_model

    def copy(src, name, edit_file=None, edit=None):
        dst = tmp_path / name
        shutil.copytree(src, dst, ignore=shutil.ignore_patterns("fold_*", "eval", "validation_eval", "manifests"))
        if edit_file:
            data = json.loads((dst / edit_file).read_text())
            edit(data)
            (dst / edit_file).write_text(json.dumps(data))
        return dst

    fold_1, fold_2 = cv_run["cv"] / "fold_1", cv_run["cv"] / "fold_2"
    renamed = copy(fold_2, "renamed", "run_info.json", lambda d: d.update(classes=[c.upper() for c in d["classes"]]))
    (renamed / "calibration.json").unlink()  # it names the old classes: load_model would stop there first
    with pytest.raises(DataError, match=r"renamed: classes .* differs from .*fold_1"):
        load_model(f"{fold_1},{renamed}")
    bigger = copy(fold_2, "bigger", "config.json", lambda d: d.update(image_size=int(d["image_size"]) * 2))
    with pytest.raises(DataError, match=r"bigger: image_size .* differs"):
        load_model(f"{fold_1},{bigger}")
    lone = copy(cv_run["cv"], "lone", "ensemble.json", lambda d: d.update(members=d["members"][:1]))
    with pytest.raises(DataError, match=r"lone: its ensemble.json lists 1 members; an ensemble needs two or more"):
        load_model(lone)
    no_def = copy(cv_run["cv"], "no_def", "config.json",
                  lambda d: d.update(network_def={"_target_": "medfuse.networks.nets.EnsembleNet", "num_members": 3}))
    (no_def / "ensemble.json").unlink()
    with pytest.raises(DataError, match=r"no_def: network_def is an EnsembleNet but the config has no member_def"):
        load_model(no_def)


def test_ensemble_command_writes_a_calibrated_ensemble_folder(cv_run, tmp_path, capsys):
    from medfuse import load_model
    from medfuse.commands.ensemble import main as ensemble_main

    small = cv_run["tiny"]
    runs = [str(cv_run["cv"] / f"fold_{k}") for k in (1, 2)]
    out = tmp_path / "ens"
    args = [",".join(runs), "--out", str(out), "--manifest", str(cv_run["manifest"]), "--mc_samples", "0",
            "--num_workers", str(small["num_workers"]), "--num_threads", str(small["num_threads"])]
    assert ensemble_main(args) == 0
    info = json.loads((out / "ensemble.json").read_text())
    assert [m.split("/")[-1] for m in info["members"]] == ["fold_1", "fold_2"]
    cal = json.loads((out / "calibration.json").read_text())
    assert cal["fitted_on"]["split"] == "validation" and cal["fitted_on"]["model_sha256"] == info["model_sha256"]
    model = load_model(out, mc_samples=0)
    assert model.is_ensemble and len(model.network.members) == 2
    assert model.temperature == pytest.approx(cal["temperature"])
    assert "2 members" in capsys.readouterr().out
    # an ensemble is never written over one of its members; one run is no ensemble
    assert ensemble_main([runs[0], runs[1], "--out", runs[0], "--no-calibration"]) == 1
    assert "is one of the members" in capsys.readouterr().err
    assert ensemble_main([runs[0], "--out", str(tmp_path / "one"), "--no-calibration"]) == 1
    assert "at least two" in capsys.readouterr().err
    assert ensemble_main([",".join(runs), "--out", str(tmp_path / "e2"), "--manifest", str(tmp_path / "none.json")]) == 1
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and "none.json: manifest not found" in err and "--no-calibration" in err
