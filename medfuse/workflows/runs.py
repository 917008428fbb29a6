# Copyright (c) medfuse contributors
# Licensed under the Apache License, Version 2.0
"""Run folders and the record of what was run.

Every training run writes into ``<output_dir>/<run_name>/`` (by default
``runs/<bundle_name>/<YYYYmmdd-HHMMSS>[-suffix]/`` under the working directory)::

    model.pt          best weights by validation AUC (CheckpointSaver of {"model": net}: a plain state dict)
    config.json       the executed config: config files merged, command-line overrides applied
    run_info.json     command line, overrides, resolved values (classes, device, AMP), versions
    log.csv, log.jsonl  one row per epoch
    eval/             evaluation outputs (metrics.json, predictions.csv, config.json ...)
    inference/        inference outputs (predictions.csv, config.json ...)

The executed config is obtained from inside ``python -m monai.bundle run`` (or any
``ConfigWorkflow``) by :func:`save_executed_config`, called from the config's
``initialize`` list: it finds the active :class:`monai.bundle.ConfigParser` on the call stack
(the parser that is evaluating the expression) and writes ``parser.get()``, the merged raw
config with every override applied, so the file can be run again as it is.

The config key is ``run_name``, not ``run_id``: ``monai.bundle run`` consumes ``--run_id``
itself (the ID of the expression list to run).
"""

from __future__ import annotations

import datetime as _dt
import inspect
import json
import os
import platform
import sys
import weakref
from pathlib import Path
from typing import Any, Mapping

from medfuse.utils.distributed import is_main_process  # re-exported: medfuse.workflows.runs.is_main_process
from medfuse.utils.io import atomic_write_json

__all__ = [
    "make_run_name",
    "new_run_dir",
    "find_run_dir",
    "latest_run",
    "run_status",
    "find_checkpoint",
    "find_active_parser",
    "find_active_workflow",
    "active_bundle_root",
    "command_line_overrides",
    "is_main_process",
    "save_executed_config",
    "read_run_info",
    "update_run_info",
    "run_setting",
    "CHECKPOINT_NAME",
]

CHECKPOINT_NAME = "model.pt"
_RUN_DIRS: dict[tuple, tuple] = {}
_RUN_CONFIGS: dict[str, tuple] = {}


def _broadcast_from_main(value: Any) -> Any:
    """``value`` of rank 0 on every rank (unchanged outside an initialised process group)."""
    import torch.distributed as dist

    if dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1:
        box = [value]
        dist.broadcast_object_list(box, src=0)
        return box[0]
    return value


def make_run_name(suffix: str = "") -> str:
    """A run name from the local time, ``YYYYmmdd-HHMMSS``, plus ``-suffix`` when given."""
    name = _dt.datetime.now().strftime("%Y%m%d-%H%M%S")
    return f"{name}-{suffix}" if suffix else name


def _first_on_stack(pick):
    """The first non-None ``pick(self)`` over the ``self`` of the calling frames, innermost first, or None."""
    frame = inspect.currentframe()
    try:
        f = frame.f_back if frame is not None else None
        while f is not None:
            found = pick(f.f_locals.get("self"))
            if found is not None:
                return found
            f = f.f_back
    finally:
        del frame
    return None


def find_active_parser():
    """The :class:`monai.bundle.ConfigParser` evaluating the current config expression, or ``None``.

    Walks up the call stack for a frame whose ``self`` is a ``ConfigParser`` (its
    ``get_parsed_content``) or a bundle workflow holding one (``ConfigWorkflow.parser``).
    """
    from monai.bundle import ConfigParser

    def pick(obj):
        if isinstance(obj, ConfigParser):
            return obj
        parser = getattr(obj, "parser", None) if obj is not None and type(obj).__name__.endswith("Workflow") else None
        return parser if isinstance(parser, ConfigParser) else None

    return _first_on_stack(pick)


def find_active_workflow():
    """The MONAI bundle workflow (``ConfigWorkflow``) whose method is on the call stack, or ``None``."""
    from monai.bundle import BundleWorkflow

    return _first_on_stack(lambda obj: obj if isinstance(obj, BundleWorkflow) else None)


def active_bundle_root(default: str = ".") -> str:
    """The root folder of the bundle being run: the parent of its ``configs`` folder.

    Found from the active workflow's metadata file (``--meta_file``), else from its first config
    file, so a bundle run from any working directory knows where it lives. A layered bundle's first
    config file is its base's (``--config_file "[base, bundle]"``): its own ``--meta_file`` names it.
    Falls back to ``default`` outside a workflow.
    """
    wf = find_active_workflow()
    meta = getattr(wf, "meta_file", None)
    if isinstance(meta, (list, tuple)) and meta:
        meta = meta[-1]
    if isinstance(meta, (str, os.PathLike)) and Path(meta).is_file() and Path(meta).parent.name == "configs":
        return str(Path(meta).resolve().parent.parent)
    root = getattr(wf, "config_root_path", None)
    if root is None:
        return default
    root = Path(root)
    return str(root.parent if root.name == "configs" else root)


def command_line_config_files() -> list[str] | None:
    """The ``--config_file`` given to ``monai.bundle.scripts.run`` / ``create_workflow``, when on the stack."""
    import ast

    frame = inspect.currentframe()
    try:
        f = frame.f_back if frame is not None else None
        while f is not None:
            if f.f_code.co_name in ("run", "create_workflow") and f.f_globals.get("__name__") == "monai.bundle.scripts":
                files = f.f_locals.get("config_file")
                if isinstance(files, str) and files.strip().startswith("["):
                    files = ast.literal_eval(files)
                if files:
                    return [str(x) for x in ([files] if isinstance(files, (str, os.PathLike)) else files)]
            f = f.f_back
    finally:
        del frame
    return None


def command_line_overrides() -> dict | None:
    """Overrides given to ``monai.bundle.scripts.run`` / ``create_workflow``, when on the stack.

    Returns ``None`` when the workflow was not started through those functions (for example
    a ``ConfigWorkflow`` built directly; its overrides are still part of the executed config).
    """
    frame = inspect.currentframe()
    try:
        f = frame.f_back if frame is not None else None
        while f is not None:
            if f.f_code.co_name in ("run", "create_workflow") and f.f_globals.get("__name__") == "monai.bundle.scripts":
                loc = f.f_locals
                found = loc.get("override") if f.f_code.co_name == "run" else loc.get("_args")
                if isinstance(found, Mapping):
                    skip = {"config_file", "meta_file", "logging_file", "init_id", "run_id", "final_id", "tracking",
                            "args_file", "workflow_name", "workflow_type"}
                    return {k: v for k, v in found.items() if k not in skip}
            f = f.f_back
    finally:
        del frame
    return None


def _registry_key(*parts) -> tuple | None:
    parser = find_active_parser()
    return (id(parser),) + parts if parser is not None else None


def _remembered(key: tuple | None) -> str | None:
    if key is None or key not in _RUN_DIRS:
        return None
    ref, path = _RUN_DIRS[key]
    return path if ref() is find_active_parser() else None  # ids of dead parsers get reused


def _remember(key: tuple | None, path: str) -> None:
    if key is not None:
        _RUN_DIRS[key] = (weakref.ref(find_active_parser()), path)


def run_status(run_dir: str | os.PathLike) -> str | None:
    """``status`` of the run at ``run_dir`` (``running``, ``finished``, ``failed``, ``interrupted``).

    A run folder written before runs had a status (a ``run_info.json`` without one) counts as ``finished`` when it
    holds a ``model.pt``; ``None`` when there is no run record at all.
    """
    info = read_run_info(run_dir)
    if not info:
        return None
    if "status" in info:
        return str(info["status"])
    return "finished" if (Path(run_dir) / CHECKPOINT_NAME).is_file() else None


def _clear_run(path: Path) -> None:
    """Remove what an earlier run left in ``path`` (``--overwrite true``)."""
    import shutil

    for child in path.iterdir():
        if child.is_dir() and not child.is_symlink():
            shutil.rmtree(child)
        else:
            child.unlink()


def new_run_dir(output_dir: str | os.PathLike, run_name: str = "", suffix: str = "", create: bool = True,
                overwrite: bool = False, resume: str = "") -> str:
    """The folder of a new run: ``<output_dir>/<run_name or timestamp[-suffix]>``.

    Within one config parse the same arguments give the same folder (the config may resolve
    ``run_dir`` more than once). A timestamp name that exists already gets ``-2``, ``-3`` ...;
    an explicit ``run_name`` is used as it is. A folder holding a *finished* run is not trained into again (its
    ``model.pt`` and ``calibration.json`` would be mixed with the new run's) unless ``overwrite``, which removes the
    old artefacts first; a run that did not finish is continued with ``resume``, or trained over.

    Raises:
        DataError: ``run_name`` names a finished run and neither ``overwrite`` nor ``resume`` is given.

    Under ``torch.distributed`` rank 0 chooses the name and broadcasts it, and only rank 0
    creates the folder.
    """
    key = _registry_key(str(output_dir), str(run_name), str(suffix))
    known = _remembered(key)
    if known is not None:
        return known
    base = Path(output_dir)
    if run_name:
        path = base / str(run_name)
        if path.is_dir() and is_main_process() and not resume and run_status(path) == "finished":
            if not overwrite:
                from medfuse.errors import DataError

                raise DataError(f"{path}: holds a finished run; choose another --run_name, or pass --overwrite true "
                                "to remove its model.pt, calibration.json and logs and train again")
            _clear_run(path)
    else:
        name = make_run_name(str(suffix))
        path, k = base / name, 2
        while path.exists():
            path, k = base / f"{name}-{k}", k + 1
    path = Path(_broadcast_from_main(str(path)))
    if create and is_main_process():
        path.mkdir(parents=True, exist_ok=True)
    out = str(path)
    _remember(key, out)
    return out


def latest_run(output_dir: str | os.PathLike, require: str = CHECKPOINT_NAME, finished_only: bool = True) -> Path | None:
    """The most recently modified run folder under ``output_dir`` that holds ``require``.

    Only runs whose status is ``finished`` (:func:`run_status`) count unless ``finished_only`` is False: a run that
    was killed, failed or is still training holds a ``model.pt`` too, and must not be picked as "the latest model".
    """
    base = Path(output_dir)
    if not base.is_dir():
        return None
    runs = [p for p in base.iterdir() if p.is_dir() and (not require or (p / require).is_file())
            and (not finished_only or run_status(p) in ("finished", None))]
    if not runs:
        return None
    return max(runs, key=lambda p: ((p / require).stat().st_mtime if require else p.stat().st_mtime, p.name))


def find_run_dir(output_dir: str | os.PathLike, run_name: str = "", create: bool = True) -> str:
    """The run folder that evaluation and inference read from and write into.

    ``run_name`` given: ``<output_dir>/<run_name>`` (it must exist unless ``create``). Not
    given: the latest run under ``output_dir`` that holds a ``model.pt``; when there is none,
    a new timestamped name, not created here (the checkpoint then has to come from
    ``ckpt_path``; the outputs create the folder).

    Raises:
        FileNotFoundError: when ``run_name`` names a missing folder and ``create`` is False.
    """
    if run_name:
        path = Path(output_dir) / str(run_name)
        if not path.is_dir():
            if not create:
                raise FileNotFoundError(f"run folder {path} does not exist; check --output_dir and --run_name")
            if is_main_process():
                path.mkdir(parents=True, exist_ok=True)
        return str(path)
    found = latest_run(output_dir)
    if found is not None:
        return str(found)
    # no trained run: a new name, created only when something is written into it
    return new_run_dir(output_dir, create=False)


def find_checkpoint(run_dir: str | os.PathLike, bundle_root: str | os.PathLike | None = None) -> str:
    """``<run_dir>/model.pt`` when it exists, else the model-zoo place ``<bundle_root>/models/model.pt``.

    Raises:
        FileNotFoundError: naming both places and how to point at another checkpoint.
    """
    candidates = [Path(run_dir) / CHECKPOINT_NAME]
    if bundle_root:
        candidates.append(Path(bundle_root) / "models" / CHECKPOINT_NAME)
    for c in candidates:
        if c.is_file():
            return str(c)
    raise FileNotFoundError(
        f"no trained model: looked for {' and '.join(str(c) for c in candidates)}; train first "
        "(configs/train.json), or pass --run_name <run> or --ckpt_path /path/to/model.pt"
    )


def _json_safe(obj: Any) -> Any:
    if isinstance(obj, Mapping):
        return {str(k): _json_safe(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_json_safe(v) for v in obj]
    if obj is None or isinstance(obj, (bool, int, float, str)):
        return obj
    if hasattr(obj, "tolist"):
        return obj.tolist()
    return str(obj)


def _versions() -> dict:
    import monai
    import numpy
    import torch

    from medfuse import __version__

    return {
        "medfuse": __version__,
        "monai": monai.__version__,
        "torch": torch.__version__,
        "numpy": numpy.__version__,
        "python": platform.python_version(),
        "cuda": torch.version.cuda,
    }


def save_executed_config(
    out_dir: str | os.PathLike,
    info: Mapping[str, Any] | None = None,
    parser=None,
    filename: str = "config.json",
    info_filename: str = "run_info.json",
) -> str | None:
    """Write the executed config and a run record into ``out_dir``; call it from ``initialize``.

    Args:
        out_dir: the run (or eval/inference) folder.
        info: resolved values worth keeping (classes, device, AMP, seed ...), written to
            ``info_filename`` together with the command line, the overrides, the time and the
            package versions.
        parser: the ``ConfigParser``; found on the call stack when ``None``.
        filename: name of the config file written.
        info_filename: name of the run record written.

    Returns:
        the path of the config file, or ``None`` on non-zero ranks (which write nothing).

    Raises:
        RuntimeError: when no parser is given and none is active (not called from a config).
    """
    if not is_main_process():
        return None
    parser = parser if parser is not None else find_active_parser()
    if parser is None:
        raise RuntimeError("save_executed_config: no active monai.bundle ConfigParser; pass parser=")
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    config = _json_safe(parser.get())
    path = atomic_write_json(out / filename, config)
    argv = list(sys.argv)
    record = {
        "time": _dt.datetime.now().astimezone().isoformat(timespec="seconds"),
        "cwd": os.getcwd(),
        "argv": argv,
        "overrides": _json_safe(command_line_overrides()),
        "config": str(path),
        "host": platform.node(),
        "versions": _versions(),
    }
    record.update(_json_safe(dict(info or {})))
    atomic_write_json(out / info_filename, record)
    return str(path)


def update_run_info(out_dir: str | os.PathLike, values: Mapping[str, Any] | None = None,
                    info_filename: str = "run_info.json", **fields: Any) -> None:
    """Add ``values`` and ``fields`` to the run record in ``out_dir`` (created when absent; written atomically);
    only the main process writes.

    For values known after :func:`save_executed_config` ran, e.g. ``{"speed": @speed}`` from the ``initialize``
    list, the run ``status`` (:mod:`medfuse.workflows.resume`), or a summary written at the end of a run.
    """
    if not is_main_process():
        return
    path = Path(out_dir) / info_filename
    info = read_run_info(out_dir, info_filename)
    info.update(_json_safe({**dict(values or {}), **fields}))
    path.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_json(path, info)


def run_setting(run_dir: str | os.PathLike, key: str, default: Any = None, filename: str = "config.json") -> Any:
    """The value ``key`` had in the training run at ``run_dir`` (its executed config), else ``default``.

    Evaluation and inference use this for the architecture keys (``backbones``,
    ``hidden_size``, ``image_size`` ...), so that a run trained with non-default settings is
    rebuilt the same way without repeating them; a value given on the command line still wins
    (it replaces the expression that calls this function). Expressions in the saved config
    are evaluated as they were in training.
    """
    path = Path(run_dir) / filename
    if not path.is_file():
        return default
    from monai.bundle import ConfigParser

    key_ = str(key)
    stamp = path.stat().st_mtime_ns
    cached = _RUN_CONFIGS.get(str(path))
    if cached is None or cached[0] != stamp:
        parser = ConfigParser()
        parser.read_config(str(path))
        cached = (stamp, parser)
        _RUN_CONFIGS[str(path)] = cached
    parser = cached[1]
    if key_ not in parser:
        return default
    return parser.get_parsed_content(key_)


def read_run_info(run_dir: str | os.PathLike, info_filename: str = "run_info.json") -> dict:
    """The run record written by :func:`save_executed_config` (empty dict when absent)."""
    p = Path(run_dir) / info_filename
    if not p.is_file():
        return {}
    with open(p, encoding="utf-8") as f:
        return json.load(f)
