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
"""

from __future__ import annotations

import contextlib
import datetime as _dt
import json
import os
import shutil
import subprocess
import sys
import tempfile
import zipfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping, Sequence

from medfuse.errors import DataError
from medfuse.utils.io import atomic_write_text, sha256_file
from medfuse.zoo import checks
from medfuse.zoo.checks import ZooCheckError
from medfuse.zoo.configs import bake_config, is_literal, run_setting_keys
from medfuse.workflows.bundle import BASE_KEY, flatten_configs

__all__ = ["ExportResult", "RTOL", "ATOL", "export_bundle", "find_weights", "MODEL_INFO", "release_name"]

RTOL, ATOL = 1e-4, 1e-5
MODEL_INFO = "model_info.json"
_SKIP_DIRS = {"models", "runs", "eval", "__pycache__", ".ipynb_checkpoints"}
_ZIP_TIME = (2020, 1, 1, 0, 0, 0)  # fixed, so the same bundle gives the same archive and checksum


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

    configs = [_read_json(p) for p in sorted((bundle / "configs").glob("*.json")) if p.name != "metadata.json"]
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
    data_source: str | None, data_license: str | None,
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
    req = dict(meta.get("required_packages_version") or {})
    if "medfuse" in req or _uses_medfuse(meta):
        req["medfuse"] = __version__
    meta["required_packages_version"] = req
    fmt = meta.get("network_data_format", {})
    if classes:
        for section in ("outputs", "post_processed_outputs"):
            for out in (fmt.get(section) or {}).values():
                if out.get("format") == "classes":
                    out["num_channels"] = len(classes)
                    out["channel_def"] = {str(i): c for i, c in enumerate(classes)}
    size = settings.get("image_size")
    image = (fmt.get("inputs") or {}).get("image")
    if image and isinstance(size, int) and not isinstance(size, bool):
        image["spatial_shape"] = [size] * len(image.get("spatial_shape") or [0, 0])
    if image and isinstance(settings.get("in_channels"), int):
        image["num_channels"] = settings["in_channels"]
    return meta


def _uses_medfuse(meta: Mapping[str, Any]) -> bool:
    return "medfuse" in json.dumps(meta.get("required_packages_version", {}))


def _dumps(obj: Any, depth: int = 0, width: int = 100) -> str:
    """JSON with 4-space indentation; short lists of numbers or strings stay on one line."""
    pad = " " * (4 * (depth + 1))
    if isinstance(obj, dict) and obj:
        items = [f"{pad}{json.dumps(str(k), ensure_ascii=False)}: {_dumps(v, depth + 1, width)}" for k, v in obj.items()]
        return "{\n" + ",\n".join(items) + "\n" + " " * (4 * depth) + "}"
    if isinstance(obj, list) and obj:
        inline = json.dumps(obj, ensure_ascii=False)
        scalars = all(v is None or isinstance(v, (bool, int, float, str)) for v in obj)
        if scalars and len(inline) + 4 * depth <= width:
            return inline
        return "[\n" + ",\n".join(pad + _dumps(v, depth + 1, width) for v in obj) + "\n" + " " * (4 * depth) + "]"
    return json.dumps(obj, ensure_ascii=False)


def _write_json(path: Path, obj: Any) -> None:
    atomic_write_text(path, _dumps(obj) + "\n")


def _last_exported(zoo: Path, name: str) -> str | None:
    from medfuse.zoo.index import read_model_info

    versions = [e.get("version") for e in read_model_info(zoo).values() if e.get("name") == name]
    versions = [v for v in versions if v]
    if not versions:
        return None
    return max(versions, key=lambda v: checks.parse_version(v))


def _fake_input(metadata: Mapping[str, Any], batch: int = 2):
    import torch
    from monai.bundle.scripts import _get_fake_spatial_shape

    image = metadata["network_data_format"]["inputs"]["image"]
    spatial = _get_fake_spatial_shape(image["spatial_shape"], p=1, n=1, any=1)
    g = torch.Generator().manual_seed(0)
    return torch.rand((batch, int(image["num_channels"]), *spatial), generator=g)


def _load_weights(net, path: Path, key: str = "") -> None:
    import torch

    state = torch.load(path, map_location="cpu", weights_only=True)
    if key:
        state = state[key]
    elif isinstance(state, dict) and "model" in state and isinstance(state["model"], dict):
        state = state["model"]
    net.load_state_dict(state)


def _max_diff(a, b) -> float:
    import torch

    if isinstance(a, torch.Tensor):
        return float((a.float() - b.float()).abs().max()) if a.numel() else 0.0
    if isinstance(a, (list, tuple)):
        return max((_max_diff(x, y) for x, y in zip(a, b)), default=0.0)
    if isinstance(a, dict):
        return max((_max_diff(a[k], b[k]) for k in a), default=0.0)
    return 0.0


_SUBPROCESS_CHECK = r"""
import json, sys
import torch
model = torch.jit.load(sys.argv[1], map_location="cpu").eval()
data = torch.load(sys.argv[2], weights_only=True)
with torch.no_grad():
    out = model(data["input"])
def diff(a, b):
    if isinstance(a, torch.Tensor):
        return float((a.float() - b.float()).abs().max()) if a.numel() else 0.0
    if isinstance(a, (list, tuple)):
        return max((diff(x, y) for x, y in zip(a, b)), default=0.0)
    if isinstance(a, dict):
        return max((diff(a[k], b[k]) for k in a), default=0.0)
    return 0.0
expected = data["output"]
torch.testing.assert_close(out, expected, rtol=float(sys.argv[3]), atol=float(sys.argv[4]))
print(json.dumps({"medfuse_imported": any(m == "medfuse" or m.startswith("medfuse.") for m in sys.modules),
                  "max_abs_diff": diff(out, expected)}))
"""


def _check_in_fresh_process(ts_path: Path, x, expected, workdir: Path) -> float:
    import torch

    data = workdir / "roundtrip_io.pt"
    torch.save({"input": x, "output": expected}, data)
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    env["OMP_NUM_THREADS"] = "1"
    proc = subprocess.run(
        [sys.executable, "-I", "-c", _SUBPROCESS_CHECK, str(ts_path.resolve()), str(data.resolve()), str(RTOL), str(ATOL)],
        cwd=str(workdir), env=env, capture_output=True, text=True, timeout=600,
    )
    data.unlink()
    if proc.returncode != 0:
        tail = (proc.stderr.strip().splitlines() or ["no output"])[-1]
        raise ZooCheckError("torchscript round trip", f"{ts_path}: loading and running it in a fresh Python process failed: {tail}")
    report = json.loads(proc.stdout.strip().splitlines()[-1])
    if report["medfuse_imported"]:
        raise ZooCheckError(
            "torchscript round trip", f"{ts_path}: torch.jit.load imported medfuse; the TorchScript file must stand alone"
        )
    return float(report["max_abs_diff"])


def _export_torchscript(stage: Path, infer_cfg: list[str], overrides: dict, metadata: Mapping[str, Any], trace: bool,
                        tmp: Path) -> tuple[float, float]:
    import torch
    from monai.bundle import ConfigParser, ckpt_export

    ts_path = stage / "models" / "model.ts"
    pt_path = stage / "models" / "model.pt"
    try:
        ckpt_export(
            net_id="network_def", filepath=str(ts_path), ckpt_file=str(pt_path),
            meta_file=str(stage / "configs" / "metadata.json"), config_file=infer_cfg, use_trace=trace, **overrides,
        )
    except Exception as e:
        first = (str(e).strip().splitlines() or [type(e).__name__])[0]
        how = "torch.jit.trace" if trace else "torch.jit.script"
        raise ZooCheckError(
            "torchscript",
            f"{infer_cfg[0]}: 'network_def' cannot be exported with {how} (monai.bundle ckpt_export): "
            f"{type(e).__name__}: {first}; make the network's forward TorchScript-compatible (typed arguments, no "
            "numpy or **kwargs, one output type)" + ("" if trace else ", or pass --trace to trace it with a sample input"),
        ) from e
    parser = ConfigParser()
    parser.read_config(infer_cfg)
    parser.read_meta(str(stage / "configs" / "metadata.json"))
    for k, v in overrides.items():
        parser[k] = v
    net = parser.get_parsed_content("network_def")
    _load_weights(net, pt_path)
    net.eval()
    scripted = torch.jit.load(str(ts_path), map_location="cpu").eval()
    x = _fake_input(metadata)
    with torch.no_grad():
        expected = net(x)
        got = scripted(x)
    try:
        torch.testing.assert_close(got, expected, rtol=RTOL, atol=ATOL)
    except AssertionError as e:
        raise ZooCheckError(
            "torchscript round trip",
            f"{ts_path}: TorchScript and checkpoint outputs differ beyond rtol={RTOL}, atol={ATOL} "
            f"(max |difference| {_max_diff(got, expected):.3g}); the network behaves differently when scripted: "
            "look for Python-side state or randomness in forward",
        ) from e
    diff = _max_diff(got, expected)
    sub_diff = _check_in_fresh_process(ts_path, x, expected, tmp)
    return diff, sub_diff


def _export_onnx(stage: Path, infer_cfg: list[str], overrides: dict, metadata: Mapping[str, Any]) -> str:
    from monai.utils import optional_import

    _, has_onnx = optional_import("onnx")
    if not has_onnx:
        raise ZooCheckError("onnx", "--onnx needs the 'onnx' package (pip install onnx; onnxruntime to run the check)")
    import numpy as np
    import torch
    from monai.bundle import ConfigParser, onnx_export

    path = stage / "models" / "model.onnx"
    x = _fake_input(metadata, batch=1)
    try:
        onnx_export(
            net_id="network_def", filepath=str(path), ckpt_file=str(stage / "models" / "model.pt"),
            meta_file=str(stage / "configs" / "metadata.json"), config_file=infer_cfg,
            input_shape=list(x.shape), **overrides,
        )
    except Exception as e:
        raise ZooCheckError("onnx", f"{infer_cfg[0]}: ONNX export failed: {type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''}") from e
    ort, has_ort = optional_import("onnxruntime")
    if not has_ort:
        return "models/model.onnx written; onnxruntime not installed, so it was not run"
    parser = ConfigParser()
    parser.read_config(infer_cfg)
    for k, v in overrides.items():
        parser[k] = v
    net = parser.get_parsed_content("network_def")
    _load_weights(net, stage / "models" / "model.pt")
    with torch.no_grad():
        expected = net.eval()(x).numpy()
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    got = session.run(None, {session.get_inputs()[0].name: x.numpy()})[0]
    diff = float(np.abs(got - expected).max())
    if not np.allclose(got, expected, rtol=1e-3, atol=1e-4):
        raise ZooCheckError("onnx", f"{path}: onnxruntime and checkpoint outputs differ (max |difference| {diff:.3g})")
    return f"models/model.onnx checked with onnxruntime (max |difference| {diff:.3g}, rtol 1e-3, atol 1e-4)"


def _write_zip(stage: Path, name: str, dest: Path) -> None:
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
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(tmp, 0o666 & ~umask)  # mkstemp makes 0600 files; an archive is for sharing
        os.replace(tmp, dest)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


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
    req = meta.get("required_packages_version") or {}
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
        "The configs import medfuse: install it first (`pip install medfuse"
        + (f"=={req['medfuse']}" if "medfuse" in req else "") + "`), then, from any working directory:",
        "",
        "```bash",
        f"python -m monai.bundle run --config_file {name}/configs/inference.json --input_dir <folder of DICOM/PNG/JPEG> \\",
        "    --output_dir <results folder>",
        "```",
        "",
    ]
    text = readme.read_text(encoding="utf-8") if readme.is_file() else f"# {name}\n"
    atomic_write_text(readme, text.rstrip("\n") + "\n" + "\n".join(lines))


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
    log=print,
    require_schema: bool = True,
) -> ExportResult:
    """Check a bundle the way the model zoo does, export TorchScript, write the zoo folder, release and index.

    Args:
        bundle_dir: the bundle folder (``LICENSE``, ``configs/``, ``docs/`` ...).
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
        onnx: also export ONNX (needs ``onnx``; checked with ``onnxruntime`` when installed).
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
    bundle = Path(bundle_dir)
    zoo = Path(zoo_dir)
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
    weights_path = find_weights(bundle, weights)
    run_dir = weights_path.parent
    from medfuse.workflows.runs import read_run_info

    run_info = read_run_info(run_dir) if (run_dir / "run_info.json").is_file() else {}
    src_meta_file = bundle / "configs" / "metadata.json"
    checks.check_json_format(bundle)
    warnings: list[str] = []
    skip_schema = not require_schema and not schema and checks.default_schema_path() is None
    if skip_schema:
        warnings.append(f"the metadata was NOT checked against the MONAI schema: no {checks.SCHEMA_NAME} here; "
                        "check it before publishing (--schema PATH or MEDFUSE_SHARED_DATA)")
    else:
        checks.check_metadata_schema(src_meta_file, schema)  # the bundle as written, before the export fills anything in
    metadata = _read_json(src_meta_file)
    metadata.pop(BASE_KEY, None)  # the export's configs stand alone
    name = str(metadata.get("bundle_name") or bundle.resolve().name)
    version = version or str(metadata.get("version", ""))
    done: list[str] = ["required files", "json format (source)",
                       "metadata schema: NOT checked (no schema file)" if skip_schema else "metadata schema (source)"]

    zoo.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".export-{name}-", dir=zoo))
    try:
        stage = tmp / name
        _copy_bundle(bundle, stage)
        flatten_configs(bundle, stage / "configs")  # a layered bundle's base configs merged in: it stands alone
        (stage / "models").mkdir(exist_ok=True)
        shutil.copy2(weights_path, stage / "models" / "model.pt")
        calibration = weights_path.parent / "calibration.json"
        if calibration.is_file():
            shutil.copy2(calibration, stage / "models" / "calibration.json")
        else:
            calibration = None

        settings = _trained_settings(stage, run_dir)
        classes = run_info.get("classes") or _classes_from_metadata(metadata)
        classes = [str(c) for c in classes] if classes else None
        for path in sorted((stage / "configs").glob("*.json")):
            if path.name == "metadata.json":
                continue
            raw = _read_json(path)
            baked = bake_config(raw, settings, classes if run_info.get("classes") else None)
            if baked != raw:
                _write_json(path, baked)
        record = _manifest_record(run_info)
        if record and not data_source and metadata.get("data_source"):
            counts = ", ".join(f"{n} {s}" for s, n in record["items"].items())
            data_source = (f"{metadata['data_source']} These weights: trained on the manifest {record['file']} "
                           f"(sha256 {record['sha256'][:12]}, written by {record['tool'] or 'unknown tool'}; {counts}).")
        new_meta = _update_metadata(metadata, version, changelog, classes, settings, data_source, data_license)
        meta_file = stage / "configs" / "metadata.json"
        _write_json(meta_file, new_meta)
        if settings:
            log(f"  trained settings written into the configs: {settings}")

        checks.check_json_format(stage)
        if not skip_schema:
            schema_used = checks.check_metadata_schema(meta_file, schema)
            done.append(f"metadata schema (exported, {schema_used.name})")
        last = _last_exported(zoo, name)
        checks.check_version(new_meta, src_meta_file, last, str(zoo / MODEL_INFO))
        done.append(f"version {version} in changelog" + (f", newer than {last}" if last else ""))
        licence = str(new_meta.get("data_license") or "").strip()
        if not licence or not str(new_meta.get("data_source") or "").strip():
            raise ZooCheckError(
                "data licence",
                f"{src_meta_file}: 'data_source' and 'data_license' must say where the training data came from and "
                "under which licence; add them to the metadata or pass --data-source and --data-license",
            )
        if checks.is_non_commercial(licence):
            warnings.append(
                f"the training data's licence is non-commercial ('{licence}'): the weights inherit it and must "
                "not be used commercially; say so in docs/README.md"
            )
        done.append("data source and licence recorded")
        checks.check_config_paths(stage)
        done.append("no absolute or personal paths in configs")

        manifest = manifest or run_info.get("manifest")
        if manifest and not Path(manifest).is_file():
            log(f"  the run's manifest {manifest} is not here: workflow properties are only looked up")
            manifest = None
        scratch = tmp / "scratch"
        overrides: dict[str, Any] = {"bundle_root": str(stage), "ckpt_path": str(stage / "models" / "model.pt")}
        if classes:
            overrides["classes"] = classes
        prop_overrides = dict(overrides, output_dir=str(scratch / "runs"), num_workers=0, progress=False)
        if manifest:
            prop_overrides.update(manifest=str(Path(manifest).resolve()), dataset_dir=str(Path(manifest).resolve().parent))
        states = checks.check_workflow_properties(stage, prop_overrides, build=bool(manifest))
        done.append("workflow properties: " + ", ".join(f"{k} {v}" for k, v in states.items()))
        checks.check_net_in_out(stage, overrides)
        done.append("verify_net_in_out")

        infer_cfg = checks._config_files(stage, "infer")
        diff, sub_diff = _export_torchscript(stage, infer_cfg, overrides, new_meta, trace, tmp)
        done.append("TorchScript export (ckpt_export) and round trip")
        onnx_note = _export_onnx(stage, infer_cfg, overrides, new_meta) if onnx else "not requested (--onnx)"
        if onnx:
            done.append("ONNX export")

        # large files: weights are not kept in the zoo folder
        rel = release_name(name, version)
        large = [p for p in ("models/model.pt", "models/model.ts", "models/model.onnx") if (stage / p).is_file()]
        files = {p: sha256_file(stage / p) for p in large}
        if calibration is not None:
            files["models/calibration.json"] = sha256_file(stage / "models" / "calibration.json")
        template = url_template or "{zoo_uri}/files/{name}_v{version}/{path}"
        entries = [
            {"path": p, "url": _url(template, zoo, name, version, p), "hash_val": files[p], "hash_type": "sha256"}
            for p in large
        ]
        note = (
            f"Large files of {name} v{version}, written by medfuse export. Fetch them with\n"
            "    python -m monai.bundle download_large_files --bundle_path <this folder>\n"
            "or take the release archive, which holds them."
        )
        atomic_write_text(stage / "large_files.yml", _large_files_yaml(entries, note))

        _append_release_notes(stage / "docs" / "README.md", name, version, new_meta, settings, classes, files,
                              diff, sub_diff, trace, calibration is not None)
        release = zoo / "releases" / f"{rel}.zip"
        _write_zip(stage, name, release)
        checksum = sha256_file(release)
        if not url_template:
            loose = zoo / "files" / rel
            for p in large:
                (loose / p).parent.mkdir(parents=True, exist_ok=True)
                shutil.copy2(stage / p, loose / p)
        for p in large:
            (stage / p).unlink()
        if not any((stage / "models").iterdir()):
            (stage / "models").rmdir()
        shutil.rmtree(scratch, ignore_errors=True)

        final = zoo / name
        old = tmp / "previous"
        if final.exists():
            os.replace(final, old)
        os.replace(stage, final)

        import monai
        import numpy
        import torch

        from medfuse import __version__

        entry = {
            "name": name,
            "version": version,
            "display_name": new_meta.get("name", name),
            "task": new_meta.get("task", ""),
            "checksum": checksum,
            "checksum_type": "sha256",
            "source": f"releases/{rel}.zip",
            "url": _url(template, zoo, name, version, f"{rel}.zip") if url_template else None,
            "versions": {
                "monai": monai.__version__, "pytorch": torch.__version__, "numpy": numpy.__version__, "medfuse": __version__,
            },
            "files": files,
            "changelog": (new_meta.get("changelog") or {}).get(version, ""),
            "data_source": new_meta.get("data_source"),
            "data_license": licence,
            "non_commercial": checks.is_non_commercial(licence),
            "classes": classes,
            "trained_settings": settings,
            "training_manifest": record,
            "round_trip": {"max_abs_diff": diff, "fresh_process_max_abs_diff": sub_diff, "rtol": RTOL, "atol": ATOL,
                           "method": "trace" if trace else "script"},
            "exported": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
        }
        from medfuse.zoo.index import update_model_info

        with _locked(zoo):
            info_path = update_model_info(zoo, rel, entry)
        return ExportResult(
            name=name, version=version, bundle_dir=final, release=release, model_info=info_path, checksum=checksum,
            files=files, checks=done, round_trip_max_abs_diff=diff, subprocess_max_abs_diff=sub_diff,
            weights=weights_path, calibration=calibration, onnx=onnx_note, data_license=licence, warnings=warnings,
        )
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
