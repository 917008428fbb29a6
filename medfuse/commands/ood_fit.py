# Copyright (c) medfuse contributors
# Licensed under the Apache License, Version 2.0
"""``medfuse ood-fit RUN``: fit the out-of-distribution model (``ood.json``) of a classifier run afterwards.

Runs trained before the OOD model existed (or with ``--fit_ood false``) get one from their executed
``config.json`` and ``model.pt``: training-split features fit the class Gaussians, the validation split sets the
threshold (99th percentile). See :mod:`medfuse.evaluation.ood`.
"""

from __future__ import annotations

import argparse

from medfuse.cli import run_command

HELP = "fit ood.json (out-of-distribution score) for an existing classifier run folder"


def build_parser(prog: str = "medfuse ood-fit") -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog=prog, description=HELP)
    p.add_argument("run_dir", help="training run folder (config.json, model.pt)")
    p.add_argument("--checkpoint", help="weights to use (default: RUN/model.pt)")
    p.add_argument("--manifest", help="the training manifest, when it moved since training")
    p.add_argument("--device", default="cpu", help="torch device of the feature passes (default: cpu)")
    p.add_argument("--batch-size", type=int, default=32, help="batch size of the feature passes (default: 32)")
    return p


def _run(args) -> int:
    from medfuse.workflows.ood import fit_ood_for_run

    model = fit_ood_for_run(args.run_dir, checkpoint=args.checkpoint, manifest=args.manifest, device=args.device,
                            batch_size=args.batch_size)
    print(f"ood.json written to {args.run_dir}: threshold {model['threshold']:.6g} (99th percentile of "
          f"{model['n_validation']} validation scores), {model['n_train']} training images")
    return 0


def main(argv=None) -> int:
    return run_command("medfuse ood-fit", _run, build_parser(), argv)
