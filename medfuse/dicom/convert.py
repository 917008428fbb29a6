# Copyright (c) medfuse contributors
# Licensed under the Apache License, Version 2.0
"""Hospital DICOM folder -> de-identified, leakage-free manifest with a complete exclusion report.

:func:`dicom_to_manifest` runs the pipeline behind ``medfuse dicom2manifest``:

1. list every file under the input folder (hidden files too; names and extensions are ignored);
2. scan them in a process pool (:func:`medfuse.dicom.scan.scan_file`: sniffing, header,
   pixel-data element, SHA-256). ``update=`` reuses the stored record of every file whose size
   and modification time are unchanged, and of every file whose hash is unchanged;
3. decide each file's fate; the first reason in this order wins (the stable codes of
   :data:`REASONS`): file checks, SOP class, pixel data, selection filters (modality, SOP
   class allowlist, body part, view, burned-in annotation), duplicates (one file per SOP
   Instance UID: the original over lossy copies, then uncompressed or lossless, then the first
   path), labels, and last the pixel decode (``verify_pixels`` or a cache folder);
4. pseudonymise (salted HMAC of PatientID; study UID fallback with a warning), split by
   patient, stratified by label (pinned test patients and earlier assignments kept), and
   assert that no patient is in two splits;
5. write the scan state, the manifest and the report, each atomically.

Every file under the input folder ends up either in the manifest or in the report's
``excluded`` list, exactly once, and every folder that could not be listed is in ``excluded`` as
``unreadable_folder`` (counted in ``unreadable_folders``): ``files_seen + unreadable_folders == included +
len(excluded)`` is checked

The steps live in :mod:`medfuse.dicom.pipeline` (one method each: scan, select, label,
decode, itemize, split, report, write); the report and its codes in :mod:`medfuse.dicom.report`.
"""

from __future__ import annotations

import os
import time
from pathlib import Path
from typing import Any, Sequence

from medfuse.data.splits import parse_fractions
from medfuse.dicom import scan as _scan
from medfuse.dicom.deid import load_or_create_salt, salt_fingerprint
from medfuse.dicom.labels import LABEL_KEYS, LabelTable, read_label_csv
from medfuse.dicom.pipeline import STATE_VERSION, _Conversion, _load_state  # noqa: F401  (STATE_VERSION: still importable here)
from medfuse.dicom.report import REASONS, WARNING_CODES, ScanReport, format_summary
from medfuse.errors import DataError

__all__ = [
    "DEFAULT_MODALITIES",
    "REASONS",
    "WARNING_CODES",
    "ScanReport",
    "output_paths",
    "dicom_to_manifest",
    "format_summary",
]

#: Modalities selected unless ``--modality`` says otherwise (CR, DX, DR radiographs; OPT = OCT).
DEFAULT_MODALITIES = ("CR", "DX", "DR", "OPT")


def output_paths(out: str | os.PathLike) -> dict[str, Path]:
    """``OUT.json`` -> its report (``OUT.report.json``), salt (``OUT.salt``) and scan state (``OUT.state.json``)."""
    out = Path(out)
    stem = out.name[:-5] if out.name.endswith(".json") else out.name
    return {
        "manifest": out,
        "report": out.with_name(stem + ".report.json"),
        "salt": out.with_name(stem + ".salt"),
        "state": out.with_name(stem + ".state.json"),
    }


def _csv_list(value: str | Sequence[str] | None, upper: bool = True) -> tuple[str, ...] | None:
    if value is None:
        return None
    parts = value.split(",") if isinstance(value, str) else list(value)
    out = tuple(p.strip().upper() if upper else p.strip() for p in parts if p.strip())
    return out or None


def dicom_to_manifest(
    input_dir: str | os.PathLike,
    out: str | os.PathLike,
    modalities: str | Sequence[str] | None = DEFAULT_MODALITIES,
    body_parts: str | Sequence[str] | None = None,
    views: str | Sequence[str] | None = None,
    sop_classes: str | Sequence[str] | None = None,
    labels: str | os.PathLike | None = None,
    label_key: str = "PatientID",
    label_column: str = "label",
    classes: str | Sequence[str] | None = None,
    label_from_folder: int | None = None,
    split: str | Sequence[float] = "0.7,0.15,0.15",
    seed: int = 0,
    test_patients: str | os.PathLike | None = None,
    workers: int | None = None,
    cache_dir: str | os.PathLike | None = None,
    verify_pixels: bool = False,
    salt: str | None = None,
    keep_phi: bool = False,
    update: str | os.PathLike | None = None,
    hash_files: bool = True,
    progress: bool | None = None,
    arguments: dict[str, Any] | None = None,
    write: bool = True,
) -> tuple[dict[str, Any], ScanReport]:
    """Scan ``input_dir`` and build (and by default write) the manifest, its report and scan state.

    Args:
        input_dir: the DICOM folder (nested, any file names).
        out: the manifest path (``OUT.json``); the report, salt and state go beside it.
        modalities: Modality values to keep. Defaults to CR, DX, DR and OPT.
        body_parts, views, sop_classes: optional allowlists of BodyPartExamined, ViewPosition
            and SOP Class UIDs.
        labels: label CSV; ``label_key`` names the DICOM identifier in its key column,
            ``label_column`` the label column.
        classes: class names in label-index order (default: the sorted label values).
            Required for an unlabelled (inference) manifest: the classes of the model.
        label_from_folder: take the label from the folder this many levels below ``input_dir``.
        split: training, validation, test fractions (labelled manifests).
        seed: split seed.
        test_patients: file of patient ids (raw or pseudonyms), one per line, pinned to ``test``.
        workers: processes for scanning, hashing and decoding (default: all cores).
        cache_dir: write 16-bit PNG/TIFF copies of the selected images here and point ``image``
            at them (the DICOM path stays in ``source``).
        verify_pixels: decode every selected image and exclude those that fail.
        salt: secret for pseudonyms (default: the ``OUT.salt`` file, created on first use).
        keep_phi: keep the raw patient id, name, birth date and accession number.
        update: an earlier manifest made from ``input_dir``: reuse its scan records and splits.
        hash_files: compute SHA-256 of every file (default; ``False`` only for header timing).
        progress: show tqdm bars (default: when stderr is a terminal).
        arguments: the parsed command line, recorded in the provenance and the report.
        write: write the outputs (``False``: return them only; the salt file is still created).

    Returns:
        ``(manifest, report)``.

    Raises:
        DataError: unreadable input folder, bad options, label CSV or state problems.
    """
    t_start = time.perf_counter()
    root = Path(input_dir)
    if not root.is_dir():
        raise DataError(f"{root}: input folder not found or not a folder; pass the DICOM export folder")
    if not os.access(root, os.R_OK | os.X_OK):
        raise DataError(f"{root}: input folder is not readable; fix its permissions")
    root_abs = str(root.resolve())
    paths = output_paths(out)
    opts = {
        "modalities": _csv_list(modalities) or DEFAULT_MODALITIES,
        "body_parts": _csv_list(body_parts),
        "views": _csv_list(views),
        "sop_classes": _csv_list(sop_classes, upper=False),
    }
    class_list = list(_csv_list(classes, upper=False) or []) or None
    if labels is not None and label_from_folder is not None:
        raise DataError("give either --labels or --label-from-folder, not both")
    if label_key not in LABEL_KEYS:
        raise DataError(f"--label-key {label_key!r} is not one of {list(LABEL_KEYS)}")
    labelled = labels is not None or label_from_folder is not None
    if not labelled and not class_list:
        raise DataError(
            "an unlabelled (inference) manifest needs the class names of the model it is for: add --classes A,B "
            "(or give labels with --labels CSV / --label-from-folder DEPTH)"
        )
    fractions = parse_fractions(split, n=3) if not isinstance(split, str) or split else (0.7, 0.15, 0.15)
    workers = int(workers) if workers else _scan.default_workers()
    if workers < 1:
        raise DataError(f"--workers must be at least 1, got {workers}")
    if label_from_folder is not None and label_from_folder < 1:
        raise DataError(f"--label-from-folder must be 1 or more (1 = the top-level folders), got {label_from_folder}")

    salt_bytes, salt_source = load_or_create_salt(paths["salt"], salt)
    fingerprint = salt_fingerprint(salt_bytes)
    report = ScanReport(input_dir=root_abs, arguments=dict(arguments or {}))
    report.notes.append(f"salt: {salt_source}")
    state: dict[str, Any] = {}
    if update is not None:
        state = _load_state(output_paths(update)["state"], root_abs, fingerprint, hash_files)
    label_table: LabelTable | None = None
    if labels is not None:
        label_table = read_label_csv(labels, label_key, label_column, salt_bytes)

    conversion = _Conversion(
        root, paths, opts, class_list, labelled, label_key, label_from_folder, label_table, fractions, seed,
        test_patients, workers, salt_bytes, fingerprint, report, state, keep_phi, hash_files, progress,
    )
    conversion.scan()
    t0 = time.perf_counter()
    conversion.select()
    conversion.label()
    report.timings["select"] = time.perf_counter() - t0
    conversion.decode(cache_dir, verify_pixels)
    conversion.itemize()
    conversion.split()
    conversion.fill_report()
    manifest = conversion.manifest()
    report.timings["total"] = time.perf_counter() - t_start
    report.outputs = {k: str(v) for k, v in paths.items()}
    conversion.write(manifest, write)
    return manifest, report
