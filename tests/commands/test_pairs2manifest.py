# Copyright (c) medfuse contributors
# Licensed under the Apache License, Version 2.0
from pathlib import Path

import pytest
from monai.data import load_decathlon_datalist

from medfuse.commands.pairs2manifest import main
from medfuse.data.manifest import read_manifest
from tests.conftest import require
from tests.data.synth import make_tree


def _pairs(root, n=8):
    files = {}
    for i in range(n):
        files[f"cxr/MCUCXR_{i:04d}_{i % 2}.png"] = None
        if i != 3:  # image 3 has no mask
            files[f"masks/MCUCXR_{i:04d}_{i % 2}_mask.png"] = None
    files["masks/MCUCXR_0100_0_mask.png"] = None  # mask without image
    return make_tree(root, files)


def test_missing_masks_kept_and_reported(tmp_path, capsys):
    root = _pairs(tmp_path / "d")
    out = tmp_path / "m.json"
    argv = [str(root / "cxr"), str(root / "masks"), "--out", str(out), "--mask-suffix", "_mask", "--split", "1"]
    assert main(argv) == 0
    text = capsys.readouterr().out
    assert "found 16 = written 8 + masks paired with them 7 + skipped 1" in text
    assert "mask without image" in text and "masks/MCUCXR_0100_0_mask.png" in text
    assert "1 images have no mask" in text and "MCUCXR_0003_1.png" in text
    m = read_manifest(out)
    assert m["task"] == "segmentation_classification"
    assert sum("mask" in it for it in m["training"]) == 7


def test_missing_masks_skipped(tmp_path, capsys):
    root = _pairs(tmp_path / "d")
    out = tmp_path / "m.json"
    argv = [str(root / "cxr"), str(root / "masks"), "--out", str(out), "--mask-suffix", "_mask"]
    argv += ["--missing-mask", "skip", "--split", "1"]
    assert main(argv) == 0
    assert "image without mask (--missing-mask skip)" in capsys.readouterr().out
    assert len(read_manifest(out)["training"]) == 7


def test_classes_and_no_labels(tmp_path, capsys):
    root = _pairs(tmp_path / "d")
    out = tmp_path / "m.json"
    common = [str(root / "cxr"), str(root / "masks"), "--out", str(out), "--mask-suffix", "_mask", "--split", "1"]
    assert main(common + ["--classes", "healthy,tb"]) == 0
    m = read_manifest(out)
    assert m["classes"] == ["healthy", "tb"]
    assert all(it["label"] == int(Path(it["image"]).stem[-1]) for it in m["training"])
    assert main(common + ["--label-pattern", "", "--missing-mask", "skip"]) == 0
    m = read_manifest(out)
    assert m["task"] == "segmentation" and m["classes"] == [] and all("label" not in it for it in m["training"])


@pytest.mark.parametrize(
    "extra, message",
    [
        (["--label-pattern", "_(\\d)$"], "no named group 'label'"),
        (["--task", "segmentation_classification", "--label-pattern", "(?P<label>zzz)"], "found no label"),
    ],
)
def test_errors(tmp_path, capsys, extra, message):
    root = _pairs(tmp_path / "d")
    assert main([str(root / "cxr"), str(root / "masks"), "--out", str(tmp_path / "m.json")] + extra) == 1
    err = capsys.readouterr().err
    assert message in err and err.count("\n") == 1


def test_missing_folder(tmp_path, capsys):
    assert main([str(tmp_path / "cxr"), str(tmp_path / "masks"), "--out", str(tmp_path / "m.json")]) == 1
    assert "image folder not found" in capsys.readouterr().err


@pytest.mark.realdata
def test_lung_seg_real(shared_data, tmp_path, capsys):
    root = require(shared_data / "lung_seg_cxr")
    out = tmp_path / "nested" / "lung.json"
    assert main([str(root / "cxr"), str(root / "masks"), "--out", str(out), "--no-progress"]) == 0
    text = capsys.readouterr().out
    assert "found 1128 = written 564 + masks paired with them 564 + skipped 0" in text
    m = read_manifest(out)
    items = [it for s in ("training", "validation", "test") for it in m[s]]
    assert len(items) == 564 and all("mask" in it for it in items)
    n_tb = len(list((root / "cxr").glob("*_1.png")))
    assert n_tb == 274 and sum(it["label"] == 1 for it in items) == n_tb
    data = load_decathlon_datalist(str(out), is_segmentation=False, data_list_key="training")
    assert Path(data[0]["image"]).is_file() and Path(data[0]["mask"]).is_file()
