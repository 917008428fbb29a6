# Copyright (c) medfuse contributors
# Licensed under the Apache License, Version 2.0
"""``medfuse validate MANIFEST``: check a manifest and list every problem found."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from medfuse.cli import run_command
from medfuse.data.manifest import read_manifest
from medfuse.errors import ManifestError

HELP = "check a manifest: files, labels, classes, patient and duplicate leakage"


def build_parser(prog: str = "medfuse validate") -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog=prog, description=HELP)
    p.add_argument("manifest", help="path to a medfuse manifest JSON")
    p.add_argument("--no-files", action="store_true", help="do not check that image/mask files exist")
    p.add_argument("--hashes", action="store_true", help="recompute sha256 of every image that declares one")
    p.add_argument("--no-content", action="store_true",
                   help="do not hash images that carry no sha256 (identical content is then checked only among "
                        "items that declare a sha256)")
    return p


def _run(args) -> int:
    try:
        manifest = read_manifest(args.manifest, check_files=not args.no_files, check_hashes=args.hashes)
    except ManifestError as e:
        if len(e.problems) <= 1:
            raise
        print(f"{args.manifest}: {len(e.problems)} problems:", file=sys.stderr)
        for p in e.problems:
            print(f"  - {p}", file=sys.stderr)
        return 1
    n = sum(len(manifest.get(s, [])) for s in ("training", "validation", "test"))
    if _content_problems(args, manifest):
        return 1
    print(f"{Path(args.manifest)}: valid ({n} items, task {manifest['task']})")
    return 0


def _content_problems(args, manifest: dict) -> bool:
    """Identical image content: across splits an error (True), within a split a warning; says what went unchecked."""
    from medfuse.data.splits import duplicate_content

    splits = {s: manifest.get(s) or [] for s in ("training", "validation", "test")}
    errors, warnings, unchecked = duplicate_content(splits, Path(args.manifest).resolve().parent,
                                                    compute=not (args.no_files or args.no_content))
    for w in warnings:
        print(f"warning: {w}", file=sys.stderr)
    if unchecked:
        why = "--no-files" if args.no_files else "--no-content" if args.no_content else "unreadable files"
        print(f"note: {unchecked} item(s) carry no sha256 and were not hashed ({why}): identical content among them "
              "was not checked", file=sys.stderr)
    if errors:
        print(f"{args.manifest}: {len(errors)} problem(s):", file=sys.stderr)
        for e in errors:
            print(f"  - {e}", file=sys.stderr)
    return bool(errors)


def main(argv=None) -> int:
    return run_command("medfuse validate", _run, build_parser(), argv)
