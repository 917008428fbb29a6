# Copyright (c) medfuse contributors
# Licensed under the Apache License, Version 2.0
"""``medfuse export BUNDLE_DIR --out ZOO_DIR``: a trained bundle -> model-zoo folder, release zip, index.

Runs the MONAI model zoo's checks (required files, metadata schema, version and changelog,
4-space JSON, no absolute paths, workflow properties, network input/output), exports
TorchScript with ``monai.bundle ckpt_export`` and checks it against the checkpoint, then
writes ``ZOO_DIR/<name>/``, ``ZOO_DIR/releases/<name>_v<version>.zip`` and
``ZOO_DIR/model_info.json``. Stops with one line at the first failing check. See
:func:`medfuse.zoo.export_bundle` and docs/model_zoo.md.
"""

from __future__ import annotations

import argparse
import sys

from medfuse.cli import run_command

__all__ = ["HELP", "build_parser", "main"]

HELP = "check a trained bundle like the MONAI model zoo, export TorchScript (+ .pt2, ONNX), write a zoo folder + release zip"


def build_parser(prog: str = "medfuse export") -> argparse.ArgumentParser:
    """Options of ``medfuse export``."""
    p = argparse.ArgumentParser(
        prog=prog,
        description=HELP + ". Nothing is written to ZOO_DIR unless every check passes.",
        epilog="example: medfuse export bundles/cxr_dual_cross_attention --out zoo "
        "--weights runs/cxr_dual_cross_attention/20250101-120000/model.pt --version 0.2.0 --changelog 'trained on ...'",
    )
    p.add_argument("bundle_dir", help="the bundle folder (LICENSE, configs/, docs/), or the name of a bundle shipped "
                   "with medfuse (cxr_dual_cross_attention ...)")
    p.add_argument("--out", required=True, metavar="ZOO_DIR", help="zoo folder to write into (created when missing)")
    p.add_argument("--version", default=None, metavar="X.Y.Z", help="release version (default: the metadata's version)")
    p.add_argument("--changelog", default=None, metavar="TEXT", help="changelog entry of this version")
    p.add_argument("--weights", default=None, metavar="PATH",
                   help="checkpoint, e.g. runs/<bundle>/<run>/model.pt (default: BUNDLE_DIR/models/model.pt); the run's "
                   "config.json, run_info.json and calibration.json beside it are used when present")
    p.add_argument("--url-template", default=None, metavar="URL",
                   help="download URL of each large file, with {name} {version} {file} {path} "
                   "(default: file:// URLs of copies under ZOO_DIR/files/)")
    p.add_argument("--schema", default=None, metavar="PATH",
                   help="MONAI metadata schema JSON (default: ../shared/data/monai_schema/meta_schema_20240725.json)")
    p.add_argument("--data-source", default=None, metavar="TEXT", help="where the training data came from (default: metadata)")
    p.add_argument("--data-license", default=None, metavar="TEXT", help="licence of the training data (default: metadata)")
    p.add_argument("--manifest", default=None, metavar="PATH",
                   help="manifest to build the workflow properties with (default: the training run's manifest)")
    p.add_argument("--trace", action="store_true", help="export with torch.jit.trace instead of torch.jit.script")
    p.add_argument("--format", default="torchscript,pt2", metavar="LIST", dest="formats",
                   help="comma-separated export formats among torchscript, pt2 (torch.export, dynamic batch) and onnx "
                   "(needs pip install 'medfuse[onnx]'); each is round-trip checked in a fresh process, max |difference| "
                   "printed. torchscript is required by the model zoo (default: torchscript,pt2)")
    p.add_argument("--onnx", action="store_true", help="also export ONNX (same as adding onnx to --format)")
    return p


def _run(args) -> int:
    from medfuse.zoo import export_bundle

    print(f"exporting {args.bundle_dir} to {args.out}", flush=True)
    result = export_bundle(
        args.bundle_dir, args.out, version=args.version, changelog=args.changelog, weights=args.weights,
        url_template=args.url_template, schema=args.schema, data_source=args.data_source,
        data_license=args.data_license, manifest=args.manifest, trace=args.trace, onnx=args.onnx,
        formats=args.formats,
        log=lambda m: print(m, flush=True),
    )
    print(result.format())
    for w in result.warnings:
        print(f"medfuse export: warning: {w}", file=sys.stderr)
    return 0


def main(argv=None) -> int:
    """Run ``medfuse export`` with ``argv`` (default: ``sys.argv[1:]``)."""
    return run_command("medfuse export", _run, build_parser(), argv)
