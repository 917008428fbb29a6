# Copyright (c) medfuse contributors
# Licensed under the Apache License, Version 2.0
"""Throughput and memory of DualCrossAttentionNet: training steps and inference, images/s.

Usage::

    .venv/bin/python benchmarks/bench_dcat_cpu.py --threads 2 --out docs/benchmarks/dcat_cpu.json
    .venv/bin/python benchmarks/bench_dcat_cpu.py --device cuda --bf16 --configs default --batch 64

Each configuration is timed after warm-up steps; the median of ``--repeats`` timed steps is
reported, with the process's peak resident memory (CPU) or peak allocated memory (CUDA).
Results go to stdout as a Markdown table and, with ``--out``, to a JSON file.
"""

from __future__ import annotations

import argparse
import json
import platform
import resource
import statistics
import time
from pathlib import Path

import torch

from medfuse.networks.nets import DualCrossAttentionNet

CONFIGS = {
    "small64": dict(backbones=("efficientnet-b0", "resnet18"), hidden_size=64, num_heads=4, image_size=64),
    "small128": dict(backbones=("efficientnet-b0", "resnet18"), hidden_size=64, num_heads=4, image_size=128),
    "default": dict(backbones=("efficientnet-b4", "resnet34"), hidden_size=256, num_heads=8, image_size=224),
}


def _sync(device):
    if device.type == "cuda":
        torch.cuda.synchronize()


def bench(name, cfg, batch, repeats, warmup, device, bf16):
    size = cfg["image_size"]
    net = DualCrossAttentionNet(
        in_channels=1, num_classes=2, backbones=cfg["backbones"], hidden_size=cfg["hidden_size"], num_heads=cfg["num_heads"]
    ).to(device)
    params = sum(p.numel() for p in net.parameters())
    opt = torch.optim.AdamW(net.parameters(), lr=1e-4)
    x = torch.rand(batch, 1, size, size, device=device)
    y = torch.randint(0, 2, (batch,), device=device)
    autocast = torch.autocast(device.type, dtype=torch.bfloat16, enabled=bf16)
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats()

    def train_step():
        opt.zero_grad(set_to_none=True)
        with autocast:
            loss = torch.nn.functional.cross_entropy(net(x), y)
        loss.backward()
        opt.step()

    def infer_step():
        with torch.inference_mode(), autocast:
            net(x)

    def mc_step():
        with autocast:
            net.predict_with_uncertainty(x, samples=20)

    out = {"config": name, "image_size": size, "batch": batch, "params": params, "backbones": list(cfg["backbones"])}
    for label, fn, train in (("train", train_step, True), ("infer", infer_step, False), ("mc20", mc_step, False)):
        net.train(train)
        for _ in range(warmup):
            fn()
        times = []
        for _ in range(repeats):
            _sync(device)
            t0 = time.perf_counter()
            fn()
            _sync(device)
            times.append(time.perf_counter() - t0)
        out[f"{label}_img_per_s"] = round(batch / statistics.median(times), 1)
    if device.type == "cuda":
        out["peak_mem_mib"] = round(torch.cuda.max_memory_allocated() / 2**20)
    else:
        out["peak_rss_mib"] = round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024)
    return out


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--configs", default="small64,small128,default", help=f"comma list from {list(CONFIGS)}")
    p.add_argument("--batch", type=int, default=16)
    p.add_argument("--repeats", type=int, default=5)
    p.add_argument("--warmup", type=int, default=2)
    p.add_argument("--threads", type=int, default=0, help="torch threads (0: leave torch's default)")
    p.add_argument("--device", default="cpu")
    p.add_argument("--bf16", action="store_true", help="bf16 autocast")
    p.add_argument("--out", default=None, help="write the results as JSON here")
    args = p.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    machine = {
        "cpu": platform.processor() or platform.machine(),
        "torch_threads": torch.get_num_threads(),
        "torch": torch.__version__,
        "device": torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu",
        "bf16": args.bf16,
    }
    rows = [bench(n, CONFIGS[n], args.batch, args.repeats, args.warmup, device, args.bf16) for n in args.configs.split(",")]
    print(f"machine: {machine}")
    print("| config | backbones | px | batch | params | train img/s | infer img/s | MC-20 img/s | peak MiB |")
    print("|---|---|---|---|---|---|---|---|---|")
    for r in rows:
        mem = r.get("peak_rss_mib", r.get("peak_mem_mib"))
        print(f"| {r['config']} | {'+'.join(r['backbones'])} | {r['image_size']} | {r['batch']} | {r['params']/1e6:.1f}M "
              f"| {r['train_img_per_s']} | {r['infer_img_per_s']} | {r['mc20_img_per_s']} | {mem} |")
    if args.out:
        Path(args.out).parent.mkdir(parents=True, exist_ok=True)
        Path(args.out).write_text(json.dumps({"machine": machine, "results": rows}, indent=4) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
