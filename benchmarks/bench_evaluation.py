# Copyright (c) medfuse contributors
# Licensed under the Apache License, Version 2.0
"""Speed of the evaluation layer: the stratified bootstrap and a full report, on synthetic predictions.

Usage::

    .venv/bin/python benchmarks/bench_evaluation.py
    .venv/bin/python benchmarks/bench_evaluation.py --cases 1000 10000 --boot 1000 --classes 2 4

For each size it times (median of ``--repeats``) :func:`medfuse.evaluation.bootstrap_metrics`
(AUC and AUPR per class and macro, accuracy; ``--boot`` resamples) and one
:func:`medfuse.evaluation.evaluate_predictions` call writing the whole report folder (metrics,
per-case table, figures, HTML; the same number of resamples). Prints a Markdown table.
"""

from __future__ import annotations

import argparse
import csv
import platform
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np

from medfuse.evaluation import bootstrap_metrics, evaluate_predictions


def _data(n: int, c: int, seed: int = 0):
    rng = np.random.default_rng(seed)
    y = rng.integers(0, c, n)
    z = rng.normal(0, 1, (n, c))
    z[np.arange(n), y] += 1.5
    p = np.exp(z) / np.exp(z).sum(1, keepdims=True)
    return y, p


def _csv(path: Path, y, p):
    with open(path, "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["image", "label"] + [f"prob_c{k}" for k in range(p.shape[1])] + ["site"])
        for i in range(len(y)):
            w.writerow([f"img{i}.png", f"c{y[i]}"] + [f"{v:.6f}" for v in p[i]] + [f"s{i % 3}"])


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--cases", type=int, nargs="+", default=[1000, 10000])
    ap.add_argument("--classes", type=int, nargs="+", default=[2, 4])
    ap.add_argument("--boot", type=int, default=1000)
    ap.add_argument("--repeats", type=int, default=3)
    args = ap.parse_args(argv)
    print(f"machine: {platform.processor() or platform.machine()}, python {platform.python_version()}")
    print(f"| cases | classes | bootstrap x{args.boot} (s) | full report (s) |")
    print("|---:|---:|---:|---:|")
    for n in args.cases:
        for c in args.classes:
            y, p = _data(n, c)
            times = []
            for _ in range(args.repeats):
                t = time.perf_counter()
                bootstrap_metrics(y, p, [f"c{k}" for k in range(c)], n_boot=args.boot, seed=0)
                times.append(time.perf_counter() - t)
            with tempfile.TemporaryDirectory() as tmp:
                _csv(Path(tmp) / "p.csv", y, p)
                t = time.perf_counter()
                evaluate_predictions(Path(tmp) / "p.csv", Path(tmp) / "report", verbose=False, n_boot=args.boot)
                report = time.perf_counter() - t
            print(f"| {n} | {c} | {statistics.median(times):.2f} | {report:.1f} |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
