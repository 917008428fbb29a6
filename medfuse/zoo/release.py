# Copyright (c) medfuse contributors
# Licensed under the Apache License, Version 2.0
"""Release pieces of :func:`medfuse.zoo.export.export_bundle`: download URLs, ``large_files.yml``,
the training-manifest record, the release notes in ``docs/README.md`` and the archive."""

from __future__ import annotations

import json
import os
import tempfile
import zipfile
from pathlib import Path
from typing import Any, Mapping, Sequence

from medfuse.utils.io import atomic_write_text, sha256_file
from medfuse.zoo import checks
from medfuse.zoo.roundtrip import ATOL, RTOL

_ZIP_TIME = (2020, 1, 1, 0, 0, 0)  # fixed, so the same bundle gives the same archive and checksum


def _write_zip(stage: Path, name: str, dest: Path) -> dict[str, str]:
    """Write every file of ``stage`` into ``dest`` under ``name/``; return ``{relative path: sha256}`` of each, so
    the index can check every file of the bundle (configs included) when it is unpacked."""
    from medfuse.utils.io import sha256_file

    digests: dict[str, str] = {}
    dest.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{dest.name}.", suffix=".tmp", dir=dest.parent)
    os.close(fd)
    try:
        with zipfile.ZipFile(tmp, "w", compression=zipfile.ZIP_DEFLATED) as zf:
            for path in sorted(p for p in stage.rglob("*") if p.is_file()):
                info = zipfile.ZipInfo(f"{name}/{path.relative_to(stage).as_posix()}", date_time=_ZIP_TIME)
                info.compress_type = zipfile.ZIP_DEFLATED
                info.external_attr = 0o644 << 16
                zf.writestr(info, path.read_bytes())
                digests[path.relative_to(stage).as_posix()] = sha256_file(path)
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(tmp, 0o666 & ~umask)  # mkstemp makes 0600 files; an archive is for sharing
        os.replace(tmp, dest)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise
    return digests


def _large_files_yaml(entries: Sequence[Mapping[str, str]], note: str) -> str:
    import yaml

    body = yaml.safe_dump({"large_files": [dict(e) for e in entries]}, sort_keys=False, default_flow_style=False)
    return "".join(f"# {line}\n" for line in note.splitlines()) + body


def _manifest_record(run_info: Mapping[str, Any]) -> dict | None:
    path = run_info.get("manifest")
    if not path or not Path(path).is_file():
        return None
    try:
        with open(path, encoding="utf-8") as f:
            manifest = json.load(f)
    except (OSError, json.JSONDecodeError):
        return None
    from medfuse.data.manifest import SPLITS

    return {
        "file": Path(path).name,
        "sha256": sha256_file(path),
        "tool": (manifest.get("provenance") or {}).get("tool"),
        "items": {s: len(manifest[s]) for s in SPLITS if isinstance(manifest.get(s), list)},
    }


def _url(template: str, zoo: Path, name: str, version: str, path: str) -> str:
    """A large file's URL from ``template``: ``{name} {version} {file} {path}`` (and ``{zoo_uri}``, the zoo folder)."""
    return template.format(zoo_uri=zoo.resolve().as_uri(), name=name, version=version, file=Path(path).name, path=path)


def _append_release_notes(readme: Path, name: str, version: str, meta: Mapping[str, Any], settings: Mapping[str, Any],
                          classes: list[str] | None, files: Mapping[str, str], diff: float, sub_diff: float, trace: bool,
                          calibrated: bool) -> None:
    """Add a "Release" section to the exported model card: what these weights are and how to run them."""
    lines = [
        "", f"## Release {version} (exported by medfuse export)", "",
        f"Changelog: {(meta.get('changelog') or {}).get(version, '')}", "",
        f"Training data: {meta.get('data_source', '')}", "",
        f"Data licence: {meta.get('data_license', '')}"
        + (" **Non-commercial: these weights must not be used commercially.**" if checks.is_non_commercial(meta.get("data_license", "")) else ""),
        "",
        f"Classes (output order): {', '.join(classes) if classes else 'see metadata.json'}.",
        f"Network settings of these weights (already written into the configs): {json.dumps(dict(settings)) if settings else 'the configs as they are'}.",
        "",
        "Files: " + ", ".join(f"`{p}` (sha256 `{h}`)" for p, h in files.items()) + "."
        + (" `models/calibration.json` holds the temperature and operating threshold of the training run." if calibrated else ""),
        "",
        f"`models/model.ts` was exported with `monai.bundle ckpt_export` ({'torch.jit.trace' if trace else 'torch.jit.script'}); "
        f"on a seeded random batch it matched the checkpoint to a largest absolute difference of {diff:.3g} "
        f"(and {sub_diff:.3g} when loaded with `torch.jit.load` in a process without medfuse; tolerance "
        f"rtol={RTOL}, atol={ATOL}). It runs with PyTorch alone.",
        "",
        "The configs import medfuse from the copy in `scripts/medfuse` (see Additional Usage Steps); from inside "
        "the bundle folder, after installing the pinned packages:",
        "",
        "```bash",
        f"cd {name}",
        "python -m monai.bundle run --config_file configs/inference.json --input_dir <folder of DICOM/PNG/JPEG> \\",
        "    --output_dir <results folder>",
        "```",
        "",
    ]
    text = readme.read_text(encoding="utf-8") if readme.is_file() else f"# {name}\n"
    atomic_write_text(readme, text.rstrip("\n") + "\n" + "\n".join(lines))
