# Copyright (c) medfuse contributors
# Licensed under the Apache License, Version 2.0
"""Device / AMP / threads helpers, and MONAI handing ``amp_kwargs`` to ``torch.autocast``."""

from __future__ import annotations

import contextlib
import os
import warnings

import pytest
import torch
from monai.engines import SupervisedEvaluator, SupervisedTrainer

from medfuse.workflows import amp_kwargs, flag, get_device, set_num_threads, setup_run, use_amp


def test_device_and_amp_choice():
    assert get_device("cpu") == torch.device("cpu")
    assert get_device("").type == ("cuda" if torch.cuda.is_available() else "cpu")
    assert use_amp("cpu") is False
    assert use_amp("cuda:0") is True and use_amp("cuda:0", enabled=False) is False
    assert amp_kwargs("cuda") == {"dtype": torch.bfloat16}
    assert amp_kwargs("cuda", "float16") == {"dtype": torch.float16}


def test_threads_and_seed():
    before = torch.get_num_threads()
    try:
        assert set_num_threads(1) == 1 and torch.get_num_threads() == 1
        cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
        assert set_num_threads(0) == cores
        setup_run(seed=7, num_threads=1)
        a = torch.rand(3)
        setup_run(seed=7, num_threads=1)
        torch.testing.assert_close(torch.rand(3), a)
    finally:
        torch.set_num_threads(before)
        from monai.utils import set_determinism

        set_determinism(seed=None)


def test_monai_passes_amp_kwargs_to_autocast(monkeypatch):
    """MONAI 1.6.1's trainer and evaluator call ``torch.autocast("cuda", **amp_kwargs)`` when ``amp=True``."""
    calls = []

    def fake_autocast(device_type, **kwargs):
        calls.append((device_type, kwargs))
        return contextlib.nullcontext()

    monkeypatch.setattr(torch, "autocast", fake_autocast)
    net = torch.nn.Linear(3, 2)
    data = [{"image": torch.rand(3), "label": 1} for _ in range(2)]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # GradScaler without CUDA disables itself, with a warning
        trainer = SupervisedTrainer(
            device=torch.device("cpu"), max_epochs=1, train_data_loader=torch.utils.data.DataLoader(data, batch_size=2),
            network=net, optimizer=torch.optim.SGD(net.parameters(), lr=0.1), loss_function=torch.nn.CrossEntropyLoss(),
            amp=True, amp_kwargs=amp_kwargs("cuda"),
        )
        trainer.run()
        evaluator = SupervisedEvaluator(
            device=torch.device("cpu"), val_data_loader=torch.utils.data.DataLoader(data, batch_size=2), network=net,
            amp=True, amp_kwargs=amp_kwargs("cuda"),
        )
        evaluator.run()
    assert calls == [("cuda", {"dtype": torch.bfloat16})] * 2


@pytest.mark.parametrize(
    "value, expected",
    [(True, True), (False, False), (1, True), (0, False), (None, False), ("true", True), ("False", False),
     ("false", False), ("YES", True), ("off", False), ("0", False), ("1", True)],
)
def test_flag_reads_command_line_strings(value, expected):
    # `--save_cam false` reaches the config as the string 'false', which truthiness reads as on
    assert flag(value) is expected


@pytest.mark.parametrize("value", ["maybe", 2, "tru", [1]])
def test_flag_refuses_other_values(value):
    with pytest.raises(ValueError, match="save_cam must be true or false"):
        flag(value, "save_cam")


def test_use_amp_reads_string_switch():
    assert use_amp("cpu", "true") is False  # never on a CPU
    with pytest.raises(ValueError, match="amp"):
        use_amp("cpu", "sometimes")
