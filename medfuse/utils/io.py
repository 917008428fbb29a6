# Copyright (c) medfuse contributors
# Licensed under the Apache License, Version 2.0
"""File helpers: atomic writes (temp file + rename) and content hashes."""

from __future__ import annotations

import csv
import hashlib
import io
import json
import os
import re
import tempfile
from pathlib import Path
from typing import Any, Iterable, Mapping, Sequence

__all__ = ["escape_surrogates", "atomic_write_bytes", "atomic_write_text", "atomic_write_json", "atomic_write_csv", "sha256_file"]


_SURROGATE = re.compile("[\ud800-\udfff]")


def escape_surrogates(text: str) -> str:
    """``text`` with every lone surrogate written as the six characters ``\\udcXX``.

    A file name that is not valid UTF-8 reaches Python with its bad bytes as lone surrogates
    (``os.fsdecode``'s ``surrogateescape``); they cannot be encoded as UTF-8. In JSON the escape is the
    JSON escape of the same character, so reading the file back gives the exact name again (and
    ``open()`` finds the file); in CSV and printed text it is the same readable escape.
    """
    return _SURROGATE.sub(lambda m: f"\\u{ord(m.group()):04x}", text)


def atomic_write_bytes(path: str | os.PathLike, data: bytes, mode: int | None = None) -> Path:
    """Write ``data`` to ``path`` so that readers see either the old file or the new one.

    The bytes go to a temporary file in the same folder, are flushed to disk, and the
    temporary file is renamed over ``path`` (an atomic operation on POSIX file systems).
    ``mode`` (e.g. ``0o600`` for files holding personal data) is set before the rename; by default the
    usual permissions (``0o666`` less the umask).
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        # mkstemp creates 0600 files; give the result the usual permissions unless told otherwise.
        if mode is None:
            umask = os.umask(0)
            os.umask(umask)
            mode = 0o666 & ~umask
        os.chmod(tmp, mode)
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise
    return path


def atomic_write_text(path: str | os.PathLike, text: str, mode: int | None = None) -> Path:
    """Atomically write UTF-8 ``text`` to ``path`` (lone surrogates escaped, :func:`escape_surrogates`)."""
    return atomic_write_bytes(path, escape_surrogates(text).encode("utf-8"), mode)


def atomic_write_json(path: str | os.PathLike, obj: Any, indent: int = 4, mode: int | None = None) -> Path:
    """Atomically write ``obj`` as JSON (4-space indent, as the MONAI model zoo wants)."""
    return atomic_write_text(path, json.dumps(obj, indent=indent, ensure_ascii=False) + "\n", mode)


def atomic_write_csv(path: str | os.PathLike, rows: Iterable[Mapping[str, Any]], fieldnames: Sequence[str],
                     extrasaction: str = "raise") -> Path:
    """Atomically write ``rows`` as a CSV with a header (``\\n`` line ends; ``None`` and missing values empty).

    ``extrasaction="ignore"`` drops keys that are not in ``fieldnames`` (``"raise"``: a ValueError).
    """
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=list(fieldnames), restval="", extrasaction=extrasaction, lineterminator="\n")
    writer.writeheader()
    writer.writerows(rows)
    return atomic_write_text(path, buf.getvalue())


def sha256_file(path: str | os.PathLike, chunk_size: int = 1 << 20) -> str:
    """Hex SHA-256 of the bytes of the file at ``path``."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(chunk_size), b""):
            h.update(chunk)
    return h.hexdigest()
