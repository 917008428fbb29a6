# Copyright (c) medfuse contributors
# Licensed under the Apache License, Version 2.0
"""``medfuse validate`` finds identical image content when the items carry no sha256: across splits an error,
within a split a warning; and says when it could not check."""

from __future__ import annotations

import json

import numpy as np
from PIL import Image

from medfuse.cli import main


def _manifest(tmp_path, layout):
    rng = np.random.default_rng(0)
    pixels = {}
    out = {"schema_version": 1, "task": "classification", "classes": ["a", "b"]}
    for split, names in layout.items():
        out[split] = []
        for i, name in enumerate(names):
            if name not in pixels:  # the same content name: byte-identical copies under other file names
                pixels[name] = rng.integers(0, 255, (16, 16), dtype=np.uint8)
            Image.fromarray(pixels[name]).save(tmp_path / f"{split}{i}_{name}.png")
            out[split].append({"image": f"{split}{i}_{name}.png", "label": i % 2, "patient_id": f"{split}{i}"})
    path = tmp_path / "m.json"
    path.write_text(json.dumps(out))
    return path


def test_same_image_in_training_and_test_is_an_error(tmp_path, capsys):
    path = _manifest(tmp_path, {"training": ["x", "y"], "test": ["x", "z"]})
    assert main(["validate", str(path)]) == 1
    err = capsys.readouterr().err
    assert "identical image content in splits ['test', 'training']: training0_x.png (training), test0_x.png (test)" in err


def test_same_image_twice_in_one_split_is_a_warning(tmp_path, capsys):
    path = _manifest(tmp_path, {"training": ["x", "x", "y"], "test": ["z"]})
    assert main(["validate", str(path)]) == 0
    captured = capsys.readouterr()
    assert "warning: identical image content 2 times in 'training'" in captured.err and "valid" in captured.out


def test_says_when_content_was_not_checked(tmp_path, capsys):
    path = _manifest(tmp_path, {"training": ["x", "y"], "test": ["x"]})
    assert main(["validate", str(path), "--no-content"]) == 0
    assert "3 item(s) carry no sha256 and were not hashed (--no-content)" in capsys.readouterr().err
