# Copyright (c) medfuse contributors
# Licensed under the Apache License, Version 2.0
"""``medfuse zoo list|get``: read a local model zoo written by ``medfuse export``.

``medfuse zoo list --zoo ZOO_DIR`` prints each bundle with its versions, task and data
licence; ``medfuse zoo get NAME --zoo ZOO_DIR --out DIR`` unpacks the newest (or
``--version``) release into ``DIR/NAME`` after checking its SHA-256 sums, ready for
``python -m monai.bundle run --config_file DIR/NAME/configs/inference.json``.
"""

from __future__ import annotations

import argparse
import json

from medfuse.cli import run_command

__all__ = ["HELP", "build_parser", "main"]

HELP = "list the bundles of a local model zoo, or fetch one (checksums verified) to run it"


def build_parser(prog: str = "medfuse zoo") -> argparse.ArgumentParser:
    """Options of ``medfuse zoo``."""
    p = argparse.ArgumentParser(prog=prog, description=HELP + ".")
    sub = p.add_subparsers(dest="action", required=True, metavar="{list,get}")
    ls = sub.add_parser("list", help="bundles in the zoo with versions, task and data licence")
    ls.add_argument("--zoo", required=True, metavar="ZOO_DIR", help="zoo folder (holds model_info.json)")
    ls.add_argument("--json", action="store_true", help="print JSON instead of a table")
    get = sub.add_parser("get", help="unpack a bundle from the zoo into OUT/NAME")
    get.add_argument("name", help="bundle name, e.g. cxr_dual_cross_attention")
    get.add_argument("--zoo", required=True, metavar="ZOO_DIR", help="zoo folder (holds model_info.json)")
    get.add_argument("--out", required=True, metavar="DIR", help="folder to unpack into (the bundle goes to DIR/NAME)")
    get.add_argument("--version", default=None, metavar="X.Y.Z", help="version (default: the newest)")
    get.add_argument("--force", action="store_true", help="replace DIR/NAME when it exists")
    return p


def _run(args) -> int:
    from medfuse.zoo import find_release, get_bundle, list_bundles

    if args.action == "list":
        rows = list_bundles(args.zoo)
        if args.json:
            print(json.dumps(rows, indent=4))
            return 0
        if not rows:
            print(f"no bundles in {args.zoo} (medfuse export BUNDLE_DIR --out {args.zoo})")
            return 0
        for r in rows:
            nc = "  [NON-COMMERCIAL data licence]" if r["non_commercial"] else ""
            print(f"{r['name']}  latest {r['latest']}  versions {', '.join(r['versions'])}{nc}")
            print(f"    task: {r['task']}")
            print(f"    data licence: {r['data_license']}")
        return 0
    key, entry = find_release(args.zoo, args.name, args.version)
    target = get_bundle(args.zoo, args.name, args.out, version=args.version, force=args.force)
    n = len(entry.get("files") or {})
    scope = "every file" if entry.get("files_complete") else "weights and calibration only: exported before medfuse checked every file"
    print(f"unpacked {key} into {target} (archive and {n} file checksums verified: {scope})")
    if entry.get("non_commercial"):
        print(f"note: trained on data licensed '{entry.get('data_license')}' (non-commercial)")
    print(f"run it: python -m monai.bundle run --config_file {target}/configs/inference.json --input_dir <images> "
          "--output_dir <results>")
    return 0


def main(argv=None) -> int:
    """Run ``medfuse zoo`` with ``argv`` (default: ``sys.argv[1:]``)."""
    return run_command("medfuse zoo", _run, build_parser(), argv)
