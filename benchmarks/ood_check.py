# Copyright (c) medfuse contributors
# Licensed under the Apache License, Version 2.0
"""How often a classifier run's OOD score flags each set of images: its own test split vs. foreign images.

Usage::

    .venv/bin/python benchmarks/ood_check.py RUN \\
        --set chest_test=runs/real/pmnist/manifest.json:test \\
        --set oct_kermany=../shared/data/oct_kermany_samples \\
        --set demo_oct=runs/demo/data/oct_manifest.json:test \\
        --out docs/benchmarks/ood_pneumoniamnist.json

``RUN`` is a training run folder (``config.json``, ``model.pt``); its ``ood.json`` is used, or fitted first (as
``medfuse ood-fit RUN`` does) when absent. Each ``--set NAME=SOURCE`` is a folder of images (searched
recursively) or ``MANIFEST.json[:split]`` (default split ``test``). Every image goes through the run's own
evaluation transforms (``validate#preprocessing`` of its ``config.json``); the score and the threshold are those of
:mod:`medfuse.evaluation.ood`. Prints and writes JSON: per set the number of images, how many are flagged, the
fraction, and score quantiles.

The threshold comes from the run's validation split: measure the in-distribution rate on the test split (never
the split the threshold came from).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import time
from pathlib import Path

import numpy as np


def _items(source: str) -> list[dict]:
    from medfuse.data.manifest import load_split
    from medfuse.workflows.data import folder_items

    path, _, split = source.partition(".json:") if ".json:" in source else (source, "", "")
    if path.endswith(".json") or split:
        manifest = path if path.endswith(".json") else path + ".json"
        items = load_split(manifest, split or "test")
        return [{"image": it["image"], "image_path": it["image"]} for it in items]
    return folder_items(source)


def measure(run_dir: str | os.PathLike, sets: dict[str, str], device: str = "cpu", batch_size: int = 32) -> dict:
    """Flag rates of each set under the run's OOD model (fitted first when the run has none)."""
    import torch
    from monai.bundle import ConfigParser

    from medfuse.evaluation.ood import OOD_FILE, load_ood, ood_flags, ood_scores
    from medfuse.workflows.ood import eval_loader, collect_features, fit_ood_for_run, load_weights

    run_dir = Path(run_dir)
    if not (run_dir / OOD_FILE).is_file():
        print(f"{run_dir}: no {OOD_FILE}, fitting it first", file=sys.stderr)
        fit_ood_for_run(run_dir, device=device, batch_size=batch_size)
    model = load_ood(run_dir / OOD_FILE)
    parser = ConfigParser()
    parser.read_config(str(run_dir / "config.json"))
    parser["device"] = f"$torch.device({device!r})"
    net = load_weights(parser.get_parsed_content("network_def", instantiate=True).to(device), run_dir / "model.pt", device)
    transform = parser.get_parsed_content("validate#preprocessing", instantiate=True)
    out: dict = {"run_dir": str(run_dir.resolve()), "threshold": model["threshold"], "percentile": model["percentile"],
                 "n_train": model["n_train"], "n_validation": model["n_validation"], "sets": {}}
    for name, source in sets.items():
        t0 = time.time()
        items = _items(source)
        with torch.no_grad():
            feats, _, _ = collect_features(net, eval_loader(items, transform, batch_size, 0), device)
        scores = ood_scores(feats, model)
        flags = ood_flags(scores, model)
        out["sets"][name] = {
            "source": source, "n": int(len(scores)), "flagged": int(flags.sum()),
            "fraction_flagged": float(flags.mean()) if len(flags) else None,
            "score_quantiles": {q: float(np.quantile(scores, float(q))) for q in ("0.05", "0.5", "0.95")} if len(scores) else {},
            "seconds": round(time.time() - t0, 2),
        }
    out["env"] = {"python": platform.python_version(), "torch": torch.__version__, "device": device,
                  "threads": torch.get_num_threads(), "command": " ".join(sys.argv)}
    return out


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("run_dir", help="training run folder (config.json, model.pt, ood.json)")
    p.add_argument("--set", action="append", default=[], metavar="NAME=SOURCE", required=True,
                   help="an image folder or MANIFEST.json[:split] (repeat)")
    p.add_argument("--device", default="cpu")
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--out", help="write the JSON here too")
    args = p.parse_args(argv)
    sets = {}
    for s in args.set:
        name, sep, source = s.partition("=")
        if not sep or not name or not source:
            p.error(f"--set {s!r}: write NAME=FOLDER or NAME=MANIFEST.json[:split]")
        sets[name] = source
    result = measure(args.run_dir, sets, args.device, args.batch_size)
    text = json.dumps(result, indent=2)
    print(text)
    if args.out:
        Path(args.out).parent.mkdir(parents=True, exist_ok=True)
        Path(args.out).write_text(text + "\n")
    for name, r in result["sets"].items():
        print(f"{name}: {r['flagged']}/{r['n']} flagged ({100 * (r['fraction_flagged'] or 0):.1f} %)", file=sys.stderr)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
