# Copyright (c) medfuse contributors
# Licensed under the Apache License, Version 2.0
"""``medfuse predict INPUT... --model M --out DIR``: score files, folders or a manifest with a trained classifier.

``INPUT`` is any mix of image files (DICOM, PNG, JPEG ...), folders (every image file below them) and manifests
(``.json``; the ``--split`` items, with their labels and grouping columns). ``M`` is a run folder, an exported
bundle folder, a release zip or ``zoo:NAME`` (see :func:`medfuse.load_model`). Writes ``DIR/predictions.csv``
(columns of :data:`medfuse.evaluation.predictions.SCHEMA`, documented in ``docs/evaluation.md``), with ``--cam``
Grad-CAM overlays and their ``index.csv`` under ``DIR/cam``, and ends with a one-screen summary.

Exit status 0 when every input was scored or skipped with its reason in ``input_check`` (an undecodable file is
such a row, not a crash); 1 for a problem that stops the run (no such input, not a model), 2 for bad options.
"""

from __future__ import annotations

import argparse

from medfuse.cli import run_command
from medfuse.commands._common import nonnegative_int

__all__ = ["HELP", "build_parser", "main"]

HELP = "predict image files, folders or a manifest with a trained model (predictions.csv, optional CAM overlays)"
#: manifest item keys written as grouping columns when present
GROUP_KEYS = ("patient_id", "view", "sex", "site", "eye")


def build_parser(prog: str = "medfuse predict") -> argparse.ArgumentParser:
    """Options of ``medfuse predict``."""
    p = argparse.ArgumentParser(prog=prog, description=HELP + ".")
    p.add_argument("inputs", nargs="+", metavar="INPUT", help="image files, folders, or manifests (.json)")
    p.add_argument("--model", required=True, metavar="M",
                   help="run folder, exported bundle folder, release .zip, zoo:NAME[@VERSION], or an ensemble: a folder "
                        "with ensemble.json (medfuse cv's cv/) or RUN1,RUN2,... (mean probabilities, uncalibrated)")
    p.add_argument("--out", required=True, metavar="DIR", help="output folder (created)")
    p.add_argument("--split", default="test", help="manifest split to predict (default test)")
    p.add_argument("--class-map", default=None, metavar="DATA=MODEL,...",
                   help="map a manifest's class names to the model's when they differ (e.g. NORMAL=normal)")
    p.add_argument("--mc-samples", type=nonnegative_int("count"), default=None, metavar="N",
                   help="Monte-Carlo dropout passes (default: the run's; 0 = one deterministic pass)")
    p.add_argument("--batch-size", type=nonnegative_int("count"), default=16, metavar="B", help="images per pass (default 16)")
    p.add_argument("--device", default="cpu", help="torch device (default cpu)")
    p.add_argument("--zoo", default=None, metavar="ZOO_DIR", help="local zoo of zoo:NAME (default $MEDFUSE_ZOO or ./zoo)")
    p.add_argument("--cam", action="store_true", help="also write Grad-CAM overlays of the predicted class to DIR/cam")
    p.add_argument("--cam-max", type=nonnegative_int("count"), default=50, metavar="N", help="at most N overlays (default 50)")
    p.add_argument("--no-progress", action="store_true", help="no progress bar (it is shown only on a terminal anyway)")
    return p


def _collect(args: argparse.Namespace, classes: list[str]) -> tuple[list[dict], list[str]]:
    """``(items, notes)``: one item ``{"image", "label"?, group keys?}`` per input file, in the order given."""
    from pathlib import Path

    from medfuse.errors import DataError

    items: list[dict] = []
    notes: list[str] = []
    for text in args.inputs:
        path = Path(text)
        if path.is_dir():
            from medfuse.workflows.data import folder_items

            items += [{"image": it["image"]} for it in folder_items(path)]
        elif path.is_file() and path.suffix.lower() == ".json":
            from medfuse.data.manifest import load_split, read_manifest
            from medfuse.inference import map_classes, parse_class_map

            found = load_split(path, args.split)
            if not found:
                splits = [s for s in ("training", "validation", "test") if read_manifest(path, validate=False).get(s)]
                raise DataError(f"{path}: no '{args.split}' items; choose --split among {splits}")
            mapping, note = map_classes(read_manifest(path, validate=False).get("classes") or classes, classes,
                                        parse_class_map(args.class_map), where=str(path))
            if note:
                notes.append(f"{path.name}: {note}")
            for it in found:
                row = {"image": it["image"]}
                lab = it.get("label")
                if isinstance(lab, int) and not isinstance(lab, bool):
                    row["label"] = mapping[lab] if 0 <= lab < len(mapping) else -1
                row.update({k: it[k] for k in GROUP_KEYS if k in it})
                items.append(row)
        elif path.is_file():
            items.append({"image": str(path.resolve())})
        else:
            raise DataError(f"{path}: no such file or folder; give image files, folders or a manifest .json")
    if not items:
        raise DataError("no input to predict")
    return items, notes


def _write_cams(model, items, results, out, limit: int) -> int:
    """Grad-CAM overlays of the first ``limit`` scored inputs into ``out/cam`` with an ``index.csv``; returns how many."""
    from pathlib import Path

    from medfuse.utils.io import atomic_write_csv
    from medfuse.visualize.cam import display_image, save_overlay

    rows = []
    scored = [(it, r) for it, r in zip(items, results) if r["input_check"] == "ok"][:limit]
    for k, (it, r) in enumerate(scored):
        image, _ = model.preprocess(it["image"])
        cam = model.cam(it["image"], class_index=model.classes.index(r["pred"]))
        stem = Path(it["image"]).name
        name = f"{k:04d}_{Path(it['image']).stem}_{r['pred']}.png"
        prob = r["probabilities"][r["pred"]]
        save_overlay(out / "cam" / name, display_image(image), cam, title=f"{stem}: {r['pred']} (p = {prob:.3f})")
        rows.append({"image": it["image"], "pred": r["pred"], "prob": round(prob, 6), "overlay": name})
    atomic_write_csv(out / "cam" / "index.csv", rows, ["image", "pred", "prob", "overlay"])
    return len(rows)


def _run(args: argparse.Namespace) -> int:
    import collections
    import sys
    import time
    from pathlib import Path

    from medfuse.inference import load_model, write_results

    t0 = time.perf_counter()
    model = load_model(args.model, device=args.device, mc_samples=args.mc_samples, zoo_dir=args.zoo)
    items, notes = _collect(args, model.classes)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    try:
        from tqdm import tqdm
    except ImportError:  # tqdm comes with MONAI's usual extras; without it, no bar
        tqdm = None
    bar = None
    if tqdm is not None and not args.no_progress and sys.stderr.isatty():
        bar = tqdm(total=len(items), unit="image", desc="predict", file=sys.stderr)
    results: list[dict] = []
    step = max(1, args.batch_size)
    for start in range(0, len(items), step):
        chunk = items[start:start + step]
        results += model.predict([it["image"] for it in chunk], batch_size=step)
        if bar is not None:
            bar.update(len(chunk))
    if bar is not None:
        bar.close()
    labels = [it.get("label", -1) for it in items] if any("label" in it for it in items) else None
    groups = {k: [it.get(k, "") for it in items] for k in GROUP_KEYS if any(k in it for it in items)}
    csv_path = write_results(out / "predictions.csv", results, model.classes, labels=labels, groups=groups)
    n_cam = _write_cams(model, items, results, out, args.cam_max) if args.cam else 0
    scored = [r for r in results if r["input_check"] == "ok"]
    skipped = collections.Counter(r["input_check"] for r in results if r["input_check"] != "ok")
    counts = collections.Counter(r["pred"] for r in scored)
    lines = [
        f"model: {model.settings.get('bundle_name')} ({model.kind} {model.source}), classes {model.classes}",
        f"calibration: T = {model.temperature:.4g}" + ("" if model.calibration else " (none: uncalibrated)")
        + f"; {model.decision_rule}",
        f"uncertainty: {'MC dropout, ' + str(model.mc_samples) + ' passes' if model.mc_samples else 'one pass (no mutual_info)'}"
        + (f"; ensemble of {len(model.network.members)} members (mean probabilities; member_disagreement, "
           "mutual_info_members)" if model.is_ensemble else ""),
        f"inputs: {len(results)}, scored {len(scored)}, skipped {sum(skipped.values())}",
    ]
    lines += [f"  skipped ({n}): {reason}" for reason, n in skipped.most_common(5)]
    if len(skipped) > 5:
        lines.append(f"  ... {len(skipped) - 5} more reasons in the input_check column")
    if any("ood" in r for r in scored):
        flagged = sum(int(r["ood"]) for r in scored)
        lines.append(f"out of distribution (ood = 1, the model's ood.json): {flagged} of {len(scored)} scored inputs"
                     + (" - read their predictions with care" if flagged else ""))
    elif scored:
        lines.append("out of distribution: not checked (the model has no ood.json; `medfuse ood-fit RUN` adds one)")
    lines.append("predicted: " + (", ".join(f"{c} {counts.get(c, 0)}" for c in model.classes) if scored else "none"))
    if len(results) == 1 and scored:
        r = scored[0]
        lines.append("  " + ", ".join(f"p({c}) = {p:.3f}" for c, p in r["probabilities"].items()) + f" -> {r['pred']}")
    lines += notes
    if args.cam:
        lines.append(f"CAM overlays: {n_cam} in {out / 'cam'}")
    lines.append(f"wrote {csv_path} ({time.perf_counter() - t0:.1f} s)")
    print("\n".join(lines))
    return 0


def main(argv=None) -> int:
    """Run ``medfuse predict`` with ``argv`` (default: ``sys.argv[1:]``)."""
    return run_command("medfuse predict", _run, build_parser(), argv)
