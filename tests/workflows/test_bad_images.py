# Copyright (c) medfuse contributors
# Licensed under the Apache License, Version 2.0
"""on_bad_image / max_bad_fraction: header screening, decode failures while loading, skipped_images.csv."""

from __future__ import annotations

import csv
import json

import numpy as np
import pytest
from monai.data import DataLoader, Dataset
from PIL import Image

from medfuse.errors import DataError, input_cause
from medfuse.transforms.io import LoadXrayd
from medfuse.workflows import BadImageLog, SkipBadImages, collate_present, screen_images


def _images(tmp_path, n=4):
    paths = []
    for i in range(n):
        p = tmp_path / f"ok_{i}.png"
        Image.fromarray(np.full((8, 8), 40 * i, np.uint8)).save(p)
        paths.append(str(p))
    return paths


def _rows(path):
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


def test_header_check_stops_naming_the_file_or_skips_and_records(tmp_path):
    good = _images(tmp_path)
    bad = tmp_path / "notes.png"
    bad.write_text("not an image")
    items = [{"image": p} for p in good] + [{"image": str(bad)}]
    with pytest.raises(DataError) as err:
        screen_images(items, "training", BadImageLog(tmp_path / "stop", "stop"))
    assert str(bad) in str(err.value) and "--on_bad_image skip" in str(err.value) and "\n" not in str(err.value)

    log = BadImageLog(tmp_path / "run", "skip", max_bad_fraction=0.5)
    kept = screen_images(items, "training", log)
    assert [it["image"] for it in kept] == good
    assert _rows(log.path) == [{"split": "training", "image": str(bad), "stage": "header",
                                "reason": _rows(log.path)[0]["reason"]}]
    assert "header unreadable" in _rows(log.path)[0]["reason"]
    line = log.finish()
    assert line == f"skipped 1 unreadable image(s) (training: 1); list: {log.path}"
    assert json.loads((tmp_path / "run" / "run_info.json").read_text())["skipped_images"] == {"training": 1}


def test_more_than_max_bad_fraction_stops_anyway(tmp_path):
    items = [{"image": p} for p in _images(tmp_path, 3)] + [{"image": str(tmp_path / "gone.png")}]
    with pytest.raises(DataError, match=r"1 of 4 images of the training split are unreadable.*max_bad_fraction=0.01"):
        screen_images(items, "training", BadImageLog(tmp_path / "run", "skip"))


def test_decode_failure_while_loading_is_skipped_and_the_rest_is_batched(tmp_path):
    good = _images(tmp_path)
    noise = tmp_path / "noise.png"
    Image.fromarray(np.random.RandomState(0).randint(0, 255, (64, 64), dtype=np.uint8)).save(noise)
    broken = tmp_path / "cut.png"
    broken.write_bytes(noise.read_bytes()[: noise.stat().st_size // 2])  # header reads, pixels do not
    items = [{"image": good[0]}, {"image": str(broken)}, *({"image": p} for p in good[1:])]
    log = BadImageLog(tmp_path / "run", "skip", max_bad_fraction=0.5)
    kept = screen_images(items, "test", log)
    assert len(kept) == 5  # a truncated PNG passes the cheap header check: the loader finds it
    ds = SkipBadImages(Dataset(kept, transform=LoadXrayd(keys="image")), "test", log)
    batches = list(DataLoader(ds, batch_size=2, collate_fn=collate_present, num_workers=0))
    assert [b["image"].shape[0] for b in batches] == [1, 2, 1]
    assert [(r["image"], r["stage"]) for r in _rows(log.path)] == [(str(broken), "load")]
    list(DataLoader(ds, batch_size=2, collate_fn=collate_present))  # a second epoch lists it once
    assert log.counts() == {"test": 1}
    with pytest.raises(RuntimeError) as err:  # stop: MONAI's wrapped error, the loader's DataError its cause
        SkipBadImages(Dataset(kept, transform=LoadXrayd(keys="image")), "test", BadImageLog(tmp_path, "stop"))[1]
    assert str(broken) in str(input_cause(err.value, DataError))
    with pytest.raises(DataError, match="every image of a batch of 1"):
        collate_present([None])
    with pytest.raises(ValueError, match="on_bad_image must be one of"):
        BadImageLog(tmp_path, "ignore")


@pytest.mark.parametrize("cache_rate", [1.0, 0.5])
def test_an_image_that_fails_while_the_cache_fills_is_skipped_or_stops_by_policy(tmp_path, cache_rate):
    from monai.transforms import Lambda

    from medfuse.workflows import make_dataset

    good = _images(tmp_path)
    noise = tmp_path / "noise.png"
    Image.fromarray(np.random.RandomState(0).randint(0, 255, (64, 64), dtype=np.uint8)).save(noise)
    broken = tmp_path / "cut.png"
    broken.write_bytes(noise.read_bytes()[: noise.stat().st_size // 2])
    items = [{"image": str(broken)}, *({"image": p} for p in good)]  # first: inside the cached part either way
    log = BadImageLog(tmp_path / "run", "skip", max_bad_fraction=0.5)
    # the cache fills in the constructor: an unreadable file no longer stops it
    ds = SkipBadImages(make_dataset(items, LoadXrayd(keys="image"), cache="memory", cache_rate=cache_rate), "training", log)
    batches = list(DataLoader(ds, batch_size=2, collate_fn=collate_present, num_workers=0))
    assert sum(b["image"].shape[0] for b in batches) == len(good)
    assert [(r["image"], r["stage"]) for r in _rows(log.path)] == [(str(broken), "load")]
    stop = SkipBadImages(make_dataset(items, LoadXrayd(keys="image"), cache="memory", cache_rate=cache_rate), "training",
                         BadImageLog(tmp_path / "stop", "stop"))
    with pytest.raises(Exception) as err:
        stop[0]
    assert str(broken) in str(input_cause(err.value, DataError))
    # an error that is not about the input still stops the fill
    with pytest.raises(Exception) as err:
        make_dataset([{"image": good[0]}], Lambda(lambda d: 1 / 0), cache="memory")
    assert input_cause(err.value, DataError) is None
