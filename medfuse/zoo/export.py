# Copyright (c) medfuse contributors
# Licensed under the Apache License, Version 2.0
"""Export a trained medfuse bundle to a model zoo folder, checked the way the MONAI model zoo checks it.

:func:`export_bundle` copies the bundle into a staging folder, writes the trained run's
settings into its configs (:mod:`medfuse.zoo.configs`) and the release facts into its
metadata (version, changelog, data source and licence, package versions, classes), runs the
zoo's checks (:mod:`medfuse.zoo.checks`), exports TorchScript with ``monai.bundle.ckpt_export``
and checks the round trip, then writes::

    ZOO_DIR/<name>/                         the bundle as the zoo wants it: no weights inside,
                                            large_files.yml lists them with URL and SHA-256
    ZOO_DIR/releases/<name>_v<version>.zip  <name>/ with models/model.pt and models/model.ts
    ZOO_DIR/files/<name>_v<version>/models/ the weights behind the default file:// URLs
                                            (not written when --url-template is given)
    ZOO_DIR/model_info.json                 "<name>_v<version>": checksum, source, versions ...

Nothing is written to ZOO_DIR unless every check passes.

Round-trip tolerance: the TorchScript module and the eager network (weights loaded, eval
mode) get the same seeded random batch of two inputs of the metadata's shape; their outputs
must agree within ``rtol=1e-4, atol=1e-5`` (float32; the scripted graph may fuse or reorder
operations). The same comparison is repeated in a fresh Python process that loads the file
with ``torch.jit.load`` and must not import medfuse.

Module layout: this module holds :func:`export_bundle`, its steps (:class:`_Export`: stage,
configs, checks, weights, docs, archive, index) and the metadata and config helpers (bundle
configs are read in one place, :func:`_read_bundle_configs`); :mod:`medfuse.zoo.roundtrip`
exports TorchScript / ONNX and checks the round trip; :mod:`medfuse.zoo.release` writes the
release pieces (URLs, ``large_files.yml``, release notes, archive).
"""

from __future__ import annotations

import contextlib
import datetime as _dt
import json
import os
import re
import shutil
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping, Sequence

from medfuse.errors import DataError
from medfuse.utils.io import atomic_write_text, sha256_file
from medfuse.workflows.bundle import ACCEPTS_KEY, BASE_KEY, bundle_metadata_value, flatten_configs
from medfuse.workflows.checkpoints import load_weights
from medfuse.zoo import checks
from medfuse.zoo.checks import ZooCheckError
from medfuse.zoo.configs import bake_config, is_literal, run_setting_keys
from medfuse.zoo.model_card import write_data_license, write_model_card
from medfuse.zoo.release import _append_release_notes, _large_files_yaml, _manifest_record, _url, _write_zip
from medfuse.zoo.formats import FormatCheck, export_onnx, export_pt2, parse_formats, require_onnx
from medfuse.zoo.roundtrip import ATOL, RTOL, _export_torchscript

__all__ = ["ExportResult", "RTOL", "ATOL", "export_bundle", "find_weights", "MODEL_INFO", "release_name"]

MODEL_INFO = "model_info.json"
_SKIP_DIRS = {"models", "runs", "eval", "__pycache__", ".ipynb_checkpoints"}
#: files of the training run beside its ``model.pt`` that travel with the weights into ``models/`` when present
#: (append to it for more run files; each is listed with its SHA-256 in the index and the release notes)
CARRIED_RUN_FILES: list[str] = ["calibration.json", "ood.json", "ensemble.json"]
#: the zoo's pre-commit ``check-added-large-files`` limit (1024 KB): bigger files go to ``large_files.yml``
PRECOMMIT_MAX_BYTES = 1024 * 1024
#: the package whose copy an exported bundle carries under ``scripts/`` (see :func:`_vendor_code`)
VENDORED = "medfuse"
_SCRIPTS_IMPORT = "$import scripts"
_SCRIPTS_INIT = '''# Copyright (c) medfuse contributors
# Licensed under the Apache License, Version 2.0
"""The code of this bundle: a copy of medfuse {version} in scripts/medfuse, written by medfuse export.

The configs import this package first ("$import scripts"). It puts this folder at the front of
sys.path, so that "import medfuse" in the configs finds the copy these weights were exported
with, without medfuse being installed. When this folder is not on the Python path (the configs
run from elsewhere), MONAI's optional import skips it and an installed medfuse is used.
"""

import os
import sys

_HERE = os.path.dirname(os.path.abspath(__file__))
if _HERE not in sys.path:
    sys.path.insert(0, _HERE)
'''


@dataclass
class ExportResult:
    """What :func:`export_bundle` wrote and measured."""

    name: str
    version: str
    bundle_dir: Path
    release: Path
    model_info: Path
    checksum: str
    files: dict[str, str]
    checks: list[str]
    round_trip_max_abs_diff: float
    subprocess_max_abs_diff: float
    weights: Path
    calibration: Path | None
    onnx: str
    data_license: str = ""
    warnings: list[str] = field(default_factory=list)
    formats: list[FormatCheck] = field(default_factory=list)

    def format(self) -> str:
        """A short human-readable summary."""
        lines = [f"exported {self.name} v{self.version}"]
        lines += [f"  check passed: {c}" for c in self.checks]
        lines.append(f"  weights: {self.weights}")
        lines.append(
            f"  TorchScript round trip: max |difference| {self.round_trip_max_abs_diff:.3g} in this process, "
            f"{self.subprocess_max_abs_diff:.3g} in a process without medfuse (tolerance rtol={RTOL}, atol={ATOL})"
        )
        lines.append(f"  data licence: {self.data_license}" + (" (NON-COMMERCIAL)" if checks.is_non_commercial(self.data_license) else ""))
        lines.append(f"  calibration: {self.calibration if self.calibration else 'none beside the weights (not exported)'}")
        lines += [f"  {check.format()}" for check in self.formats]
        if not any(c.fmt == "onnx" for c in self.formats):
            lines.append(f"  ONNX: {self.onnx}")
        lines.append(f"  bundle: {self.bundle_dir}")
        lines.append(f"  release: {self.release} (sha256 {self.checksum})")
        lines.append(f"  zoo index: {self.model_info}")
        return "\n".join(lines)


def release_name(name: str, version: str) -> str:
    """``<name>_v<version>``, the zoo's key and archive stem."""
    return f"{name}_v{version}"


def find_weights(bundle_dir: str | os.PathLike, weights: str | os.PathLike | None = None) -> Path:
    """``weights`` when given, else ``<bundle_dir>/models/model.pt``.

    Raises:
        DataError: naming both places when neither exists.
    """
    default = Path(bundle_dir) / "models" / "model.pt"
    if weights:
        if Path(weights).is_file():
            return Path(weights)
        raise DataError(
            f"weights file {weights} does not exist; pass --weights runs/<bundle>/<run>/model.pt of a trained run "
            f"(or put the weights at {default} and leave --weights out)"
        )
    if default.is_file():
        return default
    raise DataError(
        f"no weights: --weights was not given and {default} does not exist; train the bundle and pass "
        "--weights runs/<bundle>/<run>/model.pt, or copy the weights to that models/model.pt"
    )


def _read_json(path: Path) -> Any:
    try:
        with open(path, encoding="utf-8") as f:
            return json.load(f)
    except json.JSONDecodeError as e:
        raise ZooCheckError("json format", f"{path}: not valid JSON ({e.msg} at line {e.lineno}); fix the syntax") from e


def _copy_bundle(src: Path, dst: Path) -> None:
    """The bundle's own files: everything but weights, run outputs and caches."""

    def ignore(folder: str, names: list[str]) -> set[str]:
        top = Path(folder).resolve() == src.resolve()
        return {n for n in names if (top and n in _SKIP_DIRS) or n == "__pycache__" or n.endswith((".pyc", ".ts", ".pt"))}

    shutil.copytree(src, dst, ignore=ignore)


def _trained_settings(bundle: Path, run_dir: Path) -> dict[str, Any]:
    """Values of the bundle's run-dependent keys in the run's executed config (JSON literals only)."""
    if not (run_dir / "config.json").is_file():
        return {}
    from medfuse.workflows.runs import run_setting

    configs = list(_read_bundle_configs(bundle / "configs").values())
    settings = {}
    for key in run_setting_keys(configs):
        try:
            value = run_setting(run_dir, key, default=None)
        except Exception:  # an expression of the run that cannot be evaluated here: keep the bundle's value
            continue
        if value is not None and is_literal(value):
            settings[key] = list(value) if isinstance(value, tuple) else value
    return settings


def _classes_from_metadata(metadata: Mapping[str, Any]) -> list[str] | None:
    outputs = metadata.get("network_data_format", {}).get("outputs", {})
    for out in outputs.values():
        if out.get("format") == "classes" and out.get("channel_def"):
            cd = out["channel_def"]
            return [str(cd[str(i)]) for i in range(len(cd)) if str(i) in cd]
    return None


def _update_metadata(
    metadata: dict, version: str, changelog: str | None, classes: list[str] | None, settings: Mapping[str, Any],
    data_source: str | None, data_license: str | None, pins: Mapping[str, str] | None = None,
) -> dict:
    import monai
    import numpy
    import torch

    from medfuse import __version__

    meta = json.loads(json.dumps(metadata))
    meta["version"] = version
    if changelog:
        meta["changelog"] = {version: changelog, **{k: v for k, v in (meta.get("changelog") or {}).items() if k != version}}
    if data_source:
        meta["data_source"] = data_source
    if data_license:
        meta["data_license"] = data_license
    # the versions this export was checked with
    meta["monai_version"] = monai.__version__.split("+")[0]
    meta["pytorch_version"] = torch.__version__.split("+")[0]
    meta["numpy_version"] = numpy.__version__
    req = {k: v for k, v in (meta.get("required_packages_version") or {}).items() if k != VENDORED}
    req.update(pins or {})  # medfuse itself travels as code (scripts/medfuse); its requirements are pinned instead
    meta["required_packages_version"] = req
    meta["medfuse_code"] = {"version": __version__, "path": f"scripts/{VENDORED}"}
    fmt = meta.get("network_data_format", {})
    if classes:
        for section in ("outputs", "post_processed_outputs"):
            for out in (fmt.get(section) or {}).values():
                if out.get("format") == "classes":
                    out["num_channels"] = len(classes)
                    out["channel_def"] = {str(i): c for i, c in enumerate(classes)}
    seg = settings.get("seg_classes")  # segmentation bundles: background first, as the network's output channels
    if isinstance(seg, list) and len(seg) >= 2 and all(isinstance(c, str) for c in seg):
        for out in (fmt.get("outputs") or {}).values():
            if out.get("format") == "segmentation":
                out["num_channels"] = len(seg)
                out["channel_def"] = {str(i): c for i, c in enumerate(seg)}
        for out in (fmt.get("post_processed_outputs") or {}).values():
            if out.get("format") == "labels":  # one channel of label indices
                out["value_range"] = [0, len(seg) - 1]
                out["channel_def"] = {"0": "label map: " + ", ".join(f"{i} {c}" for i, c in enumerate(seg))}
    size = settings.get("image_size")
    image = (fmt.get("inputs") or {}).get("image")
    if image and isinstance(size, int) and not isinstance(size, bool):
        image["spatial_shape"] = [size] * len(image.get("spatial_shape") or [0, 0])
    if image and isinstance(settings.get("in_channels"), int):
        image["num_channels"] = settings["in_channels"]
    return meta


def _uses_medfuse(meta: Mapping[str, Any]) -> bool:
    return "medfuse" in json.dumps(meta.get("required_packages_version", {}))


def _vendor_code(stage: Path) -> Path:
    """Copy the medfuse package into ``<stage>/scripts/medfuse`` and write ``scripts/__init__.py``.

    Why a copy and not a wheel: the zoo's CI installs a bundle's dependencies from the metadata's
    ``*_packages_version`` as ``name==version`` lines from the package index
    (``ci/get_bundle_requirements.py``), before it downloads the large files; no index serves
    medfuse, and a wheel inside the release is neither on an index nor downloaded at that point.
    The zoo puts the bundle folder on ``sys.path`` instead (``ci/verify_bundle.py``, the unit
    tests; ``python -m`` run from inside the bundle folder does too), which is where
    ``scripts/`` code is found. Only modules and package data (``.py``, ``.json``, ``.md``) are copied.
    """
    import medfuse

    src = Path(medfuse.__file__).resolve().parent
    dest = stage / "scripts" / VENDORED
    if dest.exists():
        raise ZooCheckError("code", f"{stage.name}: the bundle has its own scripts/{VENDORED}; rename it (medfuse export "
                            "writes its copy of medfuse there)")
    def ignore(folder: str, names: list[str]) -> set[str]:  # the package's modules and data, nothing else
        return {n for n in names if n == "__pycache__" or (not os.path.isdir(os.path.join(folder, n))
                                                            and not n.endswith((".py", ".json", ".md")))}

    shutil.copytree(src, dest, ignore=ignore)
    init = stage / "scripts" / "__init__.py"
    if init.is_file():
        raise ZooCheckError("code", f"{init}: the bundle has its own scripts package; medfuse export writes scripts/__init__.py")
    atomic_write_text(init, _SCRIPTS_INIT.format(version=medfuse.__version__))
    return dest


def _with_scripts_import(config: dict) -> dict:
    """``config`` with ``"$import scripts"`` first in its ``imports`` when it imports medfuse (see :func:`_vendor_code`)."""
    imports = config.get("imports")
    if not isinstance(imports, list) or _SCRIPTS_IMPORT in imports:
        return config
    if not any(isinstance(i, str) and re.search(rf"\b{VENDORED}\b", i) for i in imports):
        return config
    return {**config, "imports": [_SCRIPTS_IMPORT, *imports]}


def _runtime_requirements() -> tuple[dict[str, str], str]:
    """``({distribution: installed version}, "")`` of what medfuse needs at run time (monai, torch, numpy left to
    their own metadata keys), or ``({}, why)`` when medfuse's distribution metadata is not here.

    Read from the installed distribution's ``Requires-Dist`` (extras and environment markers skipped), so the
    exported metadata pins exactly the packages the copied code imports, at the versions it was checked with.
    """
    import configparser
    from importlib import metadata as md

    import medfuse

    setup_cfg = Path(medfuse.__file__).resolve().parents[1] / "setup.cfg"
    if setup_cfg.is_file():  # a checkout: its setup.cfg, not the metadata of an older install, lists what the code needs
        cfg = configparser.ConfigParser()
        cfg.read(setup_cfg, encoding="utf-8")
        lines = cfg.get("options", "install_requires", fallback="").splitlines()
        requires = [ln.strip() for ln in lines if ln.strip() and not ln.strip().startswith("#")]
    else:
        try:
            requires = md.requires(VENDORED) or []
        except md.PackageNotFoundError:
            return {}, f"{VENDORED} is not installed (no distribution metadata): its requirements could not be pinned"
    pins: dict[str, str] = {}
    for req in requires:
        if ";" in req:  # an extra or a platform marker
            continue
        m = re.match(r"\s*([A-Za-z0-9][A-Za-z0-9._-]*)", req)
        if not m or m.group(1).lower() in ("monai", "torch", "numpy"):
            continue
        try:
            pins[m.group(1)] = md.version(m.group(1))
        except md.PackageNotFoundError:
            return {}, f"{m.group(1)}, a requirement of {VENDORED}, is not installed"
    return pins, ""


def _write_json(path: Path, obj: Any) -> None:
    """JSON in the form of the zoo's pre-commit ``pretty-format-json --autofix --no-sort-keys --indent=4``."""
    atomic_write_text(path, checks.pretty_json(obj))


def _last_exported(zoo: Path, name: str) -> str | None:
    from medfuse.zoo.index import read_model_info

    versions = [e.get("version") for e in read_model_info(zoo).values() if e.get("name") == name]
    versions = [v for v in versions if v]
    if not versions:
        return None
    return max(versions, key=lambda v: checks.parse_version(v))



@contextlib.contextmanager
def _quiet_monai():
    """MONAI's bundle scripts log every argument at INFO; keep the export's own output readable."""
    import logging

    import monai.bundle.scripts  # noqa: F401  (their loggers exist, with their own levels, once imported)
    import monai.bundle.workflows  # noqa: F401

    saved = {}
    for name in [n for n in list(logging.root.manager.loggerDict) if n.startswith("monai.bundle")] + ["monai.bundle"]:
        log = logging.getLogger(name)
        saved[name] = log.level
        log.setLevel(logging.ERROR if name == "monai.bundle.workflows" else logging.WARNING)
    try:
        yield
    finally:
        for name, level in saved.items():
            logging.getLogger(name).setLevel(level)


@contextlib.contextmanager
def _locked(zoo: Path):
    """An exclusive lock on ``ZOO_DIR/.model_info.lock`` while the index is read and replaced."""
    zoo.mkdir(parents=True, exist_ok=True)
    with open(zoo / ".model_info.lock", "a+") as f:
        try:
            import fcntl

            fcntl.flock(f.fileno(), fcntl.LOCK_EX)
        except ImportError:  # not POSIX: no lock
            pass
        yield



def _read_bundle_configs(configs_dir: Path) -> dict[Path, Any]:
    """The bundle's config files but ``metadata.json``, parsed, in file-name order.

    The one place where the export reads a bundle's configs: the run-dependent keys
    (:func:`_trained_settings`) and the baking of the staged configs both come through here.
    """
    return {path: _read_json(path) for path in sorted(configs_dir.glob("*.json")) if path.name != "metadata.json"}


class _Export:
    """One run of :func:`export_bundle`, as named steps.

    :func:`export_bundle` calls :meth:`check_source`, then, inside a temporary folder in the
    zoo, :meth:`stage`, :meth:`configs`, :meth:`run_checks`, :meth:`export_weights`, :meth:`docs`,
    :meth:`archive` and :meth:`index`; each step reads what the earlier ones left on the instance.
    """

    def __init__(self, bundle: Path, zoo: Path, log) -> None:
        self.bundle = bundle
        self.zoo = zoo
        self.log = log
        self.warnings: list[str] = []
        self.done: list[str] = []

    def check_source(self, version: str | None, weights: str | os.PathLike | None, url_template: str | None,
                     schema: str | os.PathLike | None, require_schema: bool) -> None:
        """Options, required files, JSON format and metadata schema of the bundle as written; the weights."""
        bundle, zoo = self.bundle, self.zoo
        if url_template:
            try:
                _url(url_template, zoo, "name", "0.0.0", "models/model.pt")
            except (KeyError, IndexError, ValueError) as e:
                raise DataError(
                    f"--url-template {url_template!r}: unknown or malformed placeholder ({e}); use {{name}}, {{version}}, "
                    "{file} and {path}"
                ) from e
        if zoo.resolve() == bundle.resolve() or bundle.resolve() in zoo.resolve().parents:
            raise DataError(f"--out {zoo} is inside the bundle folder {bundle}; choose a zoo folder outside it")
        checks.check_required_files(bundle)
        self.weights_path = find_weights(bundle, weights)
        self.run_dir = self.weights_path.parent
        from medfuse.workflows.runs import read_run_info

        self.run_info = read_run_info(self.run_dir) if (self.run_dir / "run_info.json").is_file() else {}
        self.src_meta_file = bundle / "configs" / "metadata.json"
        checks.check_json_format(bundle)
        self.skip_schema = skip_schema = not require_schema and not schema and checks.default_schema_path() is None
        if skip_schema:
            self.warnings.append(f"the metadata was NOT checked against the MONAI schema: no {checks.SCHEMA_NAME} here; "
                                 "check it before publishing (--schema PATH or MEDFUSE_SHARED_DATA)")
        else:
            checks.check_metadata_schema(self.src_meta_file, schema)  # the bundle as written, before the export fills anything in
        self.metadata = _read_json(self.src_meta_file)
        accepts = bundle_metadata_value(bundle, ACCEPTS_KEY)  # inherited from the base: stated in the export
        self.metadata.pop(BASE_KEY, None)  # the export's configs stand alone
        if accepts is not None:
            self.metadata[ACCEPTS_KEY] = accepts
        self.name = str(self.metadata.get("bundle_name") or bundle.resolve().name)
        self.version = version or str(self.metadata.get("version", ""))
        self.done = ["required files", "json format (source)",
                     "metadata schema: NOT checked (no schema file)" if skip_schema else "metadata schema (source)"]

    def stage(self, tmp: Path) -> None:
        """Copy the bundle's own files, the weights and the calibration beside them into ``tmp/<name>``."""
        self.tmp = tmp
        self.stage_dir = stage = tmp / self.name
        _copy_bundle(self.bundle, stage)
        flatten_configs(self.bundle, stage / "configs")  # a layered bundle's base configs merged in: it stands alone
        (stage / "models").mkdir(exist_ok=True)
        # a truncated, corrupt or non-finite checkpoint is named here, not later as a TorchScript failure
        load_weights(self.weights_path, fix="re-export or re-train the model, then pass its model.pt as --weights")
        shutil.copy2(self.weights_path, stage / "models" / "model.pt")
        from medfuse.workflows.ensemble import ENSEMBLE_FILE, ensemble_configs

        if (self.weights_path.parent / ENSEMBLE_FILE).is_file():  # every member's weights are in model.pt
            ensemble_configs(stage / "configs", self.weights_path.parent)  # ensemble.json itself is carried below
        # the run's files that belong to the weights (CARRIED_RUN_FILES), JSON rewritten in the zoo's form
        self.carried: dict[str, Path] = {}
        for name in CARRIED_RUN_FILES:
            src = self.weights_path.parent / name
            if src.is_file():
                if name.endswith(".json"):
                    _write_json(stage / "models" / name, _read_json(src))
                else:
                    shutil.copy2(src, stage / "models" / name)
                self.carried[f"models/{name}"] = src
        self.calibration = self.carried.get("models/calibration.json")
        self.ood = self.carried.get("models/ood.json")  # the OOD model travels with the weights it was fitted on
        _vendor_code(stage)

    def configs(self, changelog: str | None, data_source: str | None, data_license: str | None) -> None:
        """Write the run's settings and classes into the staged configs, the release facts into its metadata."""
        stage, run_info, metadata = self.stage_dir, self.run_info, self.metadata
        settings = _trained_settings(stage, self.run_dir)
        classes = run_info.get("classes") or _classes_from_metadata(metadata)
        classes = [str(c) for c in classes] if classes else None
        for path, raw in _read_bundle_configs(stage / "configs").items():
            baked = _with_scripts_import(bake_config(raw, settings, classes if run_info.get("classes") else None))
            _write_json(path, baked)  # every config in the zoo's pretty-format-json form
        record = _manifest_record(run_info)
        if record and not data_source and metadata.get("data_source"):
            counts = ", ".join(f"{n} {s}" for s, n in record["items"].items())
            data_source = (f"{metadata['data_source']} These weights: trained on the manifest {record['file']} "
                           f"(sha256 {record['sha256'][:12]}, written by {record['tool'] or 'unknown tool'}; {counts}).")
        pins, why = _runtime_requirements()
        if why:
            self.warnings.append(f"{why}; the exported metadata's required_packages_version lists only what the bundle's "
                                 "own metadata names: check it before publishing")
        new_meta = _update_metadata(metadata, self.version, changelog, classes, settings, data_source, data_license, pins)
        self.meta_file = stage / "configs" / "metadata.json"
        _write_json(self.meta_file, new_meta)
        if settings:
            self.log(f"  trained settings written into the configs: {settings}")
        self.settings, self.classes, self.record, self.new_meta = settings, classes, record, new_meta

    def run_checks(self, schema: str | os.PathLike | None, manifest: str | os.PathLike | None) -> None:
        """The zoo's checks on the staged bundle: format, schema, version, licence, paths, properties, net in/out."""
        stage, new_meta, done, zoo, name = self.stage_dir, self.new_meta, self.done, self.zoo, self.name
        checks.check_json_format(stage)
        checks.check_pretty_json(stage)
        done.append("json in pretty-format-json form (4-space indent, keys unsorted)")
        if not self.skip_schema:
            schema_used = checks.check_metadata_schema(self.meta_file, schema)
            done.append(f"metadata schema (exported, {schema_used.name})")
        last = _last_exported(zoo, name)
        checks.check_version(new_meta, self.src_meta_file, last, str(zoo / MODEL_INFO))
        done.append(f"version {self.version} in changelog" + (f", newer than {last}" if last else ""))
        licence = str(new_meta.get("data_license") or "").strip()
        if not licence or not str(new_meta.get("data_source") or "").strip():
            raise ZooCheckError(
                "data licence",
                f"{self.src_meta_file}: 'data_source' and 'data_license' must say where the training data came from and "
                "under which licence; add them to the metadata or pass --data-source and --data-license",
            )
        if checks.is_non_commercial(licence):
            self.warnings.append(
                f"the training data's licence is non-commercial ('{licence}'): the weights inherit it and must "
                "not be used commercially; say so in docs/README.md"
            )
        done.append("data source and licence recorded")
        checks.check_config_paths(stage)
        done.append("no absolute or personal paths in configs")

        manifest = manifest or self.run_info.get("manifest")
        if manifest and not Path(manifest).is_file():
            self.log(f"  the run's manifest {manifest} is not here: workflow properties are only looked up")
            manifest = None
        self.scratch = scratch = self.tmp / "scratch"
        overrides: dict[str, Any] = {"bundle_root": str(stage), "ckpt_path": str(stage / "models" / "model.pt")}
        if self.classes:
            overrides["classes"] = self.classes
        prop_overrides = dict(overrides, output_dir=str(scratch / "runs"), num_workers=0, progress=False)
        if manifest:
            prop_overrides.update(manifest=str(Path(manifest).resolve()), dataset_dir=str(Path(manifest).resolve().parent))
        states = checks.check_workflow_properties(stage, prop_overrides, build=bool(manifest))
        done.append("workflow properties: " + ", ".join(f"{k} {v}" for k, v in states.items()))
        checks.check_net_in_out(stage, overrides)
        done.append("verify_net_in_out")
        self.licence, self.overrides = licence, overrides

    def export_weights(self, trace: bool, formats: tuple[str, ...]) -> None:
        """TorchScript export with its round-trip checks, then the other ``formats`` (pt2, onnx) with theirs."""
        stage = self.stage_dir
        infer_cfg = checks._config_files(stage, "infer")
        self.diff, self.sub_diff = _export_torchscript(stage, infer_cfg, self.overrides, self.new_meta, trace, self.tmp)
        self.done.append("TorchScript export (ckpt_export) and round trip")
        self.formats = [FormatCheck("torchscript", "models/model.ts", self.diff, self.sub_diff,
                                    "torch.jit.trace" if trace else "torch.jit.script")]
        self.onnx_note = "not requested (--format)"
        exporters = {"pt2": export_pt2, "onnx": export_onnx}
        for fmt in formats:
            if fmt in exporters:
                self.formats.append(exporters[fmt](stage, infer_cfg, self.overrides, self.new_meta, self.tmp))
                self.done.append(f"{fmt} export and round trip")
        if "onnx" in formats:
            self.onnx_note = self.formats[-1].format()

    def docs(self, url_template: str | None, trace: bool) -> None:
        """``large_files.yml`` (weights are not kept in the zoo folder) and the release notes in docs/README.md."""
        stage, name, version = self.stage_dir, self.name, self.version
        # large files: weights are not kept in the zoo folder
        self.rel = release_name(name, version)
        self.large = large = [p for p in ("models/model.pt", "models/model.ts", "models/model.pt2", "models/model.onnx")
                              if (stage / p).is_file()]
        # a carried run file over the zoo's pre-commit size limit (e.g. the OOD model of a 2048-feature network)
        # is a large file too: fetched with the weights, not kept in the zoo folder
        large += [rel for rel in self.carried if (stage / rel).stat().st_size > PRECOMMIT_MAX_BYTES]
        self.files = files = {p: sha256_file(stage / p) for p in large}
        for rel in self.carried:
            files[rel] = sha256_file(stage / rel)
        self.template = template = url_template or "{zoo_uri}/files/{name}_v{version}/{path}"
        entries = [
            {"path": p, "url": _url(template, self.zoo, name, version, p), "hash_val": files[p], "hash_type": "sha256"}
            for p in large
        ]
        note = (
            f"Large files of {name} v{version}, written by medfuse export. Fetch them with\n"
            "    python -m monai.bundle download_large_files --bundle_path <this folder>\n"
            "or take the release archive, which holds them."
        )
        atomic_write_text(stage / "large_files.yml", _large_files_yaml(entries, note))

        import monai
        import torch

        non_commercial = checks.is_non_commercial(self.licence)
        write_data_license(stage, self.new_meta, non_commercial)
        write_model_card(stage, self.bundle / "docs" / "README.md", self.new_meta, non_commercial=non_commercial,
                         run_info=self.run_info, torch_version=torch.__version__, monai_version=monai.__version__)
        _append_release_notes(stage / "docs" / "README.md", name, version, self.new_meta, self.settings, self.classes,
                              files, self.diff, self.sub_diff, trace, self.calibration is not None)

    def archive(self, url_template: str | None) -> None:
        """The release zip and its checksum, loose copies of the weights, then the zoo folder of the bundle."""
        stage, zoo, rel, large = self.stage_dir, self.zoo, self.rel, self.large
        self.release = release = zoo / "releases" / f"{rel}.zip"
        self.files = _write_zip(stage, self.name, release)  # every file of the bundle, configs included
        self.checksum = sha256_file(release)
        if not url_template:
            loose = zoo / "files" / rel
            for p in large:
                (loose / p).parent.mkdir(parents=True, exist_ok=True)
                shutil.copy2(stage / p, loose / p)
        for p in large:
            (stage / p).unlink()
        if not any((stage / "models").iterdir()):
            (stage / "models").rmdir()
        shutil.rmtree(self.scratch, ignore_errors=True)

        self.final = final = zoo / self.name
        old = self.tmp / "previous"
        if final.exists():
            os.replace(final, old)
        os.replace(stage, final)

    def index(self, url_template: str | None, trace: bool) -> ExportResult:
        """Add the release to ``model_info.json`` (under a lock) and return the result."""
        import monai
        import numpy
        import torch

        from medfuse import __version__

        name, version, new_meta, licence = self.name, self.version, self.new_meta, self.licence
        entry = {
            "name": name,
            "version": version,
            "display_name": new_meta.get("name", name),
            "task": new_meta.get("task", ""),
            "checksum": self.checksum,
            "checksum_type": "sha256",
            "source": f"releases/{self.rel}.zip",
            "url": _url(self.template, self.zoo, name, version, f"{self.rel}.zip") if url_template else None,
            "versions": {
                "monai": monai.__version__, "pytorch": torch.__version__, "numpy": numpy.__version__, "medfuse": __version__,
            },
            "files": self.files,
            "files_complete": True,  # every file of the archive is listed: `zoo get` refuses any other
            "changelog": (new_meta.get("changelog") or {}).get(version, ""),
            "data_source": new_meta.get("data_source"),
            "data_license": licence,
            "non_commercial": checks.is_non_commercial(licence),
            "classes": self.classes,
            "trained_settings": self.settings,
            "training_manifest": self.record,
            "formats": {c.fmt: {"file": c.path, "max_abs_diff": c.max_abs_diff,
                                "fresh_process_max_abs_diff": c.fresh_process_max_abs_diff} for c in self.formats},
            "round_trip": {"max_abs_diff": self.diff, "fresh_process_max_abs_diff": self.sub_diff, "rtol": RTOL,
                           "atol": ATOL, "method": "trace" if trace else "script"},
            "exported": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
        }
        from medfuse.zoo.index import update_model_info

        with _locked(self.zoo):
            info_path = update_model_info(self.zoo, self.rel, entry)
        return ExportResult(
            name=name, version=version, bundle_dir=self.final, release=self.release, model_info=info_path,
            checksum=self.checksum, files=self.files, checks=self.done, round_trip_max_abs_diff=self.diff,
            subprocess_max_abs_diff=self.sub_diff, weights=self.weights_path, calibration=self.calibration,
            onnx=self.onnx_note, data_license=licence, warnings=self.warnings, formats=self.formats,
        )



@_quiet_monai()  # MONAI's bundle scripts log every argument at INFO
def export_bundle(
    bundle_dir: str | os.PathLike,
    zoo_dir: str | os.PathLike,
    version: str | None = None,
    changelog: str | None = None,
    weights: str | os.PathLike | None = None,
    url_template: str | None = None,
    schema: str | os.PathLike | None = None,
    data_source: str | None = None,
    data_license: str | None = None,
    manifest: str | os.PathLike | None = None,
    trace: bool = False,
    onnx: bool = False,
    formats: str | Sequence[str] | None = None,
    log=print,
    require_schema: bool = True,
) -> ExportResult:
    """Check a bundle the way the model zoo does, export TorchScript, write the zoo folder, release and index.

    Args:
        bundle_dir: the bundle folder (``LICENSE``, ``configs/``, ``docs/`` ...), or a bundle's name (found as
            :func:`medfuse.workflows.bundle.bundle_dir` finds it, also inside an installed medfuse).
        zoo_dir: the zoo folder to write into (created when missing).
        version: release version ``X.Y.Z``; default: the metadata's version.
        changelog: changelog text for ``version`` (added to the exported metadata).
        weights: the checkpoint (``runs/<bundle>/<run>/model.pt``); default ``<bundle_dir>/models/model.pt``.
            When a ``config.json`` / ``run_info.json`` of a medfuse run sits beside it, its network
            settings and classes are written into the exported configs and metadata, and a
            ``calibration.json`` beside it is exported as ``models/calibration.json``.
        url_template: download URL of each large file, with ``{name}``, ``{version}``, ``{file}``
            (base name) and ``{path}`` (path in the bundle); default: ``file://`` URLs of copies under
            ``<zoo_dir>/files/``.
        schema: the MONAI metadata schema file; default: the shared data's copy.
        data_source, data_license: where the training data came from and its licence; default: the
            metadata's ``data_source`` / ``data_license``. A non-commercial licence gives a warning.
        manifest: a manifest to build the workflows' properties with; default: the run's manifest
            (``run_info.json``). Without one, the properties are only looked up.
        trace: export with ``torch.jit.trace`` instead of ``torch.jit.script``.
        onnx: also export ONNX (same as adding ``"onnx"`` to ``formats``).
        formats: export formats, ``"torchscript,pt2,onnx"`` or a list (:mod:`medfuse.zoo.formats`); default
            TorchScript and pt2. TorchScript is always among them: the model zoo loads ``models/model.ts``.
        log: progress printer.
        require_schema: when False and no schema file is given or found, the metadata is not checked
            against the schema and the result says so in its checks and warnings (the demo does this on
            machines without the shared data); otherwise a missing schema is a failed check.

    Returns:
        an :class:`ExportResult`.

    Raises:
        ZooCheckError: at the first failing check (nothing is written to ``zoo_dir``).
        DataError: when the weights are missing.
    """
    chosen = parse_formats(formats)
    if onnx and "onnx" not in chosen:
        chosen = parse_formats([*chosen, "onnx"])
    if "onnx" in chosen:
        require_onnx()  # before any work
    if "torchscript" not in chosen:
        raise ZooCheckError("format", f"--format {','.join(chosen)}: torchscript is required: the model zoo's "
                            "ci/verify_bundle.py exports and loads models/model.ts (add torchscript to --format)")
    source = Path(bundle_dir)
    if not source.is_dir() and os.sep not in str(bundle_dir) and "/" not in str(bundle_dir):
        from medfuse.workflows.bundle import bundle_dir as find_bundle

        try:  # a bundle name: ./bundles, the checkout's bundles/, or an installed medfuse's medfuse/bundles
            source = find_bundle(str(bundle_dir))
        except FileNotFoundError as e:
            raise DataError(str(e)) from e
    export = _Export(source, Path(zoo_dir), log)
    export.check_source(version, weights, url_template, schema, require_schema)
    zoo = export.zoo
    zoo.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".export-{export.name}-", dir=zoo))
    try:
        export.stage(tmp)
        export.configs(changelog, data_source, data_license)
        export.run_checks(schema, manifest)
        export.export_weights(trace, chosen)
        export.docs(url_template, trace)
        export.archive(url_template)
        return export.index(url_template, trace)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
