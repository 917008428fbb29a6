# Copyright (c) medfuse contributors
# Licensed under the Apache License, Version 2.0
"""``medfuse evaluate --predictions P.csv --out DIR``: the evaluation report for predictions made by any tool.

``P.csv`` holds one row per case: a ``label`` column (class name or index; multi-label files have
``label_<class>`` 0/1 columns instead), one ``prob_<class>`` column per class, and optionally
``image``, ``pred``, ``entropy``, ``mutual_info`` and grouping columns (``view``, ``sex``, ``age``,
``manufacturer``, ``site`` ...). ``--classes a,b,c`` fixes the class order, and names the classes
when the header calls them ``prob_0``, ``prob_1`` ... With ``--validation V.csv`` (same format,
validation cases) the temperature and the operating threshold are fitted on V and applied to P;
with ``--calibration calibration.json`` a fitted calibration is applied. Writes ``metrics.json``,
``per_case.csv``, ``figures/*.png`` and ``index.html`` into ``DIR``.

Second mode, ``medfuse evaluate --model M --data FILE [--split test] --out DIR``: a trained model (run folder,
exported bundle, release zip, ``zoo:NAME``; see :func:`medfuse.load_model`) predicts the labelled ``--split`` items
of the manifest ``FILE`` first (``DIR/predictions.csv``, calibrated with the model's ``calibration.json``), then the
same report is written. Class names come from the model; a manifest whose names differ only in case is mapped
with a note, any other difference needs ``--class-map DATA=MODEL,...``. Each manifest / split gets the folder
given as ``--out``, so evaluations never overwrite each other.
"""

from __future__ import annotations

import argparse

from medfuse.cli import run_command
from medfuse.commands._common import nonnegative_int, unit_fraction

__all__ = ["HELP", "build_parser", "main"]

HELP = "evaluation report (metrics with CIs, calibration, subgroups, uncertainty, figures, HTML) of a predictions CSV"


def _classes(text: str) -> list[str]:
    names = [c.strip() for c in text.split(",") if c.strip()]
    if len(names) < 2:
        raise argparse.ArgumentTypeError(f"--classes needs at least two comma-separated names, got {text!r}")
    return names


def build_parser(prog: str = "medfuse evaluate") -> argparse.ArgumentParser:
    """Options of ``medfuse evaluate``."""
    p = argparse.ArgumentParser(
        prog=prog,
        description=HELP + ". Columns: label (or label_<class> 0/1 for multi-label), prob_<class> per class; optional "
        "image, pred, entropy, mutual_info and grouping columns (view, sex, age, manufacturer, site ...).",
    )
    mode = p.add_mutually_exclusive_group(required=True)
    mode.add_argument("--predictions", default=None, metavar="P.csv", help="predictions to evaluate (test cases)")
    mode.add_argument("--model", default=None, metavar="M",
                      help="trained model (run folder, bundle folder, release zip, zoo:NAME, ensemble folder or RUN1,RUN2,...) "
                           "to predict --data first")
    p.add_argument("--data", default=None, metavar="FILE", help="manifest to evaluate --model on (with --model)")
    p.add_argument("--split", default="test", help="manifest split evaluated with --model (default test)")
    p.add_argument("--class-map", default=None, metavar="DATA=MODEL,...",
                   help="with --model: map manifest class names to the model's when they differ (e.g. NORMAL=normal)")
    p.add_argument("--mc-samples", type=nonnegative_int("count"), default=None, metavar="N",
                   help="with --model: Monte-Carlo dropout passes (default: the model's)")
    p.add_argument("--device", default="cpu", help="with --model: torch device (default cpu)")
    p.add_argument("--out", required=True, metavar="DIR", help="report folder (created)")
    p.add_argument("--classes", type=_classes, default=None, metavar="A,B,C",
                   help="class order; names the classes when the header has prob_0, prob_1 ... columns")
    cal = p.add_mutually_exclusive_group()
    cal.add_argument("--validation", default=None, metavar="V.csv",
                     help="validation predictions (same format): temperature and threshold are fitted on them")
    cal.add_argument("--calibration", default=None, metavar="calibration.json",
                     help="apply a fitted calibration (e.g. <run_dir>/calibration.json) to the probabilities of P.csv")
    p.add_argument("--target-sensitivity", type=unit_fraction, default=0.9, metavar="S",
                   help="sensitivity the validated threshold must reach (default 0.9; with --validation)")
    p.add_argument("--positive-class", default=None, metavar="NAME",
                   help="positive class of a two-class task (default: the second class)")
    p.add_argument("--bootstrap", type=nonnegative_int("count"), default=1000, metavar="N",
                   help="bootstrap resamples for the 95%% intervals (default 1000; 0 = none)")
    p.add_argument("--seed", type=nonnegative_int("seed"), default=0, help="bootstrap seed (default 0)")
    p.add_argument("--bins", type=nonnegative_int("count"), default=15, metavar="B", help="calibration bins (default 15)")
    p.add_argument("--manifest", default=None, metavar="M.json", help="manifest summarised in the report (optional)")
    p.add_argument("--cam-dir", default=None, metavar="DIR",
                   help="folder with CAM overlays and their index.csv, shown as the gallery (optional)")
    p.add_argument("--title", default=None, help="report title")
    p.add_argument("--no-figures", action="store_true", help="metrics.json and per_case.csv only (no PNG, no HTML)")
    p.add_argument("--quiet", action="store_true", help="print only the report path")
    return p


def _run(args: argparse.Namespace) -> int:
    from pathlib import Path

    from medfuse.errors import DataError
    from medfuse.evaluation.report import evaluate_predictions

    if args.model is not None:
        if not args.data:
            raise DataError("--model needs --data FILE: the manifest to evaluate the model on")
        if args.validation or args.calibration or args.classes:
            raise DataError("--validation, --calibration and --classes go with --predictions; with --model the "
                            "model's classes and calibration.json are used")
        args.predictions, args.calibration, localization = _predict_manifest(args)
        args.manifest = args.manifest or args.data
    else:
        localization = None
    if args.data and args.model is None:
        raise DataError("--data goes with --model (with --predictions, --manifest names the manifest for the report)")
    for opt, path in (("--predictions", args.predictions), ("--validation", args.validation),
                      ("--calibration", args.calibration), ("--manifest", args.manifest)):
        if isinstance(path, str) and not Path(path).is_file():
            raise DataError(f"{path}: file not found (given as {opt}); check the path")
    if args.bins < 1:
        raise DataError("--bins must be at least 1")
    evaluate_predictions(
        args.predictions,
        args.out,
        verbose=not args.quiet,
        classes=args.classes,
        validation_csv=args.validation,
        calibration=args.calibration,
        calibration_applied=args.model is not None,
        target_sensitivity=args.target_sensitivity,
        positive_class=args.positive_class,
        n_boot=args.bootstrap,
        seed=args.seed,
        n_bins=args.bins,
        manifest=args.manifest,
        cam_dir=args.cam_dir,
        title=args.title,
        figures=not args.no_figures,
        html=not args.no_figures,
        localization=localization,
    )
    if args.quiet:
        print(Path(args.out) / ("metrics.json" if args.no_figures else "index.html"))
    return 0


def _predict_manifest(args: argparse.Namespace) -> tuple[str, dict | None, list | None]:
    """``--model`` mode: predict the labelled ``--split`` items of ``--data``; returns (predictions.csv, calibration,
    localization rows or None: the CAMs against the items' lesion boxes and lung masks, where they have any)."""
    from pathlib import Path

    from medfuse.data.manifest import load_split, read_manifest
    from medfuse.errors import DataError
    from medfuse.inference import load_model, map_classes, parse_class_map, write_results

    if not Path(args.data).is_file():
        raise DataError(f"{args.data}: file not found (given as --data); give a manifest .json")
    model = load_model(args.model, device=args.device, mc_samples=args.mc_samples)
    manifest = read_manifest(args.data, validate=False)
    mapping, note = map_classes(manifest.get("classes") or model.classes, model.classes,
                                parse_class_map(args.class_map), where=str(args.data))
    items = load_split(args.data, args.split)
    labelled = [it for it in items if isinstance(it.get("label"), int) and not isinstance(it.get("label"), bool)]
    if not labelled:
        present = [s for s in ("training", "validation", "test") if manifest.get(s)]
        raise DataError(f"{args.data}: no labelled '{args.split}' items to evaluate; choose --split among {present}")
    if note:
        print(f"note: {note}")
    if len(labelled) < len(items):
        print(f"note: {len(items) - len(labelled)} '{args.split}' items without a label are not evaluated")
    results = model.predict([it["image"] for it in labelled])
    unscored = [(it["image"], r["input_check"]) for it, r in zip(labelled, results) if r["input_check"] != "ok"]
    if unscored:
        raise DataError(f"{unscored[0][0]}: {unscored[0][1]} ({len(unscored)} of {len(labelled)} items not scored); "
                        "fix or remove them from the manifest")
    groups = ("patient_id", "view", "sex", "site", "eye", "age", "manufacturer")
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    path = write_results(out / "predictions.csv", results, model.classes,
                         labels=[mapping[it["label"]] if 0 <= it["label"] < len(mapping) else -1 for it in labelled],
                         groups={k: [it.get(k, "") for it in labelled] for k in groups if any(k in it for it in labelled)})
    print(f"{model.settings.get('bundle_name')} ({model.source}) predicted {len(labelled)} '{args.split}' items of "
          f"{args.data}; {model.decision_rule}")
    localization = None
    if any(it.get("boxes") or it.get("mask") for it in labelled):
        from medfuse.evaluation.localization import localization_records

        localization = localization_records(model, labelled, class_of=dict(enumerate(mapping)))
        print(f"CAM localization: {len(localization)} CAMs of {len({r['image'] for r in localization})} items with "
              "lesion boxes or lung masks")
    return str(path), model.calibration, localization


def main(argv=None) -> int:
    """Run ``medfuse evaluate`` with ``argv`` (default: ``sys.argv[1:]``)."""
    return run_command("medfuse evaluate", _run, build_parser(), argv)
