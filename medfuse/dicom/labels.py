# Copyright (c) medfuse contributors
# Licensed under the Apache License, Version 2.0
"""Labels for scanned DICOM files: a CSV keyed by a DICOM identifier, or a folder level.

The CSV must have a column named like the key (``PatientID``, ``StudyInstanceUID``,
``AccessionNumber``, ``SeriesInstanceUID`` or ``SOPInstanceUID``; case, spaces and
underscores are ignored) and the label column. Patient ids and accession numbers are matched
through their keyed hashes, so the scan records never hold the raw values.
"""

from __future__ import annotations

import csv
import os
from pathlib import Path
from typing import Any, Mapping

from medfuse.dicom.deid import keyed_hash
from medfuse.errors import DataError

__all__ = ["LABEL_KEYS", "LabelTable", "read_label_csv", "folder_label"]

#: ``--label-key`` choice -> (record field, hashed?)
LABEL_KEYS: dict[str, tuple[str, bool]] = {
    "PatientID": ("patient_key", True),
    "AccessionNumber": ("accession_key", True),
    "StudyInstanceUID": ("study_uid", False),
    "SeriesInstanceUID": ("series_uid", False),
    "SOPInstanceUID": ("sop_uid", False),
}


def _norm(name: str) -> str:
    return "".join(ch for ch in name.lower() if ch.isalnum())


class LabelTable:
    """Labels by key, read from a CSV; ``lookup(record)`` gives the label string or ``None``."""

    def __init__(self, path: str, key: str, column: str, labels: dict[str, str], rows: int):
        self.path, self.key, self.column = path, key, column
        self.field, _ = LABEL_KEYS[key]
        self.labels = labels
        self.rows = rows
        self.used: set[str] = set()

    def lookup(self, record: Mapping[str, Any]) -> str | None:
        """Label of a scan record, or ``None`` when its key has no row (or an empty label)."""
        value = record.get(self.field)
        if not value:
            return None
        label = self.labels.get(str(value))
        if label is not None:
            self.used.add(str(value))
        return label

    @property
    def unused(self) -> int:
        """CSV keys that matched no included or excluded file looked up so far."""
        return len(set(self.labels) - self.used)


def read_label_csv(path: str | os.PathLike, key: str, column: str, salt: bytes) -> LabelTable:
    """Read the label CSV.

    Raises:
        DataError: the file is missing, has no header, lacks the key or label column, or gives
            one key two different labels.
    """
    if key not in LABEL_KEYS:
        raise DataError(f"--label-key {key!r} is not one of {list(LABEL_KEYS)}")
    path = Path(path)
    if not path.is_file():
        raise DataError(f"{path}: label CSV not found; check the --labels path")
    field, hashed = LABEL_KEYS[key]
    try:
        with open(path, newline="", encoding="utf-8-sig") as f:
            sample = f.read(4096)
            f.seek(0)
            try:
                dialect = csv.Sniffer().sniff(sample, delimiters=",;\t")
            except csv.Error:
                dialect = csv.excel
            reader = csv.DictReader(f, dialect=dialect)
            header = reader.fieldnames or []
            by_norm = {_norm(h): h for h in header if h}
            key_col = by_norm.get(_norm(key))
            label_col = column if column in header else by_norm.get(_norm(column))
            if key_col is None or label_col is None:
                missing = [n for n, c in ((key, key_col), (column, label_col)) if c is None]
                raise DataError(
                    f"{path}: no column {' or '.join(repr(m) for m in missing)} (columns: {header}); "
                    "rename the CSV columns or pass --label-key / --label-column"
                )
            labels: dict[str, str] = {}
            rows = 0
            for line, row in enumerate(reader, start=2):
                rows += 1
                raw_key = (row.get(key_col) or "").strip()
                label = (row.get(label_col) or "").strip()
                if not raw_key or not label:
                    continue
                k = keyed_hash(salt, raw_key) if hashed else raw_key
                if k in labels and labels[k] != label:
                    raise DataError(
                        f"{path}: line {line}: {key} {raw_key!r} has label {label!r} but an earlier row says "
                        f"{labels[k]!r}; give each {key} one label"
                    )
                labels[k] = label
    except UnicodeDecodeError as e:
        raise DataError(f"{path}: not a UTF-8 text CSV ({e}); save it as UTF-8 CSV") from e
    return LabelTable(str(path), key, label_col, labels, rows)


def folder_label(rel_path: str, depth: int) -> str | None:
    """The name of the folder ``depth`` levels below the input folder that holds ``rel_path`` (1 = top level)."""
    parts = rel_path.split("/")
    if depth < 1 or len(parts) <= depth:
        return None
    return parts[depth - 1]
