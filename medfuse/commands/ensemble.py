# Copyright (c) medfuse contributors
# Licensed under the Apache License, Version 2.0
"""``medfuse ensemble RUN1,RUN2,... --out D [--manifest M] [--KEY VALUE ...]``: runs of one bundle as one model.

Writes the ensemble folder ``D`` (every member's weights in ``D/model.pt``, ``ensemble.json`` with the members'
SHA-256, the first member's ``config.json``), calibrated on the manifest's ``validation`` split when one is given
(temperature and threshold on the averaged probabilities, ``D/calibration.json``). ``D`` is then used like a
run folder: ``medfuse predict --model D``, ``medfuse evaluate --model D``, the bundle's evaluate / inference with
``--output_dir <parent of D> --run_name <name of D>``, and ``medfuse export BUNDLE --weights D/model.pt``. Further
``--KEY VALUE`` pairs are bundle overrides of the calibration run (``--mc_samples 20``). See
:mod:`medfuse.workflows.ensemble`; ``medfuse cv`` builds its ``cv/`` folder the same way.
"""

from __future__ import annotations

import argparse

from medfuse.commands.cv import run_with_overrides

__all__ = ["HELP", "build_parser", "main"]

HELP = "combine trained runs of one bundle into one ensemble model (mean probabilities), calibrated on validation"


def build_parser(prog: str = "medfuse ensemble") -> argparse.ArgumentParser:
    """Options of ``medfuse ensemble`` (bundle overrides are the remaining ``--KEY VALUE`` pairs)."""
    p = argparse.ArgumentParser(
        prog=prog, description=HELP + ". Further --KEY VALUE pairs are bundle overrides of the calibration run.",
        epilog="example: medfuse ensemble runs/cxr/seed0,runs/cxr/seed1,runs/cxr/seed2 --out runs/cxr/ens "
        "--manifest data_manifests/pneumoniamnist.json",
    )
    p.add_argument("runs", nargs="+", metavar="RUN", help="run folders of one bundle (two or more; RUN1,RUN2 or RUN1 RUN2)")
    p.add_argument("--out", required=True, metavar="D", help="ensemble folder to write (created)")
    p.add_argument("--manifest", default=None, metavar="M.json",
                   help="calibrate on this manifest's validation split (default: the first member's manifest; "
                        "none: uncalibrated)")
    p.add_argument("--no-calibration", action="store_true", help="write the ensemble uncalibrated (T = 1, arg-max)")
    return p


def _run(args: argparse.Namespace, overrides: dict) -> int:
    from pathlib import Path

    from medfuse.errors import DataError
    from medfuse.workflows.ensemble import build_calibrated_ensemble, build_ensemble, member_runs
    from medfuse.workflows.runs import read_run_info

    runs = member_runs([p.strip() for r in args.runs for p in r.split(",") if p.strip()])
    out = Path(args.out)
    if any(r.resolve() == out.resolve() for r in runs):
        raise DataError(f"{out}: is one of the members; write the ensemble to another folder (--out)")
    first = read_run_info(runs[0])
    manifest = args.manifest or first.get("manifest")
    if args.no_calibration or not manifest:
        record = build_ensemble(runs, out, manifest=manifest)
        print(f"ensemble: {len(record['members'])} members -> {out} (uncalibrated: T = 1, arg-max"
              + ("" if args.no_calibration else "; no manifest to calibrate on, give --manifest") + ")")
        return 0
    if not Path(manifest).is_file():
        raise DataError(f"{manifest}: manifest not found (to calibrate the ensemble); give --manifest or --no-calibration")
    bundle = first.get("bundle") or first.get("bundle_name")
    if not bundle:
        import json

        bundle = json.loads((runs[0] / "config.json").read_text(encoding="utf-8")).get("bundle_name")
    if not bundle:
        raise DataError(f"{runs[0]}: cannot tell its bundle (no bundle_name in run_info.json or config.json)")
    result = build_calibrated_ensemble(runs, out, bundle, manifest, overrides, prefix="ensemble")
    print(f"ensemble: {len(result['ensemble']['members'])} members -> {out}")
    return 0


def main(argv=None) -> int:
    """Run ``medfuse ensemble`` with ``argv`` (default: ``sys.argv[1:]``)."""
    return run_with_overrides("medfuse ensemble", build_parser(), _run, argv)
