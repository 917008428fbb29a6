# Copyright (c) medfuse contributors
# Licensed under the Apache License, Version 2.0
"""Wall time of ``medfuse predict`` on one file against the floor, as a ratio measured in one run.

Usage::

    .venv/bin/python benchmarks/predict_latency.py --model runs/demo/runs/cxr_dual_cross_attention/demo \\
        --input runs/demo/data/cxr/dicom/CXR0000_1.dcm --repeats 5 --out docs/benchmarks/predict_latency.json

The floor is what any tool must do to score one image with this model: a fresh Python process that imports torch
and ``monai.networks``, builds the network and loads its weights, and runs one prediction (the same Monte-Carlo
dropout passes as ``medfuse predict``) on a tensor of the model's input size. ``medfuse predict FILE --model M
--out DIR`` runs in a fresh process too (decoding, preprocessing, calibration, CSV and summary included). Both are
run ``--repeats`` times, alternating, and the medians are compared; the goal is a ratio <= 1.3.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

FLOOR = r"""
import json, sys
import torch, monai.networks
spec = json.loads(sys.argv[1])
module, _, name = spec["target"].rpartition(".")
import importlib
net = getattr(importlib.import_module(module), name)(**spec["kwargs"])
state = torch.load(spec["weights"], map_location="cpu", weights_only=True)
if "model" in state and not any(k.endswith(".weight") for k in state):
    state = state["model"]
net.load_state_dict(state)
net.eval()
x = torch.rand(1, spec["in_channels"], spec["image_size"], spec["image_size"])
with torch.no_grad():
    if spec["mc_samples"] > 0:
        from medfuse.networks.uncertainty import mc_dropout_outputs
        out = mc_dropout_outputs(net, x, spec["mc_samples"])["pred"]
    else:
        out = net(x).softmax(1)
print(out.shape)
"""


def _wall(cmd: list[str], env: dict) -> float:
    t = time.perf_counter()
    subprocess.run(cmd, check=True, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    return time.perf_counter() - t


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--model", required=True, help="run folder, bundle folder, release zip or zoo:NAME")
    p.add_argument("--input", required=True, help="one image file")
    p.add_argument("--repeats", type=int, default=5)
    p.add_argument("--mc-samples", type=int, default=None, help="default: the model's")
    p.add_argument("--threads", type=int, default=None, help="OMP_NUM_THREADS of both processes (default: unset)")
    p.add_argument("--out", default=None, help="also write the result as JSON here")
    args = p.parse_args(argv)

    from medfuse.inference import load_model

    model = load_model(args.model, mc_samples=args.mc_samples)
    net_kwargs = {k: v for k, v in model.network_kwargs.items()}
    spec = {"target": model.network_target, "kwargs": net_kwargs, "weights": str(model.weights),
            "image_size": int(model.settings.get("image_size", 224)), "in_channels": int(model.settings.get("in_channels", 1)),
            "mc_samples": model.mc_samples}
    env = dict(os.environ)
    if args.threads:
        env["OMP_NUM_THREADS"] = str(args.threads)
    floor_cmd = [sys.executable, "-c", FLOOR, json.dumps(spec)]
    floors, predicts = [], []
    with tempfile.TemporaryDirectory() as tmp:
        predict_cmd = [sys.executable, "-m", "medfuse", "predict", args.input, "--model", args.model, "--out", tmp,
                       "--mc-samples", str(model.mc_samples), "--no-progress"]
        _wall(predict_cmd, env)  # warm the file cache (and unpack a release once) before timing
        for _ in range(args.repeats):
            floors.append(_wall(floor_cmd, env))
            predicts.append(_wall(predict_cmd, env))
    floor, predict = statistics.median(floors), statistics.median(predicts)
    result = {
        "machine": f"{platform.node()} ({platform.processor() or platform.machine()}, {os.cpu_count()} CPUs)",
        "model": args.model, "input": args.input, "mc_samples": model.mc_samples, "repeats": args.repeats,
        "floor_s": [round(v, 3) for v in floors], "predict_s": [round(v, 3) for v in predicts],
        "floor_median_s": round(floor, 3), "predict_median_s": round(predict, 3), "ratio": round(predict / floor, 3),
        "goal": 1.3, "threads": args.threads, "load_average_1min_after": round(os.getloadavg()[0], 2),
    }
    print(f"floor (import torch, monai.networks + load model + one prediction): median {floor:.2f} s {result['floor_s']}")
    print(f"medfuse predict one file: median {predict:.2f} s {result['predict_s']}")
    print(f"ratio {predict / floor:.2f} (goal <= 1.3) on {result['machine']}")
    if args.out:
        Path(args.out).parent.mkdir(parents=True, exist_ok=True)
        Path(args.out).write_text(json.dumps(result, indent=2) + "\n", encoding="utf-8")
    return 0


if __name__ == "__main__":
    sys.exit(main())
