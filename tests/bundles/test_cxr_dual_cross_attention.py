# Copyright (c) medfuse contributors
# Licensed under the Apache License, Version 2.0
"""bundles/cxr_dual_cross_attention: metadata, network I/O, train, evaluate, inference, export.

Model-zoo unit-test style: ConfigWorkflow initialize / check_properties / run / finalize on
the tiny synthetic demo data (64 px, EfficientNet-B0 + ResNet10, fusion width 16, 1 epoch).
"""

from __future__ import annotations

import csv
import json

import pytest
import torch
from monai.bundle import ConfigParser, ckpt_export, verify_metadata, verify_net_in_out

from medfuse.evaluation import classification_metrics, decision_metrics, read_predictions
from tests.bundles.helpers import SCHEMA, configs, run_workflow, tiny_overrides, without_architecture

BUNDLE = "cxr_dual_cross_attention"
CFG = configs(BUNDLE)


@pytest.fixture(scope="module")
def trained(demo_data, tmp_path_factory):
    """One tiny training run (balanced sampler, one-cycle schedule), shared by the tests below."""
    out = tmp_path_factory.mktemp("cxr_runs")
    tiny = tiny_overrides(demo_data["cxr"], out)
    wf = run_workflow(CFG / "train.json", "train", run_name="tiny", class_balance="sampler", lr_schedule="onecycle", **tiny)
    return {"run_dir": out / "tiny", "tiny": tiny, "workflow": wf}


def test_metadata(shared_data):
    verify_metadata(meta_file=str(CFG / "metadata.json"), filepath=str(shared_data / SCHEMA))


def test_net_in_out(demo_data):
    verify_net_in_out(
        net_id="network_def",
        meta_file=str(CFG / "metadata.json"),
        config_file=str(CFG / "train.json"),
        device="cpu",
        manifest=str(demo_data["cxr"]),
        backbones=["efficientnet-b0", "resnet10"],
        hidden_size=16,
        num_heads=2,
    )


def test_train_run_folder(trained):
    run = trained["run_dir"]
    for name in ("model.pt", "config.json", "run_info.json", "log.csv", "log.jsonl"):
        assert (run / name).is_file(), name
    with open(run / "log.csv") as f:
        rows = list(csv.DictReader(f))
    assert [r["epoch"] for r in rows] == ["1"]
    assert {"train_loss", "val_auc", "val_aupr", "val_acc", "lr", "time_s"} <= set(rows[0])
    assert 0.0 <= float(rows[0]["val_auc"]) <= 1.0 and float(rows[0]["train_loss"]) > 0
    # the executed config holds the config file plus every override
    config = json.loads((run / "config.json").read_text())
    assert config["epochs"] == 1 and config["class_balance"] == "sampler" and config["lr_schedule"] == "onecycle"
    assert config["backbones"] == ["efficientnet-b0", "resnet10"] and config["_meta_"]["version"] == "0.1.0"
    info = json.loads((run / "run_info.json").read_text())
    assert info["classes"] == ["normal", "opacity"] and info["amp"] is False and info["device"] == "cpu"
    assert info["bundle_root"].endswith(BUNDLE)
    # the speed keys as applied: CUDA-only ones noted as ignored on this CPU, the rate unscaled in one process
    speed = info["speed"]
    assert speed["channels_last"] is False and "channels_last" in speed["ignored"] and speed["world_size"] == 1
    assert speed["learning_rate"] == config["learning_rate"] and speed["cache"] == "none" and speed["track_meta"] is False
    # model.pt is a plain state dict (MONAI CheckpointSaver with {"model": net}), loadable with weights_only
    state = torch.load(run / "model.pt", map_location="cpu", weights_only=True)
    parser = ConfigParser()
    parser.read_config(str(run / "config.json"))
    net = parser.get_parsed_content("network_def")
    net.load_state_dict(state)


def test_training_wiring(trained):
    parser = trained["workflow"].parser
    trainer = parser.get_parsed_content("train#trainer")
    # early stopping on the validation AUC stops this trainer
    stopper = parser.get_parsed_content("validate#early_stop")
    assert stopper._handler is not None and stopper._handler.trainer is trainer
    assert parser.get_parsed_content("validate#evaluator").state.key_metric_name == "val_auc"
    # balanced sampler instead of shuffling; fp32 on a CPU
    assert type(parser.get_parsed_content("train#sampler")).__name__ == "WeightedRandomSampler"
    assert parser.get_parsed_content("loss").weight is None
    assert trainer.amp is False and trainer.amp_kwargs == {"dtype": torch.bfloat16}
    # speed keys reach MONAI's trainer and the loaders; training items come without metadata
    assert trainer.compile is False and trainer.accumulation_steps == 1
    assert type(parser.get_parsed_content("train#dataset")).__name__ == "_WithoutMeta"
    assert type(parser.get_parsed_content("validate#dataset")).__name__ == "Dataset"


def test_evaluate(trained):
    # no network keys given: they are read from the run's executed config
    run_workflow([CFG / "train.json", CFG / "evaluate.json"], "train", run_name="tiny", **without_architecture(trained["tiny"]))
    ev = trained["run_dir"] / "eval"
    metrics = json.loads((ev / "metrics.json").read_text())
    assert metrics["n"] == 2 and metrics["classes"] == ["normal", "opacity"]
    assert metrics["positive_class"] == "opacity" and metrics["uncertainty"]["mean_mutual_info"] is not None
    with open(ev / "predictions.csv") as f:
        header = next(csv.reader(f))
    assert header[:9] == ["image", "label", "prob_normal", "prob_opacity", "pred", "threshold", "temperature", "entropy",
                          "mutual_info"]
    assert {"patient_id", "view", "sex"} <= set(header)
    pred = read_predictions(ev / "predictions.csv")
    # accuracy and confusion matrix are those of the decision in force (pred: the validated threshold)
    again = decision_metrics(pred["labels"], pred["pred"], pred["classes"])
    assert again["accuracy"] == metrics["accuracy"] and again["confusion_matrix"] == metrics["confusion_matrix"]
    assert classification_metrics(pred["labels"], pred["probs"], pred["classes"])["auc"] == metrics["auc"]
    assert json.loads((ev / "run_info.json").read_text())["checkpoint"] == str(trained["run_dir"] / "model.pt")


def test_inference_manifest_and_dicom_folder(trained, demo_data, tmp_path):
    tiny = trained["tiny"]
    run_workflow(CFG / "inference.json", "infer", run_name="tiny", **tiny)
    pred = read_predictions(trained["run_dir"] / "inference" / "predictions.csv")
    assert len(pred["images"]) == 2 and pred["labels"] is not None and pred["mutual_info"] is not None
    # a folder of DICOM files, no manifest labels; classes come from the training run
    dicom_dir = demo_data["cxr"].parent / "cxr" / "dicom"
    n_files = len(list(dicom_dir.glob("*.dcm")))
    assert n_files > 0
    run_workflow(
        CFG / "inference.json", "infer", run_name="tiny", input_dir=str(dicom_dir),
        inference_dir=str(tmp_path / "dicom_pred"), **{**tiny, "mc_samples": 0},
    )
    pred = read_predictions(tmp_path / "dicom_pred" / "predictions.csv")
    assert len(pred["images"]) == n_files and pred["labels"] is None and pred["mutual_info"] is None
    assert pred["classes"] == ["normal", "opacity"] and all(p.endswith(".dcm") for p in pred["images"])
    assert abs(pred["probs"].sum(1) - 1).max() < 1e-4


def test_inference_with_a_checkpoint_from_elsewhere(trained, tmp_path):
    """--ckpt_path outside any run folder: network keys given, outputs in a new run folder."""
    import shutil

    ckpt = tmp_path / "weights" / "model.pt"
    ckpt.parent.mkdir()
    shutil.copy(trained["run_dir"] / "model.pt", ckpt)
    out = tmp_path / "runs"
    run_workflow(CFG / "inference.json", "infer", ckpt_path=str(ckpt), classes=["normal", "opacity"],
                 **{**trained["tiny"], "output_dir": str(out), "mc_samples": 0})
    (run,) = list(out.iterdir())
    pred = read_predictions(run / "inference" / "predictions.csv")
    assert len(pred["images"]) == 2
    assert json.loads((run / "inference" / "run_info.json").read_text())["checkpoint"] == str(ckpt)


def test_ckpt_export_round_trip(trained, tmp_path):
    """The run's model.pt follows MONAI's conventions: ckpt_export turns it into TorchScript."""
    run = trained["run_dir"]
    tiny = trained["tiny"]
    ckpt_export(
        net_id="network_def", filepath=str(tmp_path / "model.ts"), ckpt_file=str(run / "model.pt"),
        meta_file=str(CFG / "metadata.json"), config_file=str(CFG / "train.json"),
        manifest=tiny["manifest"], backbones=tiny["backbones"], hidden_size=16, num_heads=2,
    )
    scripted = torch.jit.load(str(tmp_path / "model.ts"))
    parser = ConfigParser()
    parser.read_config(str(run / "config.json"))
    net = parser.get_parsed_content("network_def")
    net.load_state_dict(torch.load(run / "model.pt", map_location="cpu", weights_only=True))
    x = torch.rand(2, 1, 64, 64)
    with torch.no_grad():
        torch.testing.assert_close(scripted(x), net.eval()(x), rtol=1e-4, atol=1e-5)


def test_ddp_two_gloo_processes_keep_parameters_equal_and_record_lr_scaling(demo_data, tmp_path):
    """multi_gpu_train.json, 2 gloo processes, 2 epochs: every parameter equal across the ranks (max diff <= 1e-6),
    the linearly scaled rate recorded and used, sync_bn refused on the CPU with BatchNorm kept."""
    from tests.bundles.helpers import torchrun_multi_gpu

    out = tmp_path / "runs"
    save = ("$torch.save({k: v.detach().cpu() for k, v in @network.module.named_parameters()}, "
            f"os.path.join('{tmp_path}', 'rank%d.pt' % dist.get_rank()))")
    overrides = tiny_overrides(demo_data["cxr"], out)
    overrides.update(epochs=2, lr_scaling="linear", sync_bn=True, calibrate=False, class_balance="weights",
                     finalize=[save, "$dist.is_initialized() and dist.destroy_process_group()"])
    run = torchrun_multi_gpu(CFG, overrides, cwd=tmp_path)
    rank0, rank1 = (torch.load(tmp_path / f"rank{r}.pt", weights_only=True) for r in (0, 1))
    assert rank0.keys() == rank1.keys() and len(rank0) > 50
    assert max((rank0[k] - rank1[k]).abs().max().item() for k in rank0) <= 1e-6
    info = json.loads((run / "run_info.json").read_text())
    speed = info["speed"]
    base_lr = json.loads((run / "config.json").read_text())["learning_rate"]
    assert speed["world_size"] == 2 and speed["lr_scaling"] == "linear"
    assert speed["learning_rate"] == pytest.approx(2 * base_lr) and speed["base_learning_rate"] == pytest.approx(base_lr)
    assert speed["sync_bn"] is False and "BatchNorm kept" in speed["ignored"]["sync_bn"]
    first = json.loads((run / "log.jsonl").read_text().splitlines()[0])
    assert first["lr"] == pytest.approx(2 * base_lr, rel=0.05)  # the optimizer got the scaled rate
