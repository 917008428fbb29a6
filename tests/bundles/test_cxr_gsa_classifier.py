# Copyright (c) medfuse contributors
# Licensed under the Apache License, Version 2.0
"""bundles/cxr_gsa_classifier: metadata, network I/O, train (GSA and the plain ablation arm), the map files,
evaluate (also at another image size), inference, TorchScript export, bad input, torchrun.

Model-zoo unit-test style on the tiny synthetic demo data (64 px, ResNet18, 2 epochs).
"""

from __future__ import annotations

import csv
import json
import warnings

import numpy as np
import pytest
import torch
from monai.bundle import ConfigParser, ckpt_export, verify_metadata, verify_net_in_out
from PIL import Image

from medfuse.data.manifest import read_manifest
from medfuse.errors import DataError
from medfuse.evaluation import read_predictions
from medfuse.networks.nets import GlobalSpatialAttentionNet
from medfuse.workflows import split_items
from medfuse.workflows.gsa import build_gsa_classifier, image_basis_from_items, map_collapsed, write_gsa_maps
from tests.bundles.helpers import SCHEMA, configs, flat_config, layered, run_workflow, torchrun_multi_gpu
from tests.tiny import bundle_overrides

BUNDLE = "cxr_gsa_classifier"
CFG = configs(BUNDLE)
MAP_FILES = ("gsa_map.npy", "gsa_map.png", "gsa_overlay.png")


def tiny_overrides(manifest, output_dir, **extra) -> dict:
    return bundle_overrides(BUNDLE, manifest, output_dir, **{"epochs": 2, **extra})


def without_architecture(overrides: dict) -> dict:
    return {k: v for k, v in overrides.items() if k not in ("image_size", "gsa", "classifier", "gsa_mode")}


@pytest.fixture(scope="module")
def trained(demo_data, tmp_path_factory):
    out = tmp_path_factory.mktemp("gsa_runs")
    tiny = tiny_overrides(demo_data["cxr"], out)
    wf = run_workflow(CFG / "train.json", "train", run_name="tiny", **tiny)
    return {"run_dir": out / "tiny", "tiny": tiny, "workflow": wf}


def test_metadata(shared_data):
    verify_metadata(meta_file=str(CFG / "metadata.json"), filepath=str(shared_data / SCHEMA))


def test_net_in_out(demo_data):
    verify_net_in_out(net_id="network_def", meta_file=str(CFG / "metadata.json"), config_file=layered(CFG / "train.json"),
                      device="cpu", manifest=str(demo_data["cxr"]))


def test_train_run_folder_and_map_files(trained):
    run = trained["run_dir"]
    for name in ("model.pt", "last_model_epoch=2.pt", "calibration.json", "config.json", "log.csv", *MAP_FILES):
        assert (run / name).is_file(), name
    with open(run / "log.csv") as f:
        rows = list(csv.DictReader(f))
    assert [r["epoch"] for r in rows] == ["1", "2"] and all(0 < float(r["gsa_map_mean"]) < 1 for r in rows)
    m = np.load(run / "gsa_map.npy")
    assert m.dtype == np.float32 and m.shape == (16, 16)
    assert Image.open(run / "gsa_map.png").size == (64, 64) and Image.open(run / "gsa_map.png").mode == "L"
    overlay = Image.open(run / "gsa_overlay.png")
    assert overlay.size == (64, 64) and overlay.mode == "RGB"
    info = json.loads((run / "run_info.json").read_text())
    assert info["gsa_collapsed"] is False and abs(info["gsa_map_mean"] - float(m.mean())) < 1e-6
    # the map files come from model.pt (best validation AUC), not from the last epoch's weights
    state = torch.load(run / "model.pt", map_location="cpu", weights_only=True)
    np.testing.assert_allclose(torch.sigmoid(state["gsa.z"])[0, 0].numpy(), m, rtol=1e-6)
    net = trained["workflow"].parser.get_parsed_content("network")
    assert isinstance(net, GlobalSpatialAttentionNet) and net.net_name == "resnet18" and net.at == "input"
    loss = trained["workflow"].parser.get_parsed_content("loss")
    assert loss.reg_weight == 0.1 and loss.gsa is net.gsa and set(loss.last) == {"base", "reg", "map_mean"}


def test_evaluate_writes_the_map_also_at_another_size(trained, tmp_path):
    tiny = without_architecture(trained["tiny"])
    run_workflow([CFG / "train.json", CFG / "evaluate.json"], "train", run_name="tiny", n_boot=50, **tiny)
    ev = trained["run_dir"] / "eval"
    metrics = json.loads((ev / "metrics.json").read_text())
    assert metrics["n"] == len(read_manifest(tiny["manifest"], validate=False)["test"])
    for name in MAP_FILES:
        assert (ev / name).is_file(), name
    assert Image.open(ev / "gsa_map.png").size == (64, 64)  # the training size, from the run's config
    np.testing.assert_allclose(np.load(ev / "gsa_map.npy"), np.load(trained["run_dir"] / "gsa_map.npy"), rtol=1e-6)
    assert json.loads((ev / "run_info.json").read_text())["gsa_collapsed"] is False
    # another image size at evaluation: the map is resized
    other = tmp_path / "eval48"
    run_workflow([CFG / "train.json", CFG / "evaluate.json"], "train", run_name="tiny", n_boot=50, gallery_size=0,
                 image_size=48, eval_dir=str(other), **tiny)
    assert Image.open(other / "gsa_map.png").size == (48, 48) and Image.open(other / "gsa_overlay.png").size == (48, 48)
    assert json.loads((other / "metrics.json").read_text())["n"] == metrics["n"]


def test_inference(trained, tmp_path):
    run_workflow(CFG / "inference.json", "infer", run_name="tiny", inference_dir=str(tmp_path / "inf"),
                 **without_architecture(trained["tiny"]))
    pred = read_predictions(tmp_path / "inf" / "predictions.csv")
    n_test = len(read_manifest(trained["tiny"]["manifest"], validate=False)["test"])
    assert len(pred["images"]) == n_test and pred["classes"] == ["normal", "opacity"]
    assert abs(pred["probs"].sum(1) - 1).max() < 1e-4


def test_ckpt_export_round_trip(trained, tmp_path):
    run = trained["run_dir"]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        ckpt_export(net_id="network_def", filepath=str(tmp_path / "model.ts"), ckpt_file=str(run / "model.pt"),
                    meta_file=str(CFG / "metadata.json"), config_file=flat_config(CFG / "train.json", tmp_path / "flat"),
                    manifest=trained["tiny"]["manifest"])
        scripted = torch.jit.load(str(tmp_path / "model.ts"))
    parser = ConfigParser()
    parser.read_config(str(run / "config.json"))
    net = parser.get_parsed_content("network_def")
    net.load_state_dict(torch.load(run / "model.pt", map_location="cpu", weights_only=True))
    x = torch.rand(2, 1, 64, 64)
    with torch.no_grad():
        torch.testing.assert_close(scripted(x), net.eval()(x), rtol=1e-4, atol=1e-5)


def test_plain_arm_has_no_block(demo_data, tmp_path):
    """gsa false: the same classifier without the block (no gsa.* weights, no map files, an empty log column)."""
    run_workflow(CFG / "train.json", "train", run_name="plain",
                 **tiny_overrides(demo_data["cxr"], tmp_path, gsa=False, epochs=1))
    run = tmp_path / "plain"
    state = torch.load(run / "model.pt", map_location="cpu", weights_only=True)
    assert not [k for k in state if k.startswith("gsa.") or ".gsa." in k] and "conv1.weight" in state
    assert not any((run / name).exists() for name in MAP_FILES)
    with open(run / "log.csv") as f:
        (row,) = list(csv.DictReader(f))
    assert row["gsa_map_mean"] == ""
    # same seed, same classifier weights as the GSA arm's net.*
    torch.manual_seed(0)
    plain = build_gsa_classifier("resnet18", gsa=False)
    torch.manual_seed(0)
    with_block = build_gsa_classifier("resnet18", gsa=True)
    for k, v in plain.state_dict().items():
        torch.testing.assert_close(with_block.state_dict()["net." + k], v)


def test_image_basis_mode(demo_data, tmp_path):
    items = split_items(demo_data["cxr"], "training")
    basis = image_basis_from_items(items, k=4, map_size=(8, 8), limit=10, image_size=32)
    assert basis.shape == (4, 8, 8) and torch.isfinite(basis).all()
    with pytest.raises(DataError, match=f"got {len(items)}"):
        image_basis_from_items(items, k=len(items) + 1, map_size=(8, 8), image_size=32)
    with pytest.raises(DataError, match="got 3"):
        image_basis_from_items(items, k=4, map_size=(8, 8), limit=3, image_size=32)
    run_workflow(CFG / "train.json", "train", run_name="basis",
                 **tiny_overrides(demo_data["cxr"], tmp_path, epochs=1, gsa_mode="image_basis", gsa_basis_k=4,
                                  gsa_map_size=[8, 8]))
    state = torch.load(tmp_path / "basis" / "model.pt", map_location="cpu", weights_only=True)
    assert state["gsa.basis"].shape == (4, 8, 8) and np.load(tmp_path / "basis" / "gsa_map.npy").shape == (8, 8)
    # evaluation rebuilds the network from the run's settings (placeholder basis, loaded from model.pt)
    run_workflow(CFG / "inference.json", "infer", run_name="basis", output_dir=str(tmp_path), num_workers=0,
                 manifest=str(demo_data["cxr"]), inference_dir=str(tmp_path / "inf"))
    assert (tmp_path / "inf" / "predictions.csv").is_file()


@pytest.mark.parametrize(
    "kwargs, valid",
    [
        ({"classifier": "resnet19"}, "resnet18, resnet34"),
        ({"classifier": "resnet18", "at": "layer9"}, "input, layer1, layer2, layer3, layer4"),
        ({"classifier": "resnet18", "mode": "pca"}, "logit_map, image_basis"),
    ],
)
def test_bad_names_list_the_valid_values(kwargs, valid):
    with pytest.raises(ValueError) as err:
        build_gsa_classifier(**kwargs)
    assert valid in str(err.value) and "\n" not in str(err.value)


@pytest.mark.parametrize("key, value, valid", [("classifier", "vgg16", "densenet121, resnet18"),
                                               ("gsa_at", "layer9", "input, layer1, layer2, layer3, layer4")])
def test_bad_names_in_the_config(demo_data, tmp_path, key, value, valid):
    from monai.bundle import ConfigWorkflow

    wf = ConfigWorkflow(config_file=layered(CFG / "train.json"), workflow_type="train", logging_file=False,
                        **tiny_overrides(demo_data["cxr"], tmp_path, **{key: value}))
    with pytest.raises(RuntimeError) as err:  # MONAI wraps errors raised inside config expressions
        wf.initialize()
    cause = err.value
    while cause is not None and not (isinstance(cause, ValueError) and "valid values" in str(cause)):
        cause = cause.__cause__
    assert cause is not None, err.value
    assert valid in str(cause) and repr(value) in str(cause) and "\n" not in str(cause)


def test_a_stage_and_collapse_check(tmp_path, caplog):
    net = build_gsa_classifier("resnet18", at="layer2", map_size=[4, 4])
    assert net.applied_by == "sequential" and net(torch.rand(1, 1, 64, 64)).shape == (1, 2)
    with torch.no_grad():
        net.gsa.z.fill_(8.0)  # sigmoid(8) > 0.98 everywhere: all ones, no attention
    assert map_collapsed(net.get_map().detach().numpy())
    with caplog.at_level("WARNING"):
        result = write_gsa_maps(tmp_path, net, [torch.rand(2, 1, 40, 40)], image_size=32)
    assert result["collapsed"] and "collapsed" in caplog.text
    assert json.loads((tmp_path / "run_info.json").read_text())["gsa_collapsed"] is True
    assert Image.open(tmp_path / "gsa_overlay.png").size == (32, 32)
    assert write_gsa_maps(tmp_path / "none", build_gsa_classifier(gsa=False)) is None


@pytest.mark.slow
def test_torchrun_multi_gpu_config_on_cpu(demo_data, tmp_path):
    """multi_gpu_train.json with two processes (gloo on CPU): one run folder, rank-0 files and map files."""
    run = torchrun_multi_gpu(CFG, tiny_overrides(demo_data["cxr"], tmp_path / "runs"), tmp_path)
    info = json.loads((run / "run_info.json").read_text())
    assert info["world_size"] == 2 and info["workflow"] == "multi_gpu_train" and info["gsa_collapsed"] is False
    rows = [json.loads(r) for r in (run / "log.jsonl").read_text().splitlines()]
    assert len(rows) == 2 and all(0 < r["gsa_map_mean"] < 1 for r in rows)
    assert (run / "model.pt").is_file() and all((run / name).is_file() for name in MAP_FILES)
    assert json.loads((run / "calibration.json").read_text())["temperature"] > 0


@pytest.mark.slow
def test_ablation_script_on_demo_data(demo_data, tmp_path, capsys):
    """benchmarks/gsa_ablation.py end to end: 2 seeds x 2 arms, 1 epoch, final-epoch weights, paired CIs, map check."""
    import importlib.util

    from tests.bundles.helpers import REPO

    spec = importlib.util.spec_from_file_location("gsa_ablation", REPO / "benchmarks" / "gsa_ablation.py")
    ablation = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(ablation)
    out = tmp_path / "gsa_demo.json"
    assert ablation.main(["--manifest", str(demo_data["cxr"]), "--image-size", "64", "--epochs", "1", "--seeds", "0,1",
                          "--batch-size", "4", "--n-boot", "50", "--output-dir", str(tmp_path / "runs"),
                          "--out", str(out)]) == 0
    result = json.loads(out.read_text())
    assert [(r["seed"], r["arm"]) for r in result["runs"]] == [(0, "gsa"), (0, "none"), (1, "gsa"), (1, "none")]
    for r in result["runs"]:
        assert r["checkpoint"].endswith("last_model_epoch=1.pt") and r["n_test"] > 0 and r["wall_s"] > 0
        assert (r["map_mean"] is None) == (r["arm"] == "none")
    assert [p["seed"] for p in result["paired"]] == [0, 1]
    assert all({"diff", "low", "high"} <= set(p["auc"]) for p in result["paired"])
    assert result["summary"]["gsa"]["auc"]["n"] == 2
    check = result["map_check"][0]  # the demo items carry lung masks
    assert 0 < check["lung_area_share"] < 1 and 0 <= check["share_inside_lungs"] <= 1
    assert "dAUC (GSA - none)" in capsys.readouterr().out
    assert result["complete"] and not any(r["reused_earlier_training"] for r in result["runs"])
    # a second invocation over the same run folders evaluates the finished runs again without retraining them
    assert ablation.main(["--manifest", str(demo_data["cxr"]), "--image-size", "64", "--epochs", "1", "--seeds", "0",
                          "--batch-size", "4", "--n-boot", "50", "--output-dir", str(tmp_path / "runs"),
                          "--out", str(out)]) == 0
    again = json.loads(out.read_text())
    assert [r["reused_earlier_training"] for r in again["runs"]] == [True, True] and again["complete"]
    assert [r["auc"] for r in again["runs"]] == [r["auc"] for r in result["runs"][:2]]


def test_map_learning_rate_scale(demo_data, tmp_path):
    """gsa_lr_scale: the map's own parameter group (scaled rate, no weight decay); 1.0 keeps one group."""
    from medfuse.workflows.gsa import optimizer_params

    net = build_gsa_classifier("resnet18", gsa=True)
    assert not isinstance(optimizer_params(net, 1e-3, 1.0), list)  # the default trains as before
    groups = optimizer_params(net, 1e-3, 50)
    assert groups[1]["lr"] == pytest.approx(0.05) and groups[1]["weight_decay"] == 0.0
    assert [id(q) for q in groups[1]["params"]] == [id(net.gsa.z)]
    assert len(groups[0]["params"]) + 1 == len(list(net.parameters()))
    plain = build_gsa_classifier("resnet18", gsa=False)
    assert not isinstance(optimizer_params(plain, 1e-3, 50), list)  # the ablation arm has no map to scale
    for bad in (0, -1, float("nan")):
        with pytest.raises(ValueError, match="gsa_lr_scale"):
            optimizer_params(net, 1e-3, bad)
    # through the bundle: one epoch moves the map's logits further with a larger scale
    moved = {}
    for scale in (1.0, 200.0):
        out = tmp_path / f"s{scale}"
        run_workflow(CFG / "train.json", "train", run_name="run",
                     **tiny_overrides(demo_data["cxr"], out, epochs=1, gsa_lr_scale=scale))
        z = torch.load(out / "run" / "model.pt", map_location="cpu", weights_only=True)["gsa.z"]
        moved[scale] = float((z - 3.0).abs().max())
    assert moved[200.0] > 10 * moved[1.0]
