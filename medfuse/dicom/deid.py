# Copyright (c) medfuse contributors
# Licensed under the Apache License, Version 2.0
"""Pseudonyms for the DICOM scanner: salted keyed hashes, the salt file, names in paths.

Patient ids and accession numbers never reach the manifest, the report or the scan state:
they are replaced by HMAC-SHA-256 digests keyed by a salt. The salt is random (32 bytes from
:func:`secrets.token_hex`), created on the first run and kept beside the manifest as
``OUT.salt``, readable by its owner only, so later runs and ``--update`` produce the same
pseudonyms while someone holding only the manifest cannot recompute them from a guessed id.
"""

from __future__ import annotations

import hashlib
import hmac
import os
import re
import secrets
from pathlib import Path

from medfuse.errors import DataError

__all__ = ["keyed_hash", "pseudonym", "load_or_create_salt", "salt_fingerprint", "phi_tokens", "path_mentions"]

_TOKEN_SPLIT = re.compile(r"[^0-9a-z]+")


def keyed_hash(salt: bytes, value: str) -> str:
    """Hex HMAC-SHA-256 of ``value`` (stripped) keyed by ``salt``."""
    return hmac.new(salt, value.strip().encode("utf-8"), hashlib.sha256).hexdigest()


def pseudonym(key: str, prefix: str = "P", length: int = 16) -> str:
    """Short pseudonym from a keyed hash: ``prefix`` + the first ``length`` hex digits."""
    return f"{prefix}{key[:length]}"


def salt_fingerprint(salt: bytes) -> str:
    """A value that changes when the salt changes (stored with the scan state), not the salt itself."""
    return keyed_hash(salt, "medfuse-salt-fingerprint")[:16]


def load_or_create_salt(path: str | os.PathLike, given: str | None = None) -> tuple[bytes, str]:
    """The salt: ``given`` (``--salt``), else the content of ``path``, else a new random one saved there.

    Returns:
        ``(salt bytes, where it came from)``; where is ``"--salt"``, ``"read <path>"`` or ``"created <path>"``.

    Raises:
        DataError: the salt file exists but is empty or unreadable.
    """
    if given is not None:
        if not given:
            raise DataError("--salt is empty; give a non-empty secret or leave --salt out to use a random salt file")
        return given.encode("utf-8"), "--salt"
    path = Path(path)
    if path.exists():
        try:
            text = path.read_text(encoding="utf-8").strip()
        except OSError as e:
            raise DataError(f"{path}: cannot read the salt file ({e.strerror}); fix its permissions") from e
        if not text:
            raise DataError(f"{path}: the salt file is empty; delete it (new pseudonyms) or restore it from a backup")
        return text.encode("utf-8"), f"read {path}"
    path.parent.mkdir(parents=True, exist_ok=True)
    text = secrets.token_hex(32)
    # created readable by the owner only, without a window where it is world-readable
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w", encoding="utf-8") as f:
        f.write(text + "\n")
    return text.encode("utf-8"), f"created {path}"


def phi_tokens(patient_name: str, patient_id: str, accession: str) -> set[str]:
    """Lower-case tokens that would identify the patient if they appeared in a file path.

    Name components of 3+ letters, and the patient id and accession number when they have 4+
    characters.
    """
    tokens = {t for t in _TOKEN_SPLIT.split(patient_name.lower()) if len(t) >= 3 and not t.isdigit()}
    for value in (patient_id, accession):
        v = value.strip().lower()
        if len(v) >= 4:
            tokens.add(v)
    return tokens


def path_mentions(rel_path: str, tokens: set[str]) -> bool:
    """True when a path component (or a word of one) equals a token, or a long id occurs in it."""
    low = rel_path.lower()
    words = set(_TOKEN_SPLIT.split(low))
    for t in tokens:
        if t in words:
            return True
        if len(t) >= 6 and t in low:
            return True
    return False
