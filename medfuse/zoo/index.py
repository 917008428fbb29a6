# Copyright (c) medfuse contributors
# Licensed under the Apache License, Version 2.0
"""The local zoo index ``ZOO_DIR/model_info.json`` and fetching a bundle from it.

The index follows the MONAI model zoo's ``model_info.json``: one entry per release, keyed
``<name>_v<version>``, with the archive's ``checksum`` and ``source`` (here a path relative to
the zoo folder), plus what medfuse records (versions, file hashes, data licence, round trip).
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
import zipfile
from pathlib import Path
from typing import Any, Mapping

from medfuse.errors import DataError
from medfuse.utils.io import atomic_write_json, sha256_file

__all__ = ["read_model_info", "update_model_info", "list_bundles", "find_release", "get_bundle"]

MODEL_INFO = "model_info.json"


def read_model_info(zoo_dir: str | os.PathLike) -> dict[str, dict]:
    """The zoo's index (empty when the zoo has none yet).

    Raises:
        DataError: when the index is not valid JSON.
    """
    path = Path(zoo_dir) / MODEL_INFO
    if not path.is_file():
        return {}
    try:
        with open(path, encoding="utf-8") as f:
            info = json.load(f)
    except json.JSONDecodeError as e:
        raise DataError(f"{path}: not valid JSON ({e.msg} at line {e.lineno}); restore it or export again into a new zoo folder") from e
    if not isinstance(info, dict):
        raise DataError(f"{path}: expected an object of '<name>_v<version>' entries")
    return info


def update_model_info(zoo_dir: str | os.PathLike, key: str, entry: Mapping[str, Any]) -> Path:
    """Add or replace ``key`` in the index, written atomically (temp file + rename); returns its path."""
    info = read_model_info(zoo_dir)
    info[key] = dict(entry)
    info = dict(sorted(info.items()))
    return atomic_write_json(Path(zoo_dir) / MODEL_INFO, info)


def _version_key(v: str) -> tuple:
    try:
        return tuple(int(x) for x in str(v).split("."))
    except ValueError:
        return (-1,)


def list_bundles(zoo_dir: str | os.PathLike) -> list[dict]:
    """One row per bundle name: ``name``, ``latest``, ``versions`` (oldest first), ``task``, ``data_license``."""
    rows: dict[str, dict] = {}
    info = read_model_info(zoo_dir)
    for entry in info.values():
        name = entry.get("name")
        if not name:
            continue
        row = rows.setdefault(name, {"name": name, "versions": []})
        row["versions"].append(entry.get("version"))
    for name, row in rows.items():
        row["versions"].sort(key=_version_key)
        row["latest"] = row["versions"][-1]
        latest = info.get(f"{name}_v{row['latest']}", {})
        row["task"] = latest.get("task", "")
        row["data_license"] = latest.get("data_license", "")
        row["non_commercial"] = bool(latest.get("non_commercial"))
    return [rows[n] for n in sorted(rows)]


def find_release(zoo_dir: str | os.PathLike, name: str, version: str | None = None) -> tuple[str, dict]:
    """``(key, entry)`` of ``name`` at ``version`` (default: its newest version).

    Raises:
        DataError: naming the bundles or versions the zoo has.
    """
    info = read_model_info(zoo_dir)
    versions = sorted((e.get("version") for e in info.values() if e.get("name") == name), key=_version_key)
    if not versions:
        names = sorted({e.get("name") for e in info.values() if e.get("name")})
        raise DataError(
            f"{Path(zoo_dir) / MODEL_INFO}: no bundle named '{name}'"
            + (f"; the zoo has {', '.join(names)}" if names else "; the zoo is empty (medfuse export BUNDLE --out ZOO)")
        )
    version = version or versions[-1]
    key = f"{name}_v{version}"
    if key not in info:
        raise DataError(f"{Path(zoo_dir) / MODEL_INFO}: {name} has no version {version}; it has {', '.join(versions)}")
    return key, info[key]


def get_bundle(zoo_dir: str | os.PathLike, name: str, out_dir: str | os.PathLike, version: str | None = None,
               force: bool = False) -> Path:
    """Unpack ``name`` (newest, or ``version``) from the local zoo into ``<out_dir>/<name>``.

    The archive's SHA-256 is checked against the index, and every file the index lists against its recorded
    SHA-256 (releases exported since ``files_complete``: every file of the bundle, configs included, and no
    other file may be in the archive). The archive is unpacked into a temporary folder and verified there;
    only then is it swapped in for an existing bundle (``force``), so a refused archive changes nothing. The result is a bundle
    folder that ``monai.bundle.load(name, bundle_dir=out_dir)`` and
    ``python -m monai.bundle run --config_file <out_dir>/<name>/configs/inference.json`` use.

    Raises:
        DataError: unknown bundle or version, missing or corrupt archive, existing target without ``force``.
    """
    zoo = Path(zoo_dir)
    key, entry = find_release(zoo, name, version)
    archive = zoo / entry.get("source", f"releases/{key}.zip")
    if not archive.is_file():
        raise DataError(f"{archive}: the release archive of {key} listed in {zoo / MODEL_INFO} is missing; export it again")
    digest = sha256_file(archive)
    if entry.get("checksum") and digest != entry["checksum"]:
        raise DataError(f"{archive}: SHA-256 {digest} differs from {entry['checksum']} in {zoo / MODEL_INFO}; the archive is corrupt or was replaced")
    out = Path(out_dir)
    target = out / name
    if target.exists() and not force:
        raise DataError(f"{target} exists already; remove it, choose another --out, or pass --force to replace it")
    out.mkdir(parents=True, exist_ok=True)
    # unpack and verify everything in a temporary folder beside the target, then swap it in: a refused archive
    # leaves the existing bundle as it was and nothing half-unpacked
    tmp = Path(tempfile.mkdtemp(prefix=f".{name}.unpack-", dir=out))
    try:
        _unpack_verified(archive, tmp, name, entry, zoo / MODEL_INFO)
        old = tmp / "previous"
        if target.exists():
            os.replace(target, old)
        os.replace(tmp / name, target)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return target


def _unpack_verified(archive: Path, tmp: Path, name: str, entry: Mapping[str, Any], info: Path) -> None:
    """Extract ``archive`` into ``tmp`` and check every file against the index entry (see :func:`get_bundle`)."""
    root = tmp.resolve()
    with zipfile.ZipFile(archive) as zf:
        for member in zf.namelist():
            dest = (root / member).resolve()
            if not str(dest).startswith(str(root / name) + os.sep):
                raise DataError(f"{archive}: member '{member}' would unpack outside {name}/; the archive is not a medfuse release")
        zf.extractall(root)
    listed = dict(entry.get("files") or {})
    for rel, expected in listed.items():
        path = root / name / rel
        if not path.is_file() or sha256_file(path) != expected:
            raise DataError(f"{archive}: {rel} is missing or its SHA-256 differs from {info}; the release is damaged "
                            "(the bundle already there, if any, is left as it was)")
    if entry.get("files_complete"):
        extra = sorted(p.relative_to(root / name).as_posix() for p in (root / name).rglob("*")
                       if p.is_file() and p.relative_to(root / name).as_posix() not in listed)
        if extra:
            raise DataError(f"{archive}: {extra[0]} is not among the files {info} lists for this release; the archive "
                            "was changed after export (the bundle already there, if any, is left as it was)")
