# Copyright (c) medfuse contributors
# Licensed under the Apache License, Version 2.0
"""``medfuse cv BUNDLE --manifest M --folds 5 [--seed S] [--output_dir D] [--KEY VALUE ...]``: k-fold cross-validation.

Patient-level, label-stratified folds of the manifest's ``training`` split; one run folder per fold under
``D/cv/``, pooled out-of-fold ``predictions.csv`` and ``cv_summary.json``, and (classification bundles) the
ensemble of the fold models, calibrated on the ``validation`` split, in ``D/cv`` itself. Every other
``--KEY VALUE`` is a bundle config override applied to every fold (``--epochs 12 --image_size 64``), written
as on the ``monai.bundle run`` command line. Run it again to resume: finished folds are not retrained. See
:mod:`medfuse.workflows.cv`.
"""

from __future__ import annotations

import argparse

from medfuse.cli import run_command
from medfuse.commands._common import nonnegative_int

__all__ = ["HELP", "build_parser", "main", "parse_overrides", "run_with_overrides"]

HELP = "k-fold cross-validation of a bundle (patient-level folds, resumable), pooled out-of-fold metrics, fold ensemble"


def parse_overrides(rest: list[str]) -> dict:
    """``["--epochs", "3", "--backbones", "[\\"a\\", \\"b\\"]"]`` -> ``{"epochs": 3, "backbones": ["a", "b"]}``.

    Values are read as JSON when they parse (numbers, lists, true/false), else as a Python literal (``"['a', 'b']"``,
    ``True``, as ``monai.bundle run`` reads its command line), else as text.

    Raises:
        argparse.ArgumentTypeError: for a value without a ``--key`` or a key without a value.
    """
    import json

    out: dict = {}
    i = 0
    while i < len(rest):
        key = rest[i]
        if not key.startswith("--") or len(key) < 3:
            raise argparse.ArgumentTypeError(f"unexpected argument {key!r}: bundle overrides are --KEY VALUE pairs")
        if "=" in key:
            key, value = key.split("=", 1)
            i += 1
        elif i + 1 < len(rest):
            value = rest[i + 1]
            i += 2
        else:
            raise argparse.ArgumentTypeError(f"bundle override {key} has no value; write {key} VALUE")
        out[key[2:]] = _value(value)
    return out


def _value(text: str):
    """A command-line value: JSON, else a Python literal, else the text itself."""
    import ast
    import json

    try:
        return json.loads(text)
    except ValueError:
        pass
    try:
        return ast.literal_eval(text)
    except (ValueError, SyntaxError, MemoryError, RecursionError):
        return text


def build_parser(prog: str = "medfuse cv") -> argparse.ArgumentParser:
    """Options of ``medfuse cv`` (bundle overrides are the remaining ``--KEY VALUE`` pairs)."""
    p = argparse.ArgumentParser(
        prog=prog,
        description=HELP + ". Further --KEY VALUE pairs are bundle config overrides applied to every fold.",
        epilog="example: medfuse cv cxr_dual_cross_attention --manifest data_manifests/pneumoniamnist.json --folds 5 "
        "--output_dir runs/pmnist_cv --image_size 64 --epochs 12",
    )
    p.add_argument("bundle", help="bundle folder, or its name under bundles/")
    p.add_argument("--manifest", required=True, metavar="M.json", help="manifest; folds are cut from its training split")
    p.add_argument("--folds", type=nonnegative_int("fold count"), default=5, metavar="K", help="number of folds (default 5)")
    p.add_argument("--seed", type=nonnegative_int("seed"), default=0, help="seed of the fold assignment (default 0)")
    p.add_argument("--output_dir", default=None, metavar="D",
                   help="parent of the cv/ folder (default runs/<bundle name>)")
    p.add_argument("--bootstrap", type=nonnegative_int("count"), default=1000, metavar="N",
                   help="bootstrap resamples of the summary's 95%% intervals (default 1000; 0 = none)")
    p.add_argument("--no-ensemble", action="store_true", help="do not build and calibrate the ensemble of the folds")
    return p


def _run(args: argparse.Namespace, overrides: dict) -> int:
    from pathlib import Path

    from medfuse.errors import DataError
    from medfuse.workflows.cv import run_cv

    if not Path(args.manifest).is_file():
        raise DataError(f"{args.manifest}: manifest not found (given as --manifest); check the path")
    try:
        from medfuse.workflows.bundle import bundle_dir

        bundle_dir(args.bundle)
    except FileNotFoundError as e:
        raise DataError(str(e)) from None
    result = run_cv(args.bundle, args.manifest, folds=args.folds, seed=args.seed, output_dir=args.output_dir,
                    overrides=overrides, n_boot=args.bootstrap, ensemble=not args.no_ensemble)
    s = result["summary"]
    print(f"cv: trained folds {result['trained'] or 'none'}, finished before {result['skipped'] or 'none'}")
    pooled = s.get("pooled")
    if pooled:
        print(f"cv: pooled out-of-fold n={pooled['n']} AUC={pooled['auc']} AUPR={pooled['aupr']} "
              f"accuracy={pooled['accuracy']}")
    if s.get("pooled_segmentation"):
        print(f"cv: pooled out-of-fold Dice={s['pooled_segmentation']['dice']} (n={s['pooled_segmentation']['n']})")
    print(f"cv: summary {result['cv_dir'] / 'cv_summary.json'}")
    return 0


def run_with_overrides(prog: str, parser: argparse.ArgumentParser, body, argv=None, check=None) -> int:
    """Run a command whose further ``--KEY VALUE`` pairs are bundle overrides: ``body(args, overrides)``.

    ``check(parser, known_args)`` may call ``parser.error`` before anything runs. Shared by ``medfuse cv`` and
    ``medfuse ensemble``.
    """
    import sys

    argv = list(sys.argv[1:] if argv is None else argv)
    known, rest = parser.parse_known_args(argv)
    try:
        overrides = parse_overrides(rest)
    except argparse.ArgumentTypeError as e:
        parser.error(str(e))
    if check is not None:
        check(parser, known)
    return run_command(prog, lambda args: body(args, overrides), parser, _known_argv(argv, rest))


def _check_folds(parser: argparse.ArgumentParser, known: argparse.Namespace) -> None:
    if known.folds < 2:
        parser.error(f"--folds must be at least 2, got {known.folds}")


def main(argv=None) -> int:
    """Run ``medfuse cv`` with ``argv`` (default: ``sys.argv[1:]``)."""
    return run_with_overrides("medfuse cv", build_parser(), _run, argv, check=_check_folds)


def _known_argv(argv: list[str], rest: list[str]) -> list[str]:
    """``argv`` less the override pairs (so ``run_command`` re-parses only medfuse cv's own options)."""
    out, skip = [], list(rest)
    for a in argv:
        if skip and a == skip[0]:
            skip.pop(0)
            continue
        out.append(a)
    return out
