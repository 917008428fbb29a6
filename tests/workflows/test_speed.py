# Copyright (c) medfuse contributors
# Licensed under the Apache License, Version 2.0
"""The speed keys: CPU-sane worker / thread defaults, ``speed_setup``, and the training dataset / loader kinds."""

from __future__ import annotations

import math
import warnings

import pytest
import torch
from monai.data import CacheDataset, DataLoader, Dataset, MetaTensor, PersistentDataset, ThreadDataLoader
from monai.transforms import Compose, EnsureTyped, Lambdad, RandGaussianNoised

from medfuse.workflows import (
    default_threads,
    default_workers,
    make_dataloader,
    make_dataset,
    scaled_learning_rate,
    speed_setup,
)


@pytest.mark.parametrize("cores, workers, threads", [(1, 0, 1), (2, 1, 1), (4, 3, 1), (8, 4, 2), (16, 4, 4)])
def test_defaults_do_not_oversubscribe(cores, workers, threads):
    assert default_workers(cores) == workers
    assert default_threads(workers, cores) == threads
    assert workers * threads <= cores and workers + threads <= max(cores, 1 + workers)
    assert default_threads(0, cores) == cores  # no workers: every core to the training process


def _net():
    return torch.nn.Sequential(torch.nn.Conv2d(2, 4, 3), torch.nn.BatchNorm2d(4), torch.nn.ReLU())


@pytest.fixture
def restore_determinism():
    before = torch.are_deterministic_algorithms_enabled()
    yield
    torch.use_deterministic_algorithms(before)


def test_speed_setup_on_cpu_notes_the_cuda_only_keys(restore_determinism):
    net = _net()
    with pytest.warns(UserWarning, match="sync_bn=true needs CUDA"):
        out = speed_setup(net, "cpu", sync_bn=True, concurrent_branches=True, learning_rate=1e-3, lr_scaling="sqrt")
    # channels_last / cudnn_benchmark / fused 'auto' / sync_bn / concurrent_branches are CUDA-only: noted, not applied
    assert set(out["ignored"]) == {"channels_last", "cudnn_benchmark", "fused_optimizer", "sync_bn",
                                   "concurrent_branches"}
    assert out["channels_last"] is False and out["fused_optimizer"] is None and out["sync_bn"] is False
    assert not net[0].weight.is_contiguous(memory_format=torch.channels_last)
    assert isinstance(net[1], torch.nn.BatchNorm2d)  # kept
    assert out["world_size"] == 1 and out["learning_rate"] == pytest.approx(1e-3)  # sqrt(1) = 1
    assert out["accumulation_steps"] == 1 and out["compile"] is False and out["track_meta"] is False
    assert out["deterministic"] is False and torch.are_deterministic_algorithms_enabled() is False


def test_speed_setup_deterministic_and_explicit_fused(restore_determinism):
    out = speed_setup(_net(), "cpu", deterministic="true", fused_optimizer=True, accumulation_steps=4)
    assert torch.are_deterministic_algorithms_enabled() and out["deterministic"] is True
    assert out["fused_optimizer"] is True and "fused_optimizer" not in out["ignored"]
    assert out["accumulation_steps"] == 4


@pytest.mark.parametrize("key, value", [("cache", "ram"), ("dataloader", "fast"), ("lr_scaling", "square"),
                                        ("accumulation_steps", 0), ("compile", "maybe")])
def test_speed_setup_refuses_unknown_values(key, value):
    with pytest.raises(ValueError, match=key):
        speed_setup(_net(), "cpu", **{key: value})


def test_scaled_learning_rate():
    assert scaled_learning_rate(0.1, "none", 4) == pytest.approx(0.1)
    assert scaled_learning_rate(0.1, "linear", 4) == pytest.approx(0.4)
    assert scaled_learning_rate(0.1, "sqrt", 4) == pytest.approx(0.1 * math.sqrt(4))


def _items(n=6):
    return [{"image": torch.full((1, 4, 4), float(i)), "i": i} for i in range(n)]


def _transform():
    # deterministic part (cached) then a random one (not cached)
    return Compose([EnsureTyped("image", track_meta=True), Lambdad("image", lambda x: x + 1),
                    RandGaussianNoised("image", prob=0.0)])


@pytest.mark.parametrize("cache, kind", [("none", Dataset), ("memory", CacheDataset), ("disk", PersistentDataset)])
def test_make_dataset_kinds(cache, kind, tmp_path):
    ds = make_dataset(_items(), _transform(), cache=cache, cache_dir=tmp_path / "c", track_meta=True)
    assert isinstance(ds, kind) and len(ds) == 6
    assert float(ds[3]["image"][0, 0, 0]) == 4.0 and isinstance(ds[3]["image"], MetaTensor)
    if cache == "disk":
        assert [float(ds[i]["image"][0, 0, 0]) for i in range(6)] == [1.0, 2.0, 3.0, 4.0, 5.0, 6.0]
        files = sorted((tmp_path / "c").iterdir())
        assert len(files) == 6  # each item's deterministic part went to disk
        stamps = [f.stat().st_mtime_ns for f in files]
        with warnings.catch_warnings():
            warnings.simplefilter("error")  # MONAI warns "Corrupt cache file" when it cannot read one back
            assert isinstance(ds[3]["image"], MetaTensor)
        assert [f.stat().st_mtime_ns for f in sorted((tmp_path / "c").iterdir())] == stamps  # read, not rewritten


def test_make_dataset_without_meta_gives_plain_tensors_and_restores_the_flag():
    from monai.data import get_track_meta

    ds = make_dataset(_items(), _transform(), cache="memory", track_meta=False)
    item = ds[2]
    assert type(item["image"]) is torch.Tensor and float(item["image"][0, 0, 0]) == 3.0
    assert get_track_meta() is True


def test_make_dataset_refuses_bad_settings():
    with pytest.raises(ValueError, match="cache_dir"):
        make_dataset(_items(), _transform(), cache="disk")
    with pytest.raises(ValueError, match="cache_rate"):
        make_dataset(_items(), _transform(), cache="memory", cache_rate=1.5)


def test_make_dataloader_kinds():
    ds = make_dataset(_items(), _transform())
    torch_loader = make_dataloader(ds, "torch", batch_size=3)
    thread_loader = make_dataloader(ds, "thread", batch_size=3)
    assert type(torch_loader) is DataLoader and type(thread_loader) is ThreadDataLoader
    a = [b["i"].tolist() for b in torch_loader]
    b = [b["i"].tolist() for b in thread_loader]
    assert a == b == [[0, 1, 2], [3, 4, 5]]
