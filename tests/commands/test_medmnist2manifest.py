# Copyright (c) medfuse contributors
# Licensed under the Apache License, Version 2.0
from pathlib import Path

import numpy as np
import pytest
from monai.data import load_decathlon_datalist

from medfuse.commands.medmnist2manifest import main
from medfuse.data.manifest import read_manifest
from tests.conftest import require
from tests.data.synth import write_npz


def test_synthetic_npz(tmp_path, capsys):
    npz = write_npz(tmp_path / "pneumoniamnist.npz")
    out = tmp_path / "out"
    assert main([str(npz), "--out", str(out), "--manifest-name", "pm.json"]) == 0
    text = capsys.readouterr().out
    assert "found 12 = written 12 + skipped 0" in text
    m = read_manifest(out / "pm.json")
    assert m["classes"] == ["normal", "pneumonia"]
    assert [len(m[s]) for s in ("training", "validation", "test")] == [6, 3, 3]
    assert (out / "images" / "test" / "test_2.png").is_file()


def test_classes_option(tmp_path, capsys):
    npz = write_npz(tmp_path / "x.npz")
    assert main([str(npz), "--out", str(tmp_path / "o"), "--classes", "healthy,sick"]) == 0
    assert read_manifest(tmp_path / "o" / "manifest.json")["classes"] == ["healthy", "sick"]
    assert main([str(npz), "--out", str(tmp_path / "o"), "--classes", "only_one"]) == 1
    assert "labels go up to 1" in capsys.readouterr().err


def test_corrupt_npz_one_line_error(tmp_path, capsys):
    bad = tmp_path / "broken.npz"
    bad.write_bytes(b"PK\x03\x04truncated")
    assert main([str(bad), "--out", str(tmp_path / "o")]) == 1
    err = capsys.readouterr().err
    assert err.startswith("medfuse medmnist2manifest: error:") and str(bad) in err and err.count("\n") == 1


def test_missing_images_keys(tmp_path, capsys):
    path = tmp_path / "weird.npz"
    np.savez(path, train_x=np.zeros((2, 4, 4), np.uint8))
    assert main([str(path), "--out", str(tmp_path / "o")]) == 1
    assert "no '*_images' arrays (keys: train_x)" in capsys.readouterr().err


def test_download_offline_error(tmp_path, capsys):
    url = "http://127.0.0.1:9/pneumoniamnist.npz"  # closed local port: fails at once, like an offline machine
    rc = main(["--download", "pneumoniamnist", "--url", url, "--timeout", "2", "--out", str(tmp_path / "o")])
    assert rc == 1
    err = capsys.readouterr().err
    assert "could not download pneumoniamnist" in err and "download pneumoniamnist.npz by hand" in err
    assert "pass it as FILE" in err


def test_file_or_download_required(tmp_path, capsys):
    with pytest.raises(SystemExit) as e:
        main(["--out", str(tmp_path)])
    assert e.value.code == 2
    assert "either FILE" in capsys.readouterr().err


@pytest.mark.realdata
def test_pneumoniamnist_real(shared_data, tmp_path, capsys):
    npz = require(shared_data / "pneumoniamnist_trainval.npz")
    out = tmp_path / "pmnist"
    assert main([str(npz), "--out", str(out), "--no-progress"]) == 0
    text = capsys.readouterr().out
    assert "found 5232 = written 5232 + skipped 0" in text
    assert "8 byte-identical images" in text
    m = read_manifest(out / "manifest.json")
    for split, expected in (("training", [1214, 3494]), ("validation", [135, 389])):
        labels = [it["label"] for it in m[split]]
        assert [labels.count(0), labels.count(1)] == expected
    data = load_decathlon_datalist(str(out / "manifest.json"), is_segmentation=False, data_list_key="training")
    assert len(data) == 4708 and Path(data[0]["image"]).is_file()


def test_val_as_test(tmp_path, capsys):
    """--val-as-test: official val -> test, validation carved from train (per image, stratified, seeded)."""
    npz = write_npz(tmp_path / "pneumoniamnist.npz", n=(20, 6, 4))
    out = tmp_path / "out"
    args = [str(npz), "--out", str(out), "--val-as-test", "--val-fraction", "0.2"]
    assert main(args) == 0
    text = capsys.readouterr().out
    assert "found 26 = written 26 + skipped 0" in text and "official test split (4 images) is left out" in text
    m = read_manifest(out / "manifest.json")
    test, val, train = m["test"], m["validation"], m["training"]
    assert len(test) == 6 and {it["source_split"] for it in test} == {"val"}
    assert sorted(it["source_index"] for it in test) == list(range(6))
    assert len(train) + len(val) == 20 and {it["source_split"] for it in train + val} == {"train"}
    assert len(val) == 4 and sorted(it["label"] for it in val) == [0, 0, 1, 1]  # stratified by label
    assert not {it["source_index"] for it in train} & {it["source_index"] for it in val}
    assert not (out / "images" / "test").exists()
    # seeded: the same seed gives the same carve, another seed another one
    assert main(args + ["--out", str(tmp_path / "again")]) == 0
    assert read_manifest(tmp_path / "again" / "manifest.json")["validation"] == val
    assert main(args + ["--out", str(tmp_path / "s1"), "--seed", "1"]) == 0
    other = read_manifest(tmp_path / "s1" / "manifest.json")["validation"]
    assert {it["source_index"] for it in other} != {it["source_index"] for it in val}
    # without official val arrays there is nothing to turn into the test split
    capsys.readouterr()
    no_val = write_npz(tmp_path / "noval.npz", splits=("train", "test"), n=(6, 3))
    assert main([str(no_val), "--out", str(tmp_path / "o"), "--val-as-test"]) == 1
    err = capsys.readouterr().err
    assert "--val-as-test needs the official val_* arrays" in err and err.count("\n") == 1
