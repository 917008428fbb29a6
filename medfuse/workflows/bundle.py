# Copyright (c) medfuse contributors
# Licensed under the Apache License, Version 2.0
"""Run a medfuse bundle from Python: what ``python -m monai.bundle run`` does, plus the results.

:func:`run_bundle` builds the MONAI ``ConfigWorkflow`` of one of the bundle's workflows
(``train``, ``evaluate`` = train.json + evaluate.json, ``inference``), runs initialize /
run / finalize and returns where the outputs went, so scripts such as the demo can chain
training, evaluation and inference without shelling out.

Example::

    from medfuse.workflows.bundle import run_bundle

    small = {"image_size": 64, "backbones": ["efficientnet-b0", "resnet10"], "hidden_size": 16,
             "num_heads": 2, "epochs": 1, "num_workers": 0}
    trained = run_bundle("cxr_dual_cross_attention", "train", manifest="runs/demo/data/cxr_manifest.json",
                         output_dir="runs/demo/runs/cxr", run_name="demo", **small)
    report = run_bundle("cxr_dual_cross_attention", "evaluate", manifest="runs/demo/data/cxr_manifest.json",
                        output_dir="runs/demo/runs/cxr", run_name="demo", mc_samples=10)
    report["metrics"]["auc"]
"""

from __future__ import annotations

import json
import os
import warnings
from pathlib import Path
from typing import Any

__all__ = [
    "ACCEPTS_KEY",
    "BASE_KEY",
    "WORKFLOWS",
    "bundle_accepts",
    "bundle_dir",
    "check_overrides",
    "check_command_line_overrides",
    "bundle_metadata_value",
    "LAYER_FILES_KEY",
    "compose_bundle",
    "compose_layers",
    "config_layers",
    "flatten_configs",
    "layered_config_arg",
    "run_bundle",
    "workflow_files",
]

#: workflow name -> (config files, MONAI workflow type)
WORKFLOWS = {
    "train": (("train.json",), "train"),
    "evaluate": (("train.json", "evaluate.json"), "train"),
    "inference": (("inference.json",), "infer"),
    "multi_gpu_train": (("train.json", "multi_gpu_train.json"), "train"),
}
_REPO_ROOT = Path(__file__).resolve().parents[2]
#: config files that a workflow applies on top of another (``evaluate.json`` on ``train.json`` ...)
_APPLIED_ON_TOP = {name for files, _ in WORKFLOWS.values() for name in files[1:]}
#: where an installed medfuse (a wheel) keeps the bundles (setup.py copies bundles/ there)
_PACKAGED_BUNDLES = Path(__file__).resolve().parents[1] / "bundles"
#: key of ``configs/metadata.json`` naming the bundle whose configs this bundle's configs override
BASE_KEY = "config_base"


def bundle_dir(bundle: str | os.PathLike) -> Path:
    """The folder of ``bundle``: a path to a bundle folder, or a name under ``./bundles``, the checkout's ``bundles``
    or, for an installed medfuse, the package's ``medfuse/bundles``.

    Raises:
        FileNotFoundError: when no folder with ``configs/train.json`` is found.
    """
    candidates = [Path(bundle), Path.cwd() / "bundles" / str(bundle), _REPO_ROOT / "bundles" / str(bundle),
                  _PACKAGED_BUNDLES / str(bundle)]
    for c in candidates:
        if (c / "configs" / "train.json").is_file() or (c / "configs" / "inference.json").is_file():
            return c.resolve()
    raise FileNotFoundError(
        f"bundle {bundle!r} not found (looked in {', '.join(str(c) for c in candidates)}); "
        "give the path of a bundle folder"
    )


def _metadata(root: Path) -> dict:
    meta = root / "configs" / "metadata.json"
    if not meta.is_file():
        return {}
    with open(meta, encoding="utf-8") as f:
        return json.load(f)


#: key of ``configs/metadata.json`` declaring the DICOM inputs the bundle's model accepts (``medfuse.dicom.accept``)
ACCEPTS_KEY = "accepts"


def bundle_metadata_value(bundle: str | os.PathLike, key: str, default: Any = None, _seen: tuple = ()) -> Any:
    """``key`` of the bundle's ``configs/metadata.json``, inherited from its ``config_base`` chain when absent.

    A derived bundle states a metadata key only when it differs from its base (as it does for configs).

    Raises:
        ValueError: the bases form a cycle.
    """
    root = bundle_dir(bundle)
    if root in _seen:
        raise ValueError(f"config bases form a cycle: {' -> '.join(str(r.name) for r in (*_seen, root))}")
    meta = _metadata(root)
    if key in meta:
        return meta[key]
    base = meta.get(BASE_KEY)
    if not base:
        return default
    base_root = root.parent / base if (root.parent / base / "configs").is_dir() else bundle_dir(base)
    return bundle_metadata_value(base_root, key, default, (*_seen, root))


def bundle_accepts(bundle_root: str | os.PathLike, bundle_name: str = "") -> dict | None:
    """What the bundle accepts (its metadata's ``"accepts"``, inherited from the base), checked; ``None``: no rule.

    ``bundle_root`` is the bundle being run (``@bundle_root``); when it is not a bundle folder (a config run
    outside its bundle), the bundle named ``bundle_name`` is looked up instead.

    Raises:
        ValueError: when the declared value is malformed (see :func:`medfuse.dicom.accept.validate_accepts`).
    """
    from medfuse.dicom.accept import validate_accepts

    root = None
    for candidate in (bundle_root, bundle_name):
        try:
            root = bundle_dir(candidate) if candidate else None
        except FileNotFoundError:
            continue
        if root is not None:
            break
    if root is None:
        warnings.warn(f"no bundle folder at {bundle_root!r} or named {bundle_name!r}: DICOM inputs are not checked "
                      "against the bundle's 'accepts'", UserWarning, stacklevel=2)
        return None
    accepts = bundle_metadata_value(root, ACCEPTS_KEY)
    validate_accepts(accepts, f"{root / 'configs' / 'metadata.json'}#{ACCEPTS_KEY}")
    return accepts or None


def config_layers(bundle: str | os.PathLike, name: str, _seen: tuple = ()) -> list[Path]:
    """The config files that make up ``configs/<name>`` of ``bundle``, base first.

    A bundle whose ``configs/metadata.json`` names a base bundle under ``"config_base"`` holds only what
    differs from it: its ``configs/<name>`` (when present) is an override file applied after the base's
    layers of the same name, as ``python -m monai.bundle run --config_file "[base, bundle]"`` applies
    it. A bundle without a base is complete: its own file is the only layer.

    Raises:
        FileNotFoundError: no layer of that name exists.
        ValueError: the bases form a cycle.
    """
    root = bundle_dir(bundle)
    if root in _seen:
        raise ValueError(f"config bases form a cycle: {' -> '.join(str(r.name) for r in (*_seen, root))}")
    layers: list[Path] = []
    base = _metadata(root).get(BASE_KEY)
    if base:
        base_root = root.parent / base if (root.parent / base / "configs").is_dir() else bundle_dir(base)
        layers += config_layers(base_root, name, (*_seen, root))
    own = root / "configs" / name
    if own.is_file():
        layers.append(own)
    if not layers:
        raise FileNotFoundError(f"{root / 'configs' / name}: no such config in the bundle or its bases")
    return layers


def workflow_files(bundle: str | os.PathLike, workflow: str) -> list[str]:
    """Every config file of one workflow (``train``, ``evaluate``, ``inference``, ``multi_gpu_train``), in order."""
    if workflow not in WORKFLOWS:
        raise ValueError(f"workflow must be one of {list(WORKFLOWS)}, got {workflow!r}")
    return [str(p) for name in WORKFLOWS[workflow][0] for p in config_layers(bundle, name)]


def layered_config_arg(bundle: str | os.PathLike, workflow: str) -> str:
    """``--config_file`` argument of ``python -m monai.bundle run`` for one workflow of ``bundle``."""
    files = workflow_files(bundle, workflow)
    return files[0] if len(files) == 1 else "[" + ",".join(f"'{f}'" for f in files) + "]"


def _get_nested(out: dict, key: str) -> Any:
    node: Any = out
    for p in key.split("#"):
        if isinstance(node, dict) and p in node:
            node = node[p]
        elif isinstance(node, list) and p.isdigit() and int(p) < len(node):
            node = node[int(p)]
        else:
            return None
    return node


def _set_nested(out: dict, key: str, value: Any) -> bool:
    parts = key.split("#")
    node: Any = out
    for p in parts[:-1]:
        if isinstance(node, dict) and p in node:
            node = node[p]
        elif isinstance(node, list) and p.isdigit() and int(p) < len(node):
            node = node[int(p)]
        else:
            return False
    if isinstance(node, dict):
        node[parts[-1]] = value
        return True
    if isinstance(node, list) and parts[-1].isdigit() and int(parts[-1]) < len(node):
        node[int(parts[-1])] = value
        return True
    return False


def compose_layers(files: list[str | os.PathLike], keep_merge_keys: bool = False) -> dict:
    """One config from layered files, as MONAI's runner merges them, for writing a bundle that stands alone.

    Later files override earlier ones; a ``#`` key (``train#preprocessing#_target_``) replaces that nested
    value when the earlier layers define its parent, and stays a literal override key otherwise (so two
    override files, such as a base's ``evaluate.json`` and a bundle's, compose into one override file); a
    ``+key`` extends a list or updates a dict, as MONAI's ``merge_kv`` does. When these layers have nothing
    to merge it into, it is copied as a plain key (as MONAI does), or, with ``keep_merge_keys`` (a file that
    is applied on top of another, such as ``evaluate.json`` on ``train.json``), kept as a ``+key``.
    """
    import copy

    out: dict = {}
    for f in files:
        with open(f, encoding="utf-8") as fh:
            layer = json.load(fh)
        for key, value in layer.items():
            value = copy.deepcopy(value)
            if key.startswith("+"):
                target = _get_nested(out, key[1:])
                if target is None:
                    target = out.get(key)  # an earlier layer's merge key that had nothing to merge into either
                if isinstance(target, dict) and isinstance(value, dict):
                    target.update(value)
                    continue
                if isinstance(target, list) and isinstance(value, list):
                    target.extend(value)
                    continue
                if target is not None:
                    raise ValueError(f"{f}: {key!r} merges a {type(value).__name__} into a {type(target).__name__}")
                if not keep_merge_keys:
                    key = key[1:]  # nothing to merge into: copied, as MONAI does
            if "#" in key and _set_nested(out, key, value):
                continue
            out[key] = value
    return out


def flatten_configs(bundle: str | os.PathLike, dest: str | os.PathLike) -> list[str]:
    """Write every config of ``bundle`` into ``dest`` with its base layers merged in, so it stands alone.

    Every config name found in the bundle or its bases (``train.json``, ``evaluate.json``, ``logging.conf``
    ...; ``metadata.json`` excepted) is written: JSON layers composed by :func:`compose_layers`, other files
    copied from the last layer. Returns the names written.
    """
    import shutil

    root = bundle_dir(bundle)
    names: set[str] = set()
    chain, current = [], root
    while current is not None and current not in chain:
        chain.append(current)
        base = _metadata(current).get(BASE_KEY)
        current = (current.parent / base if (current.parent / base / "configs").is_dir() else bundle_dir(base)) if base else None
    for r in chain:
        names.update(p.name for p in (r / "configs").iterdir() if p.is_file() and p.name != "metadata.json")
    dest = Path(dest)
    dest.mkdir(parents=True, exist_ok=True)
    for name in sorted(names):
        layers = config_layers(root, name)
        if name.endswith(".json"):
            with open(dest / name, "w", encoding="utf-8") as f:
                json.dump(compose_layers(layers, keep_merge_keys=name in _APPLIED_ON_TOP), f, indent=4)
                f.write("\n")
        elif layers[-1].resolve() != (dest / name).resolve():
            shutil.copy2(layers[-1], dest / name)
    return sorted(names)


#: key listing the override files given (each layered config file adds its own name with ``"+layer_files"``)
LAYER_FILES_KEY = "layer_files"
_COMPOSE_CALL = "$medfuse.workflows.compose_bundle()"


def _same_ids(value: Any) -> Any:
    """``value`` with every ``#`` of its strings written ``::``, as MONAI's parser rewrites references it has parsed."""
    if isinstance(value, str):
        return value.replace("#", "::")
    if isinstance(value, dict):
        return {k: _same_ids(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_same_ids(v) for v in value]
    return value


def _leaf_overrides(current: Any, loaded: Any, prefix: str = "") -> dict:
    """``{id: value}`` of what differs between the running config and the files as loaded (the overrides).

    A reference the parser has already rewritten (``@train#data`` -> ``@train::data``) is no difference: otherwise
    a ``"+run"`` / ``"+initialize"`` list of the bundle's own file would come back as an override and replace
    the composed list.
    """
    out: dict = {}
    for key, value in current.items():
        ident = f"{prefix}{key}"
        if key not in loaded:
            out[ident] = value
        elif isinstance(value, dict) and isinstance(loaded[key], dict):
            out.update(_leaf_overrides(value, loaded[key], ident + "#"))
        elif _same_ids(value) != _same_ids(loaded[key]):
            out[ident] = value
    return out


def compose_bundle() -> None:
    """Put a layered bundle's base under it when the bundle's own config files were run alone.

    Every config file of a layered bundle lists itself in ``"+layer_files"`` and calls
    ``$medfuse.workflows.compose_bundle()`` first in its ``initialize`` (``"+initialize"`` when it keeps the
    base's list). Run with its base layers first (``--config_file "[base, bundle]"``, :func:`run_bundle`, an
    exported bundle), the config is complete and this does nothing. Run alone (``--config_file
    bundles/<b>/configs/train.json``, as the bundle READMEs show), the workflow holds only the bundle's
    differences: this loads the base layers of every file given under them, re-applies the command-line
    overrides, parses the result and runs its ``initialize``, so the workflow goes on as if all layers had
    been given.
    """
    from monai.bundle import ConfigParser

    from medfuse.workflows.runs import find_active_workflow

    wf = find_active_workflow()
    parser = getattr(wf, "parser", None)
    root = getattr(wf, "config_root_path", None)
    if parser is None or root is None:
        raise RuntimeError("compose_bundle() runs inside a bundle workflow's initialize")
    names = list(dict.fromkeys(parser[LAYER_FILES_KEY])) if LAYER_FILES_KEY in parser else []
    if not names:
        return
    bundle = Path(root).parent if Path(root).name == "configs" else Path(root)
    files = [str(p) for n in names for p in config_layers(bundle, n)]
    if all(k.lstrip("+") in parser for k in compose_layers(files)):
        return  # the base layers are there already (all layers were given)
    full = ConfigParser.load_config_files(files)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)  # "+key: copying instead", as when the files were loaded
        alone = ConfigParser.load_config_files([str(bundle / "configs" / n) for n in names])
    overrides = _leaf_overrides(parser.get(), alone)
    visited = len(parser["initialize"])  # the workflow is inside its loop over this many initialize items
    init = [i for i in full.get("initialize", []) if i != _COMPOSE_CALL]
    full["initialize"] = [_COMPOSE_CALL] * visited + init  # the items it will still visit do nothing
    parser.set(full)
    parser.update(overrides)
    parser.parse(reset=True)
    for i in range(visited, visited + len(init)):
        parser.get_parsed_content(f"initialize#{i}")


#: override keys of ``monai.bundle run`` that are arguments of the runner, not config keys
_RUNNER_ARGS = {"config_file", "meta_file", "logging_file", "init_id", "run_id", "final_id", "tracking", "args_file",
                "workflow_name", "workflow_type"}
_MISSING = object()


def _all_layers(files: list[str]) -> list[str]:
    """Every layer of each config file (a layered bundle's file run alone brings its base layers), once, in order."""
    out: list[str] = []
    for f in files:
        path = Path(f)
        try:
            layers = [str(p) for p in config_layers(path.parent.parent, path.name)] if path.parent.name == "configs" else [f]
        except (FileNotFoundError, ValueError):
            layers = [f]
        out += [x for x in layers if x not in out]
    return out


def _expected_type(current: Any) -> tuple[tuple, str] | None:
    """(accepted Python types, words) for an override of a config value, or None when anything goes."""
    if isinstance(current, bool):
        return (bool,), "true or false"
    if isinstance(current, int):
        return (int,), "an integer"
    if isinstance(current, float):
        return (int, float), "a number"
    if isinstance(current, list):
        return (list, tuple), "a list"
    if isinstance(current, dict):
        return (dict,), "a dictionary"
    return None


def check_overrides(files: list[str | os.PathLike], overrides: dict) -> None:
    """Refuse override keys that no layer of the config defines, and literal values of the wrong type.

    The known keys are those of the composed config (every layer of ``files``, as :func:`compose_layers` merges
    them), so a key added to a base config is known to every bundle built on it. ``a#b#c`` keys must name an
    existing nested entry. A value is checked against the composed config's literal value (an integer stays an
    integer, a flag a flag ...); expressions (``$...``), references (``@...``) and ``null`` accept anything.

    Raises:
        DataError: one line naming the key and a did-you-mean (:func:`difflib.get_close_matches`), or the key,
            the value and the expected type.
    """
    import difflib

    from medfuse.errors import DataError

    layers = _all_layers([str(f) for f in files])
    config = compose_layers(layers)
    where = ", ".join(f"{Path(f).parent.parent.name}/{Path(f).name}" for f in layers)
    for key, value in overrides.items():
        if key in _RUNNER_ARGS or key.startswith("+"):
            continue
        node: Any = config
        for depth, part in enumerate(key.split("#")):
            if isinstance(node, dict) and part in node:
                node = node[part]
            elif isinstance(node, list) and part.isdigit() and int(part) < len(node):
                node = node[int(part)]
            else:
                choices = [str(k) for k in node] if isinstance(node, dict) else []
                close = difflib.get_close_matches(part, choices, n=1)
                parent = "#".join(key.split("#")[:depth])
                hint = f"; did you mean --{(parent + '#' if parent else '') + close[0]}?" if close else ""
                raise DataError(f"--{key}: no such key in the config ({where}){hint} "
                                "(a typo would otherwise be ignored silently)")
        if isinstance(node, str) and node[:1] in ("$", "@", "%") or node is None:
            continue
        if value is None or isinstance(value, str) and value[:1] in ("$", "@", "%"):
            continue
        if isinstance(node, bool) and isinstance(value, str):
            from medfuse.workflows.engine import FLAG_WORDS

            if value.strip().lower() in FLAG_WORDS:
                continue  # the command line passes --flag false as the string 'false'; flag() reads it
        expected = _expected_type(node)
        if expected and not (isinstance(value, expected[0]) and not (isinstance(value, bool) and bool not in expected[0])):
            raise DataError(f"--{key} {value!r}: expected {expected[1]} (the config's value is {json.dumps(node)})")


def check_command_line_overrides() -> None:
    """:func:`check_overrides` on the ``python -m monai.bundle run`` command line, when the workflow was started there.

    Called first by every bundle's ``initialize`` (through :func:`medfuse.workflows.setup_run`), before any work.
    A bad override prints one line and ends the process with status 2, as an argument error does.
    """
    import sys

    from medfuse.errors import DataError
    from medfuse.workflows.runs import command_line_config_files, command_line_overrides

    overrides, files = command_line_overrides(), command_line_config_files()
    if not overrides or not files:
        return
    try:
        check_overrides(files, overrides)
    except DataError as e:
        print(f"monai.bundle run: error: {e}", file=sys.stderr)
        raise SystemExit(2) from None


def run_bundle(bundle: str | os.PathLike, workflow: str = "train", logging: bool = True, **overrides: Any) -> dict:
    """Run one workflow of a bundle and return its outputs.

    Args:
        bundle: bundle folder, or its name (``cxr_dual_cross_attention``).
        workflow: ``train``, ``evaluate`` or ``inference``.
        logging: apply the bundle's ``configs/logging.conf`` (as the command line does).
        overrides: config keys, as on the command line (``manifest=...``, ``epochs=1`` ...).

    Returns:
        ``{"workflow", "bundle", "run_dir", ...}`` plus, for ``train``: ``checkpoint``,
        ``key_metric`` (the validation key metric's name: ``val_auc``, ``val_dice``, ``val_map`` ...),
        ``best_val_metric`` (its best value), ``best_val_auc`` (the same, only when the key metric is ``val_auc``),
        ``best_epoch``, ``epochs_run``, ``log``; for ``evaluate``:
        ``eval_dir``, ``metrics`` (the ``metrics.json`` content), ``predictions``; for
        ``inference``: ``predictions``.

    Raises:
        ValueError: for an unknown workflow.
        DataError: an override key that no config layer defines (with a did-you-mean), or a value of the wrong type.
    """
    from monai.bundle import ConfigWorkflow

    if workflow not in WORKFLOWS:
        raise ValueError(f"workflow must be one of {list(WORKFLOWS)}, got {workflow!r}")
    root = bundle_dir(bundle)
    kind = WORKFLOWS[workflow][1]
    config_files = workflow_files(root, workflow)
    check_overrides(config_files, overrides)  # a typo or a wrong type stops here, before any work
    wf = ConfigWorkflow(
        config_file=config_files if len(config_files) > 1 else config_files[0],
        meta_file=str(root / "configs" / "metadata.json"),
        logging_file=str(config_layers(root, "logging.conf")[-1]) if logging else False,
        workflow_type=kind,
        **overrides,
    )
    wf.initialize()
    wf.run()
    wf.finalize()
    parser = wf.parser
    run_dir = Path(parser.get_parsed_content("run_dir"))
    result: dict[str, Any] = {"workflow": workflow, "bundle": root.name, "run_dir": run_dir}
    if workflow in ("train", "multi_gpu_train"):
        evaluator = parser.get_parsed_content("validate#evaluator")
        trainer = parser.get_parsed_content("train#trainer")
        name = str(evaluator.state.key_metric_name or "key_metric")
        result.update(
            checkpoint=run_dir / "model.pt",
            key_metric=name,
            best_val_metric=float(evaluator.state.best_metric),
            # the historical key, kept only where it is true (the classifiers' val_auc)
            **({"best_val_auc": float(evaluator.state.best_metric)} if name == "val_auc" else {}),
            best_epoch=int(evaluator.state.best_metric_epoch),
            epochs_run=int(trainer.state.epoch),
            log=run_dir / "log.csv",
        )
    elif workflow == "evaluate":
        eval_dir = Path(parser.get_parsed_content("eval_dir"))
        with open(eval_dir / "metrics.json", encoding="utf-8") as f:
            metrics = json.load(f)
        result.update(eval_dir=eval_dir, metrics=metrics, predictions=eval_dir / "predictions.csv")
    else:
        result.update(predictions=Path(parser.get_parsed_content("inference_dir")) / "predictions.csv")
    return result
