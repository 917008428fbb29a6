# Copyright (c) medfuse contributors
# Licensed under the Apache License, Version 2.0
"""``medfuse demo-data``: options, printed manifests and summaries, errors, the tools/ script."""

import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from medfuse.cli import main as cli_main
from medfuse.commands.demo_data import main, parse_size
from medfuse.data.manifest import read_manifest

REPO = Path(__file__).resolve().parents[2]


def test_writes_and_prints_manifests_and_summaries(tmp_path, capsys):
    out = tmp_path / "demo"
    rc = main([str(out), "--n-cxr", "8", "--n-oct", "8", "--size", "48", "--seed", "2"])
    assert rc == 0
    text = capsys.readouterr().out
    for name in ("cxr_manifest.json", "cxr_dicom_manifest.json", "oct_manifest.json", "oct_dicom_manifest.json"):
        assert str(out / name) in text
        read_manifest(out / name)
    assert "task: segmentation_classification" in text and "CNV" in text and "opacity" in text
    assert "training" in text and "total" in text
    m = read_manifest(out / "cxr_manifest.json")
    assert m["provenance"]["arguments"]["seed"] == 2 and m["provenance"]["arguments"]["n_cxr"] == 8
    first = m["training"][0]
    assert np.array(Image.open(out / first["image"])).shape == (48, 48)


def test_no_dicom_and_rectangular_size_through_the_cli(tmp_path, capsys):
    out = tmp_path / "demo"
    assert cli_main(["demo-data", str(out), "--n-cxr", "4", "--n-oct", "0", "--size", "64x48", "--no-dicom"]) == 0
    text = capsys.readouterr().out
    assert "cxr_manifest.json" in text and "oct_manifest.json" not in text and "dicom_manifest" not in text
    assert not list(out.rglob("*.dcm"))
    item = read_manifest(out / "cxr_manifest.json")["training"][0]
    assert np.array(Image.open(out / item["image"])).shape == (64, 48)


def test_same_options_same_images(tmp_path, capsys):
    a, b = tmp_path / "a", tmp_path / "b"
    for out in (a, b):
        assert main([str(out), "--n-cxr", "4", "--n-oct", "4", "--size", "40", "--dicom-fraction", "1"]) == 0
    files = sorted(p.relative_to(a) for p in a.rglob("*") if p.suffix in (".png", ".dcm"))
    assert files and all((a / f).read_bytes() == (b / f).read_bytes() for f in files)


@pytest.mark.parametrize(
    "args, message",
    [
        (["--size", "16"], "invalid size"),
        (["--size", "big"], "invalid size"),
        (["--n-cxr", "-3"], "invalid count"),
        (["--seed", "x"], "invalid seed"),
        (["--dicom-fraction", "2"], "invalid fraction"),
    ],
)
def test_bad_arguments_exit_2_with_a_fix(tmp_path, capsys, args, message):
    with pytest.raises(SystemExit) as e:
        main([str(tmp_path / "o")] + args)
    assert e.value.code == 2
    assert message in capsys.readouterr().err


def test_nothing_to_generate(tmp_path, capsys):
    assert main([str(tmp_path / "o"), "--n-cxr", "0", "--n-oct", "0"]) == 2
    assert "nothing to generate" in capsys.readouterr().err


def test_refuses_a_foreign_folder(tmp_path, capsys):
    (tmp_path / "notes.txt").write_text("keep me")
    assert main([str(tmp_path), "--n-cxr", "4", "--n-oct", "0"]) == 1
    err = capsys.readouterr().err
    assert err.startswith("medfuse demo-data: error:") and "new or empty folder" in err
    assert (tmp_path / "notes.txt").read_text() == "keep me"


def test_parse_size():
    assert parse_size("128") == 128
    assert parse_size("160x128") == (160, 128)


def test_tools_script_help():
    r = subprocess.run([sys.executable, str(REPO / "tools" / "make_demo_data.py"), "--help"],
                       capture_output=True, text=True, cwd=REPO, timeout=120)
    assert r.returncode == 0 and "--n-cxr" in r.stdout and "--no-dicom" in r.stdout
