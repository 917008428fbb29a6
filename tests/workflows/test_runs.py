# Copyright (c) medfuse contributors
# Licensed under the Apache License, Version 2.0
"""Run folders, checkpoint lookup and the executed-config record."""

from __future__ import annotations

import json
import os
import re
import time

import pytest
from monai.bundle import ConfigParser, ConfigWorkflow

from medfuse.workflows import (
    find_active_parser,
    find_checkpoint,
    find_run_dir,
    latest_run,
    make_run_name,
    new_run_dir,
    read_run_info,
    save_executed_config,
)


def test_run_names_and_folders(tmp_path):
    assert re.fullmatch(r"\d{8}-\d{6}", make_run_name())
    assert make_run_name("b4").endswith("-b4")
    first = new_run_dir(tmp_path / "runs")
    second = new_run_dir(tmp_path / "runs")  # same second, no active parser: a new folder
    assert os.path.isdir(first) and os.path.isdir(second) and first != second
    named = new_run_dir(tmp_path / "runs", run_name="exp1")
    assert named == str(tmp_path / "runs" / "exp1") and os.path.isdir(named)


def test_latest_run_and_checkpoint(tmp_path):
    out = tmp_path / "runs"
    assert latest_run(out) is None
    with pytest.raises(FileNotFoundError, match="no trained model"):
        find_checkpoint(find_run_dir(out), bundle_root=tmp_path)
    a, b = out / "20250101-000000", out / "20250102-000000"
    for d in (a, b):
        d.mkdir(parents=True, exist_ok=True)
        (d / "model.pt").write_bytes(b"x")
    os.utime(a / "model.pt", (time.time() + 10, time.time() + 10))  # a was written last
    assert latest_run(out) == a
    assert find_run_dir(out) == str(a)
    assert find_run_dir(out, "20250102-000000") == str(b)
    with pytest.raises(FileNotFoundError, match="does not exist"):
        find_run_dir(out, "nope", create=False)
    assert find_checkpoint(a) == str(a / "model.pt")
    (tmp_path / "models").mkdir()
    (tmp_path / "models" / "model.pt").write_bytes(b"y")
    assert find_checkpoint(tmp_path / "empty", bundle_root=tmp_path) == str(tmp_path / "models" / "model.pt")


def test_save_executed_config_needs_a_parser(tmp_path):
    assert find_active_parser() is None
    with pytest.raises(RuntimeError, match="no active"):
        save_executed_config(tmp_path)
    parser = ConfigParser({"a": 1, "b": "$@a + 1"})
    path = save_executed_config(tmp_path, info={"x": (1, 2)}, parser=parser)
    assert json.loads(open(path).read()) == {"a": 1, "b": "$@a + 1"}
    assert read_run_info(tmp_path)["x"] == [1, 2]


def _write_config(tmp_path):
    cfg = {
        "imports": ["$import medfuse", "$import medfuse.workflows"],
        "epochs": 5,
        "output_dir": str(tmp_path / "runs"),
        "run_name": "",
        "run_dir": "$medfuse.workflows.new_run_dir(@output_dir, @run_name)",
        "initialize": ["$medfuse.workflows.save_executed_config(@run_dir, info={'epochs': @epochs})"],
        "run": ["$print(@run_dir)"],
    }
    path = tmp_path / "configs" / "train.json"
    path.parent.mkdir()
    path.write_text(json.dumps(cfg))
    return path


def test_executed_config_captures_overrides(tmp_path):
    cfg = _write_config(tmp_path)
    wf = ConfigWorkflow(config_file=str(cfg), logging_file=False, workflow_type=None, epochs=2, extra_key={"k": [1, 2]})
    wf.initialize()
    run_dir = wf.parser.get_parsed_content("run_dir")
    wf.run()
    # the same folder is resolved again within this parse, not a new timestamp
    assert wf.parser.get_parsed_content("run_dir") == run_dir
    saved = json.loads(open(os.path.join(run_dir, "config.json")).read())
    assert saved["epochs"] == 2 and saved["extra_key"] == {"k": [1, 2]}
    assert saved["run_dir"] == "$medfuse.workflows.new_run_dir(@output_dir, @run_name)"
    info = read_run_info(run_dir)
    assert info["epochs"] == 2 and info["versions"]["monai"]
    # the saved file runs again as it is
    again = ConfigParser()
    again.read_config(os.path.join(run_dir, "config.json"))
    assert again.get_parsed_content("epochs") == 2


def test_run_setting_reads_the_executed_config(tmp_path):
    from medfuse.workflows import run_setting

    (tmp_path / "config.json").write_text(json.dumps({"hidden_size": 16, "width": "$@hidden_size * 2"}))
    assert run_setting(tmp_path, "hidden_size", 256) == 16
    assert run_setting(tmp_path, "width") == 32  # expressions evaluated as in training
    assert run_setting(tmp_path, "missing", "dflt") == "dflt"
    assert run_setting(tmp_path / "no_run", "hidden_size", 256) == 256


def test_each_workflow_gets_its_own_run_folder(tmp_path):
    import gc

    cfg = _write_config(tmp_path)
    seen = set()
    for _ in range(3):  # same second, parsers garbage-collected in between
        wf = ConfigWorkflow(config_file=str(cfg), logging_file=False, workflow_type=None)
        wf.initialize()
        seen.add(wf.parser.get_parsed_content("run_dir"))
        del wf
        gc.collect()
    assert len(seen) == 3 and all(os.path.isdir(d) for d in seen)
