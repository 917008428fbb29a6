# Copyright (c) medfuse contributors
# Licensed under the Apache License, Version 2.0
import json
import subprocess
import sys
from pathlib import Path

import pytest

from medfuse.cli import COMMANDS, main
from medfuse.data.manifest import make_provenance, new_manifest, write_manifest


def test_help_lists_every_command(capsys):
    assert main(["--help"]) == 0
    out = capsys.readouterr().out
    for name in COMMANDS:
        assert name in out
    assert "unavailable" not in out  # every command module imports


def test_no_arguments_prints_help_and_fails(capsys):
    assert main([]) == 2
    assert "commands:" in capsys.readouterr().out


def test_unknown_command_suggests(capsys):
    assert main(["folder2manfest"]) == 2
    assert "did you mean 'folder2manifest'" in capsys.readouterr().err


@pytest.mark.parametrize("name", sorted(COMMANDS))
def test_each_command_has_help(name, capsys):
    with pytest.raises(SystemExit) as e:
        main([name, "--help"])
    assert e.value.code == 0
    assert "usage:" in capsys.readouterr().out


def _manifest(tmp_path):
    (tmp_path / "a.png").write_bytes(b"a")
    m = new_manifest("classification", ["n", "p"], make_provenance("t"), training=[{"image": "a.png", "label": 1, "patient_id": "1"}])
    return write_manifest(m, tmp_path / "m.json")


def test_validate_and_summary(tmp_path, capsys):
    path = _manifest(tmp_path)
    assert main(["validate", str(path)]) == 0
    assert "valid (1 items" in capsys.readouterr().out
    assert main(["summary", str(path), "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["splits"]["training"]["per_class"] == {"n": 0, "p": 1}


def test_validate_lists_all_problems(tmp_path, capsys):
    path = _manifest(tmp_path)
    raw = json.loads(path.read_text())
    raw["training"].append({"image": "missing.png", "label": 9})
    path.write_text(json.dumps(raw))
    assert main(["validate", str(path)]) == 1
    err = capsys.readouterr().err
    assert "2 problems" in err and "missing.png" in err and "outside classes" in err


def test_missing_manifest_is_one_line_error(tmp_path, capsys):
    assert main(["summary", str(tmp_path / "none.json")]) == 1
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and "none.json" in err and err.startswith("medfuse summary: error:")


def test_console_script_runs():
    out = subprocess.run([sys.executable, "-m", "medfuse.cli", "--version"], capture_output=True, text=True, check=True)
    assert out.stdout.startswith("medfuse ")


_TOOLS = sorted(p for p in (Path(__file__).resolve().parents[1] / "tools").glob("*.py") if not p.name.startswith("_"))


@pytest.mark.parametrize("script", _TOOLS, ids=[p.stem for p in _TOOLS])
def test_every_tools_script_runs_its_command(script):
    """Each tools/ script is a thin wrapper: ``--help`` prints the usage of a registered medfuse command."""
    r = subprocess.run([sys.executable, str(script), "--help"], capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr
    usage = r.stdout.split("\n", 1)[0]
    assert usage.startswith("usage: medfuse ") and usage.split()[2] in COMMANDS, usage
