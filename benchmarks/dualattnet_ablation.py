# Copyright (c) medfuse contributors
# Licensed under the Apache License, Version 2.0
"""DualAttNet ablation: attention heads on vs off (plain RetinaNet) on the synthetic detection demo.

Usage (the measurement; CPU works, a GPU is faster)::

    .venv/bin/python benchmarks/dualattnet_ablation.py --n-images 400 --image-size 128 --backbone resnet18 \\
        --seeds 0,1,2 --epochs 30 --out docs/benchmarks/dualattnet_ablation.json

Smoke test (seconds; not a measurement)::

    .venv/bin/python benchmarks/dualattnet_ablation.py --n-images 16 --image-size 64 --seeds 0 --epochs 1 \\
        --out /tmp/ablation.json

For every seed and arm the bundle ``cxr_dualattnet_detection`` is trained (``attention`` true / false, same seed,
data and settings otherwise) and evaluated on the test split. Per run: mAP (IoU 0.50:0.95), AP50, AP40, FROC
mean sensitivity (IoU 0.4), image-level AUC from the attention heads (attention arm) and from the highest box score
of each class (both arms), wall time of training + evaluation. The summary gives mean +- SD over seeds per arm and
the paired difference (attention - baseline). Results: stdout (Markdown) and ``--out`` (JSON).
"""

from __future__ import annotations

import argparse
import csv
import json
import platform
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np

METRICS = ("map", "ap50", "ap40", "froc_mean_sensitivity", "image_auc_heads", "image_auc_max_box", "wall_s")


def max_box_auc(eval_dir: Path, classes: list[str]) -> float | None:
    """Macro AUC of the highest box score per class (0 without a box) against the image labels."""
    from medfuse.workflows.detection import image_auc

    with open(eval_dir / "predictions.csv") as f:
        rows = list(csv.DictReader(f))
    index = {r["image"]: i for i, r in enumerate(rows)}
    labels = np.array([[int(r[f"label_{c}"]) for c in classes] for r in rows], dtype=float)
    scores = np.zeros_like(labels)
    with open(eval_dir / "boxes.csv") as f:
        for b in csv.DictReader(f):
            i, k = index[b["image"]], classes.index(b["class"])
            scores[i, k] = max(scores[i, k], float(b["score"]))
    return image_auc(labels, scores)


def run_one(manifest: Path, out: Path, seed: int, attention: bool, args) -> dict:
    from medfuse.workflows import run_bundle

    common = dict(manifest=str(manifest), output_dir=str(out), run_name=f"{'att' if attention else 'plain'}_s{seed}",
                  image_size=args.image_size, backbone=args.backbone, fpn_channels=args.fpn_channels,
                  base_anchor_shapes=json.loads(args.anchors), batch_size=args.batch_size, num_workers=0,
                  num_threads=args.threads, progress=False, seed=seed, amp=args.device != "cpu")
    t0 = time.perf_counter()
    run_bundle("cxr_dualattnet_detection", "train", logging=False, attention=attention, epochs=args.epochs,
               learning_rate=args.lr, **common)
    ev = run_bundle("cxr_dualattnet_detection", "evaluate", logging=False, n_boot=0, **common)
    wall = time.perf_counter() - t0
    det = ev["metrics"]["detection"]
    classes = list(det["per_class"])
    return {
        "seed": seed, "attention": attention, "map": det["map"], "ap50": det["ap50"], "ap40": det["ap_iou"].get("0.40"),
        "froc_mean_sensitivity": (det.get("froc") or {}).get("mean_sensitivity"),
        "image_auc_heads": det.get("image_auc") if attention else None,
        "image_auc_max_box": max_box_auc(Path(ev["eval_dir"]), classes), "wall_s": round(wall, 2),
    }


def _ms(values: list) -> dict:
    v = [float(x) for x in values if x is not None]
    if not v:
        return {"mean": None, "sd": None, "n": 0}
    return {"mean": statistics.fmean(v), "sd": statistics.stdev(v) if len(v) > 1 else 0.0, "n": len(v)}


def summarise(runs: list[dict]) -> dict:
    out: dict = {}
    for arm, flag in (("attention", True), ("baseline", False)):
        out[arm] = {m: _ms([r[m] for r in runs if r["attention"] is flag]) for m in METRICS}
    diffs = {}
    for m in METRICS[:4] + ("image_auc_max_box",):
        pairs = [(a[m], b[m]) for a in runs if a["attention"] for b in runs
                 if not b["attention"] and b["seed"] == a["seed"] and a[m] is not None and b[m] is not None]
        diffs[m] = _ms([a - b for a, b in pairs])
    out["attention_minus_baseline"] = diffs
    return out


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--n-images", type=int, default=400)
    p.add_argument("--image-size", type=int, default=128)
    p.add_argument("--backbone", default="resnet18")
    p.add_argument("--fpn-channels", type=int, default=64)
    p.add_argument("--anchors", default="[[6, 6], [10, 10], [16, 16]]", help="base_anchor_shapes as JSON")
    p.add_argument("--seeds", default="0,1,2")
    p.add_argument("--epochs", type=int, default=30)
    p.add_argument("--batch-size", type=int, default=8)
    p.add_argument("--lr", type=float, default=0.001)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--device", default="cpu", help="informational; the bundle picks cuda:0 when available")
    p.add_argument("--work-dir", default="", help="keep runs here (default: a temporary folder)")
    p.add_argument("--out", default="docs/benchmarks/dualattnet_ablation.json")
    args = p.parse_args(argv)

    import torch

    from medfuse.data.demo.detection import make_demo_detection

    seeds = [int(s) for s in args.seeds.split(",") if s.strip()]
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(args.work_dir or tmp)
        manifest = make_demo_detection(work / "data", n=args.n_images, seed=0, image_size=args.image_size)
        runs = []
        for seed in seeds:
            for attention in (True, False):
                r = run_one(manifest, work / "runs", seed, attention, args)
                runs.append(r)
                print(json.dumps(r))
    summary = summarise(runs)
    result = {
        "what": "DualAttNet attention heads on vs off (plain RetinaNet), synthetic detection demo, test split",
        "settings": {k: v for k, v in vars(args).items() if k not in ("out", "work_dir")},
        "environment": {"python": platform.python_version(), "torch": torch.__version__,
                        "cuda": torch.cuda.is_available(), "machine": platform.machine()},
        "runs": runs,
        "summary": summary,
    }
    print("| arm | mAP | AP50 | AP40 | FROC | AUC heads | AUC max box | wall s |\n|---|---|---|---|---|---|---|---|")
    for arm in ("attention", "baseline"):
        cells = []
        for m in METRICS:
            s = summary[arm][m]
            cells.append("n/a" if s["mean"] is None else f"{s['mean']:.4f} +- {s['sd']:.4f}")
        print(f"| {arm} | " + " | ".join(cells) + " |")
    if args.out:
        Path(args.out).parent.mkdir(parents=True, exist_ok=True)
        Path(args.out).write_text(json.dumps(result, indent=2) + "\n")
        print("written", args.out)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
