# Copyright (c) medfuse contributors
# Licensed under the Apache License, Version 2.0
"""Cost of test-time augmentation: the inferer of evaluate/inference with ``tta`` off and on, in one run.

Usage::

    .venv/bin/python benchmarks/bench_tta.py --threads 1 --tta 4 --out docs/benchmarks/tta_cpu.json

Times :class:`medfuse.workflows.MCDropoutInferer` (seeded per item, as the bundles run it) on a random batch
through a small DualCrossAttentionNet, for ``mc_samples`` 0 and ``--mc`` with ``tta`` 0 and ``--tta``; the
median of ``--repeats`` timed batches after one warm-up is reported with its ratio to ``tta`` 0, and the time
spent building the views alone (:func:`medfuse.workflows.inferers.tta_views`). Markdown to stdout, JSON with
``--out``.
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import time
from pathlib import Path

import torch

from medfuse.networks.nets import DualCrossAttentionNet
from medfuse.workflows import MCDropoutInferer
from medfuse.workflows.inferers import tta_views


def _median_seconds(fn, repeats: int) -> float:
    fn()  # warm-up
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--batch", type=int, default=16)
    parser.add_argument("--image_size", type=int, default=64)
    parser.add_argument("--tta", type=int, default=4)
    parser.add_argument("--mc", type=int, default=20)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--out", default="")
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    net = DualCrossAttentionNet(in_channels=1, num_classes=2, backbones=("efficientnet-b0", "resnet18"),
                                hidden_size=64, num_heads=4).eval()
    x = torch.rand(args.batch, 1, args.image_size, args.image_size)
    rows = []
    for samples in (0, args.mc):
        base = None
        for tta in (0, args.tta):
            inferer = MCDropoutInferer(samples, seed=0, tta=tta)
            with torch.no_grad():
                sec = _median_seconds(lambda: inferer(x, net), args.repeats)
            base = sec if tta == 0 else base
            rows.append({"mc_samples": samples, "tta": tta, "s_per_batch": round(sec, 4),
                         "img_per_s": round(args.batch / sec, 1), "ratio": round(sec / base, 2)})
    views_sec = _median_seconds(lambda: tta_views(x, args.tta, seed=0), args.repeats)
    result = {"machine": f"{platform.machine()} {platform.processor() or ''}".strip(), "python": platform.python_version(),
              "torch": torch.__version__, "threads": args.threads, "batch": args.batch, "image_size": args.image_size,
              "network": "DualCrossAttentionNet efficientnet-b0+resnet18, hidden 64", "rows": rows,
              "tta_views_s_per_batch": round(views_sec, 4)}
    print("| mc_samples | tta | s / batch | img/s | x tta 0 |\n|---|---|---|---|---|")
    for r in rows:
        print(f"| {r['mc_samples']} | {r['tta']} | {r['s_per_batch']} | {r['img_per_s']} | {r['ratio']} |")
    print(f"building the {args.tta} views alone: {views_sec:.4f} s per batch of {args.batch}")
    if args.out:
        Path(args.out).parent.mkdir(parents=True, exist_ok=True)
        Path(args.out).write_text(json.dumps(result, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
