# Copyright (c) medfuse contributors
# Licensed under the Apache License, Version 2.0
"""The steps of :func:`medfuse.dicom.convert.dicom_to_manifest` and their per-file helpers.

:class:`_Conversion` holds one run: scan, select, label, decode, itemize, split, report,
write (see the module docstring of :mod:`medfuse.dicom.convert` for what each one does).
"""

from __future__ import annotations

import json
import os
import sys
import time
from collections import Counter, defaultdict
from pathlib import Path
from typing import Any, Iterable

from medfuse.data.manifest import SPLITS, make_provenance, new_manifest, validate_manifest
from medfuse.data.splits import find_leakage, split_items
from medfuse.dicom import scan as _scan
from medfuse.dicom.cache import cache_name, preprocessing_record
from medfuse.dicom.deid import keyed_hash, pseudonym
from medfuse.dicom.labels import LabelTable, folder_label
from medfuse.dicom.report import ScanReport
from medfuse.dicom.sniff import is_image_sop_class, is_lossy_transfer_syntax, is_native_transfer_syntax, sop_class_name
from medfuse.errors import DataError
from medfuse.utils.io import atomic_write_json, atomic_write_text

#: Version of the scan state file (``OUT.state.json``) that ``--update`` reads.
STATE_VERSION = 1


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



def _write_manifest(manifest: dict[str, Any], path: Path, mode: int | None = None) -> None:
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
    atomic_write_text(path, "\n".join(lines), mode)


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



class _Conversion:
    """One run of :func:`medfuse.dicom.convert.dicom_to_manifest`, as named steps.

    :func:`~medfuse.dicom.convert.dicom_to_manifest` checks the options, then calls
    :meth:`scan`, :meth:`select`, :meth:`label`, :meth:`decode`, :meth:`itemize`,
    :meth:`split`, :meth:`fill_report` and :meth:`write` in this order; each step reads what
    the earlier ones left on the instance and times itself in ``report.timings``.
    """

    def __init__(self, root: Path, paths: dict[str, Path], opts: dict[str, Any], class_list: list[str] | None,
                 labelled: bool, label_key: str, label_from_folder: int | None, label_table: LabelTable | None,
                 fractions: tuple[float, ...], seed: int, test_patients: str | os.PathLike | None, workers: int,
                 salt_bytes: bytes, fingerprint: str, report: ScanReport, state: dict[str, Any], keep_phi: bool,
                 hash_files: bool, progress: bool | None) -> None:
        self.root = root
        self.root_abs = report.input_dir
        self.paths = paths
        self.opts = opts
        self.class_list = class_list
        self.labelled = labelled
        self.label_key = label_key
        self.label_from_folder = label_from_folder
        self.label_table = label_table
        self.fractions = fractions
        self.seed = seed
        self.test_patients = test_patients
        self.workers = workers
        self.salt_bytes = salt_bytes
        self.fingerprint = fingerprint
        self.report = report
        self.state = state
        self.keep_phi = keep_phi
        self.hash_files = hash_files
        self.progress = progress
        # filled by the steps
        self.files: list[tuple[str, str]] = []
        self.unreadable_folders: list[tuple[str, str]] = []
        self.records: dict[str, dict] = {}
        self.ordered: list[dict] = []
        self.decided: dict[str, tuple[str, str]] = {}
        self.kept: list[dict] = []
        self.label_names: dict[str, str] = {}
        self.cache_root: Path | None = None
        self.patient_of: dict[str, str] = {}
        self.patient_warning: dict[str, tuple[str, str]] = {}
        self.decoded_state: dict[str, dict] = {}
        self.decode_results: dict[str, dict] = {}
        self.items: list[dict] = []
        self.splits: dict[str, list] = {}

    def scan(self) -> None:
        """List every file, then scan them in the pool (reusing unchanged records with ``--update``)."""
        report = self.report
        # 1. list files
        t0 = time.perf_counter()
        unreadable: list = []
        files = _scan.iter_files(str(self.root), unreadable)
        report.files_seen = len(files)
        self.unreadable_folders = unreadable
        report.timings["list"] = time.perf_counter() - t0

        # 2. scan (reusing unchanged records with --update)
        t0 = time.perf_counter()
        old_records: dict[str, dict] = self.state.get("records", {})
        records: dict[str, dict] = {}
        jobs = []
        for full, rel in files:
            old = old_records.get(rel)
            if old is not None and old.get("size") is not None and bool(old.get("phi")) == self.keep_phi:
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
        scan_options = {"salt": self.salt_bytes, "hash": self.hash_files, "keep_phi": self.keep_phi}
        bar = _progress(len(jobs), "scanning", self.progress)
        chunk = _scan.chunk_size_for(len(jobs), self.workers)
        for rec in _scan.run_pool(_scan.scan_chunk, jobs, scan_options, self.workers, chunk, bar.update if bar else None):
            records[rec["path"]] = rec
        if bar:
            bar.close()
        report.timings["scan"] = time.perf_counter() - t0
        self.files = files
        self.records = records
        self.ordered = [records[rel] for _, rel in files]

    def select(self) -> None:
        """Decide each file: file checks, SOP class, pixel data, selection filters, then duplicates."""
        decided = self.decided
        candidates: list[dict] = []
        for rec in self.ordered:
            why = _select(rec, self.opts)
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
        self.kept = kept

    def label(self) -> None:
        """Label the kept files (label CSV or folder); the class list defaults to the labels seen."""
        if not self.labelled:
            return
        label_table, label_from_folder, class_list = self.label_table, self.label_from_folder, self.class_list
        selected = []
        for rec in self.kept:
            name = label_table.lookup(rec) if label_table is not None else folder_label(rec["path"], label_from_folder)
            if name is None:
                how = (f"no row for its {self.label_key} in {Path(label_table.path).name}" if label_table is not None
                       else f"the file is not {label_from_folder} folder level(s) deep")
                self.decided[rec["path"]] = ("label_missing", how)
            elif class_list is not None and name not in class_list:
                self.decided[rec["path"]] = ("label_unknown", f"label {name!r} is not in --classes {','.join(class_list)}")
            else:
                self.label_names[rec["path"]] = name
                selected.append(rec)
        self.kept = selected
        if class_list is None:
            self.class_list = sorted(set(self.label_names.values()))
        if label_table is not None and label_table.unused:
            self.report.notes.append(
                f"{label_table.unused} of {len(label_table.labels)} keys in the label CSV matched no file"
            )

    def decode(self, cache_dir: str | os.PathLike | None, verify_pixels: bool) -> None:
        """Pseudonymise, then decode (``--verify-pixels`` and/or the cache); undecodable files are excluded."""
        t0 = time.perf_counter()
        salt_bytes, workers = self.salt_bytes, self.workers
        decoded_state: dict[str, dict] = dict(self.state.get("decoded", {}))
        cache_root = Path(cache_dir).resolve() if cache_dir is not None else None
        kept = self.kept
        for rec in kept:
            self.patient_of[rec["path"]], warning = _patient_pseudonym(rec, salt_bytes)
            if warning:
                self.patient_warning[rec["path"]] = warning
        decode_results: dict[str, dict] = {}
        if verify_pixels or cache_root is not None:
            djobs, dpaths = [], []
            for rec in kept:
                dopts: dict[str, Any] = {"frame": "all" if (rec.get("frames") or 1) > 1 else None}
                if cache_root is not None:
                    sop_key = pseudonym(keyed_hash(salt_bytes, "sop:" + (rec.get("sop_uid") or rec["path"])), "I", 20)
                    dopts["cache_path"] = str(
                        cache_root / cache_name(self.patient_of[rec["path"]], sop_key, rec.get("frames") or 1)
                    )
                prev = decoded_state.get(rec.get("sha256") or "")
                if prev is not None and _reusable(prev, dopts):
                    decode_results[rec["path"]] = prev
                    continue
                djobs.append((str(self.root / rec["path"]), dopts))
                dpaths.append(rec["path"])
            if djobs:
                import medfuse.transforms.dicom  # noqa: F401  (imported once here, inherited by forked workers)

                bar = _progress(len(djobs), "decoding", self.progress)
                dchunk = _scan.chunk_size_for(len(djobs), workers, largest=8)
                results = _scan.run_pool(_scan.decode_chunk, djobs, None, workers, dchunk, bar.update if bar else None)
                for rel, (full, dopts), res in zip(dpaths, djobs, results):
                    res = dict(res, cache_path=dopts.get("cache_path"))
                    decode_results[rel] = res
                    sha = self.records[rel].get("sha256")
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
                    self.decided[rec["path"]] = (
                        "undecodable_transfer_syntax", f"{rec.get('transfer_syntax_uid')}: {res.get('detail', '')}"
                    )
            self.kept = self._drop_duplicate_pixels(survivors, decode_results)
        self.cache_root = cache_root
        self.decoded_state = decoded_state
        self.decode_results = decode_results
        self.report.timings["decode"] = time.perf_counter() - t0

    def _drop_duplicate_pixels(self, kept: list[dict], decode_results: dict[str, dict]) -> list[dict]:
        """One file per decoded image: copies of the same pixels under other SOP Instance UIDs (re-exports,
        lossless re-encodings) are excluded as ``duplicate_pixels``, naming the kept file (ranked as for
        duplicate SOP instances)."""
        groups: dict[str, list[dict]] = defaultdict(list)
        for rec in kept:
            digest = decode_results.get(rec["path"], {}).get("pixel_sha256")
            groups[digest or f"path:{rec['path']}"].append(rec)
        survivors = []
        for rec in kept:
            digest = decode_results.get(rec["path"], {}).get("pixel_sha256")
            group = groups[digest or f"path:{rec['path']}"]
            best = min(group, key=_dup_rank)
            if best is rec:
                survivors.append(rec)
            else:
                self.decided[rec["path"]] = ("duplicate_pixels", (
                    f"the same decoded pixels as the kept file {best['path']} (SOP Instance UID {best.get('sop_uid')}); "
                    f"this copy: SOP Instance UID {rec.get('sop_uid')}, {_describe_copy(rec)}"))
        return survivors

    def itemize(self) -> None:
        """Manifest items of the kept files, with their warnings; notes on DICOMDIRs and identifying paths."""
        report, cache_root = self.report, self.cache_root
        out_dir = str(self.paths["manifest"].parent.resolve())
        items: list[dict] = []
        for rec in self.kept:
            items.append(_item(rec, self.root_abs, out_dir, self.patient_of[rec["path"]], self.label_names,
                               self.class_list, self.decode_results, cache_root, self.keep_phi))
            if rec["path"] in self.patient_warning:
                report.warn(rec["path"], *self.patient_warning[rec["path"]])
            if rec.get("phi_in_path"):
                report.warn(rec["path"], "phi_in_path", "the path contains the patient's name, id or accession number")
            for w in rec.get("warnings", []):
                report.warn(rec["path"], "pydicom_warning", w)
        _dicomdir_hints(self.root, self.ordered, {rel for _, rel in self.files}, report)
        named = sum(1 for r in self.ordered if r.get("phi_in_path"))
        if named:
            report.notes.append(
                f"{named} file path(s) contain a patient's name, id or accession number: the manifest and the report "
                "carry these paths" + ("" if cache_root is not None else "; use --cache-dir so that 'image' points at "
                                       "pseudonymously named copies (the DICOM path then stays only in 'source')")
            )
        self.items = items

    def split(self) -> None:
        """Patient-level splits (pinned test patients and earlier assignments kept); no patient in two splits."""
        t0 = time.perf_counter()
        splits = _assign_splits(self.items, self.labelled, self.fractions, self.seed, self.test_patients,
                                self.salt_bytes, self.state.get("splits", {}), self.report)
        leaks = find_leakage(splits, keys=("patient_id", "sha256"))
        if leaks and self.state.get("splits"):
            raise DataError(
                f"{self.paths['manifest']}: keeping the earlier split assignments would put one patient or one identical "
                f"image in two splits ({leaks[0]}); write a new manifest without --update"
            )
        assert not leaks, f"patient-level split violated: {leaks[:3]}"
        self.report.timings["split"] = time.perf_counter() - t0
        self.splits = splits

    def fill_report(self) -> None:
        """Exclusions (checked: every file exactly once), counts by modality and by split."""
        report, splits, class_list, ordered = self.report, self.splits, self.class_list, self.ordered
        for rel, error in self.unreadable_folders:
            report.exclude(rel, "unreadable_folder", f"{error}; the files under it were not seen: give read access")
        report.unreadable_folders = len(self.unreadable_folders)
        for rec in ordered:
            if rec["path"] in self.decided:
                reason, detail = self.decided[rec["path"]]
                report.exclude(rec["path"], reason, detail)
        report.included = len(self.items)
        report.check()
        seen_mod = Counter((r.get("modality") or "(none)") if not r.get("reason") else "(not read)" for r in ordered)
        inc_mod = Counter(it.get("modality") or "(none)" for it in self.items)
        report.by_modality = {m: {"seen": seen_mod[m], "included": inc_mod.get(m, 0)} for m in sorted(seen_mod)}
        for name in SPLITS:
            part = splits.get(name) or []
            if part:
                per_class = Counter(class_list[it["label"]] for it in part if "label" in it)
                report.by_split[name] = {
                    "items": len(part),
                    "patients": len({it["patient_id"] for it in part}),
                    "per_class": {c: per_class.get(c, 0) for c in class_list} if self.labelled else {},
                }

    def manifest(self) -> dict[str, Any]:
        """The manifest dictionary, with its provenance."""
        provenance = make_provenance(
            "medfuse dicom2manifest", self.root_abs, arguments=self.report.arguments,
            pseudonyms="none (--keep-phi)" if self.keep_phi else "patient_id = 'P' + HMAC-SHA-256(salt, PatientID)[:16]",
            exclusion_report=self.paths["report"].name,
        )
        return new_manifest("classification", self.class_list, provenance, **{s: self.splits.get(s) for s in SPLITS})

    def write(self, manifest: dict[str, Any], write: bool) -> None:
        """Write the scan state, the manifest and the report (each atomically) when ``write``.

        The items lose their private ``_rel`` key (kept in the state) in any case.
        """
        paths, splits = self.paths, self.splits
        if write:
            new_state = {
                "version": STATE_VERSION,
                "input_dir": self.root_abs,
                "salt_fingerprint": self.fingerprint,
                "hashed": self.hash_files,
                "records": self.records,
                "decoded": {k: v for k, v in self.decoded_state.items() if v.get("ok")},
                "splits": {it["_rel"]: s for s in SPLITS for it in splits.get(s, [])},
            }
        # with --keep-phi the state, manifest and report carry names, IDs and accession numbers: owner-only files
        # (mode set before the rename, so no other user can ever read them)
        private = 0o600 if self.keep_phi else None
        if write:
            atomic_write_json(paths["state"], new_state, indent=None, mode=private)
        for s in SPLITS:
            for it in splits.get(s, []):
                it.pop("_rel", None)
        if write:
            _write_manifest(manifest, paths["manifest"], mode=private)
            atomic_write_json(paths["report"], self.report.to_dict(), mode=private)
