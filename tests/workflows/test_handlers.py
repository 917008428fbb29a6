# Copyright (c) medfuse contributors
# Licensed under the Apache License, Version 2.0
"""Handlers, metrics and the MC-dropout inferer, on a tiny MONAI trainer/evaluator pair."""

from __future__ import annotations

import csv
import json
import math

import numpy as np
import pytest
import torch
from monai.data import DataLoader
from monai.engines import SupervisedEvaluator, SupervisedTrainer
from monai.transforms import Activationsd, Compose

from medfuse.evaluation import classification_metrics, read_predictions
from medfuse.workflows import (
    ClassificationMetric,
    EpochLogger,
    MCDropoutInferer,
    PredictionWriter,
    UnpackPredictiond,
    lr_schedule_handler,
    mc_dropout_outputs,
)

CLASSES = ["a", "b", "c"]


class TinyNet(torch.nn.Module):
    def __init__(self, dropout=0.5):
        super().__init__()
        self.fc1 = torch.nn.Linear(4, 16)
        self.drop = torch.nn.Dropout(dropout)
        self.fc2 = torch.nn.Linear(16, 3)

    def forward(self, x):
        return self.fc2(self.drop(torch.relu(self.fc1(x))))


def _data(n, seed, labelled=True):
    g = torch.Generator().manual_seed(seed)
    items = []
    for i in range(n):
        lab = i % 3
        x = torch.randn(4, generator=g) + torch.nn.functional.one_hot(torch.tensor(lab), 4).float() * 2
        it = {"image": x, "image_path": f"/img/{seed}_{i}.png", "patient_id": f"p{i}"}
        if labelled:
            it["label"] = lab
        items.append(it)
    return items


def _evaluator(net, items, writer=None, samples=0, metrics=True):
    handlers = [writer] if writer is not None else []
    return SupervisedEvaluator(
        device=torch.device("cpu"),
        val_data_loader=DataLoader(items, batch_size=4),
        network=net,
        inferer=MCDropoutInferer(samples),
        postprocessing=Compose([UnpackPredictiond("pred"), Activationsd("pred", softmax=True)]),
        key_val_metric={"val_auc": ClassificationMetric(CLASSES, "auc")} if metrics else None,
        additional_metrics={"val_acc": ClassificationMetric(CLASSES, "accuracy")} if metrics else None,
        val_handlers=handlers,
    )


def test_training_logs_and_predictions(tmp_path):
    torch.manual_seed(0)
    net = TinyNet()
    opt = torch.optim.Adam(net.parameters(), lr=1e-2)
    evaluator = _evaluator(net, _data(12, 1), PredictionWriter(tmp_path / "val", CLASSES, extra_keys=["patient_id"]))
    from monai.handlers import ValidationHandler

    logger = EpochLogger(tmp_path, evaluator=evaluator)
    trainer = SupervisedTrainer(
        device=torch.device("cpu"),
        max_epochs=3,
        train_data_loader=DataLoader(_data(24, 0), batch_size=6, shuffle=True),
        network=net,
        optimizer=opt,
        loss_function=torch.nn.CrossEntropyLoss(),
        train_handlers=[ValidationHandler(validator=evaluator, interval=1), lr_schedule_handler(opt, "cosine", 3), logger],
    )
    trainer.run()
    rows = [json.loads(line) for line in open(tmp_path / "log.jsonl")]
    assert [r["epoch"] for r in rows] == [1, 2, 3]
    assert all(r["train_loss"] > 0 and 0 <= r["val_auc"] <= 1 and "val_acc" in r for r in rows)
    # cosine: the lr used in epoch 1 is the base lr, then it decreases
    assert rows[0]["lr"] == pytest.approx(1e-2) and rows[2]["lr"] < rows[1]["lr"] < rows[0]["lr"]
    with open(tmp_path / "log.csv") as f:
        csv_rows = list(csv.DictReader(f))
    assert len(csv_rows) == 3 and float(csv_rows[-1]["val_auc"]) == pytest.approx(rows[-1]["val_auc"])
    # the prediction file of the last validation agrees with the evaluator's metric
    pred = read_predictions(tmp_path / "val" / "predictions.csv")
    assert len(pred["images"]) == 12 and pred["images"][0] == "/img/1_0.png"
    assert pred["mutual_info"] is None and pred["extra"]["patient_id"][1] == "p1"
    m = classification_metrics(pred["labels"], pred["probs"], CLASSES)
    assert m["auc"] == pytest.approx(evaluator.state.metrics["val_auc"], abs=1e-5)
    assert m["accuracy"] == pytest.approx(evaluator.state.metrics["val_acc"])


def test_epoch_logger_extra_columns(tmp_path):
    """A bundle adds columns with extra_columns {name: callable(engine)}; None leaves the cell empty."""
    torch.manual_seed(0)
    net = TinyNet()
    logger = EpochLogger(tmp_path, extra_columns={"twice_epoch": lambda e: 2 * e.state.epoch, "nothing": lambda e: None})
    trainer = SupervisedTrainer(
        device=torch.device("cpu"), max_epochs=2, train_data_loader=DataLoader(_data(8, 0), batch_size=4),
        network=net, optimizer=torch.optim.SGD(net.parameters(), lr=1e-2),
        loss_function=torch.nn.CrossEntropyLoss(), train_handlers=[logger],
    )
    trainer.run()
    with open(tmp_path / "log.csv") as f:
        rows = list(csv.DictReader(f))
    assert [r["twice_epoch"] for r in rows] == ["2", "4"] and [r["nothing"] for r in rows] == ["", ""]
    with pytest.raises(ValueError, match="callables"):
        EpochLogger(tmp_path, extra_columns={"x": 3})


def test_mc_dropout_inference_without_labels(tmp_path):
    torch.manual_seed(0)
    net = TinyNet()
    writer = PredictionWriter(tmp_path, CLASSES)
    _evaluator(net, _data(5, 2, labelled=False), writer, samples=8, metrics=False).run()
    pred = read_predictions(tmp_path / "predictions.csv")
    assert pred["labels"] is None and len(pred["images"]) == 5
    assert np.allclose(pred["probs"].sum(1), 1.0, atol=1e-5)
    assert np.all(pred["mutual_info"] >= 0) and np.all(pred["mutual_info"] <= pred["entropy"] + 1e-6)
    assert np.any(pred["mutual_info"] > 0)  # dropout p=0.5 makes the passes differ


def test_mc_dropout_outputs_consistent():
    torch.manual_seed(0)
    net = TinyNet().eval()
    x = torch.randn(3, 4)
    out = mc_dropout_outputs(net, x, samples=4)
    probs = out["pred"].exp()
    assert torch.allclose(probs.sum(1), torch.ones(3), atol=1e-5)
    ent = -(probs * probs.log()).sum(1)
    assert torch.allclose(out["entropy"], ent, atol=1e-5)
    assert not net.drop.training  # modes restored
    with pytest.raises(ValueError, match="samples must be >= 1"):
        mc_dropout_outputs(net, x, samples=0)
    with pytest.raises(ValueError, match=">= 0"):
        MCDropoutInferer(-1)
    # samples=0: a plain forward pass
    torch.testing.assert_close(MCDropoutInferer(0)(x, net), net(x))


def test_classification_metric_binary_and_undefined():
    m = ClassificationMetric(["n", "p"], "auc")
    m.reset()
    m.update(([torch.tensor([0.9, 0.1]), torch.tensor([0.2, 0.8])], [torch.tensor(0), torch.tensor(1)]))
    assert m.compute() == 1.0
    m.reset()
    m.update((torch.tensor([[0.9, 0.1]]), torch.tensor([0])))
    m.update(([torch.tensor([0.5, 0.5])], [None]))  # unlabelled items are skipped
    assert m.compute() == 0.0  # undefined with one class: the configured value
    with pytest.raises(ValueError, match="metric must be one of"):
        ClassificationMetric(["n", "p"], "f1")


def test_lr_schedules():
    p = torch.nn.Parameter(torch.zeros(1))
    opt = torch.optim.SGD([p], lr=1.0)
    h = lr_schedule_handler(opt, "cosine", epochs=4, min_lr_ratio=0.0)
    assert h.epoch_level
    lrs = []
    for _ in range(4):
        opt.step()
        h.lr_scheduler.step()
        lrs.append(opt.param_groups[0]["lr"])
    assert lrs[-1] == pytest.approx(0.0, abs=1e-9) and lrs[1] == pytest.approx(0.5 * (1 + math.cos(math.pi / 2)))
    opt = torch.optim.SGD([p], lr=1.0)
    h = lr_schedule_handler(opt, "onecycle", epochs=2, steps_per_epoch=5)
    assert not h.epoch_level and opt.param_groups[0]["lr"] < 0.1  # starts at max_lr / 25
    opt = torch.optim.SGD([p], lr=0.3)
    h = lr_schedule_handler(opt, "constant", epochs=2)
    opt.step()
    h.lr_scheduler.step()
    assert opt.param_groups[0]["lr"] == pytest.approx(0.3)
    with pytest.raises(ValueError, match="lr_schedule must be one of"):
        lr_schedule_handler(opt, "step")


def test_progress_bar_and_logger_options(tmp_path, capsys):
    from medfuse.workflows import ProgressBar

    net = TinyNet()
    trainer = SupervisedTrainer(
        device=torch.device("cpu"), max_epochs=1, train_data_loader=DataLoader(_data(6, 3), batch_size=3),
        network=net, optimizer=torch.optim.SGD(net.parameters(), lr=0.1), loss_function=torch.nn.CrossEntropyLoss(),
        train_handlers=[ProgressBar(enabled=True), ProgressBar(enabled=False), EpochLogger(tmp_path, formats=("csv",))],
    )
    trainer.run()
    assert "loss" in capsys.readouterr().err  # tqdm writes to stderr
    assert (tmp_path / "log.csv").is_file() and not (tmp_path / "log.jsonl").exists()
    with pytest.raises(ValueError, match="formats must be"):
        EpochLogger(tmp_path, formats=("xml",))


def test_predictions_say_how_pred_was_decided(tmp_path):
    """Every row carries temperature and threshold, and pred follows the calibrated probabilities by that rule."""
    torch.manual_seed(0)
    net = torch.nn.Linear(4, 2)
    items = [{"image": torch.randn(4), "image_path": f"/img/{i}.png"} for i in range(12)]
    cal = {"format": "medfuse-calibration/1", "task": "single-label", "classes": ["neg", "pos"], "temperature": 2.0,
           "decision": "threshold", "positive_class": "pos", "threshold": 0.3}
    writer = PredictionWriter(tmp_path, ["neg", "pos"], calibration=cal)
    SupervisedEvaluator(device=torch.device("cpu"), val_data_loader=DataLoader(items, batch_size=4), network=net,
                        postprocessing=Compose([Activationsd("pred", softmax=True)]), val_handlers=[writer]).run()
    with open(tmp_path / "predictions.csv") as f:
        rows = list(csv.DictReader(f))
    assert list(rows[0])[:7] == ["image", "prob_neg", "prob_pos", "pred", "threshold", "temperature", "entropy"]
    assert {r["threshold"] for r in rows} == {"0.3"} and {r["temperature"] for r in rows} == {"2"}
    for r in rows:
        assert r["pred"] == ("pos" if float(r["prob_pos"]) >= float(r["threshold"]) else "neg")
    # without a calibration: T = 1, pred = arg-max, written as the threshold 0.5 of a two-class model (the same rule)
    plain = PredictionWriter(tmp_path / "plain", ["neg", "pos"])
    SupervisedEvaluator(device=torch.device("cpu"), val_data_loader=DataLoader(items, batch_size=4), network=net,
                        postprocessing=Compose([Activationsd("pred", softmax=True)]), val_handlers=[plain]).run()
    with open(tmp_path / "plain" / "predictions.csv") as f:
        rows = list(csv.DictReader(f))
    assert {r["threshold"] for r in rows} == {"0.5"} and {r["temperature"] for r in rows} == {"1"}
    assert all(r["pred"] == ("pos" if float(r["prob_pos"]) > float(r["prob_neg"]) else "neg") for r in rows)


class _CountReads(torch.overrides.TorchFunctionMode):
    """Counts tensor reads that make the host wait for the device (``.item()``, ``.cpu()``, ``float()`` ...)."""

    READS = {"item", "cpu", "tolist", "numpy", "__float__", "__bool__", "__int__"}

    def __init__(self):
        super().__init__()
        self.reads = []

    def __torch_function__(self, func, types, args=(), kwargs=None):
        name = getattr(func, "__name__", "")
        if name in self.READS:
            self.reads.append(name)
        return func(*args, **(kwargs or {}))


def test_per_iteration_handlers_do_not_read_tensors_back():
    """The loss log and the training metric keep per-step values on the device; they are read at epoch end."""
    from ignite.engine import Engine

    from medfuse.workflows import ClassificationMetric, EpochLogger, every_n_iterations

    engine = Engine(lambda e, b: None)
    log = EpochLogger(log_dir="unused", formats=())
    metric = ClassificationMetric(["a", "b"], metric="accuracy")
    engine.state.output = {"loss": torch.tensor(0.5), "pred": torch.rand(4, 2), "label": torch.tensor([0, 1, 1, 0])}
    with _CountReads() as mode:
        for _ in range(3):
            log.iteration_completed(engine)
            metric.update((engine.state.output["pred"], engine.state.output["label"]))
    assert mode.reads == []
    assert metric.compute() in (0.0, 0.25, 0.5, 0.75, 1.0) and len(log._losses) == 3
    keep = every_n_iterations(5)
    assert [it for it in range(1, 12) if keep(engine, it)] == [5, 10]
    with pytest.raises(ValueError, match="log_interval"):
        every_n_iterations(0)
