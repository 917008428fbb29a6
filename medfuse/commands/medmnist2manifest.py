# Copyright (c) medfuse contributors
# Licensed under the Apache License, Version 2.0
"""``medfuse medmnist2manifest FILE.npz --out DIR``: MedMNIST arrays -> PNG files + manifest.

Writes ``DIR/images/<split>/<split>_<index>.png`` and ``DIR/manifest.json``, keeping the
official train/val/test splits (``--val-as-test``: val becomes test, validation is carved
from train). ``--download NAME`` fetches ``NAME.npz`` first (standard library only, short
timeout); offline it fails with instructions to download the file by hand. See
:func:`medfuse.data.layouts.medmnist_to_manifest`.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from medfuse.cli import run_command
from medfuse.commands._common import add_common_arguments, common_options, write_outputs
from medfuse.data.layouts import download_medmnist, medmnist_to_manifest

__all__ = ["HELP", "build_parser", "main"]

HELP = "MedMNIST .npz (PneumoniaMNIST, ChestMNIST ...) -> PNG files + manifest"


def build_parser(prog: str = "medfuse medmnist2manifest") -> argparse.ArgumentParser:
    """Options of ``medfuse medmnist2manifest``."""
    p = argparse.ArgumentParser(
        prog=prog,
        description=HELP + ". Official splits are kept (val -> validation); MedMNIST has no patient ids.",
    )
    p.add_argument("file", nargs="?", help="MedMNIST .npz (train_images, train_labels, val_*, test_*)")
    p.add_argument("--out", required=True, help="output folder for images/ and the manifest")
    p.add_argument("--manifest-name", default="manifest.json", help="manifest file name inside --out (default manifest.json)")
    p.add_argument("--dataset", default=None, help="MedMNIST name (e.g. chestmnist) when the file name does not say")
    p.add_argument(
        "--task", choices=("auto", "classification", "multilabel"), default="auto",
        help="auto (default): multilabel when labels have several columns (ChestMNIST), else classification",
    )
    p.add_argument(
        "--cross-split-duplicates", choices=("keep", "drop"), default="keep",
        help="byte-identical images in two official splits: keep the official splits (default; items marked) "
        "or drop the later copies",
    )
    p.add_argument(
        "--val-as-test", action="store_true",
        help="the official val split becomes test and validation is carved from train (--val-fraction, per image, "
        "stratified, --seed); the official test split is left out, kept for a final check",
    )
    p.add_argument("--download", default=None, metavar="NAME", help="download NAME.npz (e.g. pneumoniamnist) first")
    p.add_argument("--download-dir", default=None, help="where --download saves the file (default: --out)")
    p.add_argument("--url", default=None, help="download address for --download (default: the official one)")
    p.add_argument("--timeout", type=float, default=10.0, help="download timeout in seconds (default 10)")
    add_common_arguments(p, split=False, patients=False)
    return p


def _run(args) -> int:
    if args.download:
        npz = download_medmnist(args.download, args.download_dir or args.out, url=args.url, timeout=args.timeout)
        print(f"downloaded {npz}")
    else:
        npz = Path(args.file)
    out = Path(args.out)
    manifest, report = medmnist_to_manifest(
        npz, out, manifest_name=args.manifest_name, dataset=args.dataset, task=args.task,
        cross_split_duplicates=args.cross_split_duplicates, val_as_test=args.val_as_test, **common_options(args),
    )
    return write_outputs(manifest, report, out / args.manifest_name, args.report)


def main(argv=None) -> int:
    """Run ``medfuse medmnist2manifest`` with ``argv`` (default: ``sys.argv[1:]``)."""
    parser = build_parser()

    def body(args):
        if bool(args.file) == bool(args.download):
            parser.error("give either FILE (a MedMNIST .npz) or --download NAME, not both or neither")
        return _run(args)

    return run_command("medfuse medmnist2manifest", body, parser, argv)
