# Copyright (c) medfuse contributors
# Licensed under the Apache License, Version 2.0
"""Acquisition shift between hospitals: train on Shenzhen, test on Montgomery, with and without ``shift_augment``.

``../shared/data/lung_seg_cxr`` holds chest X-rays and lung masks of two tuberculosis collections from two
hospitals: Shenzhen No. 3 People's Hospital (``CHNCXR_*``) and Montgomery County, Maryland (``MCUCXR_*``).

Usage::

    # 1. the manifest: Shenzhen -> training / validation (patient-level, by label), Montgomery -> test
    .venv/bin/python benchmarks/site_shift.py build ../shared/data/lung_seg_cxr --out runs/site_shift/manifest.json
    # 2. both arms of the multi-output U-Net (training, then evaluation on the Montgomery test split)
    .venv/bin/python benchmarks/site_shift.py run runs/site_shift/manifest.json --output_dir runs/site_shift \\
        --out runs/site_shift/site_shift.json -- --image_size 128 --features "[16,16,32,64,128,16]" --epochs 16

``build`` runs :func:`medfuse.data.layouts.pairs.pairs_to_manifest` (as ``medfuse pairs2manifest``) on the
whole folder, then re-splits its items by site: every test image comes from the other hospital. Items get a
``site`` key (``shenzhen`` / ``montgomery``), a grouping column of ``predictions.csv``. It prints the counts per
site, split and label. ``run`` trains ``cxr_multi_output_unet`` twice with the same seed, data and schedule,
``--shift_augment false`` and ``true`` (bundle overrides after ``--`` go to both), evaluates each best checkpoint
on ``test`` and writes both arms' metrics to ``--out`` with their paired difference (the same bootstrap resamples of
the test images for both arms); ``compare`` adds that difference to a ``run`` JSON written without it.
"""

from __future__ import annotations

import argparse
import json
import re
import sys
import time
from collections import Counter
from pathlib import Path

from medfuse.data.layouts.pairs import pairs_to_manifest
from medfuse.data.manifest import write_manifest
from medfuse.data.splits import split_items
from medfuse.errors import DataError

#: image-name prefix -> site; the train site comes first
SITES = {"CHNCXR_": "shenzhen", "MCUCXR_": "montgomery"}
TRAIN_SITE, TEST_SITE = "shenzhen", "montgomery"
BUNDLE = "cxr_multi_output_unet"


def site_of(image: str) -> str | None:
    """The site of an image path by its file-name prefix (:data:`SITES`), or None."""
    name = Path(image).name
    return next((site for prefix, site in SITES.items() if name.startswith(prefix)), None)


def build_site_manifest(folder: str | Path, out: str | Path, val_fraction: float = 0.15, seed: int = 0) -> dict:
    """Write the Shenzhen -> Montgomery manifest of a ``lung_seg_cxr`` folder (``cxr/`` + ``masks/``) to ``out``.

    Returns:
        ``{"manifest": path, "counts": {split: {site: {class: n}}}, "skipped": n}``.

    Raises:
        DataError: a missing ``cxr`` / ``masks`` folder, an image of no known site, or a site without images.
    """
    folder, out = Path(folder), Path(out)
    for sub in ("cxr", "masks"):
        if not (folder / sub).is_dir():
            raise DataError(f"{folder / sub} is not a folder: give the lung_seg_cxr folder (with cxr/ and masks/)")
    if not 0.0 < float(val_fraction) < 1.0:
        raise DataError(f"--val-fraction must be between 0 and 1 (exclusive), got {val_fraction}")
    manifest, report = pairs_to_manifest(folder / "cxr", folder / "masks", out, split=(1.0, 0.0, 0.0), seed=seed,
                                         progress=False, tool="benchmarks/site_shift.py",
                                         arguments={"folder": str(folder), "val_fraction": val_fraction, "seed": seed})
    items = [it for split in ("training", "validation", "test") for it in manifest.get(split, [])]
    by_site: dict[str, list] = {site: [] for site in SITES.values()}
    for it in items:
        site = site_of(it["image"])
        if site is None:
            raise DataError(f"{it['image']}: no site prefix ({', '.join(SITES)}); move it out of {folder / 'cxr'}")
        by_site[site].append({**it, "site": site})
    for site, site_items in by_site.items():
        if not site_items:
            raise DataError(f"no {site} images ({[p for p, s in SITES.items() if s == site][0]}*) in {folder / 'cxr'}")
    parts = split_items(by_site[TRAIN_SITE], (1.0 - val_fraction, val_fraction), seed=seed,
                        split_names=("training", "validation"))
    manifest.update(training=parts["training"], validation=parts["validation"], test=by_site[TEST_SITE])
    manifest["provenance"]["site_split"] = (f"{TRAIN_SITE} -> training/validation (patient-level, stratified, "
                                            f"validation {val_fraction}), {TEST_SITE} -> test")
    path = write_manifest(manifest, out)
    classes = manifest["classes"]
    counts = {split: {site: dict(Counter(classes[it["label"]] for it in manifest[split] if it["site"] == site))
                      for site in SITES.values() if any(it["site"] == site for it in manifest[split])}
              for split in ("training", "validation", "test")}
    return {"manifest": str(path), "counts": counts, "skipped": len(report.skipped)}


def _bundle_overrides(args: list[str]) -> dict:
    """``--key value`` pairs after ``--`` as bundle overrides (values parsed as JSON when they are JSON)."""
    if len(args) % 2:
        raise DataError(f"bundle overrides come in '--key value' pairs, got {args}")
    out = {}
    for key, value in zip(args[::2], args[1::2]):
        if not re.fullmatch(r"--[A-Za-z_][\w#]*", key):
            raise DataError(f"bundle override {key!r} must look like --key")
        try:
            out[key[2:]] = json.loads(value)
        except json.JSONDecodeError:
            out[key[2:]] = value
    return out


def run_arms(manifest: str, output_dir: str, overrides: dict, seed: int = 0) -> dict:
    """Train and evaluate both arms (``shift_augment`` false / true); returns ``{arm: {...}}``."""
    from medfuse.workflows.bundle import run_bundle

    results = {}
    for arm, on in (("plain", False), ("shift_augment", True)):
        run_name = f"site_shift_{arm}_seed{seed}"
        t0 = time.time()
        run_bundle(BUNDLE, "train", manifest=manifest, output_dir=output_dir, run_name=run_name, seed=seed,
                   shift_augment=on, **overrides)
        train_s = time.time() - t0
        ev = run_bundle(BUNDLE, "evaluate", manifest=manifest, output_dir=output_dir, run_name=run_name, seed=seed,
                        eval_split="test", **{k: v for k, v in overrides.items() if k in ("num_workers", "num_threads")})
        results[arm] = {"run_name": run_name, "train_wall_s": round(train_s, 1),
                        "eval_wall_s": round(time.time() - t0 - train_s, 1), "metrics": ev["metrics"]}
    return results


def paired_arms(output_dir: str, results: dict, n_boot: int = 2000, seed: int = 0) -> dict:
    """``shift_augment - plain`` of the test AUC, AUPR and accuracy with a paired bootstrap interval over the test
    images (:func:`medfuse.evaluation.bootstrap.paired_difference`), from each arm's ``eval/predictions.csv``."""
    from medfuse.evaluation import read_predictions
    from medfuse.evaluation.bootstrap import paired_difference

    preds = {arm: read_predictions(Path(output_dir) / r["run_name"] / "eval" / "predictions.csv") for arm, r in results.items()}
    return {"what": "shift_augment - plain", "seed": seed,
            **paired_difference(preds["shift_augment"], preds["plain"], n_boot=n_boot, seed=seed)}


def _print_paired(paired: dict) -> None:
    for metric in ("auc", "aupr", "accuracy"):
        d = paired[metric]
        print(f"{paired['what']}: d{metric} {d['diff']:+.4f} [{d['low']:+.4f}, {d['high']:+.4f}] "
              f"({paired['n_images']} test images, {paired['n_boot']} paired resamples)")


def main(argv=None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    extra = argv[argv.index("--") + 1:] if "--" in argv else []
    argv = argv[:argv.index("--")] if "--" in argv else argv
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True)
    b = sub.add_parser("build", help="write the Shenzhen -> Montgomery manifest and print its counts")
    b.add_argument("folder", help="the lung_seg_cxr folder (cxr/ and masks/)")
    b.add_argument("--out", required=True)
    b.add_argument("--val-fraction", type=float, default=0.15)
    b.add_argument("--seed", type=int, default=0)
    r = sub.add_parser("run", help="train and evaluate both arms on a manifest from 'build'")
    r.add_argument("manifest")
    r.add_argument("--output_dir", required=True)
    r.add_argument("--out", required=True, help="JSON with both arms' test metrics")
    r.add_argument("--seed", type=int, default=0)
    c = sub.add_parser("compare", help="add the paired bootstrap difference of the two arms to a 'run' JSON")
    c.add_argument("result", help="the JSON written by 'run'")
    c.add_argument("--output_dir", required=True, help="the run's --output_dir")
    c.add_argument("--n-boot", type=int, default=2000)
    args = parser.parse_args(argv)
    try:
        if args.command == "build":
            res = build_site_manifest(args.folder, args.out, args.val_fraction, args.seed)
            for split, sites in res["counts"].items():
                for site, classes in sites.items():
                    print(f"{split:10s} {site:10s} {sum(classes.values()):4d}  " +
                          ", ".join(f"{c} {n}" for c, n in sorted(classes.items())))
            print(f"files skipped by the converter: {res['skipped']}")
            print("manifest written to", res["manifest"])
        elif args.command == "compare":
            result = json.loads(Path(args.result).read_text())
            result["paired_difference"] = paired_arms(args.output_dir, result["arms"], args.n_boot)
            Path(args.result).write_text(json.dumps(result, indent=2) + "\n")
            _print_paired(result["paired_difference"])
        else:
            results = run_arms(args.manifest, args.output_dir, _bundle_overrides(extra), args.seed)
            paired = paired_arms(args.output_dir, results, seed=args.seed)
            Path(args.out).parent.mkdir(parents=True, exist_ok=True)
            Path(args.out).write_text(json.dumps({"manifest": args.manifest, "overrides": extra, "arms": results,
                                                  "paired_difference": paired}, indent=2) + "\n")
            _print_paired(paired)
            print("both arms written to", args.out)
    except DataError as e:
        print(f"site_shift: {e}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
