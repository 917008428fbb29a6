# Copyright (c) medfuse contributors
# Licensed under the Apache License, Version 2.0
"""``medfuse summary MANIFEST``: counts per split and class."""

from __future__ import annotations

import argparse
import json

from medfuse.cli import run_command
from medfuse.data.manifest import format_summary, read_manifest, summarize_manifest

HELP = "print the data summary of a manifest (items, patients, classes per split)"


def build_parser(prog: str = "medfuse summary") -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog=prog, description=HELP)
    p.add_argument("manifest", nargs="+", help="one or more manifest JSON files")
    p.add_argument("--json", action="store_true", help="print JSON instead of a table")
    return p


def _run(args) -> int:
    for path in args.manifest:
        summary = summarize_manifest(read_manifest(path))
        print(json.dumps(summary, indent=2) if args.json else format_summary(summary, title=f"== {path}"))
    return 0


def main(argv=None) -> int:
    return run_command("medfuse summary", _run, build_parser(), argv)
