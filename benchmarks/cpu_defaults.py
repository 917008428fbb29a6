# Copyright (c) medfuse contributors
# Licensed under the Apache License, Version 2.0
"""Epoch time of the classification bundle with main's worker/thread settings against the new defaults, in one run.

Before (main): ``num_workers`` 4 and ``num_threads`` 0 (every core to torch) whatever the machine; after: the
base config's defaults, ``default_workers()`` = min(4, cores - 1) and ``default_threads(workers)``. Each setting
trains one epoch of ``bundles/cxr_dual_cross_attention`` (a small network, real Kermany JPEGs) in its own process;
the two alternate ``--rounds`` times and the medians of the logged epoch times (``log.csv`` ``time_s``, validation
included) are compared. The load average before and after is recorded: other jobs share the machine.

Usage::

    .venv/bin/python benchmarks/cpu_defaults.py --data ../shared/data/kermany_cxr_224 --out docs/benchmarks/cpu_defaults.json
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
from medfuse.utils.paths import checkout_env  # noqa: E402
SETTINGS = {"main (4 workers, all-core threads)": {"num_workers": 4, "num_threads": 0}, "new defaults": {}}


def _manifest(data: Path, work: Path) -> Path:
    out = work / "manifest.json"
    subprocess.run([sys.executable, "-m", "medfuse", "folder2manifest", str(data), "--out", str(out), "--no-progress",
                    "--val-fraction", "0.1"], check=True, capture_output=True, cwd=REPO)
    return out


def _train(manifest: Path, out_dir: Path, args, extra: dict) -> tuple[float, int, int]:
    from medfuse.workflows.bundle import layered_config_arg

    overrides = {"manifest": manifest, "output_dir": out_dir, "run_name": "run", "epochs": 1, "image_size": args.size,
                 "batch_size": args.batch, "max_items": args.items, "backbones": "['efficientnet-b0','resnet18']",
                 "hidden_size": 64, "num_heads": 4, "calibrate": False, "progress": False, **extra}
    cmd = [sys.executable, "-m", "monai.bundle", "run", "--config_file", layered_config_arg("cxr_dual_cross_attention", "train")]
    for k, v in overrides.items():
        cmd += [f"--{k}", str(v)]
    subprocess.run(cmd, check=True, capture_output=True, cwd=REPO, env=checkout_env())
    with open(out_dir / "run" / "log.csv") as f:
        row = list(csv.DictReader(f))[-1]
    cfg = json.loads((out_dir / "run" / "run_info.json").read_text())
    config = json.loads((out_dir / "run" / "config.json").read_text())
    return float(row["time_s"]), cfg.get("num_threads"), config.get("num_workers")


def main(argv=None) -> dict:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--data", default=str(REPO.parent / "shared" / "data" / "kermany_cxr_224"))
    p.add_argument("--items", type=int, default=96, help="max_items per split")
    p.add_argument("--size", type=int, default=128)
    p.add_argument("--batch", type=int, default=16)
    p.add_argument("--rounds", type=int, default=2)
    p.add_argument("--out", default="")
    args = p.parse_args(argv)
    from medfuse.workflows.engine import available_cores, default_threads, default_workers

    load_before = os.getloadavg()
    times: dict[str, list[float]] = {k: [] for k in SETTINGS}
    used: dict[str, dict] = {}
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        manifest = _manifest(Path(args.data), work)
        for r in range(args.rounds):
            for name, extra in SETTINGS.items():
                t, threads, workers = _train(manifest, work / f"{r}-{len(times[name])}-{name[:4]}", args, extra)
                times[name].append(t)
                used[name] = {"num_threads": threads, "num_workers": workers if extra else default_workers()}
                print(f"round {r + 1} {name}: {t:.1f} s", flush=True)
    load_after = os.getloadavg()
    med = {k: statistics.median(v) for k, v in times.items()}
    before, after = med["main (4 workers, all-core threads)"], med["new defaults"]
    result = {
        "what": "one epoch (train + validation) of cxr_dual_cross_attention, B0+R18 hidden 64, "
                f"{args.size} px, batch {args.batch}, max_items {args.items}, Kermany JPEG",
        "machine": f"{platform.node()} {platform.processor() or platform.machine()}, {available_cores()} cores",
        "load_average_before": [round(x, 2) for x in load_before],
        "load_average_after": [round(x, 2) for x in load_after],
        "defaults": {"num_workers": default_workers(), "num_threads": default_threads(default_workers())},
        "settings": used,
        "epoch_s": times,
        "median_epoch_s": med,
        "speedup_new_over_main": round(before / after, 2),
        "command": "python " + " ".join(sys.argv),
    }
    print(json.dumps(result, indent=2))
    if args.out:
        from medfuse.utils.io import atomic_write_json

        atomic_write_json(args.out, result, indent=2)
    return result


if __name__ == "__main__":
    main()
