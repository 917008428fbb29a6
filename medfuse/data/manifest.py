# Copyright (c) medfuse contributors
# Licensed under the Apache License, Version 2.0
"""The medfuse manifest: one MONAI-datalist JSON format for every task.

A manifest is a JSON object::

    {
        "schema_version": "1.0",
        "task": "classification",
        "classes": ["NORMAL", "PNEUMONIA"],
        "provenance": {"tool": "medfuse folder2manifest", "version": "0.1.0", ...},
        "training":   [{"image": "train/NORMAL/a.png", "label": 0, "patient_id": "0115", ...}],
        "validation": [...],
        "test":       [...]
    }

``training`` / ``validation`` / ``test`` are MONAI datalist keys, so
``monai.data.load_decathlon_datalist(path, is_segmentation=False, data_list_key="training")``
reads a manifest as it is. Image and mask paths are relative to the folder of the manifest
file (absolute paths are allowed for data that lives elsewhere). Empty splits are left out
(MONAI raises on an empty list) and an unlabelled inference manifest keeps its items under
``test``. ``data_manifests/manifest.schema.json`` is the JSON schema and
``data_manifests/README.md`` documents every field.
"""

from __future__ import annotations

import copy
import datetime as _dt
import json
import math
import os
from collections import Counter, defaultdict
from pathlib import Path
from typing import Any, Iterable, Mapping

from medfuse.errors import ManifestError
from medfuse.utils.io import atomic_write_json, sha256_file

__all__ = [
    "SCHEMA_VERSION",
    "SPLITS",
    "TASKS",
    "new_manifest",
    "make_provenance",
    "read_manifest",
    "validate_manifest",
    "write_manifest",
    "load_split",
    "multi_hot_from_boxes",
    "iter_items",
    "summarize_manifest",
    "format_summary",
]

SCHEMA_VERSION = "1.0"
#: The MONAI datalist keys a manifest may carry, in this order.
SPLITS = ("training", "validation", "test")
#: Task names. ``segmentation_classification`` items carry both a mask and a label.
TASKS = ("classification", "multilabel", "segmentation", "segmentation_classification", "detection")
#: Keys whose string values are file paths relative to the manifest.
PATH_KEYS = ("image", "mask")
_TOP_KEYS = ("schema_version", "task", "classes", "provenance") + SPLITS
#: further top-level keys the converters write (``box_format`` of detection manifests, a free-text ``note``)
_TOP_EXTRA_KEYS = ("box_format", "note", "description", "name")
#: item keys with a meaning (manifest.schema.json, DESIGN); an unknown item key this close to one is a typo
_ITEM_KEYS = ("image", "label", "mask", "boxes", "box_labels", "patient_id", "sha256")
_TYPO_CUTOFF = 0.75


def make_provenance(tool: str, source_root: str | os.PathLike | None = None, arguments: Any = None, **extra) -> dict:
    """Provenance block: which tool made the manifest, its version, when, from what, with which arguments."""
    from medfuse import __version__

    prov = {
        "tool": tool,
        "version": __version__,
        "time": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
        "source_root": None if source_root is None else str(Path(source_root).resolve()),
        "arguments": arguments if arguments is not None else {},
    }
    prov.update(extra)
    return prov


def new_manifest(
    task: str,
    classes: Iterable[str] | None,
    provenance: Mapping[str, Any],
    training: list | None = None,
    validation: list | None = None,
    test: list | None = None,
    **extra: Any,
) -> dict:
    """Assemble a manifest dictionary; empty or missing splits are omitted."""
    manifest: dict[str, Any] = {
        "schema_version": SCHEMA_VERSION,
        "task": task,
        "classes": list(classes) if classes is not None else [],
        "provenance": dict(provenance),
    }
    manifest.update(extra)
    for key, items in zip(SPLITS, (training, validation, test)):
        if items:
            manifest[key] = list(items)
    return manifest


def iter_items(manifest: Mapping[str, Any]):
    """Yield ``(split, index, item)`` for every item of every split present."""
    for split in SPLITS:
        for i, item in enumerate(manifest.get(split) or []):
            yield split, i, item


def _where(split: str, i: int, item: Any) -> str:
    image = item.get("image") if isinstance(item, Mapping) else None
    return f"{split}[{i}]" + (f" ({image!r})" if image is not None else "")


def _resolve(base_dir: Path | None, p: str) -> Path:
    q = Path(p)
    return q if q.is_absolute() or base_dir is None else base_dir / q


def _check_label(label: Any, classes: list, task: str, where: str, problems: list[str]) -> None:
    n = len(classes)
    if isinstance(label, bool):
        problems.append(f"{where}: label {label!r} is a boolean; write the class index (0..{n - 1}) as an integer")
        return
    if isinstance(label, int):
        if task == "multilabel":
            problems.append(
                f"{where}: label {label} is an integer but the task is multilabel; "
                f"write a list of {n} zeros and ones (one per class in {classes})"
            )
        elif n and not 0 <= label < n:
            problems.append(
                f"{where}: label {label} is outside classes {classes} (valid indices 0..{n - 1}); "
                "fix the label or add the class to 'classes'"
            )
        elif not n:
            problems.append(f"{where}: item has label {label} but the manifest lists no 'classes'; add them")
        return
    if isinstance(label, list):
        if task != "multilabel":
            problems.append(
                f"{where}: label {label!r} is a list but the task is {task!r}; "
                "use an integer class index, or set task to 'multilabel'"
            )
            return
        if len(label) != n or any(v not in (0, 1) or isinstance(v, bool) for v in label):
            problems.append(
                f"{where}: multilabel label {label!r} must be {n} zeros/ones, one per class in {classes}"
            )
        return
    if label is None:
        problems.append(f"{where}: label is null; leave the 'label' key out when the label is unknown")
        return
    hint = ""
    if isinstance(label, str) and label in classes:
        hint = f" (did you mean {classes.index(label)}, the index of {label!r}?)"
    problems.append(
        f"{where}: unknown label {label!r}; labels are integer indices into classes {classes}{hint}"
    )


def _check_boxes(item: Mapping, classes: list, task: Any, split: str, where: str, problems: list[str]) -> None:
    boxes = item.get("boxes")
    box_labels = item.get("box_labels")
    if boxes is None and box_labels is None:
        if task == "detection" and split == "training":
            problems.append(
                f"{where}: detection training item without 'boxes'; give 'boxes' and 'box_labels' "
                "(empty lists for an image without findings)"
            )
        return
    if not isinstance(boxes, list) or not isinstance(box_labels, list):
        problems.append(f"{where}: 'boxes' and 'box_labels' must both be lists (give both, or neither)")
        return
    if len(boxes) != len(box_labels):
        problems.append(
            f"{where}: {len(boxes)} boxes but {len(box_labels)} box_labels; give one label per box"
        )
    for j, b in enumerate(boxes):
        ok = isinstance(b, list) and len(b) == 4 and all(
            isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v) for v in b
        )
        if not ok or b[2] < b[0] or b[3] < b[1]:
            problems.append(
                f"{where}: box {j} {b!r} is not [x_min, y_min, x_max, y_max] (numbers) with x_max >= x_min "
                "and y_max >= y_min"
            )
    n = len(classes)
    bad = [f"box_labels[{j}] = {lab!r}" for j, lab in enumerate(box_labels)
           if not isinstance(lab, int) or isinstance(lab, bool) or not 0 <= lab < n]
    if bad:
        valid = f"0..{n - 1}" if n else "none: 'classes' is empty"
        problems.append(f"{where}: {', '.join(bad)}: not class indices into classes {classes} ({valid})")


def multi_hot_from_boxes(box_labels: Iterable[int], num_classes: int) -> list[int]:
    """The image-level multi-hot label of a detection item: 1 for every class among its ``box_labels``."""
    out = [0] * int(num_classes)
    for lab in box_labels:
        out[int(lab)] = 1
    return out


def validate_manifest(
    manifest: Any,
    base_dir: str | os.PathLike | None = None,
    check_files: bool = True,
    check_hashes: bool = False,
    path: str | os.PathLike | None = None,
) -> None:
    """Check a manifest and raise :class:`ManifestError` listing every problem found.

    Args:
        manifest: the parsed manifest.
        base_dir: folder that relative paths refer to (the manifest's folder).
        check_files: check that every ``image`` and ``mask`` file exists (needs ``base_dir``
            for relative paths). Defaults to True.
        check_hashes: recompute ``sha256`` of every image that declares one. Defaults to False.
        path: the manifest's path, used in error messages only.

    Raises:
        ManifestError: with ``problems``, one message per problem; each names the split,
            the item index and image, and says how to fix it.
    """
    problems: list[str] = []
    base = Path(base_dir) if base_dir is not None else None
    if not isinstance(manifest, Mapping):
        raise ManifestError(f"a manifest is a JSON object, not {type(manifest).__name__}", path)

    import difflib

    for key in manifest:
        if key not in _TOP_KEYS and key not in _TOP_EXTRA_KEYS:
            close = difflib.get_close_matches(str(key), _TOP_KEYS, n=1)
            n = f" (its {len(manifest[key])} items are not read)" if isinstance(manifest[key], list) else ""
            problems.append(f"unknown top-level key '{key}'{n}"
                            + (f"; did you mean '{close[0]}'?" if close else f"; the keys are {list(_TOP_KEYS)}"))
    version = manifest.get("schema_version")
    if version is None:
        problems.append(f"missing 'schema_version'; add \"schema_version\": \"{SCHEMA_VERSION}\"")
    elif str(version).split(".")[0] != SCHEMA_VERSION.split(".")[0]:
        problems.append(f"schema_version {version!r} is not supported (this medfuse reads {SCHEMA_VERSION})")
    task = manifest.get("task")
    if task not in TASKS:
        problems.append(f"task {task!r} is not one of {list(TASKS)}")
    classes = manifest.get("classes", [])
    if not isinstance(classes, list) or not all(isinstance(c, str) and c for c in classes):
        problems.append(f"'classes' must be a list of non-empty strings, got {classes!r}")
        classes = []
    dup_classes = [c for c, k in Counter(classes).items() if k > 1]
    if dup_classes:
        problems.append(f"'classes' repeats {dup_classes}; each class name must appear once")
    if task in ("classification", "multilabel", "segmentation_classification", "detection") and not classes:
        problems.append(f"task {task!r} needs a non-empty 'classes' list")
    if not isinstance(manifest.get("provenance", {}), Mapping):
        problems.append("'provenance' must be an object (tool, version, time, source_root, arguments)")

    present = [s for s in SPLITS if s in manifest]
    if not present:
        problems.append(f"no split: a manifest needs at least one of {list(SPLITS)} (an inference manifest uses 'test')")
    for s in present:
        if not isinstance(manifest[s], list):
            problems.append(f"'{s}' must be a list of items")
        elif not manifest[s]:
            problems.append(f"'{s}' is empty; leave empty splits out (MONAI's load_decathlon_datalist fails on them)")

    patients: dict[str, set[str]] = defaultdict(set)
    hashes: dict[str, list[str]] = defaultdict(list)
    images: dict[str, list[str]] = defaultdict(list)
    for split, i, item in iter_items(manifest):
        where = _where(split, i, item)
        if not isinstance(item, Mapping):
            problems.append(f"{where}: an item is an object with at least an 'image' key")
            continue
        for key in item:
            if key not in _ITEM_KEYS:
                close = difflib.get_close_matches(str(key), _ITEM_KEYS, n=1, cutoff=_TYPO_CUTOFF)
                if close and close[0] not in item:
                    problems.append(f"{where}: unknown key '{key}'; did you mean '{close[0]}'? (extra keys are kept, "
                                    "but this one looks like a typo)")
        image = item.get("image")
        if not isinstance(image, str) or not image:
            problems.append(f"{where}: missing 'image' (a path relative to the manifest)")
            continue
        for key in PATH_KEYS:
            p = item.get(key)
            if p is None:
                continue
            if not isinstance(p, str):
                problems.append(f"{where}: '{key}' must be a path string, got {p!r}")
                continue
            if check_files and (base is not None or Path(p).is_absolute()):
                full = _resolve(base, p)
                if not full.is_file():
                    problems.append(
                        f"{where}: {key} file not found at {full}; fix the path (relative to the manifest "
                        "folder) or remove the item"
                    )
        if "label" in item:
            _check_label(item["label"], classes, task, where, problems)
        elif task in ("classification", "multilabel") and split == "training":
            problems.append(f"{where}: training item without 'label'; label it or move it to 'test'")
        if task in ("segmentation", "segmentation_classification") and split == "training" and "mask" not in item and "label" not in item:
            problems.append(f"{where}: training item has neither 'mask' nor 'label'")
        _check_boxes(item, classes, task, split, where, problems)
        pid = item.get("patient_id")
        if pid is not None:
            patients[str(pid)].add(split)
        digest = item.get("sha256")
        if digest is not None:
            hashes[str(digest)].append(f"{split}[{i}]")
            if check_hashes and check_files:
                full = _resolve(base, image)
                if full.is_file() and sha256_file(full) != digest:
                    problems.append(f"{where}: sha256 does not match the file {full}; the file changed, re-run the converter")
        images[str(_resolve(base, image))].append(f"{split}[{i}]")

    for pid, splits in sorted(patients.items()):
        if len(splits) > 1:
            ordered = [s for s in SPLITS if s in splits]
            problems.append(
                f"patient_id {pid!r} appears in {ordered} (leakage); keep each patient in one split "
                "(re-run the converter, which splits by patient)"
            )
    for digest, where in sorted(hashes.items()):
        splits = {w.split("[")[0] for w in where}
        if len(splits) > 1:
            problems.append(
                f"identical image (sha256 {digest[:12]}...) in {', '.join(where)} across splits (leakage); "
                "keep duplicates in one split"
            )
    for img, where in sorted(images.items()):
        if len(where) > 1:
            problems.append(f"image {img} is listed {len(where)} times ({', '.join(where)}); list each file once")
    if problems:
        raise ManifestError(problems, path)


def read_manifest(
    path: str | os.PathLike, validate: bool = True, check_files: bool = True, check_hashes: bool = False
) -> dict:
    """Read (and by default validate) the manifest at ``path``.

    Raises:
        ManifestError: when the file is missing, is not JSON, or fails validation.
    """
    path = Path(path)
    if not path.is_file():
        raise ManifestError(f"manifest not found; check the path or create it with a medfuse *2manifest command", path)
    data = path.read_bytes()
    try:
        # json.loads on bytes detects the encoding (RFC 8259: UTF-8, -16 or -32, with or without a byte order mark),
        # so a manifest saved as UTF-16 by a Windows editor or as UTF-8 with a BOM reads as it is
        manifest = json.loads(data)
    except UnicodeDecodeError as e:
        raise ManifestError(f"not UTF-8/16/32 text (byte 0x{data[e.start]:02x} at offset {e.start} is not "
                            f"{e.encoding}); save the manifest as UTF-8", path) from None
    except json.JSONDecodeError as e:
        raise ManifestError(f"not valid JSON (line {e.lineno}, column {e.colno}: {e.msg})", path) from e
    if validate:
        validate_manifest(manifest, base_dir=path.parent, check_files=check_files, check_hashes=check_hashes, path=path)
    return manifest


def write_manifest(
    manifest: Mapping[str, Any], path: str | os.PathLike, validate: bool = True, check_files: bool = True
) -> Path:
    """Write ``manifest`` to ``path`` atomically (temp file + rename), leaving out empty splits.

    Top-level keys are written in a fixed order (``schema_version``, ``task``, ``classes``,
    ``provenance``, extra keys, then the splits). Validation runs first, against the folder
    the file will live in, so a manifest that would not read back is never written.
    """
    path = Path(path)
    out: dict[str, Any] = {}
    for key in _TOP_KEYS[:4]:
        if key in manifest:
            out[key] = manifest[key]
    for key, value in manifest.items():
        if key not in _TOP_KEYS:
            out[key] = value
    for split in SPLITS:
        if manifest.get(split):
            out[split] = manifest[split]
    # create the folder first: relative paths (possibly with '..') resolve from it
    path.parent.mkdir(parents=True, exist_ok=True)
    if validate:
        validate_manifest(out, base_dir=path.parent, check_files=check_files, path=path)
    return atomic_write_json(path, out)


def load_split(path: str | os.PathLike, split: str = "training", validate: bool = True) -> list[dict]:
    """Items of one split with ``image`` (and ``mask``) made absolute: ready for a MONAI Dataset.

    Unlike ``monai.data.load_decathlon_datalist``, a missing split returns ``[]`` and mask
    paths are always resolved (MONAI resolves them only when the file exists). Items of a
    ``detection`` manifest get their image-level ``label``, a multi-hot list over ``classes``,
    from their ``box_labels`` (:func:`multi_hot_from_boxes`; all zeros for a negative).
    """
    if split not in SPLITS:
        raise ManifestError(f"unknown split {split!r}; use one of {list(SPLITS)}", path)
    path = Path(path)
    manifest = read_manifest(path, validate=validate)
    base = path.parent.resolve()
    items = copy.deepcopy(manifest.get(split, []))
    detection = manifest.get("task") == "detection"
    for item in items:
        for key in PATH_KEYS:
            if isinstance(item.get(key), str):
                item[key] = os.path.normpath(_resolve(base, item[key]))
        if detection and isinstance(item.get("box_labels"), list):
            item["label"] = multi_hot_from_boxes(item["box_labels"], len(manifest.get("classes", [])))
    return items


def summarize_manifest(manifest: Mapping[str, Any]) -> dict:
    """Counts per split: items, labelled items, per-class counts, patients, masks, boxes."""
    classes = manifest.get("classes", [])
    summary: dict[str, Any] = {"task": manifest.get("task"), "classes": classes, "splits": {}}
    for split in SPLITS:
        items = manifest.get(split)
        if not items:
            continue
        per_class = Counter()
        for item in items:
            lab = item.get("label")
            if isinstance(lab, int) and not isinstance(lab, bool):
                per_class[classes[lab] if 0 <= lab < len(classes) else str(lab)] += 1
            elif isinstance(lab, list):
                for c, v in zip(classes, lab):
                    per_class[c] += int(v)
        summary["splits"][split] = {
            "items": len(items),
            "labelled": sum(1 for it in items if "label" in it),
            "per_class": {c: per_class.get(c, 0) for c in classes} if classes else dict(per_class),
            "patients": len({it["patient_id"] for it in items if "patient_id" in it}),
            "masks": sum(1 for it in items if "mask" in it),
            "boxes": sum(len(it.get("boxes") or []) for it in items),
        }
    summary["total"] = sum(s["items"] for s in summary["splits"].values())
    # items under a key that is not a split are not counted above: say so, never drop them silently
    summary["not_counted"] = {str(k): len(v) for k, v in manifest.items()
                              if k not in SPLITS and isinstance(v, list) and any(isinstance(x, Mapping) for x in v)}
    return summary


def format_summary(summary: Mapping[str, Any], title: str | None = None) -> str:
    """Human-readable table of :func:`summarize_manifest` output."""
    classes = summary.get("classes") or []
    lines = []
    if title:
        lines.append(title)
    lines.append(f"task: {summary.get('task')}   classes: {', '.join(classes) if classes else '-'}")
    head = f"{'split':<11}{'items':>7}{'patients':>10}{'masks':>7}" + "".join(f"{c[:10]:>11}" for c in classes)
    lines.append(head)
    for split, s in summary["splits"].items():
        row = f"{split:<11}{s['items']:>7}{s['patients']:>10}{s['masks']:>7}"
        row += "".join(f"{s['per_class'].get(c, 0):>11}" for c in classes)
        lines.append(row)
    lines.append(f"{'total':<11}{summary.get('total', 0):>7}")
    for key, n in (summary.get("not_counted") or {}).items():
        lines.append(f"not counted: {n} items under '{key}', which is not a split ({', '.join(SPLITS)})")
    return "\n".join(lines)
