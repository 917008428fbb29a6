# Copyright (c) medfuse contributors
# Licensed under the Apache License, Version 2.0
"""Deep ensembles of trained runs, used as one model (:class:`medfuse.networks.nets.EnsembleNet`).

An ensemble folder is an ordinary run folder whose ``model.pt`` holds every member's weights
(``members.<i>.<name>``), with the first member's ``config.json`` (so evaluation rebuilds the members'
architecture by ``run_setting``), a ``run_info.json`` and an ``ensemble.json``::

    {"members": [run folders], "member_sha256": [sha256 of each member's model.pt], "model_sha256": ...,
     "combine": "mean of the members' softmax probabilities", "classes": [...]}

``medfuse cv`` makes its ``cv/`` folder one (:func:`build_cv_ensemble`, calibrated on the manifest's
``validation`` split); :func:`build_calibrated_ensemble` (``medfuse ensemble RUN1,RUN2,... --out D``) makes one from
any runs of one bundle, and ``medfuse.load_model("run1,run2")`` combines runs in memory.
The bundles' evaluate and inference configs build their network with :func:`as_ensemble`, so
``--run_name cv`` (or ``--ckpt_path <ensemble>/model.pt``) evaluates and predicts with the ensemble, and
``medfuse export --weights <ensemble>/model.pt`` exports it. :func:`load_ensemble` returns the network in Python.
"""

from __future__ import annotations

import datetime as dt
import json
import os
import re
import shutil
from pathlib import Path
from typing import Any, Mapping, Sequence

from medfuse.errors import DataError
from medfuse.utils.io import atomic_write_json, sha256_file

__all__ = ["ENSEMBLE_FILE", "COMBINE", "member_runs", "read_ensemble", "as_ensemble", "build_ensemble",
           "load_ensemble", "build_cv_ensemble", "build_calibrated_ensemble", "ensemble_configs"]

ENSEMBLE_FILE = "ensemble.json"
COMBINE = "mean of the members' softmax probabilities (forward returns its log)"


def member_runs(spec: str | os.PathLike | Sequence[str | os.PathLike]) -> list[Path]:
    """The member run folders of ``spec``: a ``cv`` folder (its ``fold_<i>`` runs, by number), a comma-separated
    text of run folders, or a list of them.

    Raises:
        DataError: a member without ``model.pt``, or fewer than two members.
    """
    if isinstance(spec, (list, tuple)):
        runs = [Path(p) for p in spec]
    elif "," in str(spec):
        runs = [Path(p.strip()) for p in str(spec).split(",") if p.strip()]
    else:
        folder = Path(spec)
        folds = [p for p in folder.glob("fold_*") if p.is_dir() and re.fullmatch(r"fold_\d+", p.name)]
        runs = sorted(folds, key=lambda p: int(p.name.split("_")[1])) if folds else [folder]
    for r in runs:
        if not (r / "model.pt").is_file():
            raise DataError(f"{r}: no model.pt; an ensemble member must be a trained run folder")
    if len(runs) < 2:
        raise DataError(f"{spec}: an ensemble needs at least two trained runs (a cv/ folder or run1,run2,...)")
    return runs


def read_ensemble(folder: str | os.PathLike) -> dict | None:
    """The ``ensemble.json`` of ``folder`` (a run folder or an exported bundle's ``models``), or None."""
    path = Path(folder) / ENSEMBLE_FILE
    if not path.is_file():
        return None
    with open(path, encoding="utf-8") as f:
        return json.load(f)


def as_ensemble(network_def: Any, folder: str | os.PathLike) -> Any:
    """``network_def`` as the member of an :class:`EnsembleNet` when ``folder`` holds an ensemble; else unchanged.

    Bundle configs call it with the folder of the checkpoint being loaded. A network that is already an
    ensemble (an exported ensemble bundle builds one in ``network_def``) is returned as it is.
    """
    from medfuse.networks.nets import EnsembleNet

    info = read_ensemble(folder)
    if info is None or isinstance(network_def, EnsembleNet):
        return network_def
    return EnsembleNet(member=network_def, num_members=len(info["members"]))


def _state(path: Path) -> dict:
    import torch

    state = torch.load(path, map_location="cpu", weights_only=True)
    if isinstance(state, dict) and "model" in state and not any(k.endswith(".weight") for k in state):
        state = state["model"]
    return state


def build_ensemble(members: Sequence[str | os.PathLike] | str, out_dir: str | os.PathLike,
                   manifest: str | os.PathLike | None = None) -> dict:
    """Write the ensemble of ``members`` (run folders of one bundle, one architecture) into ``out_dir``.

    ``manifest`` is recorded as the ensemble's manifest in ``run_info.json`` (what export builds its checks with);
    default: the first member's (a cross-validation fold's manifest has no test split: pass the source manifest).

    Raises:
        DataError: members with other classes or another architecture (different weight names or shapes).
    """
    import torch

    from medfuse.workflows.runs import read_run_info

    runs = member_runs(members)
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    infos = [read_run_info(r) for r in runs]
    classes = infos[0].get("classes")
    state: dict = {}
    first = None
    for i, (run, info) in enumerate(zip(runs, infos)):
        if info.get("classes") != classes:
            raise DataError(f"{run}: classes {info.get('classes')} differ from {runs[0]}'s {classes}; ensemble members "
                            "must be trained for the same classes")
        s = _state(run / "model.pt")
        shapes = {k: tuple(v.shape) for k, v in s.items()}
        if first is None:
            first = shapes
        elif shapes != first:
            raise DataError(f"{run}/model.pt: another architecture than {runs[0]}/model.pt (weight names or shapes "
                            "differ); ensemble members must share the bundle's network settings")
        state.update({f"members.{i}.{k}": v for k, v in s.items()})
    torch.save(state, out / "model.pt")
    for name in ("config.json",):
        if (runs[0] / name).is_file() and (runs[0] / name).resolve() != (out / name).resolve():
            shutil.copy2(runs[0] / name, out / name)
    record = {"members": [str(r.resolve()) for r in runs], "member_sha256": [sha256_file(r / "model.pt") for r in runs],
              "model_sha256": sha256_file(out / "model.pt"), "combine": COMBINE, "classes": classes,
              "created": dt.datetime.now().astimezone().isoformat(timespec="seconds")}
    atomic_write_json(out / ENSEMBLE_FILE, record)
    atomic_write_json(out / "run_info.json", {**{k: v for k, v in infos[0].items() if k != "run_dir"},
                                              "workflow": "ensemble", "run_dir": str(out), "ensemble": record,
                                              **({"manifest": str(Path(manifest).resolve())} if manifest else {})})
    return record


def load_ensemble(spec: str | os.PathLike | Sequence[str | os.PathLike], device: Any = "cpu") -> tuple[Any, list[str]]:
    """``(EnsembleNet in eval mode, classes)`` of an ensemble folder, a ``cv`` folder or ``run1,run2,...``.

    Each member is rebuilt from its run's executed ``config.json`` (``network_def``, pretrained weights off, classes
    from ``run_info.json``) and loaded from its ``model.pt``.
    """
    from monai.bundle import ConfigParser

    from medfuse.networks.nets import EnsembleNet
    from medfuse.workflows.runs import read_run_info

    info = read_ensemble(spec) if not isinstance(spec, (list, tuple)) and "," not in str(spec) else None
    runs = [Path(m) for m in info["members"]] if info else member_runs(spec)
    nets, classes = [], None
    for run in runs:
        parser = ConfigParser()
        parser.read_config(str(run / "config.json"))
        run_classes = read_run_info(run).get("classes")
        parser["classes"] = run_classes
        for key in ("pretrained", "pretrained_weights"):
            if key in parser:
                parser[key] = False if key == "pretrained" else None
        net = parser.get_parsed_content("network_def", instantiate=True)
        net.load_state_dict(_state(run / "model.pt"))
        nets.append(net)
        classes = classes or run_classes
    return EnsembleNet(nets).to(device).eval(), list(classes or [])


def build_cv_ensemble(cv_dir: str | os.PathLike, bundle: str | os.PathLike, manifest: str | os.PathLike,
                      overrides: Mapping[str, Any] | None = None) -> dict:
    """Make ``cv_dir`` the ensemble of its folds and calibrate it on the manifest's ``validation`` split
    (:func:`build_calibrated_ensemble`)."""
    return build_calibrated_ensemble(str(cv_dir), cv_dir, bundle, manifest, overrides, prefix="cv")


def build_calibrated_ensemble(members: Sequence[str | os.PathLike] | str, out_dir: str | os.PathLike,
                              bundle: str | os.PathLike, manifest: str | os.PathLike,
                              overrides: Mapping[str, Any] | None = None, prefix: str = "ensemble") -> dict:
    """Write the ensemble of ``members`` into ``out_dir`` (:func:`build_ensemble`) and calibrate it on the manifest's
    ``validation`` split.

    The ensemble is run by the bundle's evaluate workflow on the validation split (uncalibrated:
    ``validation_eval/predictions.csv``); the temperature and the threshold (refused below
    ``threshold_min_cases``) are fitted on those averaged probabilities into ``out_dir/calibration.json``, which
    records the sha256 of every member and of the ensemble's weights. Without a validation split the ensemble is
    left uncalibrated (T = 1, arg-max), and that is printed.

    Returns:
        ``{"ensemble": the ensemble.json record, "calibration": the calibration or None}``.
    """
    from medfuse.data.manifest import read_manifest
    from medfuse.evaluation.calibration import fit_calibration, save_calibration
    from medfuse.evaluation.predictions import read_predictions
    from medfuse.workflows.bundle import run_bundle

    cv_dir = Path(out_dir)
    overrides = dict(overrides or {})
    record = build_ensemble(members, cv_dir, manifest=manifest)
    result: dict[str, Any] = {"ensemble": record, "calibration": None}
    stale = cv_dir / "calibration.json"
    if stale.is_file():
        stale.unlink()  # refitted below for these weights
    if not read_manifest(manifest).get("validation"):
        print(f"{prefix}: {manifest} has no validation split: the ensemble is not calibrated (T = 1, arg-max)")
        return result
    eval_dir = cv_dir / "validation_eval"
    run_bundle(bundle, "evaluate", manifest=str(manifest), output_dir=str(cv_dir.parent), run_name=cv_dir.name,
               eval_split="validation", eval_dir=str(eval_dir), calibration_file="", gallery_size=0, n_boot=0,
               **overrides)
    pred = read_predictions(eval_dir / "predictions.csv")
    keep = pred["labels"] >= 0
    from medfuse.workflows.bundle import compose_layers, workflow_files

    base = compose_layers(workflow_files(bundle, "train"))
    cal = fit_calibration(
        pred["labels"][keep], pred["probs"][keep], pred["classes"],
        target_sensitivity=float(overrides.get("target_sensitivity", base.get("target_sensitivity", 0.9))),
        min_cases=int(overrides.get("threshold_min_cases", base.get("threshold_min_cases", 50))),
        fitted_on={"source": str(eval_dir / "predictions.csv"), "split": "validation", "model": "ensemble",
                   "mc_samples": overrides.get("mc_samples", base.get("mc_samples")),
                   "checkpoint": str(cv_dir / "model.pt"), "model_sha256": record["model_sha256"],
                   # the name every calibration.json reader checks against the weights beside it
                   "checkpoint_sha256": record["model_sha256"],
                   "members": [{"run_dir": m, "sha256": h} for m, h in zip(record["members"], record["member_sha256"])]},
    )
    save_calibration(cv_dir / "calibration.json", cal)
    result["calibration"] = cal
    print(f"{prefix}: ensemble of {len(record['members'])} members calibrated on {cal['fitted_on']['n']} validation cases: "
          f"T = {cal['temperature']:.3f}, decision = {cal['decision']} -> {cv_dir / 'calibration.json'}")
    return result


def ensemble_configs(configs_dir: str | os.PathLike, ensemble_dir: str | os.PathLike) -> list[str]:
    """Make the flat inference config of an exported bundle build the ensemble of ``ensemble_dir`` in ``network_def``.

    ``inference.json`` gets ``member_def`` (the former ``network_def``) and ``network_def``
    = ``EnsembleNet(member=@member_def, num_members=M)``, so TorchScript export (``--net_id network_def``) and
    inference load the ensemble's ``model.pt``. ``train.json`` is left alone (training the exported bundle trains
    one model); its ``evaluate.json`` wraps ``network_def`` by :func:`as_ensemble` (``models/ensemble.json``).
    Returns the files changed.
    """
    info = read_ensemble(ensemble_dir)
    if info is None:
        raise DataError(f"{ensemble_dir}: no {ENSEMBLE_FILE}; not an ensemble folder")
    changed = []
    for path in [Path(configs_dir) / "inference.json"]:
        with open(path, encoding="utf-8") as f:
            config = json.load(f)
        if not isinstance(config.get("network_def"), dict) or config["network_def"].get("_target_", "").endswith("EnsembleNet"):
            continue
        config["member_def"] = config["network_def"]
        config["network_def"] = {"_target_": "medfuse.networks.nets.EnsembleNet", "member": "@member_def",
                                 "num_members": len(info["members"])}
        with open(path, "w", encoding="utf-8") as f:
            json.dump(config, f, indent=4)
            f.write("\n")
        changed.append(path.name)
    return changed
