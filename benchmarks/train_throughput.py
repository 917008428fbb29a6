# Copyright (c) medfuse contributors
# Licensed under the Apache License, Version 2.0
"""Training / inference images/s of DualCrossAttentionNet against its two branches alone, and of the multi-output
U-Net against MONAI's BasicUNet, on one device in one process.

Usage (the issue 19 table)::

    python benchmarks/train_throughput.py --device cuda --sizes 224,380 --batch 64 \\
        --backbones efficientnet-b4,resnet34 --hidden-size 256 --bf16 --channels-last [--compile] \\
        --steps 30 --warmup 10 --out docs/benchmarks/train_throughput_cuda.json
    python benchmarks/train_throughput.py --device cpu --smoke        # CPU smoke, under 2 minutes (not in CI)

For each size: training images/s (batch / median synchronised step: forward, cross-entropy, backward, AdamW) of
(a) branch A alone and (b) branch B alone, each the truncated backbone exactly as inside the fusion model (taken
from a built ``DualCrossAttentionNet``: ``branch_a`` / ``branch_b``, cut at the coarsest tap) + average pool +
linear; (c) the fusion model; the ratio c / (1 / (1/a + 1/b)) to the time-additive bound (running a then b);
inference images/s of (c) plain and with ``--mc`` Monte-Carlo dropout passes (``predict_with_uncertainty``; the
backbones run once); peak memory (CUDA: ``max_memory_allocated``; CPU: the process's peak RSS). Then the
multi-output U-Net (``MultiOutputUNet``, segmentation + classification) against MONAI ``BasicUNet`` alone at
``--unet-sizes``. GPU name and torch / CUDA versions are recorded.
"""

from __future__ import annotations

import argparse
import platform
import resource
import statistics
import sys
import time
from pathlib import Path

import torch
import torch.nn as nn
import torch.nn.functional as F


class BranchClassifier(nn.Module):
    """One branch of a ``DualCrossAttentionNet`` as a classifier: its backbone (the same module object) up to the
    coarsest tap, then average pool + linear."""

    def __init__(self, backbone: nn.Module, tap_index: int, channels: int, num_classes: int) -> None:
        super().__init__()
        self.backbone = backbone
        self.tap_index = int(tap_index)
        self.head = nn.Linear(channels, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        f = self.backbone(x)[self.tap_index]
        return self.head(torch.flatten(F.adaptive_avg_pool2d(f, 1), 1))


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _peak_mb(device: torch.device) -> float:
    if device.type == "cuda":
        return torch.cuda.max_memory_allocated(device) / 2**20
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def _reset_peak(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats(device)


def _prepare(model: nn.Module, args, device: torch.device) -> nn.Module:
    model = model.to(device)
    if args.channels_last:
        model = model.to(memory_format=torch.channels_last)
    return model


def _batch(args, size: int, channels: int, device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
    x = torch.randn(args.batch, channels, size, size, device=device)
    if args.channels_last:
        x = x.contiguous(memory_format=torch.channels_last)
    return x, torch.randint(0, 2, (args.batch,), device=device)


def _loss(out, y: torch.Tensor) -> torch.Tensor:
    if isinstance(out, (tuple, list)):  # multi-output U-Net: (segmentation logits, class logits)
        seg, cls = out
        return seg.float().mean() + F.cross_entropy(cls.float(), y)
    if out.ndim > 2:  # BasicUNet: segmentation logits only
        return out.float().mean()
    return F.cross_entropy(out.float(), y)


def time_train(model: nn.Module, args, size: int, device: torch.device, channels: int = 1) -> dict:
    """Median synchronised training step of ``model`` on random data; images/s and peak memory."""
    model = _prepare(model, args, device).train()
    fused = True if device.type == "cuda" else None
    opt = torch.optim.AdamW(model.parameters(), lr=1e-4, fused=fused)
    step_model = torch.compile(model) if args.compile else model
    x, y = _batch(args, size, channels, device)
    amp = torch.autocast("cuda", dtype=torch.bfloat16, enabled=args.bf16 and device.type == "cuda")
    _reset_peak(device)
    times = []
    for i in range(args.warmup + args.steps):
        _sync(device)
        t0 = time.perf_counter()
        with amp:
            out = step_model(x)
        loss = _loss(out, y)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        _sync(device)
        if i >= args.warmup:
            times.append(time.perf_counter() - t0)
    med = statistics.median(times)
    return {"images_per_s": round(args.batch / med, 2), "median_step_s": round(med, 5), "peak_mb": round(_peak_mb(device), 1)}


@torch.no_grad()
def time_infer(net, args, size: int, device: torch.device, mc: int = 0) -> dict:
    """Median synchronised inference batch of the fusion model; ``mc`` > 0: ``predict_with_uncertainty``."""
    net = _prepare(net, args, device).eval()
    x, _ = _batch(args, size, 1, device)
    amp = torch.autocast("cuda", dtype=torch.bfloat16, enabled=args.bf16 and device.type == "cuda")
    _reset_peak(device)
    times = []
    for i in range(args.warmup + args.steps):
        _sync(device)
        t0 = time.perf_counter()
        with amp:
            if mc:
                net.predict_with_uncertainty(x, samples=mc)
            else:
                net(x)
        _sync(device)
        if i >= args.warmup:
            times.append(time.perf_counter() - t0)
    med = statistics.median(times)
    return {"images_per_s": round(args.batch / med, 2), "median_batch_s": round(med, 5), "peak_mb": round(_peak_mb(device), 1)}


def fusion_rows(args, device: torch.device) -> list[dict]:
    from medfuse.networks.nets import DualCrossAttentionNet

    rows = []
    for size in args.sizes:
        def build(flash: bool = True):
            torch.manual_seed(0)
            return DualCrossAttentionNet(backbones=args.backbones, hidden_size=args.hidden_size, num_heads=args.heads,
                                         num_classes=2, use_flash_attention=flash)

        ref = build()
        branch_a = BranchClassifier(ref.branch_a, ref.tap_index_a[-1], ref.feature_info[len(ref.taps) - 1]["num_chs"], 2)
        branch_b = BranchClassifier(ref.branch_b, ref.tap_index_b[-1], ref.feature_info[2 * len(ref.taps) - 1]["num_chs"], 2)
        a = time_train(branch_a, args, size, device)
        b = time_train(branch_b, args, size, device)
        c = time_train(build(), args, size, device)
        bound = 1.0 / (1.0 / a["images_per_s"] + 1.0 / b["images_per_s"])
        row = {"size": size, "branch_a": a, "branch_b": b, "fusion": c, "time_additive_bound_images_per_s": round(bound, 2),
               "ratio_to_bound": round(c["images_per_s"] / bound, 3)}
        if args.compare_attention:  # the explicit softmax attention instead of fused SDPA
            explicit = time_train(build(flash=False), args, size, device)
            row["fusion_explicit_attention"] = explicit
            row["sdpa_speedup_train"] = round(c["images_per_s"] / explicit["images_per_s"], 3)
        if args.concurrent and device.type == "cuda":
            net = build()
            net.concurrent_branches = True
            cc = time_train(net, args, size, device)
            row["fusion_concurrent_branches"] = cc
            row["ratio_to_bound_concurrent"] = round(cc["images_per_s"] / bound, 3)
        row["inference"] = time_infer(build(), args, size, device)
        if args.mc > 0:
            row["inference_mc"] = {"samples": args.mc, **time_infer(build(), args, size, device, mc=args.mc)}
        rows.append(row)
        mc = f"  mc{args.mc} {row['inference_mc']['images_per_s']:8.1f}" if args.mc > 0 else ""
        print(f"{size:>4} px  a {a['images_per_s']:8.1f}  b {b['images_per_s']:8.1f}  fusion {c['images_per_s']:8.1f} img/s"
              f"  bound {bound:8.1f}  ratio {row['ratio_to_bound']:.3f}  infer {row['inference']['images_per_s']:8.1f}"
              f"{mc}  peak {c['peak_mb']:.0f} MB", flush=True)
    return rows


def unet_rows(args, device: torch.device) -> list[dict]:
    from monai.networks.nets import BasicUNet

    from medfuse.networks.nets import MultiOutputUNet

    rows = []
    for size in args.unet_sizes:
        torch.manual_seed(0)
        basic = BasicUNet(spatial_dims=2, in_channels=1, out_channels=2, features=tuple(args.unet_features))
        multi = MultiOutputUNet(spatial_dims=2, in_channels=1, out_channels=2, num_classes=2,
                                features=list(args.unet_features)).set_output("both")
        u = time_train(basic, args, size, device)
        m = time_train(multi, args, size, device)
        rows.append({"size": size, "basicunet": u, "multi_output_unet": m,
                     "ratio": round(m["images_per_s"] / u["images_per_s"], 3)})
        print(f"{size:>4} px  BasicUNet {u['images_per_s']:8.1f}  MultiOutputUNet {m['images_per_s']:8.1f} img/s"
              f"  ratio {rows[-1]['ratio']:.3f}", flush=True)
    return rows


def _ints(text: str) -> list[int]:
    return [int(v) for v in str(text).split(",") if v.strip()]


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--device", choices=("cuda", "cpu"), default="cuda" if torch.cuda.is_available() else "cpu")
    p.add_argument("--sizes", type=_ints, default=[224, 380])
    p.add_argument("--batch", type=int, default=64)
    p.add_argument("--backbones", type=lambda s: s.split(","), default=["efficientnet-b4", "resnet34"])
    p.add_argument("--hidden-size", type=int, default=256)
    p.add_argument("--heads", type=int, default=8)
    p.add_argument("--bf16", action="store_true", help="bf16 autocast (CUDA only)")
    p.add_argument("--channels-last", action="store_true")
    p.add_argument("--compile", action="store_true", help="torch.compile the trained models")
    p.add_argument("--concurrent", action="store_true", help="also the fusion model with concurrent_branches (CUDA)")
    p.add_argument("--compare-attention", action="store_true",
                   help="also the fusion model with the explicit (non-fused) attention")
    p.add_argument("--mc", type=int, default=20, help="Monte-Carlo dropout passes for the MC inference row")
    p.add_argument("--steps", type=int, default=30)
    p.add_argument("--warmup", type=int, default=10)
    p.add_argument("--unet-sizes", type=_ints, default=[256, 512])
    p.add_argument("--unet-features", type=_ints, default=[32, 32, 64, 128, 256, 32])
    p.add_argument("--threads", type=int, default=0, help="CPU threads (0: torch's default)")
    p.add_argument("--smoke", action="store_true",
                   help="tiny CPU settings (64 px, B0+R10, hidden 16, batch 4, 3 steps): checks the script runs")
    p.add_argument("--out", default="")
    args = p.parse_args(argv)
    if args.smoke:
        args.sizes, args.batch, args.backbones, args.hidden_size, args.heads = [64], 4, ["efficientnet-b0", "resnet10"], 16, 2
        args.steps, args.warmup, args.mc, args.unet_sizes, args.unet_features = 3, 1, 4, [64], [4, 4, 8, 8, 16, 4]
    return args


def main(argv=None) -> dict:
    args = parse_args(argv)
    device = torch.device(args.device)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise SystemExit("--device cuda: no CUDA device visible to torch; use --device cpu")
    if args.threads:
        torch.set_num_threads(args.threads)
    if device.type == "cuda":
        torch.backends.cudnn.benchmark = True
    t0 = time.perf_counter()
    result = {
        "command": "python " + " ".join([Path(sys.argv[0]).as_posix()] + sys.argv[1:]),
        "device": str(device),
        "gpu": torch.cuda.get_device_name(device) if device.type == "cuda" else None,
        "cpu": f"{platform.processor() or platform.machine()}, {torch.get_num_threads()} threads",
        "host": platform.node(),
        "torch": torch.__version__,
        "cuda": torch.version.cuda,
        "cudnn": torch.backends.cudnn.version() if device.type == "cuda" else None,
        "settings": {k: v for k, v in vars(args).items() if k != "out"},
        "load_average": list(__import__("os").getloadavg()),
        "fusion": fusion_rows(args, device),
        "unet": unet_rows(args, device),
    }
    result["wall_s"] = round(time.perf_counter() - t0, 1)
    if args.out:
        from medfuse.utils.io import atomic_write_json

        atomic_write_json(args.out, result, indent=2)
    return result


if __name__ == "__main__":
    main()
