# Copyright (c) medfuse contributors
# Licensed under the Apache License, Version 2.0
"""Global spatial attention ablation: the cxr_gsa_classifier bundle with and without its map, paired by seed.

Usage::

    .venv/bin/python benchmarks/gsa_ablation.py --manifest runs/real/cxr_manifest.json --classifier resnet18 \\
        --image-size 224 --epochs 20 --seeds 0,1,2 --out docs/benchmarks/gsa_<data>.json --num-threads 1 \\
        [--lung-masks-from runs/real/lung_manifest.json]

For every seed, both arms (``gsa`` true / false) are trained with the same data, schedule and seed (the plain
arm's classifier starts from the same weights as the GSA arm's ``net``). Early stopping is off
(``early_stop_patience`` = epochs) and the **final-epoch weights** (``last_model_epoch=E.pt``) are evaluated on
the test split, uncalibrated (arg-max), so nothing is selected on the reported split. Per run: AUC, AUPR,
accuracy, ``map_mean`` (mean of the map at its own size; None without a map), wall times. Per arm: mean +- SD
over seeds. Per seed: the paired difference GSA - none of AUC, AUPR and accuracy with a percentile bootstrap
95 % CI over test images (the same resamples for both arms, stratified by class:
``medfuse.evaluation.bootstrap``).

Map check, when the test items carry lung masks (``mask``, e.g. a ``medfuse pairs2manifest`` manifest) or
``--lung-masks-from`` names a manifest whose items (matched by image file name) do: the mean test lung mask
``L`` (letterboxed as the images), and the share of ``M - min(M)`` inside it, ``sum((M - min M) * L) /
sum(M - min M)``, against the lung-area share ``mean(L)`` (what a uniform map would give). A share above the
area share means that the map favours the lungs.

Writes one JSON (``--out``) and prints a Markdown table.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

BUNDLE = "cxr_gsa_classifier"
ARMS = ("gsa", "none")
METRICS = ("auc", "aupr", "accuracy")


def _seeds(text: str) -> list[int]:
    try:
        seeds = [int(s) for s in text.split(",") if s.strip()]
    except ValueError as err:
        raise argparse.ArgumentTypeError(f"--seeds must be comma-separated integers such as 0,1,2, got {text!r}") from err
    if not seeds or len(set(seeds)) != len(seeds):
        raise argparse.ArgumentTypeError(f"--seeds must list distinct integers such as 0,1,2, got {text!r}")
    return seeds


def _mean_sd(values: list) -> dict:
    v = [float(x) for x in values if x is not None and np.isfinite(x)]
    return {
        "mean": float(np.mean(v)) if v else None,
        "sd": float(statistics.stdev(v)) if len(v) > 1 else (0.0 if v else None),
        "n": len(v),
    }


def _last_checkpoint(run_dir: Path) -> Path:
    found = sorted(run_dir.glob("last_model_epoch=*.pt"), key=lambda p: int(p.stem.split("=")[-1]))
    if not found:
        raise FileNotFoundError(f"{run_dir}: no last_model_epoch=E.pt; the bundle's 'last' CheckpointSaver wrote none")
    return found[-1]


def _network_from_run(run_dir: Path, checkpoint: Path):
    """The run's network (from its executed config) with ``checkpoint`` loaded, on the CPU, in eval mode."""
    import torch
    from monai.bundle import ConfigParser

    parser = ConfigParser()
    parser.read_config(str(run_dir / "config.json"))
    parser["gsa_basis"] = None  # image_basis: a placeholder, the basis buffer comes from the checkpoint
    parser["device"] = "$torch.device('cpu')"
    net = parser.get_parsed_content("network_def")
    net.load_state_dict(torch.load(checkpoint, map_location="cpu", weights_only=True))
    return net.eval()


def _paired(gsa_pred: dict, none_pred: dict, n_boot: int, seed: int) -> dict:
    """GSA - none of AUC, AUPR and accuracy with a bootstrap CI over the test images (same resamples)."""
    from medfuse.evaluation.bootstrap import paired_difference

    return paired_difference(gsa_pred, none_pred, n_boot=n_boot, seed=seed)


def _mask_items(manifest: Path, lung_masks_from: Path | None) -> list[dict]:
    """Test items with a lung ``mask`` (absolute paths): their own, or matched by file name in another manifest."""
    from medfuse.data.manifest import read_manifest

    def _abs(m_path: Path, p: str) -> str:
        return str(p) if os.path.isabs(p) else str((m_path.parent / p).resolve())

    m = read_manifest(manifest, validate=False)
    test = [dict(it, image=_abs(manifest, it["image"])) for it in m.get("test", [])]
    if lung_masks_from is None:
        return [dict(it, mask=_abs(manifest, it["mask"])) for it in test if it.get("mask")]
    other = read_manifest(lung_masks_from, validate=False)
    by_name = {}
    for split in ("training", "validation", "test"):
        for it in other.get(split, []):
            if it.get("mask"):
                by_name[Path(it["image"]).name] = _abs(lung_masks_from, it["mask"])
    return [dict(it, mask=by_name[Path(it["image"]).name]) for it in test if Path(it["image"]).name in by_name]


def _mean_lung_mask(items: list[dict], image_size: int) -> np.ndarray | None:
    from medfuse.workflows.segmentation import multi_output_transforms

    if not items:
        return None
    tf = multi_output_transforms(image_size=int(image_size), train=False)
    total = np.zeros((image_size, image_size), np.float64)
    for it in items:
        d = tf({"image": it["image"], "mask": it["mask"]})
        total += np.asarray(d["mask"], dtype=np.float64).reshape(-1, image_size, image_size)[-1]
    return total / len(items)


def _map_check(net: Any, lung: np.ndarray | None, n_masks: int) -> dict | None:
    if lung is None or getattr(net, "gsa", None) is None:
        return None
    import torch

    with torch.no_grad():
        m = net.get_map(list(lung.shape)).float().numpy()[0, 0].astype(np.float64)
    w = m - m.min()
    area = float(lung.mean())
    inside = float((w * lung).sum() / w.sum()) if w.sum() > 0 else None
    return {
        "n_masks": int(n_masks),
        "share_inside_lungs": inside,
        "lung_area_share": area,
        "ratio": None if inside is None or area == 0 else inside / area,
    }


def run(args: argparse.Namespace, progress=None) -> dict:
    """Train and evaluate both arms per seed; ``progress(result)`` is called after every run."""
    import torch

    from medfuse.evaluation import read_predictions
    from medfuse.workflows import run_bundle

    torch.set_num_threads(int(args.num_threads))
    manifest = Path(args.manifest).resolve()
    out_dir = Path(args.output_dir).resolve()
    common = {
        "manifest": str(manifest),
        "output_dir": str(out_dir),
        "classifier": args.classifier,
        "image_size": int(args.image_size),
        "epochs": int(args.epochs),
        "early_stop_patience": int(args.epochs),  # >= epochs: never stops early, no selection
        "batch_size": int(args.batch_size),
        "num_workers": int(args.num_workers),
        "num_threads": int(args.num_threads),
        "progress": False,
        "calibrate": False,  # the reported weights are the final epoch's: evaluated uncalibrated (arg-max)
    }
    if args.learning_rate is not None:
        common["learning_rate"] = float(args.learning_rate)
    for kv in args.set or []:
        key, sep, value = kv.partition("=")
        if not sep or not key:
            raise SystemExit(f"--set takes KEY=VALUE (e.g. gsa_reg_weight=0.2), got {kv!r}")
        try:
            common[key] = json.loads(value)  # numbers, true / false, lists
        except json.JSONDecodeError:
            common[key] = value
    mask_items = _mask_items(manifest, Path(args.lung_masks_from).resolve() if args.lung_masks_from else None)
    lung = _mean_lung_mask(mask_items, int(args.image_size))
    runs, preds, paired, checks = [], {}, [], []
    for seed in args.seeds:
        for arm in ARMS:
            name = f"{args.run_prefix}{arm}_s{seed}"
            t0 = time.perf_counter()
            run_dir = out_dir / name
            reused = (run_dir / f"last_model_epoch={int(args.epochs)}.pt").is_file()
            if reused:  # trained to the end by an earlier invocation (same settings): evaluate only
                trained = {"run_dir": str(run_dir), "epochs_run": int(args.epochs)}
            else:
                trained = run_bundle(BUNDLE, "train", logging=False, run_name=name, seed=seed, gsa=arm == "gsa", **common)
            t1 = time.perf_counter()
            run_dir = Path(trained["run_dir"])
            ckpt = _last_checkpoint(run_dir)
            eval_dir = run_dir / "eval_last"
            report = run_bundle(
                BUNDLE, "evaluate", logging=False, manifest=str(manifest), output_dir=str(out_dir), run_name=name,
                ckpt_path=str(ckpt), calibration_file=None, eval_dir=str(eval_dir), eval_split="test", gallery_size=0,
                n_boot=int(args.n_boot), seed=seed, num_workers=int(args.num_workers), num_threads=int(args.num_threads),
            )
            t2 = time.perf_counter()
            net = _network_from_run(run_dir, ckpt)
            map_mean = None
            if getattr(net, "gsa", None) is not None:
                with torch.no_grad():
                    map_mean = float(net.get_map().mean())
            metrics = report["metrics"]
            row = {
                "seed": seed, "arm": arm, "run_dir": str(run_dir), "checkpoint": str(ckpt),
                "epochs_run": trained["epochs_run"], "n_test": metrics["n"],
                **{k: metrics.get(k) for k in METRICS}, "map_mean": map_mean,
                "train_s": None if reused else round(t1 - t0, 1), "eval_s": round(t2 - t1, 1),
                "wall_s": None if reused else round(t2 - t0, 1), "reused_earlier_training": reused,
            }
            if arm == "gsa":
                check = _map_check(net, lung, len(mask_items))
                if check is not None:
                    checks.append({"seed": seed, **check})
                    row["map_share_inside_lungs"] = check["share_inside_lungs"]
            runs.append(row)
            preds[(seed, arm)] = read_predictions(Path(report["eval_dir"]) / "predictions.csv")
            print(f"seed {seed} {arm:4s}: AUC {row['auc']:.4f}  AUPR {row['aupr']:.4f}  acc {row['accuracy']:.4f}  "
                  f"map_mean {'-' if map_mean is None else f'{map_mean:.3f}'}  {row['wall_s']} s", flush=True)
            if arm == ARMS[-1]:
                paired.append({"seed": seed, **_paired(preds[(seed, "gsa")], preds[(seed, "none")], int(args.n_boot), seed)})
            if progress is not None:  # the JSON is rewritten after every run: a long measurement can be read as it goes
                progress(_result(args, common, runs, paired, checks))
    return _result(args, common, runs, paired, checks)


def _result(args: argparse.Namespace, common: dict, runs: list, paired: list, checks: list) -> dict:
    import torch

    summary = {
        arm: {k: _mean_sd([r[k] for r in runs if r["arm"] == arm]) for k in (*METRICS, "map_mean", "wall_s")}
        for arm in ARMS
    }
    summary["paired_diff"] = {k: _mean_sd([p[k]["diff"] for p in paired]) for k in METRICS}
    return {
        "benchmark": "gsa_ablation",
        "bundle": BUNDLE,
        "manifest": common["manifest"],
        "settings": {**{k: v for k, v in common.items() if k not in ("manifest", "output_dir")}, "seeds": args.seeds,
                     "evaluated": "final-epoch weights (last_model_epoch=E.pt), test split, uncalibrated arg-max",
                     "n_boot": int(args.n_boot), "lung_masks_from": args.lung_masks_from},
        "machine": {"platform": platform.platform(), "processor": platform.processor() or platform.machine(),
                    "python": platform.python_version(), "torch": torch.__version__, "threads": int(args.num_threads),
                    "cpu_count": os.cpu_count()},
        "time": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "complete": len(runs) == len(args.seeds) * len(ARMS),
        "runs": runs,
        "summary": summary,
        "paired": paired,
        "map_check": checks or None,
    }


def _fmt(x: Any, digits: int = 4) -> str:
    return "-" if x is None else f"{x:.{digits}f}"


def print_table(result: dict) -> None:
    print("| seed | arm | AUC | AUPR | accuracy | map_mean | wall (s) |")
    print("|---:|---|---:|---:|---:|---:|---:|")
    for r in result["runs"]:
        print(f"| {r['seed']} | {r['arm']} | {_fmt(r['auc'])} | {_fmt(r['aupr'])} | {_fmt(r['accuracy'])} | "
              f"{_fmt(r['map_mean'], 3)} | {_fmt(r['wall_s'], 0)} |")
    for arm in ARMS:
        s = result["summary"][arm]
        print(f"| mean +- SD | {arm} | " + " | ".join(
            f"{_fmt(s[k]['mean'])} +- {_fmt(s[k]['sd'])}" for k in METRICS) + f" | {_fmt(s['map_mean']['mean'], 3)} | |")
    print()
    print("| seed | dAUC (GSA - none) [95 % CI] | dAUPR [95 % CI] | daccuracy [95 % CI] |")
    print("|---:|---|---|---|")
    for p in result["paired"]:
        print(f"| {p['seed']} | " + " | ".join(
            f"{_fmt(p[k]['diff'])} [{_fmt(p[k]['low'])}, {_fmt(p[k]['high'])}]" for k in METRICS) + " |")
    if result["map_check"]:
        print()
        print("| seed | share of M - min(M) inside the mean lung mask | lung-area share (uniform map) |")
        print("|---:|---:|---:|")
        for c in result["map_check"]:
            print(f"| {c['seed']} | {_fmt(c['share_inside_lungs'], 3)} | {_fmt(c['lung_area_share'], 3)} |")


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--manifest", required=True, help="medfuse manifest with training / validation / test splits")
    ap.add_argument("--classifier", default="resnet18", help="the bundle's classifier (resnet18, densenet121 ...)")
    ap.add_argument("--image-size", type=int, default=224)
    ap.add_argument("--epochs", type=int, default=20)
    ap.add_argument("--seeds", type=_seeds, default=[0, 1, 2], help="comma-separated, e.g. 0,1,2")
    ap.add_argument("--out", required=True, help="JSON file written, e.g. docs/benchmarks/gsa_<data>.json")
    ap.add_argument("--num-threads", type=int, default=1)
    ap.add_argument("--num-workers", type=int, default=0)
    ap.add_argument("--batch-size", type=int, default=16)
    ap.add_argument("--learning-rate", type=float, default=None, help="default: the bundle's")
    ap.add_argument("--lung-masks-from", default=None,
                    help="manifest whose items carry lung masks, matched to the test images by file name")
    ap.add_argument("--n-boot", type=int, default=1000)
    ap.add_argument("--output-dir", default="runs/gsa_ablation", help="where the run folders go")
    ap.add_argument("--run-prefix", default="", help="prefix of the run names (<prefix><arm>_s<seed>)")
    ap.add_argument("--set", action="append", metavar="KEY=VALUE",
                    help="another bundle key for both arms, e.g. --set gsa_reg_weight=0.2 (repeatable)")
    args = ap.parse_args(argv)
    if args.epochs < 1:
        ap.error("--epochs must be >= 1")
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)

    def write(result: dict) -> None:
        out.write_text(json.dumps(result, indent=2) + "\n", encoding="utf-8")

    result = run(args, progress=write)
    write(result)
    print_table(result)
    print(f"\nwritten to {out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
