# Copyright (c) medfuse contributors
# Licensed under the Apache License, Version 2.0
"""DIFM against a plain U-Net on ACDC volumes: the difm_segmentation bundle in volume mode, per architecture and seed.

Usage (the lead's measurement; real data)::

    .venv/bin/python benchmarks/difm_acdc.py --manifest runs/real/acdc.json --architectures difm,unet \\
        --seeds 0,1 --image-size 128 --epochs 100 --out docs/benchmarks/difm_acdc.json

Smoke test on the synthetic cardiac phantoms (no real data; what the repository's check ran)::

    .venv/bin/python benchmarks/difm_acdc.py --demo-volumes 8 --architectures difm,unet --seeds 0 \\
        --image-size 64 --epochs 1 --features 4,4,8,8,16,4 --kv-size 4 --out /tmp/difm_smoke.json

Each run trains ``bundles/difm_segmentation`` (``data_mode volume``, ``intensity mri``, ``target_spacing`` 1.5 mm)
and evaluates its test split: 3-D Dice per class (ACDC: RV, MYO, LV) and their mean, HD95 in voxels and in mm
(the files' voxel size; the ACDC HDF5 copies carry an *assumed* 1.5 x 1.5 x 8 mm), wall time of training and of
evaluation. With two architectures, the per-volume paired difference of the mean foreground Dice (first minus
second, each averaged over the seeds) gets a percentile bootstrap 95 % CI over volumes
(``medfuse.evaluation.bootstrap``: ``stratified_indices`` with one stratum, ``percentile_interval``).
Results go to stdout as a Markdown table and to ``--out`` as JSON (rewritten after every run, so a long
measurement can be read while it goes on).
"""

from __future__ import annotations

import argparse
import csv
import json
import platform
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

BUNDLE = Path(__file__).resolve().parents[1] / "bundles" / "difm_segmentation"


def _ints(text: str) -> list[int]:
    return [int(x) for x in str(text).split(",") if x.strip()]


def _per_case(eval_dir: Path, classes: list[str]) -> list[dict]:
    rows = []
    with open(eval_dir / "segmentation_per_case.csv", encoding="utf-8") as f:
        for r in csv.DictReader(f):
            row: dict[str, Any] = {"image": r["image"]}
            for c in classes:
                for m in ("dice", "hd95", "hd95_voxels"):
                    v = r.get(f"{m}_{c}", "")
                    row[f"{m}_{c}"] = float(v) if v not in ("", None) else None
            dices = [row[f"dice_{c}"] for c in classes if row[f"dice_{c}"] is not None]
            row["dice_mean"] = float(np.mean(dices)) if dices else None
            rows.append(row)
    return rows


def _mean(values) -> float | None:
    v = [x for x in values if x is not None and np.isfinite(x)]
    return float(np.mean(v)) if v else None


def run_one(manifest: str, architecture: str, seed: int, args: argparse.Namespace, out_dir: Path) -> dict:
    from medfuse.workflows.bundle import run_bundle

    name = f"{architecture}_s{seed}"
    common = dict(manifest=manifest, output_dir=str(out_dir), run_name=name, num_workers=args.num_workers,
                  num_threads=args.threads, progress=False, seed=seed)
    t0 = time.perf_counter()
    trained = run_bundle(BUNDLE, "train", logging=False, data_mode="volume", architecture=architecture,
                         image_size=args.image_size, epochs=args.epochs, batch_size=args.batch_size,
                         slices_per_volume=args.slices_per_volume, intensity=args.intensity,
                         target_spacing=args.target_spacing, features=args.features, kv_size=args.kv_size,
                         early_stop_patience=args.patience, **common)
    t_train = time.perf_counter() - t0
    t0 = time.perf_counter()
    run_bundle(BUNDLE, "evaluate", logging=False, **common)
    t_eval = time.perf_counter() - t0
    eval_dir = Path(trained["run_dir"]) / "eval"
    metrics = json.loads((eval_dir / "segmentation_metrics.json").read_text(encoding="utf-8"))
    classes = list(metrics.get("per_class", {}))
    per_class = {c: {"dice": metrics["per_class"][c]["dice"]["mean"], "hd95_mm": metrics["per_class"][c]["hd95"]["mean"],
                     "hd95_voxels": metrics["hd95_voxels"][c]["mean"]} for c in classes}
    return {
        "architecture": architecture,
        "seed": seed,
        "run_dir": str(trained["run_dir"]),
        "epochs_run": trained["epochs_run"],
        "best_val_dice": trained["best_val_metric"],  # the key metric, val_dice (trained["key_metric"])
        "n_test_volumes": metrics["n_cases"],
        "per_class": per_class,
        "dice_mean": _mean(v["dice"] for v in per_class.values()),
        "hd95_mm_mean": _mean(v["hd95_mm"] for v in per_class.values()),
        "hd95_voxels_mean": _mean(v["hd95_voxels"] for v in per_class.values()),
        "train_s": round(t_train, 1),
        "eval_s": round(t_eval, 1),
        "per_case": _per_case(eval_dir, classes),
    }


def paired_difference(runs: list[dict], first: str, second: str, n_boot: int = 2000, seed: int = 0) -> dict | None:
    """Per-volume mean-Dice difference ``first - second`` (each averaged over seeds) with a bootstrap 95 % CI."""
    from medfuse.evaluation.bootstrap import percentile_interval, stratified_indices

    def by_volume(arch):
        vols: dict[str, list[float]] = {}
        for r in runs:
            if r["architecture"] == arch:
                for c in r["per_case"]:
                    if c["dice_mean"] is not None:
                        vols.setdefault(c["image"], []).append(c["dice_mean"])
        return {k: float(np.mean(v)) for k, v in vols.items()}

    a, b = by_volume(first), by_volume(second)
    common = sorted(set(a) & set(b))
    if not common:
        return None
    diff = np.array([a[k] - b[k] for k in common])
    idx = stratified_indices(np.zeros(len(diff)), n_boot, seed=seed)
    ci = percentile_interval(diff[idx].mean(axis=1))
    return {"difference": f"{first} - {second}", "metric": "mean foreground 3-D Dice per volume, mean over seeds",
            "n_volumes": len(common), "mean": float(diff.mean()), "ci95": [ci["low"], ci["high"]], "n_boot": n_boot,
            "first_better_volumes": int((diff > 0).sum())}


def _table(runs: list[dict]) -> str:
    classes = list(runs[0]["per_class"]) if runs else []
    head = ["architecture", "seed"] + [f"Dice {c}" for c in classes] + ["mean Dice", "HD95 mm", "HD95 vox", "train s", "eval s"]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]

    def f(v, d=4):
        return "-" if v is None else f"{v:.{d}f}"

    for r in runs:
        cells = [r["architecture"], str(r["seed"])] + [f(r["per_class"][c]["dice"]) for c in classes]
        cells += [f(r["dice_mean"]), f(r["hd95_mm_mean"], 2), f(r["hd95_voxels_mean"], 2), f(r["train_s"], 0), f(r["eval_s"], 0)]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def _demo_manifest(n_volumes: int, folder: Path) -> str:
    """Cardiac phantom volumes split by patient so that training, validation and test are all present."""
    from medfuse.data.demo.volumes import make_demo_volumes
    from medfuse.data.manifest import read_manifest

    src = make_demo_volumes(folder, n_volumes, seed=0)
    m = read_manifest(src, validate=False)
    items = m.get("training", []) + m.get("validation", []) + m.get("test", [])
    for it in items:
        for k in ("image", "mask"):
            it[k] = str((src.parent / it[k]).resolve())
    patients = sorted({it["patient_id"] for it in items})
    if len(patients) < 3:
        raise SystemExit("--demo-volumes needs at least 5 volumes (3 patients: training, validation, test)")
    m["validation"] = [it for it in items if it["patient_id"] == patients[-2]]
    m["test"] = [it for it in items if it["patient_id"] == patients[-1]]
    m["training"] = [it for it in items if it["patient_id"] not in patients[-2:]]
    out = folder / "demo_split.json"
    out.write_text(json.dumps(m), encoding="utf-8")
    return str(out)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--manifest", default="runs/real/acdc.json", help="segmentation manifest of NIfTI volumes")
    p.add_argument("--demo-volumes", type=int, default=0, help="use N synthetic cardiac phantoms instead (smoke test)")
    p.add_argument("--architectures", default="difm,unet", help="comma list of difm, unet, unet2ch")
    p.add_argument("--seeds", default="0,1")
    p.add_argument("--image-size", type=int, default=128)
    p.add_argument("--epochs", type=int, default=100)
    p.add_argument("--patience", type=int, default=20, help="early stopping on validation Dice")
    p.add_argument("--batch-size", type=int, default=8)
    p.add_argument("--slices-per-volume", type=int, default=4)
    p.add_argument("--intensity", default="mri", choices=("mri", "ct"))
    p.add_argument("--target-spacing", type=float, default=1.5)
    p.add_argument("--features", default="32,32,64,128,256,32", help="six BasicUNet widths")
    p.add_argument("--kv-size", type=int, default=16)
    p.add_argument("--threads", type=int, default=0, help="torch threads (0: torch's default)")
    p.add_argument("--num-workers", type=int, default=2)
    p.add_argument("--runs-dir", default="runs/difm_acdc", help="where the run folders go")
    p.add_argument("--n-boot", type=int, default=2000)
    p.add_argument("--out", default="", help="JSON results file")
    args = p.parse_args(argv)
    args.features = _ints(args.features)
    archs = [a.strip() for a in args.architectures.split(",") if a.strip()]
    seeds = _ints(args.seeds)
    runs_dir = Path(args.runs_dir)
    runs_dir.mkdir(parents=True, exist_ok=True)
    manifest = _demo_manifest(args.demo_volumes, runs_dir / "demo_data") if args.demo_volumes else args.manifest
    if not Path(manifest).is_file():
        print(f"{manifest}: manifest not found; make it with medfuse nifti2manifest (see the bundle README)", file=sys.stderr)
        return 2
    import torch

    result: dict[str, Any] = {
        "benchmark": "difm_acdc",
        "manifest": str(Path(manifest).resolve()),
        "synthetic": bool(args.demo_volumes),
        "settings": {k: v for k, v in vars(args).items() if k not in ("out",)},
        "machine": {"platform": platform.platform(), "python": platform.python_version(), "torch": torch.__version__,
                    "device": "cuda" if torch.cuda.is_available() else "cpu",
                    "gpu": torch.cuda.get_device_name(0) if torch.cuda.is_available() else None},
        "runs": [],
    }

    def save():
        if args.out:
            Path(args.out).parent.mkdir(parents=True, exist_ok=True)
            Path(args.out).write_text(json.dumps(result, indent=2) + "\n", encoding="utf-8")

    for seed in seeds:
        for arch in archs:
            result["runs"].append(run_one(manifest, arch, seed, args, runs_dir))
            save()
    if len(archs) >= 2:
        result["paired"] = paired_difference(result["runs"], archs[0], archs[1], n_boot=args.n_boot)
    save()
    print(_table(result["runs"]))
    if result.get("paired"):
        d = result["paired"]
        print(f"\n{d['difference']}: mean {d['mean']:+.4f}, 95 % CI [{d['ci95'][0]:+.4f}, {d['ci95'][1]:+.4f}] "
              f"over {d['n_volumes']} volumes ({d['first_better_volumes']} better)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
