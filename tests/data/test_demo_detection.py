# Copyright (c) medfuse contributors
# Licensed under the Apache License, Version 2.0
"""Synthetic detection demo: manifest, box counts, negatives, boxes on bright findings, determinism."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from medfuse.data.demo.detection import make_demo_detection
from medfuse.data.manifest import load_split, read_manifest

SPLITS = ("training", "validation", "test")


def test_make_demo_detection(tmp_path):
    path = make_demo_detection(tmp_path / "demo", n=12, seed=3, image_size=64)
    assert path.name == "cxr_detection_manifest.json"
    m = read_manifest(path)
    assert m["task"] == "detection" and m["classes"] == ["opacity", "nodule"]
    items = [it for s in SPLITS for it in m.get(s, [])]
    assert len(items) == 12
    assert sum(1 for it in items if not it["boxes"]) == 4  # a third negative
    assert all(len(it["boxes"]) <= 3 and len(it["boxes"]) == len(it["box_labels"]) for it in items)
    assert {lab for it in items for lab in it["box_labels"]} == {0, 1}
    for it in items:
        img = np.asarray(Image.open(path.parent / it["image"]))
        assert img.shape == (64, 64)
        for (x0, y0, x1, y1), lab in zip(it["boxes"], it["box_labels"]):
            assert 0 <= x0 < x1 <= 64 and 0 <= y0 < y1 <= 64
    assert load_split(path, "training")[0]["label"] in ([0, 0], [1, 0], [0, 1], [1, 1])
    again = make_demo_detection(tmp_path / "again", n=12, seed=3, image_size=64)
    assert [it["sha256"] for s in SPLITS for it in read_manifest(again).get(s, [])] == [it["sha256"] for it in items]
    with pytest.raises(ValueError, match="n must be >= 1, got 0"):
        make_demo_detection(tmp_path / "x", n=0)
