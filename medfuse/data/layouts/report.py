# Copyright (c) medfuse contributors
# Licensed under the Apache License, Version 2.0
"""The report every layout converter returns beside its manifest (see :mod:`medfuse.data.layouts`)."""

from __future__ import annotations

import os
from dataclasses import dataclass, field

from medfuse.data.manifest import format_summary

__all__ = ["ConversionReport"]


@dataclass
class ConversionReport:
    """What a converter found, wrote and skipped, and why.

    Attributes:
        tool: the command that made the manifest.
        found: files (or array rows) looked at.
        skipped: ``(path, reason, detail)`` per file not written; ``reason`` is a short
            category (counts are grouped by it), ``detail`` the specific cause.
        duplicate_sets: sets of byte-identical files (paths), each kept in one split.
        notes: decisions worth telling the user (carved validation, ignored options ...).
        missing_patient_ids: written items whose patient id is unknown (own patient each).
        paired: files used as part of a written item rather than as one (masks).
        duplicates_policy: what happened to ``duplicate_sets`` (shown with them).
        summary: :func:`medfuse.data.manifest.summarize_manifest` of the result.
    """

    tool: str
    found: int = 0
    skipped: list[tuple[str, str, str]] = field(default_factory=list)
    duplicate_sets: list[list[str]] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    missing_patient_ids: int = 0
    paired: int = 0
    duplicates_policy: str = "each set kept in one split"
    summary: dict = field(default_factory=dict)

    def skip(self, path: str | os.PathLike, reason: str, detail: str = "") -> None:
        """Record one file that is not written."""
        self.skipped.append((str(path), reason, detail))

    @property
    def written(self) -> int:
        """Items in the manifest."""
        return int(self.summary.get("total", 0))

    def skipped_by_reason(self) -> dict[str, list[tuple[str, str]]]:
        """``{reason: [(path, detail), ...]}`` in first-seen order."""
        out: dict[str, list[tuple[str, str]]] = {}
        for path, reason, detail in self.skipped:
            out.setdefault(reason, []).append((path, detail))
        return out

    def check_counts(self) -> None:
        """Assert ``found == written + paired + skipped`` (a failure is a medfuse bug, not bad input)."""
        if self.found != self.written + self.paired + len(self.skipped):
            raise RuntimeError(
                f"internal error in {self.tool}: found {self.found} != written {self.written} + "
                f"paired {self.paired} + skipped {len(self.skipped)}; please report this"
            )

    def to_dict(self) -> dict:
        """JSON-ready form (for ``--report``), listing every skipped file and duplicate set."""
        return {
            "tool": self.tool,
            "found": self.found,
            "written": self.written,
            "paired": self.paired,
            "skipped_count": len(self.skipped),
            "skipped_by_reason": {k: len(v) for k, v in self.skipped_by_reason().items()},
            "skipped": [{"path": p, "reason": r, "detail": d} for p, r, d in self.skipped],
            "duplicate_sets": self.duplicate_sets,
            "missing_patient_ids": self.missing_patient_ids,
            "notes": self.notes,
            "summary": self.summary,
        }

    def format(self, max_examples: int = 3) -> str:
        """Counts per split and class, skipped files by reason, duplicates and notes."""
        lines = [format_summary(self.summary)] if self.summary else []
        paired = f" + masks paired with them {self.paired}" if self.paired else ""
        lines.append(f"found {self.found} = written {self.written}{paired} + skipped {len(self.skipped)}")
        for reason, entries in self.skipped_by_reason().items():
            lines.append(f"  skipped {len(entries)}: {reason}")
            for path, detail in entries[:max_examples]:
                lines.append(f"    {path}" + (f" ({detail})" if detail else ""))
            if len(entries) > max_examples:
                lines.append(f"    ... and {len(entries) - max_examples} more")
        if self.duplicate_sets:
            n_files = sum(len(s) for s in self.duplicate_sets)
            lines.append(
                f"byte-identical files: {len(self.duplicate_sets)} sets ({n_files} files), {self.duplicates_policy}"
            )
            for s in self.duplicate_sets[:max_examples]:
                lines.append("    " + " = ".join(s))
        if self.missing_patient_ids:
            lines.append(f"no patient id in the file name: {self.missing_patient_ids} items (each its own patient)")
        for note in self.notes:
            lines.append(f"note: {note}")
        return "\n".join(lines)
