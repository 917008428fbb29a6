# Copyright (c) medfuse contributors
# Licensed under the Apache License, Version 2.0
"""Weights export of :func:`medfuse.zoo.export.export_bundle`: TorchScript (``ckpt_export``)
with its round-trip checks (in this process and in a fresh one without medfuse); the other formats
(pt2, ONNX) are in :mod:`medfuse.zoo.formats`.

Round-trip tolerance: ``rtol=RTOL, atol=ATOL`` (see :mod:`medfuse.zoo.export`).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any, Mapping

from medfuse.zoo.checks import ZooCheckError

RTOL, ATOL = 1e-4, 1e-5


def _fake_input(metadata: Mapping[str, Any], batch: int = 2):
    import torch
    from monai.bundle.scripts import _get_fake_spatial_shape

    image = metadata["network_data_format"]["inputs"]["image"]
    spatial = _get_fake_spatial_shape(image["spatial_shape"], p=1, n=1, any=1)
    g = torch.Generator().manual_seed(0)
    return torch.rand((batch, int(image["num_channels"]), *spatial), generator=g)


def _load_weights(net, path: Path, key: str = "") -> None:
    import torch

    state = torch.load(path, map_location="cpu", weights_only=True)
    if key:
        state = state[key]
    elif isinstance(state, dict) and "model" in state and isinstance(state["model"], dict):
        state = state["model"]
    net.load_state_dict(state)


def _max_diff(a, b) -> float:
    import torch

    if isinstance(a, torch.Tensor):
        return float((a.float() - b.float()).abs().max()) if a.numel() else 0.0
    if isinstance(a, (list, tuple)):
        return max((_max_diff(x, y) for x, y in zip(a, b)), default=0.0)
    if isinstance(a, dict):
        return max((_max_diff(a[k], b[k]) for k in a), default=0.0)
    return 0.0


_SUBPROCESS_CHECK = r"""
import json, sys
import torch
model = torch.jit.load(sys.argv[1], map_location="cpu").eval()
data = torch.load(sys.argv[2], weights_only=True)
with torch.no_grad():
    out = model(data["input"])
def diff(a, b):
    if isinstance(a, torch.Tensor):
        return float((a.float() - b.float()).abs().max()) if a.numel() else 0.0
    if isinstance(a, (list, tuple)):
        return max((diff(x, y) for x, y in zip(a, b)), default=0.0)
    if isinstance(a, dict):
        return max((diff(a[k], b[k]) for k in a), default=0.0)
    return 0.0
expected = data["output"]
torch.testing.assert_close(out, expected, rtol=float(sys.argv[3]), atol=float(sys.argv[4]))
print(json.dumps({"medfuse_imported": any(m == "medfuse" or m.startswith("medfuse.") for m in sys.modules),
                  "max_abs_diff": diff(out, expected)}))
"""


def _check_in_fresh_process(ts_path: Path, x, expected, workdir: Path) -> float:
    import torch

    data = workdir / "roundtrip_io.pt"
    torch.save({"input": x, "output": expected}, data)
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    env["OMP_NUM_THREADS"] = "1"
    proc = subprocess.run(
        [sys.executable, "-I", "-c", _SUBPROCESS_CHECK, str(ts_path.resolve()), str(data.resolve()), str(RTOL), str(ATOL)],
        cwd=str(workdir), env=env, capture_output=True, text=True, timeout=600,
    )
    data.unlink()
    if proc.returncode != 0:
        tail = (proc.stderr.strip().splitlines() or ["no output"])[-1]
        raise ZooCheckError("torchscript round trip", f"{ts_path}: loading and running it in a fresh Python process failed: {tail}")
    report = json.loads(proc.stdout.strip().splitlines()[-1])
    if report["medfuse_imported"]:
        raise ZooCheckError(
            "torchscript round trip", f"{ts_path}: torch.jit.load imported medfuse; the TorchScript file must stand alone"
        )
    return float(report["max_abs_diff"])


def _export_torchscript(stage: Path, infer_cfg: list[str], overrides: dict, metadata: Mapping[str, Any], trace: bool,
                        tmp: Path) -> tuple[float, float]:
    import torch
    from monai.bundle import ConfigParser, ckpt_export

    ts_path = stage / "models" / "model.ts"
    pt_path = stage / "models" / "model.pt"
    try:
        ckpt_export(
            net_id="network_def", filepath=str(ts_path), ckpt_file=str(pt_path),
            meta_file=str(stage / "configs" / "metadata.json"), config_file=infer_cfg, use_trace=trace, **overrides,
        )
    except Exception as e:
        first = (str(e).strip().splitlines() or [type(e).__name__])[0]
        how = "torch.jit.trace" if trace else "torch.jit.script"
        raise ZooCheckError(
            "torchscript",
            f"{infer_cfg[0]}: 'network_def' cannot be exported with {how} (monai.bundle ckpt_export): "
            f"{type(e).__name__}: {first}; make the network's forward TorchScript-compatible (typed arguments, no "
            "numpy or **kwargs, one output type)" + ("" if trace else ", or pass --trace to trace it with a sample input"),
        ) from e
    parser = ConfigParser()
    parser.read_config(infer_cfg)
    parser.read_meta(str(stage / "configs" / "metadata.json"))
    for k, v in overrides.items():
        parser[k] = v
    net = parser.get_parsed_content("network_def")
    _load_weights(net, pt_path)
    net.eval()
    scripted = torch.jit.load(str(ts_path), map_location="cpu").eval()
    x = _fake_input(metadata)
    with torch.no_grad():
        expected = net(x)
        got = scripted(x)
    try:
        torch.testing.assert_close(got, expected, rtol=RTOL, atol=ATOL)
    except AssertionError as e:
        raise ZooCheckError(
            "torchscript round trip",
            f"{ts_path}: TorchScript and checkpoint outputs differ beyond rtol={RTOL}, atol={ATOL} "
            f"(max |difference| {_max_diff(got, expected):.3g}); the network behaves differently when scripted: "
            "look for Python-side state or randomness in forward",
        ) from e
    diff = _max_diff(got, expected)
    sub_diff = _check_in_fresh_process(ts_path, x, expected, tmp)
    return diff, sub_diff
