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
``excluded`` list, exactly once: ``files_seen == included + len(excluded)`` is checked
before anything is written.
"""

from __future__ import annotations

import json
import os
import sys
import time
from collections import Counter, defaultdict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable, Sequence

from medfuse.data.manifest import SPLITS, make_provenance, new_manifest, validate_manifest
from medfuse.data.splits import find_leakage, parse_fractions, split_items
from medfuse.dicom import scan as _scan
from medfuse.dicom.cache import cache_name, preprocessing_record
from medfuse.dicom.deid import keyed_hash, load_or_create_salt, pseudonym, salt_fingerprint
from medfuse.dicom.labels import LABEL_KEYS, LabelTable, folder_label, read_label_csv
from medfuse.dicom.sniff import is_image_sop_class, is_lossy_transfer_syntax, is_native_transfer_syntax, sop_class_name
from medfuse.errors import DataError
from medfuse.utils.io import atomic_write_json, atomic_write_text

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
#: Exclusion reasons, in pipeline order (the first that applies is reported).
REASONS = (
    "unreadable",
    "empty_file",
    "not_dicom",
    "truncated",
    "corrupt_header",
    "non_image_sop_class",
    "no_pixel_data",
    "modality_not_selected",
    "sop_class_not_selected",
    "body_part_not_selected",
    "view_not_selected",
    "burned_in_annotation",
    "duplicate_sop_instance",
    "label_missing",
    "label_unknown",
    "undecodable_transfer_syntax",
)
#: Codes of the ``warnings`` list (included files with a problem that does not exclude them).
WARNING_CODES = ("missing_patient_id", "missing_study_uid", "phi_in_path", "pydicom_warning")
STATE_VERSION = 1


@dataclass
class ScanReport:
    """What ``dicom2manifest`` saw, kept and excluded (written as ``OUT.report.json``)."""

    input_dir: str
    files_seen: int = 0
    included: int = 0
    excluded: list[dict[str, str]] = field(default_factory=list)
    warnings: list[dict[str, str]] = field(default_factory=list)
    by_modality: dict[str, dict[str, int]] = field(default_factory=dict)
    by_split: dict[str, dict[str, Any]] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)
    timings: dict[str, float] = field(default_factory=dict)
    scanned: int = 0
    reused: int = 0
    arguments: dict[str, Any] = field(default_factory=dict)
    outputs: dict[str, str] = field(default_factory=dict)

    def exclude(self, path: str, reason: str, detail: str = "") -> None:
        """Record one excluded file (``reason`` must be one of :data:`REASONS`)."""
        if reason not in REASONS:
            raise ValueError(f"unknown exclusion reason {reason!r}")
        self.excluded.append({"path": path, "reason": reason, "detail": detail})

    def warn(self, path: str, code: str, detail: str = "") -> None:
        """Record a warning about an included file."""
        self.warnings.append({"path": path, "code": code, "detail": detail})

    def excluded_by_reason(self) -> dict[str, int]:
        """Counts per reason, in pipeline order."""
        counts = Counter(e["reason"] for e in self.excluded)
        return {r: counts[r] for r in REASONS if counts[r]}

    def warnings_by_code(self) -> dict[str, int]:
        counts = Counter(w["code"] for w in self.warnings)
        return {c: counts[c] for c in WARNING_CODES if counts[c]}

    def check(self) -> None:
        """Assert the invariant ``files_seen == included + len(excluded)`` and one entry per file."""
        paths = [e["path"] for e in self.excluded]
        if self.files_seen != self.included + len(self.excluded) or len(set(paths)) != len(paths):
            raise RuntimeError(
                f"internal error in dicom2manifest: files_seen {self.files_seen} != included {self.included} "
                f"+ excluded {len(self.excluded)} (or a file is excluded twice); please report this"
            )

    def to_dict(self) -> dict[str, Any]:
        """JSON form: counts first, then every excluded file and warning."""
        from medfuse import __version__

        return {
            "tool": "medfuse dicom2manifest",
            "version": __version__,
            "input_dir": self.input_dir,
            "files_seen": self.files_seen,
            "included": self.included,
            "excluded_count": len(self.excluded),
            "excluded_by_reason": self.excluded_by_reason(),
            "by_modality": self.by_modality,
            "by_split": self.by_split,
            "warnings_by_code": self.warnings_by_code(),
            "scanned": self.scanned,
            "reused": self.reused,
            "timings_s": {k: round(v, 3) for k, v in self.timings.items()},
            "notes": self.notes,
            "outputs": self.outputs,
            "arguments": self.arguments,
            "excluded": self.excluded,
            "warnings": self.warnings,
        }


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


def _progress(total: int, desc: str, enabled: bool | None):
    if enabled is False or (enabled is None and not sys.stderr.isatty()) or total == 0:
        return None
    from tqdm import tqdm

    return tqdm(total=total, desc=desc, unit="file", file=sys.stderr, leave=False)


def _load_state(path: Path, input_dir: str, fingerprint: str, hashed: bool) -> dict[str, Any]:
    if not path.is_file():
        raise DataError(
            f"{path}: no scan state for --update (it is written beside the manifest by a first run); "
            "run without --update first"
        )
    try:
        state = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError) as e:
        raise DataError(f"{path}: cannot read the scan state ({e}); delete it and run without --update") from e
    if state.get("version") != STATE_VERSION:
        raise DataError(f"{path}: scan state version {state.get('version')!r} is not {STATE_VERSION}; run without --update")
    if state.get("input_dir") != input_dir:
        raise DataError(
            f"{path}: the manifest was made from {state.get('input_dir')!r}, not {input_dir!r}; "
            "pass the same INPUT_DIR to --update, or write a new manifest without --update"
        )
    if state.get("salt_fingerprint") != fingerprint:
        raise DataError(
            f"{path}: the salt differs from the one the manifest was made with (pseudonyms would change); "
            "use the same --salt or salt file, or write a new manifest without --update"
        )
    if hashed and not state.get("hashed", True):
        state["records"] = {}  # records without hashes cannot be reused for a hashed manifest
    return state


def _dup_rank(rec: dict[str, Any]) -> tuple:
    ts = rec.get("transfer_syntax_uid") or ""
    lossy = bool(rec.get("lossy")) or is_lossy_transfer_syntax(ts)
    lossless_copy = not is_native_transfer_syntax(ts) and not is_lossy_transfer_syntax(ts)
    # the original (never lossy compressed) first; among equals uncompressed, then lossless, then the path
    return (lossy, is_lossy_transfer_syntax(ts), lossless_copy, rec["path"])


def _describe_copy(rec: dict[str, Any]) -> str:
    ts = rec.get("transfer_syntax_uid") or ""
    history = "lossy compressed" if _dup_rank(rec)[0] else "never lossy compressed"
    return f"{sop_class_name(ts)}, {history}"


def _select(rec: dict[str, Any], opts: dict[str, Any]) -> tuple[str, str] | None:
    """The exclusion ``(reason, detail)`` of a scanned record before duplicates, or ``None``."""
    if rec.get("reason"):
        return rec["reason"], rec.get("detail", "")
    if rec.get("pixel") == "truncated":
        return "truncated", rec.get("pixel_detail", "")
    sop = rec.get("sop_class_uid") or ""
    if not is_image_sop_class(sop):
        name = sop_class_name(sop)
        extra = " (a DICOMDIR: used as a hint only)" if sop == "1.2.840.10008.1.3.10" else ""
        return "non_image_sop_class", f"{name} ({sop}){extra}"
    if rec.get("pixel") != "ok":
        return "no_pixel_data", rec.get("pixel_detail", "no pixel data element")
    mod = rec.get("modality") or ""
    if mod not in opts["modalities"]:
        return "modality_not_selected", f"Modality {mod or '(empty)'} is not in {','.join(opts['modalities'])}"
    if opts["sop_classes"] and sop not in opts["sop_classes"]:
        return "sop_class_not_selected", f"SOP class {sop_class_name(sop)} ({sop}) is not in --sop-class"
    if opts["body_parts"] and (rec.get("body_part") or "") not in opts["body_parts"]:
        return "body_part_not_selected", (
            f"BodyPartExamined {rec.get('body_part') or '(empty)'} is not in {','.join(opts['body_parts'])}"
        )
    if opts["views"] and (rec.get("view") or "") not in opts["views"]:
        return "view_not_selected", f"ViewPosition {rec.get('view') or '(empty)'} is not in {','.join(opts['views'])}"
    if rec.get("burned_in") == "YES":
        return "burned_in_annotation", "BurnedInAnnotation is YES: the pixels may show patient identifiers"
    return None


def _dicomdir_hints(root: Path, records: Iterable[dict[str, Any]], present: set[str], report: ScanReport) -> None:
    """Warn about files a DICOMDIR lists that are not in the folder (the DICOMDIR is only a hint)."""
    import pydicom

    for rec in records:
        if rec.get("sop_class_uid") != "1.2.840.10008.1.3.10":
            continue
        try:
            ds = pydicom.dcmread(root / rec["path"], force=True)
            base = str(Path(rec["path"]).parent).replace(os.sep, "/")
            missing = []
            for item in ds.get("DirectoryRecordSequence", []) or []:
                ref = item.get("ReferencedFileID")
                if ref is None:
                    continue
                parts = [ref] if isinstance(ref, str) else list(ref)
                rel = "/".join([p for p in ([base] if base != "." else []) + [str(p) for p in parts]])
                if rel not in present and rel.upper() not in present:
                    missing.append(rel)
        except Exception as e:  # a broken DICOMDIR is only a lost hint
            report.notes.append(f"{rec['path']}: DICOMDIR not read as a hint ({type(e).__name__}: {e})")
            continue
        if missing:
            report.notes.append(
                f"{rec['path']}: the DICOMDIR lists {len(missing)} file(s) not found in the folder, e.g. {missing[0]} "
                "(the folder itself was scanned; a DICOMDIR is only a hint)"
            )


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

    # 1. list files
    t0 = time.perf_counter()
    files = _scan.iter_files(str(root))
    report.files_seen = len(files)
    report.timings["list"] = time.perf_counter() - t0

    # 2. scan (reusing unchanged records with --update)
    t0 = time.perf_counter()
    old_records: dict[str, dict] = state.get("records", {})
    records: dict[str, dict] = {}
    jobs = []
    for full, rel in files:
        old = old_records.get(rel)
        if old is not None and old.get("size") is not None and bool(old.get("phi")) == keep_phi:
            try:
                st = os.stat(full)
            except OSError:
                st = None
            if st is not None and st.st_size == old["size"] and st.st_mtime_ns == old.get("mtime_ns"):
                records[rel] = old
                continue
            if st is not None and st.st_size == old["size"] and old.get("sha256"):
                jobs.append((full, rel, (old["sha256"], old)))
                continue
        jobs.append((full, rel, None))
    report.reused = len(records)
    report.scanned = len(jobs)
    scan_options = {"salt": salt_bytes, "hash": hash_files, "keep_phi": keep_phi}
    bar = _progress(len(jobs), "scanning", progress)
    chunk = _scan.chunk_size_for(len(jobs), workers)
    for rec in _scan.run_pool(_scan.scan_chunk, jobs, scan_options, workers, chunk, bar.update if bar else None):
        records[rec["path"]] = rec
    if bar:
        bar.close()
    report.timings["scan"] = time.perf_counter() - t0
    ordered = [records[rel] for _, rel in files]

    # 3. decide: file checks, SOP class, pixel data, selection filters
    t0 = time.perf_counter()
    decided: dict[str, tuple[str, str]] = {}
    candidates: list[dict] = []
    for rec in ordered:
        why = _select(rec, opts)
        if why is None:
            candidates.append(rec)
        else:
            decided[rec["path"]] = why
    # duplicates: one file per SOP Instance UID (byte-identical files without a UID too)
    by_uid: dict[str, list[dict]] = defaultdict(list)
    for rec in candidates:
        key = rec.get("sop_uid") or (f"sha256:{rec['sha256']}" if rec.get("sha256") else f"path:{rec['path']}")
        by_uid[key].append(rec)
    kept: list[dict] = []
    for rec in candidates:
        key = rec.get("sop_uid") or (f"sha256:{rec['sha256']}" if rec.get("sha256") else f"path:{rec['path']}")
        group = by_uid[key]
        best = min(group, key=_dup_rank)
        if best is rec:
            kept.append(rec)
        else:
            decided[rec["path"]] = ("duplicate_sop_instance", (
                f"same SOP Instance UID as the kept file {best['path']} ({_describe_copy(best)}); "
                f"this copy: {_describe_copy(rec)}"
            ))
    # labels
    label_names: dict[str, str] = {}
    if labelled:
        selected = []
        for rec in kept:
            name = label_table.lookup(rec) if label_table is not None else folder_label(rec["path"], label_from_folder)
            if name is None:
                how = (f"no row for its {label_key} in {Path(label_table.path).name}" if label_table is not None
                       else f"the file is not {label_from_folder} folder level(s) deep")
                decided[rec["path"]] = ("label_missing", how)
            elif class_list is not None and name not in class_list:
                decided[rec["path"]] = ("label_unknown", f"label {name!r} is not in --classes {','.join(class_list)}")
            else:
                label_names[rec["path"]] = name
                selected.append(rec)
        kept = selected
        if class_list is None:
            class_list = sorted(set(label_names.values()))
        if label_table is not None and label_table.unused:
            report.notes.append(f"{label_table.unused} of {len(label_table.labels)} keys in the label CSV matched no file")
    report.timings["select"] = time.perf_counter() - t0

    # 4. decode: --verify-pixels and/or the cache
    t0 = time.perf_counter()
    decoded_state: dict[str, dict] = dict(state.get("decoded", {}))
    cache_root = Path(cache_dir).resolve() if cache_dir is not None else None
    patient_of: dict[str, str] = {}
    patient_warning: dict[str, tuple[str, str]] = {}
    for rec in kept:
        patient_of[rec["path"]], warning = _patient_pseudonym(rec, salt_bytes)
        if warning:
            patient_warning[rec["path"]] = warning
    decode_results: dict[str, dict] = {}
    if verify_pixels or cache_root is not None:
        djobs, dpaths = [], []
        for rec in kept:
            dopts: dict[str, Any] = {"frame": "all" if (rec.get("frames") or 1) > 1 else None}
            if cache_root is not None:
                sop_key = pseudonym(keyed_hash(salt_bytes, "sop:" + (rec.get("sop_uid") or rec["path"])), "I", 20)
                dopts["cache_path"] = str(cache_root / cache_name(patient_of[rec["path"]], sop_key, rec.get("frames") or 1))
            prev = decoded_state.get(rec.get("sha256") or "")
            if prev is not None and _reusable(prev, dopts):
                decode_results[rec["path"]] = prev
                continue
            djobs.append((str(root / rec["path"]), dopts))
            dpaths.append(rec["path"])
        if djobs:
            import medfuse.transforms.dicom  # noqa: F401  (imported once here, inherited by forked workers)

            bar = _progress(len(djobs), "decoding", progress)
            dchunk = _scan.chunk_size_for(len(djobs), workers, largest=8)
            results = _scan.run_pool(_scan.decode_chunk, djobs, None, workers, dchunk, bar.update if bar else None)
            for rel, (full, dopts), res in zip(dpaths, djobs, results):
                res = dict(res, cache_path=dopts.get("cache_path"))
                decode_results[rel] = res
                sha = records[rel].get("sha256")
                if sha and res.get("ok"):
                    decoded_state[sha] = res
            if bar:
                bar.close()
        survivors = []
        for rec in kept:
            res = decode_results[rec["path"]]
            if res.get("ok"):
                survivors.append(rec)
            else:
                decided[rec["path"]] = ("undecodable_transfer_syntax", f"{rec.get('transfer_syntax_uid')}: {res.get('detail', '')}")
        kept = survivors
    report.timings["decode"] = time.perf_counter() - t0

    # 5. items, warnings
    out_dir = str(paths["manifest"].parent.resolve())
    items: list[dict] = []
    for rec in kept:
        items.append(_item(rec, root_abs, out_dir, patient_of[rec["path"]], label_names, class_list, decode_results, cache_root, keep_phi))
        if rec["path"] in patient_warning:
            report.warn(rec["path"], *patient_warning[rec["path"]])
        if rec.get("phi_in_path"):
            report.warn(rec["path"], "phi_in_path", "the path contains the patient's name, id or accession number")
        for w in rec.get("warnings", []):
            report.warn(rec["path"], "pydicom_warning", w)
    _dicomdir_hints(root, ordered, {rel for _, rel in files}, report)
    named = sum(1 for r in ordered if r.get("phi_in_path"))
    if named:
        report.notes.append(
            f"{named} file path(s) contain a patient's name, id or accession number: the manifest and the report "
            "carry these paths" + ("" if cache_root is not None else "; use --cache-dir so that 'image' points at "
                                   "pseudonymously named copies (the DICOM path then stays only in 'source')")
        )

    # 6. splits
    t0 = time.perf_counter()
    splits = _assign_splits(items, labelled, fractions, seed, test_patients, salt_bytes, state.get("splits", {}), report)
    leaks = find_leakage(splits, keys=("patient_id", "sha256"))
    if leaks and state.get("splits"):
        raise DataError(
            f"{paths['manifest']}: keeping the earlier split assignments would put one patient or one identical "
            f"image in two splits ({leaks[0]}); write a new manifest without --update"
        )
    assert not leaks, f"patient-level split violated: {leaks[:3]}"
    report.timings["split"] = time.perf_counter() - t0

    # 7. report
    for rec in ordered:
        if rec["path"] in decided:
            reason, detail = decided[rec["path"]]
            report.exclude(rec["path"], reason, detail)
    report.included = len(items)
    report.check()
    seen_mod = Counter((r.get("modality") or "(none)") if not r.get("reason") else "(not read)" for r in ordered)
    inc_mod = Counter(it.get("modality") or "(none)" for it in items)
    report.by_modality = {m: {"seen": seen_mod[m], "included": inc_mod.get(m, 0)} for m in sorted(seen_mod)}
    for name in SPLITS:
        part = splits.get(name) or []
        if part:
            per_class = Counter(class_list[it["label"]] for it in part if "label" in it)
            report.by_split[name] = {
                "items": len(part),
                "patients": len({it["patient_id"] for it in part}),
                "per_class": {c: per_class.get(c, 0) for c in class_list} if labelled else {},
            }

    provenance = make_provenance(
        "medfuse dicom2manifest", root_abs, arguments=report.arguments,
        pseudonyms="none (--keep-phi)" if keep_phi else "patient_id = 'P' + HMAC-SHA-256(salt, PatientID)[:16]",
        exclusion_report=paths["report"].name,
    )
    manifest = new_manifest("classification", class_list, provenance, **{s: splits.get(s) for s in SPLITS})
    report.timings["total"] = time.perf_counter() - t_start
    report.outputs = {k: str(v) for k, v in paths.items()}
    if write:
        new_state = {
            "version": STATE_VERSION,
            "input_dir": root_abs,
            "salt_fingerprint": fingerprint,
            "hashed": hash_files,
            "records": records,
            "decoded": {k: v for k, v in decoded_state.items() if v.get("ok")},
            "splits": {it["_rel"]: s for s in SPLITS for it in splits.get(s, [])},
        }
        atomic_write_json(paths["state"], new_state, indent=None)
        if keep_phi:
            os.chmod(paths["state"], 0o600)
    for s in SPLITS:
        for it in splits.get(s, []):
            it.pop("_rel", None)
    if write:
        _write_manifest(manifest, paths["manifest"])
        atomic_write_json(paths["report"], report.to_dict())
    return manifest, report


def _write_manifest(manifest: dict[str, Any], path: Path) -> None:
    """Validate and write atomically, one item per line (fast for tens of thousands of items).

    The key order is :func:`medfuse.data.manifest.write_manifest`'s. File existence is not
    checked again: every ``image`` was listed and read (or written, for the cache) just now.
    """
    out: dict[str, Any] = {k: manifest[k] for k in ("schema_version", "task", "classes", "provenance") if k in manifest}
    out.update((k, v) for k, v in manifest.items() if k not in out and k not in SPLITS)
    validate_manifest({**out, **{s: manifest[s] for s in SPLITS if manifest.get(s)}}, base_dir=path.parent,
                      check_files=False, path=path)
    dump = json.JSONEncoder(ensure_ascii=False).encode  # the C encoder (no indent)
    lines = ["{"]
    parts = [f'    {dump(k)}: {json.dumps(v, indent=4, ensure_ascii=False).replace(chr(10), chr(10) + "    ")}'
             for k, v in out.items()]
    for s in SPLITS:
        if manifest.get(s):
            body = ",\n".join("        " + dump(item) for item in manifest[s])
            parts.append(f"    {dump(s)}: [\n{body}\n    ]")
    lines.append(",\n".join(parts))
    lines.append("}\n")
    atomic_write_text(path, "\n".join(lines))


def _reusable(prev: dict, dopts: dict) -> bool:
    if not prev.get("ok"):
        return False
    want = dopts.get("cache_path")
    if want is None:
        return True
    if prev.get("cache_path") != want or not os.path.isfile(want):
        return False
    from medfuse.utils.io import sha256_file

    return sha256_file(want) == prev.get("sha256")


def _patient_pseudonym(rec: dict, salt: bytes) -> tuple[str, tuple[str, str] | None]:
    """Pseudonymous patient key, and a warning when it falls back to the study (or the file)."""
    if rec.get("patient_key"):
        return pseudonym(rec["patient_key"]), None
    if rec.get("study_uid"):
        return pseudonym(keyed_hash(salt, "study:" + rec["study_uid"]), "S"), (
            "missing_patient_id", "no PatientID: grouped under its StudyInstanceUID instead")
    return pseudonym(keyed_hash(salt, "file:" + (rec.get("sop_uid") or rec["path"])), "F"), (
        "missing_study_uid", "no PatientID and no StudyInstanceUID: the file is its own patient")


def _rel(path: str, out_dir: str) -> str:
    """``path`` (absolute, already resolved) relative to ``out_dir``: string work only, no file system calls."""
    return os.path.relpath(path, out_dir).replace(os.sep, "/")


def _item(rec, root, out_dir, patient, label_names, class_list, decode_results, cache_root, keep_phi) -> dict:
    dicom_path = os.path.join(root, rec["path"])
    item: dict[str, Any] = {}
    cached = cache_root is not None and decode_results.get(rec["path"], {}).get("cache_path")
    if cached:
        res = decode_results[rec["path"]]
        item["image"] = _rel(res["cache_path"], out_dir)
        item["source"] = _rel(dicom_path, out_dir)
    else:
        item["image"] = _rel(dicom_path, out_dir)
    if rec["path"] in label_names:
        item["label"] = class_list.index(label_names[rec["path"]])
    item["patient_id"] = patient
    if keep_phi and rec.get("phi"):
        phi = rec["phi"]
        if phi.get("patient_id"):
            item["patient_id"] = phi["patient_id"]
        item.update(patient_name=phi.get("patient_name", ""), birth_date=phi.get("birth_date", ""),
                    accession_number=phi.get("accession_number", ""))
    for k in ("study_uid", "series_uid", "sop_uid", "sop_class_uid", "transfer_syntax_uid", "modality"):
        item[k] = rec.get(k) or ""
    if cached:
        item["sha256"] = decode_results[rec["path"]]["sha256"]
        if rec.get("sha256"):
            item["source_sha256"] = rec["sha256"]
    elif rec.get("sha256"):
        item["sha256"] = rec["sha256"]
    for k in ("rows", "columns", "frames", "photometric", "window_center", "window_width", "view", "body_part"):
        item[k] = rec.get(k)
    if cached:
        item["preprocessing"] = preprocessing_record(rec.get("frames") or 1)
    item["_rel"] = rec["path"]
    return item


def _read_test_patients(path: str | os.PathLike, salt: bytes) -> set[str]:
    p = Path(path)
    if not p.is_file():
        raise DataError(f"{p}: --test-patients file not found; give a text file with one patient id per line")
    out = set()
    for line in p.read_text(encoding="utf-8-sig").splitlines():
        v = line.strip()
        if not v or v.startswith("#"):
            continue
        out.add(v)  # a pseudonym (or a raw id with --keep-phi)
        out.add(pseudonym(keyed_hash(salt, v)))  # a raw PatientID
    return out


def _assign_splits(items, labelled, fractions, seed, test_patients, salt, previous, report) -> dict[str, list]:
    if not labelled:
        for it in items:
            it.pop("label", None)
        report.notes.append("unlabelled (inference) manifest: every item is in 'test'")
        return {"test": list(items)}
    pinned = _read_test_patients(test_patients, salt) if test_patients else set()
    fixed: dict[str, str] = {}
    fixed_sha: dict[str, str] = {}
    for it in items:  # earlier assignments (--update): by file, then by patient and identical image
        s = previous.get(it["_rel"])
        if s in SPLITS:
            fixed.setdefault(it["patient_id"], s)
            if it.get("sha256"):
                fixed_sha.setdefault(it["sha256"], s)
    for it in items:  # a new patient whose image is identical to an earlier one joins that split
        if it["patient_id"] not in fixed and it.get("sha256") in fixed_sha:
            fixed[it["patient_id"]] = fixed_sha[it["sha256"]]
    out: dict[str, list] = {s: [] for s in SPLITS}
    rest = []
    moved = 0
    for it in items:
        pid = it["patient_id"]
        if pid in fixed:
            if pid in pinned and fixed[pid] != "test":
                moved += 1
            out[fixed[pid]].append(it)
        elif pid in pinned:
            out["test"].append(it)
        else:
            rest.append(it)
    if moved:
        report.notes.append(f"{moved} items of --test-patients stay in their earlier split (--update keeps assignments)")
    if pinned:
        matched = {it["patient_id"] for it in out["test"]}
        report.notes.append(f"--test-patients: {len(matched)} patient(s) pinned to test")
        tr, va = fractions[0], fractions[1]
        fr = (tr / (tr + va), va / (tr + va), 0.0) if tr + va > 0 else (1.0, 0.0, 0.0)
    else:
        fr = tuple(fractions)
    if rest:
        parts = split_items(rest, fr, seed=seed, group_keys=("patient_id", "sha256"))
        for s in SPLITS:
            out[s].extend(parts.get(s, []))
    order = {id(it): i for i, it in enumerate(items)}
    return {s: sorted(v, key=lambda it: order[id(it)]) for s, v in out.items() if v}


def format_summary(report: ScanReport, manifest: dict) -> str:
    """The one-screen summary printed at the end."""
    lines = [
        f"dicom2manifest: {report.input_dir}",
        f"files seen {report.files_seen} = included {report.included} + excluded {len(report.excluded)}"
        + (f"   (scanned {report.scanned}, reused {report.reused} unchanged)" if report.reused else ""),
    ]
    by_reason = report.excluded_by_reason()
    if by_reason:
        lines.append("excluded by reason:")
        for reason, n in by_reason.items():
            example = next(e for e in report.excluded if e["reason"] == reason)
            lines.append(f"  {reason:<28}{n:>7}   e.g. {example['path']}")
    mods = ", ".join(f"{m} {v['included']}/{v['seen']}" for m, v in report.by_modality.items())
    lines.append(f"by modality (included/seen): {mods}")
    classes = manifest.get("classes") or []
    if report.by_split:
        lines.append(f"{'split':<12}{'items':>7}{'patients':>10}" + "".join(f"{c[:12]:>13}" for c in classes))
        for s, v in report.by_split.items():
            row = f"{s:<12}{v['items']:>7}{v['patients']:>10}"
            row += "".join(f"{v['per_class'].get(c, 0):>13}" for c in classes) if v["per_class"] else ""
            lines.append(row)
    wc = report.warnings_by_code()
    if wc:
        lines.append("warnings (included files): " + ", ".join(f"{c} {n}" for c, n in wc.items()))
    for note in report.notes:
        lines.append(f"note: {note}")
    t = report.timings
    lines.append(
        f"time {t.get('total', 0):.1f} s (scan {t.get('scan', 0):.1f} s, decode {t.get('decode', 0):.1f} s)"
    )
    return "\n".join(lines)
