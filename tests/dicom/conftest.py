# Copyright (c) medfuse contributors
# Licensed under the Apache License, Version 2.0
"""Fixtures of the dicom2manifest tests: the messy hospital-export folder, built once per session."""

from __future__ import annotations

import pytest

from medfuse.utils.paths import shared_data_dir

from .helpers import build_messy_folder


@pytest.fixture(scope="session")
def messy(tmp_path_factory):
    """``(root, expected)``: the messy folder and the expected reason of every file (None = included)."""
    root = tmp_path_factory.mktemp("messy") / "export"
    expected = build_messy_folder(root, shared_data_dir())
    return root, expected


@pytest.fixture(scope="session")
def messy_run(messy, tmp_path_factory):
    """One CLI run over the messy folder: ``(root, expected, out_json, manifest, report, stdout)``."""
    import contextlib
    import io
    import json

    from medfuse.commands.dicom2manifest import main

    root, expected = messy
    out = tmp_path_factory.mktemp("messy_out") / "m.json"
    buf = io.StringIO()
    with contextlib.redirect_stdout(buf):
        rc = main([str(root), "--out", str(out), "--classes", "normal,abnormal", "--workers", "2", "--no-progress"])
    assert rc == 0
    manifest = json.loads(out.read_text())
    report = json.loads(out.with_name("m.report.json").read_text())
    return root, expected, out, manifest, report, buf.getvalue()
