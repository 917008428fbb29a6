# Copyright (c) medfuse contributors
# Licensed under the Apache License, Version 2.0
"""Data helpers for the bundles: items from a manifest split or a folder, classes, class balance.

Items are the dictionaries a MONAI ``Dataset`` gets: ``{"image": abs_path, "label": int,
"image_path": abs_path, ...}``. ``image`` is replaced by the loaded tensor in the
transforms; ``image_path`` is a plain copy of the path that survives the transforms and the
collation, so that prediction writers can name every row.

Class imbalance is handled in one of two ways (config key ``class_balance``):

* ``"weights"``: the loss weighs each class by its inverse frequency in the training split
  (``n / (C * n_c)``, so that a balanced split gives weights of 1);
* ``"sampler"``: a ``WeightedRandomSampler`` draws every class equally often on average;
* ``"none"``: neither.
"""

from __future__ import annotations

import os
import warnings
from pathlib import Path
from typing import Any, Callable, Iterable, Optional, Sequence

import torch

from medfuse.data.manifest import load_split, read_manifest
from medfuse.errors import DataError, ManifestError
from medfuse.utils.images import IMAGE_EXTENSIONS  # re-exported: medfuse.workflows.IMAGE_EXTENSIONS

__all__ = [
    "IMAGE_EXTENSIONS",
    "CLASS_BALANCE_MODES",
    "manifest_classes",
    "split_items",
    "folder_items",
    "inference_items",
    "class_counts",
    "class_weights",
    "loss_class_weights",
    "balanced_sampler",
    "train_sampler",
    "check_distributed_balance",
    "resolve_classes",
]

CLASS_BALANCE_MODES = ("weights", "sampler", "none")
#: Item keys kept as extra (grouping) columns when present in a manifest.
DEFAULT_META_KEYS = ("patient_id", "view", "eye", "sex", "site")


def manifest_classes(manifest: str | os.PathLike, expected: Sequence[str] | None = None) -> list[str]:
    """Class names of the manifest at ``manifest``, in label order.

    Args:
        manifest: path to a medfuse manifest.
        expected: when given, the classes the model was built for; the manifest must list
            exactly these, in this order.

    Raises:
        ManifestError: when the manifest has no classes, or they differ from ``expected``.
    """
    m = read_manifest(manifest, validate=False)
    classes = list(m.get("classes") or [])
    if not classes:
        raise ManifestError("the manifest lists no 'classes'; a classifier needs them", manifest)
    if expected is not None and classes != list(expected):
        raise ManifestError(
            f"the manifest's classes {classes} do not match this bundle's classes {list(expected)} "
            "(same names, same order); rebuild the manifest with --classes "
            f"{','.join(expected)} or use a bundle trained on these classes",
            manifest,
        )
    return classes


def _clean(item: dict, meta_keys: Iterable[str]) -> dict:
    out = {"image": item["image"], "image_path": item["image"]}
    if "label" in item:
        out["label"] = int(item["label"])
    for k in meta_keys:
        v = item.get(k, "")
        out[k] = v if isinstance(v, (str, int, float)) and not isinstance(v, bool) else str(v)
    return out


def split_items(
    manifest: str | os.PathLike,
    split: str = "training",
    require_labels: bool = True,
    meta_keys: Sequence[str] = DEFAULT_META_KEYS,
    limit: int = 0,
) -> list[dict]:
    """Items of one split of a manifest, ready for a MONAI ``Dataset``.

    Args:
        manifest: path to a medfuse manifest (validated, files checked).
        split: ``training``, ``validation`` or ``test``.
        require_labels: every item must have an integer ``label``.
        meta_keys: item keys copied as they are (grouping columns of the predictions); a key is
            kept when any item of the split has it, and items without it get ``""`` so that
            batches collate.
        limit: keep only the first ``limit`` items when > 0 (for quick runs and tests).

    Raises:
        ManifestError: when the split is missing or empty, or labels are missing/not integers.
    """
    items = load_split(manifest, split)
    if not items:
        raise ManifestError(
            f"the manifest has no '{split}' items; add them (or choose another split)", manifest
        )
    if require_labels:
        bad = [it["image"] for it in items if not isinstance(it.get("label"), int) or isinstance(it.get("label"), bool)]
        if bad:
            raise ManifestError(
                f"{len(bad)} '{split}' item(s) lack an integer class label (first: {bad[0]}); "
                "this workflow needs single-label classification items",
                manifest,
            )
    present = [k for k in meta_keys if any(k in it for it in items)]
    out = [_clean(it, present) for it in items]
    return out[:limit] if limit and limit > 0 else out


def _is_dicom_without_extension(path: Path) -> bool:
    try:
        with open(path, "rb") as f:
            head = f.read(132)
    except OSError:
        return False
    return len(head) == 132 and head[128:132] == b"DICM"


def folder_items(folder: str | os.PathLike, extensions: Sequence[str] = IMAGE_EXTENSIONS, recursive: bool = True) -> list[dict]:
    """One unlabelled item per image file under ``folder``, sorted by path.

    Files with one of ``extensions`` (default :data:`medfuse.utils.images.IMAGE_EXTENSIONS`: DICOM,
    PNG / JPEG / BMP / TIFF, NIfTI; case-insensitive) are taken, and files without an extension that
    carry the DICOM preamble (``DICM`` at byte 128), as DICOM exports often have no extension.

    Raises:
        DataError: when ``folder`` is not a folder or holds no image.
    """
    root = Path(folder)
    if not root.is_dir():
        raise DataError(f"{root}: not a folder; give a folder of DICOM/PNG/JPEG files, or a manifest")
    exts = tuple(e.lower() for e in extensions)
    files = []
    for p in sorted(root.rglob("*") if recursive else root.iterdir()):
        if not p.is_file() or p.name.startswith("."):
            continue
        name = p.name.lower()
        if name.endswith(exts) or ("." not in name and _is_dicom_without_extension(p)):
            files.append(str(p.resolve()))
    if not files:
        raise DataError(f"{root}: no image files found (looked for {', '.join(exts)} and extension-less DICOM)")
    return [{"image": f, "image_path": f} for f in files]


def inference_items(
    manifest: str | os.PathLike | None = "",
    input_dir: str | os.PathLike | None = "",
    split: str = "test",
    meta_keys: Sequence[str] = DEFAULT_META_KEYS,
    limit: int = 0,
    manifest_items: Optional[Callable[..., list[dict]]] = None,
) -> list[dict]:
    """Items to predict: a folder of images (``input_dir``) or a manifest split (``manifest``).

    Exactly one of the two must be given (empty string or ``None`` means not given). Labels
    are kept when the manifest has them.

    Raises:
        DataError: when neither or both inputs are given.
    """
    if bool(manifest) == bool(input_dir):
        raise DataError(
            "give either a manifest (--manifest M.json [--split test]) or a folder of images "
            f"(--input_dir DIR), not {'both' if manifest else 'neither'}"
        )
    if input_dir:
        items = folder_items(input_dir)
        return items[:limit] if limit and limit > 0 else items
    if manifest_items is not None:  # a bundle's own reader of manifest items (e.g. with masks)
        return manifest_items(manifest, split, meta_keys=meta_keys, limit=limit)
    return split_items(manifest, split, require_labels=False, meta_keys=meta_keys, limit=limit)


def class_counts(items: Sequence[dict], num_classes: int) -> list[int]:
    """Number of items of each class (items without a label are not counted)."""
    counts = [0] * int(num_classes)
    for it in items:
        lab = it.get("label")
        if lab is None:
            continue
        if not 0 <= int(lab) < num_classes:
            raise DataError(f"{it.get('image')}: label {lab} outside 0..{num_classes - 1}")
        counts[int(lab)] += 1
    return counts


def class_weights(items: Sequence[dict], num_classes: int) -> torch.Tensor:
    """Inverse-frequency class weights ``n / (C * n_c)`` (float32, shape (C,)).

    A class absent from ``items`` gets weight 0 and a warning.
    """
    counts = class_counts(items, num_classes)
    total = sum(counts)
    if total == 0:
        raise DataError("no labelled items: cannot compute class weights")
    missing = [k for k, n in enumerate(counts) if n == 0]
    if missing:
        warnings.warn(f"class indices {missing} have no training items; their loss weight is 0", UserWarning, stacklevel=2)
    return torch.tensor([total / (num_classes * n) if n else 0.0 for n in counts], dtype=torch.float32)


def _check_mode(mode: str) -> str:
    mode = str(mode).lower()
    if mode not in CLASS_BALANCE_MODES:
        raise ValueError(f"class_balance must be one of {list(CLASS_BALANCE_MODES)}, got {mode!r}")
    return mode


def loss_class_weights(items: Sequence[dict], num_classes: int, mode: str = "weights", device: Any = None) -> torch.Tensor | None:
    """Class weights for the loss when ``mode == "weights"``, otherwise ``None``."""
    if _check_mode(mode) != "weights":
        return None
    w = class_weights(items, num_classes)
    return w.to(device) if device is not None else w


def balanced_sampler(
    items: Sequence[dict], num_classes: int, num_samples: int | None = None, seed: int = 0
) -> torch.utils.data.WeightedRandomSampler:
    """A ``WeightedRandomSampler`` (with replacement) drawing each class equally often on average.

    Args:
        items: training items with labels.
        num_classes: number of classes.
        num_samples: draws per epoch; defaults to ``len(items)``.
        seed: seed of the sampler's own generator, so runs repeat.
    """
    counts = class_counts(items, num_classes)
    weights = [1.0 / counts[int(it["label"])] for it in items]
    gen = torch.Generator()
    gen.manual_seed(int(seed))
    return torch.utils.data.WeightedRandomSampler(
        weights, num_samples=int(num_samples or len(items)), replacement=True, generator=gen
    )


def check_distributed_balance(mode: str) -> str:
    """Multi-GPU training replaces the sampler by a ``DistributedSampler``: refuse ``"sampler"``.

    Raises:
        ValueError: for ``class_balance="sampler"``, saying to use ``"weights"``.
    """
    if _check_mode(mode) == "sampler":
        raise ValueError(
            "class_balance='sampler' cannot be combined with multi-GPU training (each rank uses a "
            "DistributedSampler); use --class_balance weights"
        )
    return mode


def train_sampler(items: Sequence[dict], num_classes: int, mode: str = "weights", seed: int = 0):
    """The training sampler for ``mode``: a balanced sampler for ``"sampler"``, else ``None``."""
    if _check_mode(mode) != "sampler":
        return None
    return balanced_sampler(items, num_classes, seed=seed)


def resolve_classes(
    manifest: str | os.PathLike | None = "",
    checkpoint: str | os.PathLike | None = "",
    expected: Sequence[str] | None = None,
) -> list[str]:
    """Classes for inference: from the manifest, else from the training run of the checkpoint.

    Order of precedence: the manifest's ``classes`` (checked against ``expected`` when given);
    ``classes`` in ``run_info.json`` beside ``checkpoint``; ``expected``.

    With ``expected`` given (an exported bundle's configs carry the trained classes), a manifest
    file that does not exist is not needed to name the classes: the network can be built (and
    ``verify_net_in_out`` / ``ckpt_export`` run) without data; whatever reads the manifest's items
    still raises its ``ManifestError``.

    Raises:
        ManifestError: when the manifest's classes differ from ``expected``.
        DataError: when no source names the classes.
    """
    if manifest and (expected is None or Path(manifest).is_file()):
        return manifest_classes(manifest, expected)
    if checkpoint:
        from medfuse.workflows.runs import read_run_info

        classes = read_run_info(Path(checkpoint).parent).get("classes")
        if classes:
            if expected is not None and list(classes) != list(expected):
                raise DataError(f"{checkpoint}: trained on classes {classes}, but this bundle expects {list(expected)}")
            return list(classes)
    if expected is not None:
        return list(expected)
    raise DataError(
        "cannot tell the class names: give a manifest with 'classes', a checkpoint from a medfuse run "
        "(its run_info.json lists them), or --classes \"['a','b']\""
    )
