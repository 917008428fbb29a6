# Copyright (c) medfuse contributors
# Licensed under the Apache License, Version 2.0
"""MedMNIST npz files -> manifest, and their download (see :mod:`medfuse.data.layouts`).

:func:`medmnist_to_manifest` writes the arrays out as PNG files with the official splits
kept; :func:`download_medmnist` fetches an official file (MD5 checked).
"""

from __future__ import annotations

import hashlib
import io
import os
import re
import urllib.error
import urllib.request
import zipfile
import zlib
from collections import defaultdict
from pathlib import Path
from typing import Any, Mapping, Sequence

import numpy as np

from medfuse.data.layouts._common import DEFAULT_VAL_FRACTION, _finish, _parse_classes, _progress
from medfuse.data.layouts.report import ConversionReport
from medfuse.data.manifest import make_provenance, new_manifest
from medfuse.data.splits import carve_validation
from medfuse.errors import DataError

__all__ = ["MEDMNIST_CLASSES", "medmnist_to_manifest", "medmnist_url", "download_medmnist"]

_ORGANS = (
    "bladder", "femur-left", "femur-right", "heart", "kidney-left", "kidney-right", "liver",
    "lung-left", "lung-right", "pancreas", "spleen",
)
#: Class names of the 2-D MedMNIST v2 datasets (label index order of the official files).
MEDMNIST_CLASSES: dict[str, tuple[str, ...]] = {
    "pneumoniamnist": ("normal", "pneumonia"),
    "chestmnist": (
        "atelectasis", "cardiomegaly", "effusion", "infiltration", "mass", "nodule", "pneumonia",
        "pneumothorax", "consolidation", "edema", "emphysema", "fibrosis", "pleural", "hernia",
    ),
    "octmnist": ("choroidal neovascularization", "diabetic macular edema", "drusen", "normal"),
    "breastmnist": ("malignant", "normal, benign"),
    "retinamnist": ("0", "1", "2", "3", "4"),
    "pathmnist": (
        "adipose", "background", "debris", "lymphocytes", "mucus", "smooth muscle",
        "normal colon mucosa", "cancer-associated stroma", "colorectal adenocarcinoma epithelium",
    ),
    "dermamnist": (
        "actinic keratoses and intraepithelial carcinoma", "basal cell carcinoma",
        "benign keratosis-like lesions", "dermatofibroma", "melanoma", "melanocytic nevi", "vascular lesions",
    ),
    "bloodmnist": ("basophil", "eosinophil", "erythroblast", "ig", "lymphocyte", "monocyte", "neutrophil", "platelet"),
    "organamnist": _ORGANS,
    "organcmnist": _ORGANS,
    "organsmnist": _ORGANS,
}
#: MD5 of the official 28x28 files, checked after a download.
_MEDMNIST_MD5 = {
    "pneumoniamnist": "28209eda62fecd6e6a2d98b1501bb15f",
    "chestmnist": "02c8a6516a18b556561a56cbdd36c4a8",
    "octmnist": "c68d92d5b585d8d81f7112f81e2d0842",
    "breastmnist": "750601b1f35ba3300ea97c75c52ff8f6",
    "retinamnist": "bd4c0672f1bba3e3a89f0e4e876791e4",
    "pathmnist": "a8b06965200029087d5bd730944a56c1",
    "dermamnist": "0744692d530f8e62ec473284d019b0c7",
    "bloodmnist": "7053d0359d879ad8a5505303e11de1dc",
    "organamnist": "866b832ed4eeba67bfb9edee1d5544e6",
    "organcmnist": "0afa5834fb105f7705a7d93372119a21",
    "organsmnist": "e5c39f1af030238290b9557d9503af9d",
}
_MEDMNIST_URL = "https://zenodo.org/record/5208230/files/{name}.npz?download=1"
_MEDMNIST_SPLITS = (("train", "training"), ("val", "validation"), ("test", "test"))


def _medmnist_name(path: Path) -> str | None:
    stem = path.stem.lower()
    for name in sorted(MEDMNIST_CLASSES, key=len, reverse=True):
        if stem == name or stem.startswith(name + "_") or stem.startswith(name + "-"):
            return name
    return None


def _load_npz(path: Path) -> dict[str, np.ndarray]:
    """Arrays of a MedMNIST npz, with one-line :class:`DataError` for every way it can be bad."""
    if not path.is_file():
        raise DataError(f"{path}: file not found; pass a MedMNIST .npz (e.g. pneumoniamnist.npz) or use --download NAME")
    with open(path, "rb") as f:
        magic = f.read(6)
    if magic == b"\x93NUMPY":
        raise DataError(f"{path}: holds a single .npy array, not a MedMNIST .npz archive with train_images, train_labels, ...")
    if not magic.startswith(b"PK"):
        raise DataError(f"{path}: not an .npz file (no zip header); pass a MedMNIST .npz such as pneumoniamnist.npz")
    try:
        data = np.load(path, allow_pickle=False)
    except (OSError, ValueError, EOFError, zipfile.BadZipFile, zlib.error) as e:
        raise DataError(f"{path}: not a readable .npz file ({type(e).__name__}: {e}); download it again") from e
    if not isinstance(data, np.lib.npyio.NpzFile):
        raise DataError(f"{path}: holds a single array, not a MedMNIST .npz archive with train_images, train_labels, ...")
    with data:
        keys = list(data.files)
        prefixes = [p for p, _ in _MEDMNIST_SPLITS if f"{p}_images" in keys]
        if not prefixes:
            raise DataError(
                f"{path}: no '*_images' arrays (keys: {', '.join(keys) or 'none'}); a MedMNIST npz holds "
                "train_images, train_labels, val_images, val_labels, test_images, test_labels"
            )
        arrays = {}
        for p in prefixes:
            if f"{p}_labels" not in keys:
                raise DataError(f"{path}: has {p}_images but no {p}_labels; the file is incomplete, download it again")
            for k in (f"{p}_images", f"{p}_labels"):
                try:
                    arrays[k] = data[k]
                except (OSError, ValueError, EOFError, zipfile.BadZipFile, zlib.error) as e:
                    raise DataError(f"{path}: array {k} is corrupt ({type(e).__name__}: {e}); download the file again") from e
            n_img, n_lab = len(arrays[f"{p}_images"]), len(arrays[f"{p}_labels"])
            if n_img != n_lab:
                raise DataError(f"{path}: {p}_images has {n_img} rows but {p}_labels has {n_lab}; the file is damaged")
    return arrays


def _to_pil(arr: np.ndarray, path: Path, key: str):
    from PIL import Image

    if arr.ndim == 3 and arr.shape[-1] == 1:
        arr = arr[..., 0]
    if not (arr.ndim == 2 or (arr.ndim == 3 and arr.shape[-1] == 3)):
        raise DataError(
            f"{path}: {key} rows have shape {arr.shape}; medmnist2manifest writes 2-D gray (H, W) or RGB (H, W, 3) "
            "images (3-D MedMNIST volumes are not supported)"
        )
    if arr.dtype != np.uint8:
        if np.issubdtype(arr.dtype, np.integer) and arr.min() >= 0 and arr.max() <= 255:
            arr = arr.astype(np.uint8)
        else:
            raise DataError(f"{path}: {key} has dtype {arr.dtype}; expected uint8 pixels 0..255 as MedMNIST publishes")
    return Image.fromarray(np.ascontiguousarray(arr))


def medmnist_to_manifest(
    npz: str | os.PathLike,
    out_dir: str | os.PathLike,
    manifest_name: str = "manifest.json",
    classes: str | Sequence[str] | None = None,
    dataset: str | None = None,
    task: str = "auto",
    val_fraction: float | None = None,
    seed: int = 0,
    cross_split_duplicates: str = "keep",
    progress: bool | None = None,
    arguments: Mapping[str, Any] | None = None,
    tool: str = "medfuse medmnist2manifest",
    val_as_test: bool = False,
) -> tuple[dict, ConversionReport]:
    """Write a MedMNIST npz as PNG files and build its manifest.

    Images go to ``out_dir/images/<split>/<split>_<index>.png`` (``<split>`` is the npz prefix
    ``train``/``val``/``test``, ``<index>`` the row in the official array). Official splits are
    kept (``val`` becomes ``validation``). Gray arrays give 8-bit gray PNGs, RGB arrays RGB PNGs.

    Args:
        npz: the MedMNIST file.
        out_dir: output folder; the manifest is meant for ``out_dir/manifest_name``.
        manifest_name: file name of the manifest inside ``out_dir``. Defaults to ``manifest.json``.
        classes: class names in label order. Defaults to the names of the known dataset
            (from ``dataset`` or the file name, e.g. ``pneumoniamnist_trainval.npz``), else
            ``class_0, class_1, ...`` (noted in the report).
        dataset: MedMNIST dataset name (e.g. ``chestmnist``) when the file name does not say.
        task: ``"auto"`` (default: ``multilabel`` for labels with several columns, e.g.
            ChestMNIST's (N, 14), else ``classification``), ``"classification"`` or ``"multilabel"``.
        val_fraction: share of train carved into validation, used only when the file has no
            ``val_*`` arrays. Defaults to :data:`DEFAULT_VAL_FRACTION`; 0 carves none.
        seed: seed of that carve. Defaults to 0.
        cross_split_duplicates: the official splits contain some byte-identical images in two
            splits (PneumoniaMNIST: 8 in both train and val). ``"keep"`` (default) keeps the official
            splits; those items carry ``cross_split_duplicate: true`` and no ``sha256`` (the
            manifest validator would reject them as leakage) and are listed in the report.
            ``"drop"`` removes the copies in the later split (val after train, test after both)
            and records ``sha256`` for every item.
        progress, arguments, tool: as for :func:`folder_to_manifest`.
        val_as_test: the official ``val`` split becomes ``test`` and validation is carved from the
            official ``train`` split (``val_fraction``, per image, stratified by label, seeded; identical
            images kept together); the official ``test`` split is left out of the manifest (no PNGs
            written), kept for a final check. For model selection that never sees the reported split.
            Defaults to False.

    Returns:
        ``(manifest, report)``; ``report.found`` counts array rows.

    Raises:
        DataError: a missing, corrupt or non-npz file, missing ``*_images`` / ``*_labels``
            arrays, unsupported shapes, or classes that do not fit the labels.
    """
    npz, out_dir = Path(npz), Path(out_dir)
    report = ConversionReport(tool=tool)
    if task not in ("auto", "classification", "multilabel"):
        raise DataError(f"--task {task!r}: use auto, classification or multilabel")
    if cross_split_duplicates not in ("keep", "drop"):
        raise ValueError(f"cross_split_duplicates must be 'keep' or 'drop', got {cross_split_duplicates!r}")
    arrays = _load_npz(npz)
    prefixes = [p for p, _ in _MEDMNIST_SPLITS if f"{p}_images" in arrays]
    name = (dataset or "").lower() or _medmnist_name(npz)
    split_of = dict(_MEDMNIST_SPLITS)
    if val_as_test:
        if "val" not in prefixes:
            raise DataError(f"{npz}: --val-as-test needs the official val_* arrays, and the file has none")
        if "test" in prefixes:
            report.notes.append(
                f"--val-as-test: the official test split ({len(arrays['test_images'])} images) is left out of the "
                "manifest, the official val split is the test split"
            )
        prefixes = [p for p in prefixes if p != "test"]
        split_of["val"] = "test"

    # -- labels and task ---------------------------------------------------------------------
    label_arrays = {p: np.asarray(arrays[f"{p}_labels"]) for p in prefixes}
    widths = {p: (a.shape[1] if a.ndim == 2 else 1) for p, a in label_arrays.items()}
    if len(set(widths.values())) > 1:
        raise DataError(f"{npz}: label arrays differ in width {widths}; the file is inconsistent")
    width = next(iter(widths.values()))
    if task == "auto":
        task = "multilabel" if width > 1 else "classification"
    if task == "classification" and width > 1:
        raise DataError(f"{npz}: labels have {width} columns (multi-label); use --task multilabel")
    all_labels = np.concatenate([a.reshape(len(a), -1) for a in label_arrays.values()]) if label_arrays else np.zeros((0, 1))
    if all_labels.size and (all_labels.min() < 0 or not np.all(np.equal(np.mod(all_labels, 1), 0))):
        raise DataError(f"{npz}: labels must be non-negative integers")
    if task == "multilabel" and all_labels.size and all_labels.max() > 1:
        raise DataError(f"{npz}: multi-label labels must be 0 or 1, found {int(all_labels.max())}")
    n_classes = width if task == "multilabel" else (int(all_labels.max()) + 1 if all_labels.size else 1)
    class_list = _parse_classes(classes)
    if class_list is None:
        known = MEDMNIST_CLASSES.get(name) if name else None
        if known is not None and (len(known) == width if task == "multilabel" else len(known) >= n_classes):
            class_list = list(known)
        else:
            class_list = [f"class_{i}" for i in range(n_classes)]
            report.notes.append(
                f"dataset {'not recognised' if known is None else name + ' does not fit these labels'}: "
                f"classes named {', '.join(class_list)}; pass --classes (or --dataset) to name them"
            )
    if task == "multilabel" and len(class_list) != width:
        raise DataError(f"--classes has {len(class_list)} names but the labels have {width} columns")
    if task == "classification" and len(class_list) < n_classes:
        raise DataError(
            f"--classes has {len(class_list)} names but labels go up to {n_classes - 1}; give {n_classes} names"
        )

    # -- write PNGs ------------------------------------------------------------------------------
    items: dict[str, list[dict]] = {s: [] for _, s in _MEDMNIST_SPLITS}
    total = sum(len(arrays[f"{p}_images"]) for p in prefixes)
    report.found = total
    modes = set()

    def rows():
        for p, _ in _MEDMNIST_SPLITS:
            if p in prefixes:
                for i in range(len(arrays[f"{p}_images"])):
                    yield p, split_of[p], i

    for p, split_name, i in _progress(rows(), total, "medmnist2manifest", progress):
        img = _to_pil(arrays[f"{p}_images"][i], npz, f"{p}_images")
        modes.add(img.mode)
        buf = io.BytesIO()
        img.save(buf, format="PNG")
        data = buf.getvalue()
        rel = f"images/{p}/{p}_{i}.png"
        target = out_dir / rel
        target.parent.mkdir(parents=True, exist_ok=True)
        with open(target, "wb") as f:
            f.write(data)
        lab = label_arrays[p][i]
        label: Any = [int(v) for v in np.ravel(lab)] if task == "multilabel" else int(np.ravel(lab)[0])
        items[split_name].append(
            {"image": rel, "label": label, "sha256": hashlib.sha256(data).hexdigest(), "source_split": p, "source_index": i}
        )

    # -- identical images across official splits ---------------------------------------------
    order = [s for _, s in _MEDMNIST_SPLITS]
    first_split: dict[str, str] = {}
    where: dict[str, list[tuple[str, dict]]] = defaultdict(list)
    for s in order:
        for it in items[s]:
            where[it["sha256"]].append((s, it))
            first_split.setdefault(it["sha256"], s)
    cross = {h: v for h, v in where.items() if len({s for s, _ in v}) > 1}
    report.duplicate_sets = [[it["image"] for _, it in v] for v in where.values() if len(v) > 1]
    if cross:
        if cross_split_duplicates == "drop":
            for h, v in cross.items():
                for s, it in v:
                    if s != first_split[h]:
                        items[s].remove(it)
                        report.skip(
                            it["image"],
                            "identical image already in an earlier official split (--cross-split-duplicates drop)",
                            f"kept in {first_split[h]}",
                        )
            report.notes.append(
                f"{len(cross)} images of the official splits also occur in an earlier split: later copies dropped"
            )
            report.duplicates_policy = f"{len(cross)} sets spanned two official splits: their later copies dropped"
        else:
            for v in cross.values():
                for _, it in v:
                    del it["sha256"]
                    it["cross_split_duplicate"] = True
            report.duplicates_policy = f"{len(cross)} sets span two official splits (kept as published, see note)"
            report.notes.append(
                f"the official splits share {len(cross)} byte-identical images between splits (kept as published; "
                "those items are marked cross_split_duplicate and carry no sha256; "
                "--cross-split-duplicates drop removes the later copies)"
            )

    if (val_as_test or "val" not in prefixes) and items["training"]:
        f = DEFAULT_VAL_FRACTION if val_fraction is None else float(val_fraction)
        if f > 0:
            items["training"], items["validation"] = carve_validation(items["training"], f, seed=seed)
            report.notes.append(
                f"{'--val-as-test' if val_as_test else 'no val_* arrays'}: validation carved from train with "
                f"--val-fraction {f:g} (per image, stratified by label, identical images kept together), seed {seed}"
            )
    elif val_fraction is not None:
        report.notes.append("--val-fraction ignored: the file has official val_* arrays")

    provenance = make_provenance(
        tool, npz, dict(arguments or {}),
        dataset=name or None,
        source_file=str(npz.resolve()),
        layout="MedMNIST npz: official train/val/test arrays written as PNG files"
        + ("; --val-as-test: official val -> test, validation carved from train, official test left out" if val_as_test else ""),
        image_modes=sorted(modes),
        patient_ids=(
            "MedMNIST publishes no patient identifiers: items carry no patient_id and patient-level "
            "separation of the official splits cannot be checked"
        ),
        cross_split_duplicates=[[it["image"] for _, it in v] for v in cross.values()],
        seed=seed,
    )
    manifest = new_manifest(task, class_list, provenance, items["training"], items["validation"], items["test"])
    return _finish(manifest, report)


def medmnist_url(name: str) -> str:
    """Download address of a MedMNIST file: ``medmnist.INFO`` when installed, else Zenodo."""
    from monai.utils import optional_import

    info, has = optional_import("medmnist", name="INFO")
    if has and isinstance(info, Mapping) and name in info and info[name].get("url"):
        return str(info[name]["url"])
    return _MEDMNIST_URL.format(name=name)


def download_medmnist(
    name: str, dest_dir: str | os.PathLike, url: str | None = None, timeout: float = 10.0
) -> Path:
    """Download ``<name>.npz`` into ``dest_dir`` (kept when already there) and return its path.

    Uses only ``urllib`` with a short timeout; the MD5 of known official files is checked.

    Raises:
        DataError: when the download fails (offline machine, refused connection, HTTP error)
            with instructions to fetch the file by hand and pass it as FILE, or when the MD5
            does not match.
    """
    name = name.strip().lower()
    if not re.fullmatch(r"[a-z0-9_]+", name):
        raise DataError(f"--download {name!r}: not a MedMNIST name such as pneumoniamnist or chestmnist")
    dest = Path(dest_dir) / f"{name}.npz"
    if dest.is_file():
        return dest
    official = url is None
    if not url:
        # looked up on the package, so that replacing medfuse.data.layouts.medmnist_url (as the
        # tests do, to download from a local server) reaches this function
        from medfuse.data import layouts

        url = layouts.medmnist_url(name)
    tmp = dest.with_name(f".{dest.name}.part")
    try:
        md5 = hashlib.md5()
        with urllib.request.urlopen(url, timeout=timeout) as resp:
            dest.parent.mkdir(parents=True, exist_ok=True)
            with open(tmp, "wb") as f:
                for chunk in iter(lambda: resp.read(1 << 20), b""):
                    f.write(chunk)
                    md5.update(chunk)
    except (urllib.error.URLError, OSError, ValueError) as e:
        if tmp.exists():
            tmp.unlink()
        reason = getattr(e, "reason", None) or e
        raise DataError(
            f"could not download {name} from {url} ({reason}); this machine may be offline: download {name}.npz by "
            f"hand (https://medmnist.com/ or {url}) and pass it as FILE: medfuse medmnist2manifest {name}.npz --out DIR"
        ) from e
    expected = _MEDMNIST_MD5.get(name)
    if expected and official and md5.hexdigest() != expected:
        tmp.unlink()
        raise DataError(f"{url}: downloaded file has MD5 {md5.hexdigest()}, expected {expected}; try again")
    os.replace(tmp, dest)
    return dest
