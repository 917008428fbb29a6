# Copyright (c) medfuse contributors
# Licensed under the Apache License, Version 2.0
"""medfuse.utils.io: atomic CSV writes."""

import csv

import pytest

from medfuse.utils.io import atomic_write_csv


def test_atomic_write_csv_header_empty_values_and_extras(tmp_path):
    path = tmp_path / "sub" / "t.csv"
    rows = [{"a": 1, "b": None}, {"a": "x,y"}]
    assert atomic_write_csv(path, rows, ["a", "b"]) == path
    assert path.read_bytes() == b'a,b\n1,\n"x,y",\n'
    assert list(csv.DictReader(open(path))) == [{"a": "1", "b": ""}, {"a": "x,y", "b": ""}]
    with pytest.raises(ValueError):
        atomic_write_csv(path, [{"a": 1, "c": 2}], ["a"])
    assert path.read_bytes() == b'a,b\n1,\n"x,y",\n'  # a failed write leaves the old file
    atomic_write_csv(path, [{"a": 1, "c": 2}], ["a"], extrasaction="ignore")
    assert path.read_text() == "a\n1\n"
    assert [p.name for p in path.parent.iterdir()] == ["t.csv"]  # no temporary file left behind
