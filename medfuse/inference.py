# Copyright (c) medfuse contributors
# Licensed under the Apache License, Version 2.0
"""Use a trained classifier from Python: ``model = medfuse.load_model(M); model.predict("chest.dcm")``.

``M`` is any of:

* a training run folder (``runs/<bundle>/<run>``: ``model.pt``, ``config.json``, ``run_info.json``, optional
  ``calibration.json``);
* an exported bundle folder (``configs/inference.json``, ``configs/metadata.json``, ``models/model.pt``, optional
  ``models/calibration.json``), e.g. what ``medfuse zoo get`` unpacks;
* a release archive ``<name>_v<version>.zip`` written by ``medfuse export`` (unpacked once into the cache folder
  ``$MEDFUSE_CACHE`` or ``~/.cache/medfuse``, keyed by its SHA-256);
* ``zoo:NAME`` or ``zoo:NAME@VERSION`` from a local zoo (``zoo_dir=``, else ``$MEDFUSE_ZOO``, else ``./zoo``);
* an ensemble: a folder with ``ensemble.json`` (the ``cv/`` folder of ``medfuse cv``, or one written by
  :func:`medfuse.workflows.ensemble.build_ensemble`), an exported ensemble bundle, or ``"run1,run2,..."`` (run
  folders of one bundle, combined in memory: no ensemble calibration, so T = 1 and arg-max). Its probabilities are
  the mean of the members' softmax probabilities; every prediction also carries ``member_disagreement`` and
  ``mutual_info_members``, and :meth:`LoadedModel.cam` is the members' mean Grad-CAM.

What is rebuilt, and from where (no ``monai.bundle`` config is parsed or run, no ``DataLoader`` is started):

* the network: the ``network_def`` of the run's config, its ``@key`` references replaced by the run's settings
  (the literal values of the executed ``config.json``; for an exported bundle, the trained values that ``medfuse
  export`` wrote into ``configs/inference.json``), ``pretrained`` off (the weights come from the checkpoint);
* the preprocessing (:attr:`LoadedModel.transforms`): the bundle's evaluation preset of
  :mod:`medfuse.transforms.presets` (:data:`EVAL_PRESETS`) called with the run's ``image_size`` and ``in_channels``;
* the calibration: the ``calibration.json`` beside the weights (temperature and decision rule).

Decision rule of ``pred`` (the same as bundle inference writes): the class with the highest calibrated probability;
for a two-class model whose calibration holds a validated threshold, the positive class whenever its calibrated
probability reaches ``threshold`` (returned with every prediction).

Input checks plug in at one place, :attr:`LoadedModel.input_checks`: callables ``check(path, image) -> None | str``
run on every decoded input before the forward pass; the first reason returned (e.g. ``"modality_not_accepted:MR"``)
becomes the input's ``input_check`` and the input is not scored. Inputs that cannot be decoded get
``"unreadable: <why>"``. Scored inputs get ``"ok"``.
"""

from __future__ import annotations

import hashlib
import importlib
import json
import math
import os
import zipfile
from pathlib import Path
from typing import Any, Callable, Mapping, Sequence

from medfuse.errors import DataError

__all__ = ["EVAL_PRESETS", "LoadedModel", "load_model", "resolve_model_dir", "model_settings", "write_results", "map_classes", "parse_class_map"]

#: bundle name -> the evaluation preset of :mod:`medfuse.transforms.presets` its classifier was validated with
EVAL_PRESETS: dict[str, str] = {
    "cxr_dual_cross_attention": "cxr_eval_transforms",
    "cxr_gsa_classifier": "cxr_eval_transforms",
    "oct_dual_cross_attention": "oct_eval_transforms",
}
#: ``network_def`` arguments that are not rebuilt from the run: the trained weights replace them
_WEIGHTS_ARGS = {"pretrained": False, "pretrained_weights": None}
_RUN_SETTING = "medfuse.workflows.run_setting"


def _read_json(path: Path) -> Any:
    try:
        with open(path, encoding="utf-8") as f:
            return json.load(f)
    except (OSError, ValueError) as e:
        raise DataError(f"{path}: cannot read it ({e}); the model folder is incomplete or damaged") from None


def _cache_root() -> Path:
    return Path(os.environ.get("MEDFUSE_CACHE") or Path.home() / ".cache" / "medfuse") / "models"


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def _unpack_release(archive: Path) -> Path:
    """The bundle folder of a release zip, unpacked once under the cache (a finished unpack holds ``.complete``)."""
    digest = _sha256(archive)
    dest = _cache_root() / digest[:16]
    if not (dest / ".complete").is_file():
        import shutil
        import tempfile

        dest.parent.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(dir=dest.parent, prefix=".unpack-"))
        try:
            with zipfile.ZipFile(archive) as zf:
                for member in zf.namelist():
                    target = (tmp / member).resolve()
                    if not str(target).startswith(str(tmp.resolve()) + os.sep):
                        raise DataError(f"{archive}: member '{member}' would unpack outside the folder; not a medfuse release")
                zf.extractall(tmp)
            (tmp / ".complete").write_text(str(archive.resolve()) + "\n", encoding="utf-8")
            if dest.exists():
                shutil.rmtree(dest)
            os.replace(tmp, dest)
        except zipfile.BadZipFile as e:
            shutil.rmtree(tmp, ignore_errors=True)
            raise DataError(f"{archive}: not a readable zip archive ({e}); give the release written by medfuse export") from None
        finally:
            if tmp.exists():
                shutil.rmtree(tmp, ignore_errors=True)
    tops = [p for p in dest.iterdir() if p.is_dir() and (p / "configs").is_dir()]
    if len(tops) != 1:
        raise DataError(f"{archive}: expected one bundle folder with configs/ inside, found {[p.name for p in tops]}")
    return tops[0]


def resolve_model_dir(model: str | os.PathLike, zoo_dir: str | os.PathLike | None = None) -> tuple[Path, str]:
    """``(folder, kind)`` of a model reference; kind is ``"run"`` or ``"bundle"`` (see the module docstring).

    Raises:
        DataError: naming the reference and what it should be.
    """
    text = str(model)
    if text.startswith("zoo:"):
        from medfuse.zoo.index import find_release

        name, _, version = text[4:].partition("@")
        zoo = Path(zoo_dir or os.environ.get("MEDFUSE_ZOO") or "zoo")
        _, entry = find_release(zoo, name, version or None)
        archive = zoo / entry.get("source", "")
        if not archive.is_file():
            raise DataError(f"{archive}: the release of {text} listed in {zoo / 'model_info.json'} is missing; export it again")
        if entry.get("checksum") and _sha256(archive) != entry["checksum"]:
            raise DataError(f"{archive}: SHA-256 differs from {zoo / 'model_info.json'}; the archive is corrupt or was replaced")
        return _unpack_release(archive), "bundle"
    path = Path(text)
    if path.is_file() and path.suffix.lower() == ".zip":
        return _unpack_release(path), "bundle"
    if path.is_dir() and (path / "model.pt").is_file() and (path / "config.json").is_file():
        return path, "run"
    if path.is_dir() and (path / "configs" / "inference.json").is_file():
        if not (path / "models" / "model.pt").is_file():
            raise DataError(f"{path / 'models' / 'model.pt'}: the bundle's weights are not here; fetch them "
                            f"(python -m monai.bundle download_large_files --bundle_path {path}) or give the release zip")
        return path, "bundle"
    raise DataError(f"{text}: not a model; give a run folder (model.pt + config.json), an exported bundle folder "
                    "(configs/inference.json + models/model.pt), a release .zip, or zoo:NAME")


def _run_setting_default(expression: str) -> Any:
    """The literal default of ``$medfuse.workflows.run_setting(dir, 'key', default)``, or ``...`` when not literal."""
    import ast

    if _RUN_SETTING not in expression:
        return ...
    try:
        tree = ast.parse(expression.lstrip("$").replace("@", "_ref_"), mode="eval")
    except SyntaxError:
        return ...
    call = tree.body
    if not (isinstance(call, ast.Call) and ast.unparse(call.func) == _RUN_SETTING):
        return ...
    default = call.args[2] if len(call.args) > 2 else next((k.value for k in call.keywords if k.arg == "default"), None)
    try:
        return ast.literal_eval(default) if default is not None else None
    except ValueError:
        return ...


def model_settings(folder: Path, kind: str) -> tuple[dict, dict]:
    """``(settings, network_def)`` of a run folder or an exported bundle: literal top-level values of its config."""
    config = _read_json(folder / ("config.json" if kind == "run" else "configs/inference.json"))
    settings: dict[str, Any] = {}
    for key, value in config.items():
        if isinstance(value, str) and value.startswith("$"):
            value = _run_setting_default(value)
            if value is ...:
                continue
        elif isinstance(value, str) and value.startswith("@"):
            continue
        settings[key] = value
    net = config.get("network_def")
    if not isinstance(net, dict) or "_target_" not in net:
        raise DataError(f"{folder}: its config has no network_def with a _target_; not a medfuse classifier")
    return settings, net


def _classes(folder: Path, kind: str, settings: Mapping[str, Any]) -> list[str]:
    if kind == "run":
        classes = (_read_json(folder / "run_info.json") if (folder / "run_info.json").is_file() else {}).get("classes")
    else:
        outputs = _read_json(folder / "configs" / "metadata.json").get("network_data_format", {}).get("outputs", {})
        classes = next(([o["channel_def"][str(i)] for i in range(len(o["channel_def"]))]
                        for o in outputs.values() if o.get("format") == "classes" and o.get("channel_def")), None)
    if not classes and isinstance(settings.get("classes"), list):
        classes = settings["classes"]
    if not classes:
        raise DataError(f"{folder}: cannot tell the class names (no run_info.json 'classes' / metadata channel_def)")
    return [str(c) for c in classes]


def _build_network(net_def: Mapping[str, Any], settings: Mapping[str, Any], classes: Sequence[str], where: Path):
    """The network of ``network_def`` with ``@key`` references taken from ``settings`` (no config parser)."""
    module, _, name = str(net_def["_target_"]).rpartition(".")
    if not module.startswith("medfuse."):
        raise DataError(f"{where}: network {net_def['_target_']} is not a medfuse network; load_model rebuilds medfuse networks only")
    kwargs: dict[str, Any] = {}
    for key, value in net_def.items():
        if key.startswith("_"):
            continue
        if key in _WEIGHTS_ARGS:
            kwargs[key] = _WEIGHTS_ARGS[key]
            continue
        if isinstance(value, str) and value.startswith("@"):
            ref = value[1:]
            if ref == "num_classes":
                value = len(classes)
            elif ref in settings:
                value = settings[ref]
            else:
                raise DataError(f"{where}: network_def#{key} refers to {value}, which the run's config does not hold as a value")
        elif isinstance(value, str) and value.startswith("$"):
            raise DataError(f"{where}: network_def#{key} is the expression {value!r}; load_model needs plain values there")
        kwargs[key] = value
    factory = getattr(importlib.import_module(module), name)
    return factory(**kwargs), kwargs


def _entropy(p: Any) -> float:
    return float(-sum(v * math.log(max(v, 1e-12)) for v in p))


class LoadedModel:
    """A trained classifier kept in memory, with its preprocessing and calibration (see :func:`load_model`).

    Attributes:
        classes: class names in output order.
        transforms: the preprocessing of one item ``{"image": path}`` (a ``monai.transforms.Compose``).
        calibration: the ``calibration.json`` content, or ``None`` (T = 1, arg-max).
        mc_samples: Monte-Carlo dropout passes per prediction (0: one deterministic pass, no ``mutual_info``).
        input_checks: callables ``(path or None, image tensor (C, H, W)) -> None | reason`` run before scoring.
        source: the folder the model was loaded from; ``kind``: ``"run"`` or ``"bundle"``.
        weights, network_target, network_kwargs: the checkpoint, and the network class and arguments rebuilt.
    """

    def __init__(self, network, classes, transforms, calibration, settings, device, mc_samples, source, kind) -> None:
        self.network = network
        self.classes = list(classes)
        self.transforms = transforms
        self.calibration = calibration
        self.settings = dict(settings)
        self.device = device
        self.mc_samples = int(mc_samples)
        self.source = source
        self.kind = kind
        self.input_checks: list[Callable[[Any, Any], str | None]] = []
        self.ood_model: dict | None = None  # ``ood.json`` beside the weights (input fail-safe), or None
        self._array_transforms = None

    def __repr__(self) -> str:
        return (f"LoadedModel({self.settings.get('bundle_name', '?')} from {self.source}, classes={self.classes}, "
                f"mc_samples={self.mc_samples}, device={self.device})")

    @property
    def temperature(self) -> float:
        return float(self.calibration["temperature"]) if self.calibration else 1.0

    @property
    def threshold(self) -> float | None:
        cal = self.calibration
        if cal and cal.get("decision") == "threshold" and cal.get("threshold") is not None:
            return float(cal["threshold"])
        return None

    @property
    def decision_rule(self) -> str:
        """One line: how ``pred`` follows the calibrated probabilities."""
        if self.threshold is not None:
            return (f"pred = {self.calibration['positive_class']} when its calibrated probability >= {self.threshold:.4g} "
                    "(validated threshold), else the other class")
        return "pred = the class with the highest calibrated probability (arg-max)"

    # ------------------------------------------------------------------ inputs
    def _from_array(self, array: Any):
        """Preprocess one decoded grey image (H, W) or (1, H, W): the preset without its loader."""
        import torch
        from monai.transforms import Compose

        if self._array_transforms is None:
            self._array_transforms = Compose(self.transforms.transforms[1:])
        img = torch.as_tensor(array, dtype=torch.float32)
        if img.ndim == 2:
            img = img[None]
        if img.ndim != 3 or img.shape[0] != 1:
            raise DataError(f"an array input must be a grey image (H, W) or (1, H, W); got shape {tuple(img.shape)}")
        return self._array_transforms({"image": img})["image"]

    def _inputs(self, x: Any) -> tuple[list[Any], bool]:
        """``(entries, batch)``: entries are paths (str) or single decoded arrays."""
        import numpy as np

        if isinstance(x, (str, os.PathLike)):
            return [str(x)], False
        if isinstance(x, (list, tuple)):
            return [str(v) if isinstance(v, (str, os.PathLike)) else v for v in x], True
        arr = x.detach().cpu().numpy() if hasattr(x, "detach") else np.asarray(x)
        if arr.ndim == 2 or (arr.ndim == 3 and arr.shape[0] == 1):
            return [arr], False
        if arr.ndim in (3, 4):
            return [a for a in arr], True
        raise DataError(f"cannot read an input of shape {arr.shape}: give a path, (H, W), (1, H, W), (N, H, W) or (N, 1, H, W)")

    def preprocess(self, entry: Any) -> tuple[Any, str]:
        """``(image tensor or None, input_check)`` of one path or array: ``"ok"``, a check's reason, or why it is unreadable."""
        try:
            image = self.transforms({"image": entry})["image"] if isinstance(entry, str) else self._from_array(entry)
        except Exception as e:  # a file the loaders cannot decode is reported on its row, not raised
            while e.__cause__ is not None:  # MONAI wraps the loader's error in "applying transform ..."
                e = e.__cause__
            reason = " ".join(str(e).split()) or type(e).__name__
            return None, f"unreadable: {reason}"
        for check in self.input_checks:
            reason = check(entry if isinstance(entry, str) else None, image)
            if reason:
                return None, str(reason)
        return image, "ok"

    # ------------------------------------------------------------------ prediction
    @property
    def is_ensemble(self) -> bool:
        return bool(getattr(self.network, "reports_members", False))

    def _forward(self, images):
        """Uncalibrated probabilities (N, C) and mutual information (None without MC dropout); for an ensemble,
        also ``{"member_disagreement", "mutual_info_members"}`` arrays (else an empty dict)."""
        import torch

        x = torch.stack([torch.as_tensor(i) for i in images]).to(self.device)
        seed = int(self.settings.get("seed", 0) or 0)
        # the dropout masks come from a fixed seed on a forked RNG: the same input gives the same numbers each call,
        # and the caller's random state is left alone
        with torch.no_grad(), torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            from medfuse.networks.uncertainty import ENSEMBLE_KEYS, mc_dropout_outputs

            if self.is_ensemble:  # as bundle inference does: mutual_info is the members' (plus dropout's), seeded per item
                self.network.eval()
                out = mc_dropout_outputs(self.network, x, self.mc_samples, seed=seed)
                members = {k: out[k].float().cpu().numpy() for k in ENSEMBLE_KEYS}
                return out["pred"].float().exp().cpu().numpy(), out["mutual_info"].float().cpu().numpy(), members
            if self.mc_samples > 0:
                out = mc_dropout_outputs(self.network, x, self.mc_samples)
                return out["pred"].float().exp().cpu().numpy(), out["mutual_info"].float().cpu().numpy(), {}
            self.network.eval()
            return self.network(x).float().softmax(1).cpu().numpy(), None, {}

    def predict_images(self, images: Sequence[Any]) -> list[dict]:
        """Predictions of preprocessed images (each (C, H, W)); see :meth:`predict` for the keys."""
        from medfuse.evaluation.calibration import apply_calibration

        if not len(images):
            return []
        probs, mi, members = self._forward(images)
        calibrated, decisions = apply_calibration(probs, self.calibration)
        ood_score, ood = self._ood(images)
        out = []
        for i, p in enumerate(calibrated):
            extra = {} if ood_score is None else {"ood_score": float(ood_score[i]), "ood": int(ood[i])}
            extra.update({k: float(v[i]) for k, v in members.items()})
            out.append({
                "probabilities": {c: float(v) for c, v in zip(self.classes, p)},
                "pred": self.classes[int(decisions[i])],
                "threshold": self.threshold,
                "temperature": self.temperature,
                "entropy": _entropy(p),
                "mutual_info": None if mi is None else float(mi[i]),
                "input_check": "ok",
                **extra,
            })
        return out

    def _ood(self, images):
        """``(ood_score, ood)`` arrays of preprocessed images from the model's ``ood.json``, or ``(None, None)``."""
        if self.ood_model is None:
            return None, None
        import torch

        from medfuse.evaluation.ood import ood_flags, ood_scores
        from medfuse.networks.features import pooled_features

        x = torch.stack([torch.as_tensor(i) for i in images]).to(self.device)
        scores = ood_scores(pooled_features(self.network, x).cpu().numpy(), self.ood_model)
        return scores, ood_flags(scores, self.ood_model)

    def _unscored(self, reason: str) -> dict:
        return {"probabilities": None, "pred": None, "threshold": self.threshold, "temperature": self.temperature,
                "entropy": None, "mutual_info": None, "input_check": reason}

    def predict(self, x: Any, batch_size: int = 16) -> dict | list[dict]:
        """Predict one input or a batch.

        Args:
            x: a path (DICOM, PNG, JPEG ...), a list of paths, or a decoded grey image as a numpy array / tensor:
                (H, W) or (1, H, W) for one image, (N, H, W) or (N, 1, H, W) for a batch.
            batch_size: images per forward pass.

        Returns:
            for one input a dict, for a batch a list of dicts, each with ``probabilities`` ({class: calibrated
            probability}, in :attr:`classes` order; ``None`` when not scored), ``pred``, ``threshold``,
            ``temperature``, ``entropy``, ``mutual_info`` (``None`` without MC dropout), ``input_check`` and, for
            path inputs, ``image``.
        """
        entries, batch = self._inputs(x)
        results: list[dict | None] = [None] * len(entries)
        for start in range(0, len(entries), max(1, int(batch_size))):
            chunk = list(range(start, min(start + max(1, int(batch_size)), len(entries))))
            ready, images = [], []
            for i in chunk:
                image, check = self.preprocess(entries[i])
                if image is None:
                    results[i] = self._unscored(check)
                else:
                    ready.append(i)
                    images.append(image)
            for i, res in zip(ready, self.predict_images(images)):
                results[i] = res
        for entry, res in zip(entries, results):
            if isinstance(entry, str):
                res["image"] = entry
        return results if batch else results[0]

    def cam(self, x: Any, class_index: Any = None):
        """Grad-CAM maps (N, H, W) in [0, 1] at the model's input size, for the predicted class unless ``class_index``.

        ``x`` as in :meth:`predict`; an input that cannot be decoded raises :class:`~medfuse.errors.DataError`.
        """
        entries, batch = self._inputs(x)
        images = []
        for entry in entries:
            image, check = self.preprocess(entry)
            if image is None:
                raise DataError(f"{entry if isinstance(entry, str) else 'array input'}: not scored ({check})")
            images.append(image)
        maps = self.cam_images(images, class_index)
        return maps if batch else maps[0]

    def cam_images(self, images: Sequence[Any], class_index: Any = None):
        """Grad-CAM maps (N, H, W) in [0, 1] of already preprocessed images (:meth:`preprocess`), for the predicted
        class unless ``class_index`` (one int, or one per image)."""
        import torch

        from medfuse.visualize.cam import compute_cam, default_target_layer

        if class_index is None:
            class_index = [self.classes.index(r["pred"]) for r in self.predict_images(images)]
        layer = "refine" if "refine" in dict(self.network.named_modules()) else default_target_layer(self.network)
        maps = compute_cam(self.network, torch.stack([torch.as_tensor(i) for i in images]).to(self.device),
                           target_layer=layer, class_index=class_index)
        return maps[:, 0].detach().cpu().numpy()


def load_model(model: str | os.PathLike, device: Any = "cpu", mc_samples: int | None = None,
               zoo_dir: str | os.PathLike | None = None) -> LoadedModel:
    """Load a trained medfuse classifier once, for many predictions.

    Args:
        model: run folder, exported bundle folder, release zip, ``zoo:NAME[@VERSION]``, an ensemble folder, or
            ``"run1,run2,..."`` (module docstring).
        device: torch device. Defaults to ``"cpu"``.
        mc_samples: Monte-Carlo dropout passes (0: one deterministic pass). Defaults to the run's ``mc_samples``.
        zoo_dir: the local zoo of ``zoo:NAME`` (default ``$MEDFUSE_ZOO`` or ``./zoo``).

    Returns:
        a :class:`LoadedModel`.

    Raises:
        DataError: the reference is no model, its files are incomplete, or it is not a classifier bundle.
    """
    import torch

    from medfuse.evaluation.calibration import CALIBRATION_NAME, load_calibration
    from medfuse.evaluation.ood import find_ood, load_ood
    from medfuse.transforms import presets

    if "," in str(model):
        return _load_members([m.strip() for m in str(model).split(",") if m.strip()], device, mc_samples, zoo_dir)
    folder, kind = resolve_model_dir(model, zoo_dir)
    settings, net_def = model_settings(folder, kind)
    bundle = str(settings.get("bundle_name") or "")
    if bundle not in EVAL_PRESETS:
        raise DataError(f"{folder}: bundle {bundle or '(unnamed)'} is not a classifier load_model knows; "
                        f"it loads {', '.join(EVAL_PRESETS)}")
    classes = _classes(folder, kind, settings)
    weights = folder / "model.pt" if kind == "run" else folder / "models" / "model.pt"
    members = _ensemble_size(folder, kind)
    if str(net_def["_target_"]).endswith(".EnsembleNet"):  # an exported ensemble: network_def wraps member_def
        if not isinstance(settings.get("member_def"), dict):
            raise DataError(f"{folder}: network_def is an EnsembleNet but the config has no member_def to rebuild")
        members = members or int(net_def.get("num_members", 0))
        net_def = settings["member_def"]
    network, net_kwargs = _build_network(net_def, settings, classes, folder)
    if members:
        from medfuse.networks.nets import EnsembleNet

        network = EnsembleNet(member=network, num_members=members)
    try:
        state = torch.load(weights, map_location="cpu", weights_only=True)
    except Exception as e:
        raise DataError(f"{weights}: cannot load the weights ({e})") from None
    if isinstance(state, dict) and "model" in state and not any(str(k).endswith(".weight") for k in state):
        state = state["model"]
    try:
        network.load_state_dict(state)
    except RuntimeError as e:
        raise DataError(f"{weights}: the weights do not fit the network rebuilt from {folder} "
                        f"({str(e).splitlines()[0]})") from None
    device = torch.device(device)
    network.to(device).eval()
    transforms = getattr(presets, EVAL_PRESETS[bundle])(
        keys=["image"], image_size=int(settings.get("image_size", 224)), in_channels=int(settings.get("in_channels", 1)))
    cal_path = weights.parent / CALIBRATION_NAME
    calibration = load_calibration(cal_path, classes) if cal_path.is_file() else None
    samples = int(settings.get("mc_samples", 0) or 0) if mc_samples is None else int(mc_samples)
    if samples < 0:
        raise DataError(f"mc_samples must be >= 0, got {mc_samples}")
    loaded = LoadedModel(network, classes, transforms, calibration, settings, device, samples, folder, kind)
    loaded.weights, loaded.network_target, loaded.network_kwargs = weights, str(net_def["_target_"]), net_kwargs
    accepts = _accepts(folder, kind, bundle)
    if accepts:
        loaded.input_checks.append(_dicom_guard(accepts))
    loaded.ood_model = load_ood(find_ood(weights))
    return loaded


def _ensemble_size(folder: Path, kind: str) -> int:
    """The number of members when ``folder`` holds an ensemble (its ``ensemble.json``), else 0.

    Read here rather than with ``medfuse.workflows.ensemble.read_ensemble``: importing ``medfuse.workflows`` loads the
    bundle runner, which a prediction does not need (``load_model`` stays light)."""
    path = (folder if kind == "run" else folder / "models") / "ensemble.json"
    if not path.is_file():
        return 0
    info = _read_json(path)
    if len(info.get("members") or []) < 2:
        raise DataError(f"{folder}: its ensemble.json lists {len(info.get('members') or [])} members; an ensemble needs two or more")
    return len(info["members"])


def _load_members(members: Sequence[str], device: Any, mc_samples: int | None, zoo_dir: Any) -> LoadedModel:
    """The in-memory ensemble of ``run1,run2,...`` (:func:`load_model`): members of one bundle, classes, image size
    and channels; each member's own calibration is dropped (the average of calibrated members is not calibrated)."""
    from medfuse.networks.nets import EnsembleNet

    if len(members) < 2:
        raise DataError(f"{','.join(members)}: an ensemble needs two or more models separated by commas")
    loaded = [load_model(m, device="cpu", mc_samples=mc_samples, zoo_dir=zoo_dir) for m in members]
    first = loaded[0]
    for ref, m in zip(members, loaded):
        if m.is_ensemble:
            raise DataError(f"{ref}: is itself an ensemble; list its member runs instead")
        for what, mine, theirs in (("bundle", m.settings.get("bundle_name"), first.settings.get("bundle_name")),
                                   ("classes", m.classes, first.classes),
                                   ("image_size", m.settings.get("image_size"), first.settings.get("image_size")),
                                   ("in_channels", m.settings.get("in_channels"), first.settings.get("in_channels"))):
            if mine != theirs:
                raise DataError(f"{ref}: {what} {mine!r} differs from {members[0]}'s {theirs!r}; ensemble members must "
                                "be runs of one bundle with the same classes and input")
    import torch

    network = EnsembleNet([m.network for m in loaded]).to(torch.device(device)).eval()
    out = LoadedModel(network, first.classes, first.transforms, None, first.settings, torch.device(device),
                      first.mc_samples, first.source, first.kind)
    out.weights, out.network_target, out.network_kwargs = [m.weights for m in loaded], "medfuse.networks.nets.EnsembleNet", first.network_kwargs
    out.members = [m.source for m in loaded]
    out.input_checks = list(first.input_checks)
    return out


def _accepts(folder: Path, kind: str, bundle: str) -> dict | None:
    """What the model accepts: the exported metadata's ``accepts``, or the run's bundle's (inherited from its base)."""
    from medfuse.dicom.accept import validate_accepts

    if kind == "bundle":
        meta = folder / "configs" / "metadata.json"
        accepts = _read_json(meta).get("accepts") if meta.is_file() else None
        return validate_accepts(accepts, f"{meta}#accepts") or None
    from medfuse.workflows.bundle import bundle_accepts

    return bundle_accepts("", bundle)


def _dicom_guard(accepts: Mapping[str, Any]) -> Callable[[Any, Any], str | None]:
    """An input check refusing DICOM files whose tags the model does not accept (non-DICOM files pass)."""
    from medfuse.dicom.accept import OK, check_accepts

    def check(path: Any, image: Any) -> str | None:
        if path is None:
            return None
        result = check_accepts(path, accepts)
        return None if result == OK else result

    return check


def write_results(path: str | os.PathLike, results: Sequence[Mapping[str, Any]], classes: Sequence[str],
                  labels: Sequence[int] | None = None, groups: Mapping[str, Sequence[Any]] | None = None) -> Path:
    """Write :meth:`LoadedModel.predict` results as a ``predictions.csv`` (columns of
    :data:`medfuse.evaluation.predictions.SCHEMA`; an unscored row has empty probabilities and ``pred``).

    Args:
        path: output file.
        results: one result per row (with ``image``).
        classes: the model's classes.
        labels: true class indices (-1: unknown), or ``None`` for no ``label`` column.
        groups: grouping columns (``patient_id``, ``view`` ...), written last.
    """
    import numpy as np

    from medfuse.evaluation.predictions import write_predictions

    nan = float("nan")
    probs = np.array([[r["probabilities"][c] if r["probabilities"] else nan for c in classes] for r in results],
                     dtype=np.float64).reshape(len(results), len(classes))
    pred = [classes.index(r["pred"]) if r["pred"] is not None else -1 for r in results]
    has_mi = any(r["mutual_info"] is not None for r in results)
    extra: dict[str, list] = {
        # the bundle writers' rule (decision_columns): 0.5 for a two-class arg-max, empty for more classes
        "threshold": [f"{r['threshold']:.6g}" if r["threshold"] is not None else ("0.5" if len(classes) == 2 else "")
                      for r in results],
        "temperature": [f"{r['temperature']:.6g}" for r in results],
        "input_check": [r["input_check"] for r in results],
    }
    from medfuse.networks.uncertainty import ENSEMBLE_KEYS

    for key in ENSEMBLE_KEYS:  # an ensemble's columns; unscored rows stay empty
        if any(key in r for r in results):
            extra[key] = [f"{r[key]:.6g}" if key in r else "" for r in results]
    if any("ood_score" in r for r in results):  # the model has an ood.json: unscored rows stay empty
        extra["ood_score"] = [f"{r['ood_score']:.6g}" if "ood_score" in r else "" for r in results]
        extra["ood"] = [r.get("ood", "") for r in results]
    extra.update({k: list(v) for k, v in (groups or {}).items()})
    return write_predictions(
        path, [r.get("image", f"input{i}") for i, r in enumerate(results)], probs, list(classes), labels=labels,
        entropy=[nan if r["entropy"] is None else r["entropy"] for r in results],
        mutual_info=[nan if r["mutual_info"] is None else r["mutual_info"] for r in results] if has_mi else None,
        extra=extra, pred=pred,
    )


def parse_class_map(text: str | None) -> dict[str, str]:
    """``"NORMAL=normal,PNEUMONIA=opacity"`` -> ``{"NORMAL": "normal", ...}`` (manifest name = model name)."""
    out: dict[str, str] = {}
    for part in (text or "").split(","):
        if not part.strip():
            continue
        src, sep, dst = part.partition("=")
        if not sep or not src.strip() or not dst.strip():
            raise DataError(f"--class-map {text!r}: write MANIFEST_NAME=MODEL_NAME pairs separated by commas, e.g. NORMAL=normal")
        out[src.strip()] = dst.strip()
    return out


def map_classes(data_classes: Sequence[str], model_classes: Sequence[str], class_map: Mapping[str, str] | None = None,
                where: str = "the manifest") -> tuple[list[int], str | None]:
    """Model class index of each data class, and a note when names were matched other than exactly.

    Equal names match; names that differ only in case (``NORMAL`` vs ``normal``) are matched with a note;
    ``class_map`` (data name -> model name) matches the rest. Any other difference is refused.

    Raises:
        DataError: one line naming both class lists and ``--class-map``.
    """
    model = [str(c) for c in model_classes]
    lower = {c.lower(): i for i, c in enumerate(model)}
    cmap = dict(class_map or {})
    bad_map = [f"{k}={v}" for k, v in cmap.items() if v not in model]
    if bad_map:
        raise DataError(f"--class-map {','.join(bad_map)}: the model's classes are {model}")
    index, by_case = [], []
    for name in (str(c) for c in data_classes):
        if name in cmap:
            index.append(model.index(cmap[name]))
        elif name in model:
            index.append(model.index(name))
        elif name.lower() in lower and len(lower) == len(model):
            index.append(lower[name.lower()])
            by_case.append(f"{name}->{model[lower[name.lower()]]}")
        else:
            raise DataError(f"{where} has classes {list(data_classes)} but the model has {model}; "
                            "map them with --class-map DATA_NAME=MODEL_NAME,...")
    note = f"class names matched ignoring case: {', '.join(by_case)}" if by_case else None
    if cmap:
        note = "; ".join(filter(None, [note, "class names mapped by --class-map: " +
                                        ", ".join(f"{k}->{v}" for k, v in cmap.items())]))
    return index, note
