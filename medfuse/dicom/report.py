# Copyright (c) medfuse contributors
# Licensed under the Apache License, Version 2.0
"""What ``dicom2manifest`` saw, kept and excluded: :class:`ScanReport`, its reason and warning
codes, and the printed summary (see :mod:`medfuse.dicom.convert`)."""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from typing import Any

__all__ = ["REASONS", "WARNING_CODES", "ScanReport", "format_summary"]

#: Modalities selected unless ``--modality`` says otherwise (CR, DX, DR radiographs; OPT = OCT).
DEFAULT_MODALITIES = ("CR", "DX", "DR", "OPT")
#: Exclusion reasons, in pipeline order (the first that applies is reported).
REASONS = (
    "unreadable_folder",
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
    "duplicate_pixels",
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
    unreadable_folders: int = 0
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
        """Assert the invariant: every file seen is included or excluded once, and every folder that could not be
        listed is excluded once as ``unreadable_folder``: ``files_seen + unreadable_folders == included +
        len(excluded)``, one entry per path."""
        paths = [e["path"] for e in self.excluded]
        folders = sum(1 for e in self.excluded if e["reason"] == "unreadable_folder")
        if (self.files_seen + self.unreadable_folders != self.included + len(self.excluded)
                or folders != self.unreadable_folders or len(set(paths)) != len(paths)):
            raise RuntimeError(
                f"internal error in dicom2manifest: files_seen {self.files_seen} + unreadable folders "
                f"{self.unreadable_folders} != included {self.included} + excluded {len(self.excluded)} "
                "(or a path is excluded twice); please report this"
            )

    def to_dict(self) -> dict[str, Any]:
        """JSON form: counts first, then every excluded file and warning."""
        from medfuse import __version__

        return {
            "tool": "medfuse dicom2manifest",
            "version": __version__,
            "input_dir": self.input_dir,
            "files_seen": self.files_seen,
            "unreadable_folders": self.unreadable_folders,
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


def format_summary(report: ScanReport, manifest: dict) -> str:
    """The one-screen summary printed at the end."""
    lines = [
        f"dicom2manifest: {report.input_dir}",
        f"files seen {report.files_seen} = included {report.included} + excluded "
        f"{len(report.excluded) - report.unreadable_folders}"
        + (f"; folders that could not be read: {report.unreadable_folders} (their files are not seen)"
           if report.unreadable_folders else "")
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
    from medfuse.utils.io import escape_surrogates

    return escape_surrogates("\n".join(lines))  # a non-UTF-8 file name prints as in the JSON files, never crashes
