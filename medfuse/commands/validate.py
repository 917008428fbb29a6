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
    print(f"{Path(args.manifest)}: valid ({n} items, task {manifest['task']})")
    return 0


def main(argv=None) -> int:
    return run_command("medfuse validate", _run, build_parser(), argv)
