# Copyright (c) medfuse contributors
# Licensed under the Apache License, Version 2.0
"""Export formats of ``medfuse export --format``: TorchScript (the zoo's), ``.pt2`` (``torch.export``) and ONNX.

* ``torchscript``: ``models/model.ts`` with ``monai.bundle ckpt_export`` (:mod:`medfuse.zoo.roundtrip`). The
  model zoo loads it (``ci/verify_bundle.py``), so it stays the default until MONAI's bundle format takes
  ``.pt2`` (torch 2.13 deprecates TorchScript; MONAI 1.6.1 has no ``.pt2`` export).
* ``pt2``: ``models/model.pt2``, ``torch.export.export`` of the network with the batch dimension dynamic,
  saved with ``torch.export.save``.
* ``onnx``: ``models/model.onnx`` with ``monai.bundle onnx_export`` (needs the ``medfuse[onnx]`` extra).

Every file is checked the same way: outputs on a seeded random batch against the eager network in this
process, then loaded and run in a fresh Python process that must not import medfuse, on batches of two
sizes (``pt2``, ``onnx``: the batch is dynamic); ``rtol=RTOL, atol=ATOL`` (ONNX: ``ONNX_RTOL, ONNX_ATOL``,
onnxruntime's kernels differ from PyTorch's).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Mapping, Sequence

from medfuse.zoo.checks import ZooCheckError
from medfuse.zoo.roundtrip import ATOL, RTOL, _fake_input, _load_weights, _max_diff

__all__ = ["FORMATS", "DEFAULT_FORMATS", "ONNX_RTOL", "ONNX_ATOL", "FormatCheck", "parse_formats", "require_onnx",
           "export_pt2", "export_onnx"]

FORMATS = ("torchscript", "pt2", "onnx")
DEFAULT_FORMATS = ("torchscript", "pt2")
ONNX_RTOL, ONNX_ATOL = 1e-3, 1e-4
#: the batch sizes the fresh process runs a dynamic-batch file with
_BATCHES = (2, 3)


@dataclass
class FormatCheck:
    """One exported file and its round trip: largest absolute difference here and in a fresh process."""

    fmt: str
    path: str
    max_abs_diff: float
    fresh_process_max_abs_diff: float
    note: str = ""

    def format(self) -> str:
        return (f"{self.fmt}: {self.path}, max |difference| {self.max_abs_diff:.3g} in this process, "
                f"{self.fresh_process_max_abs_diff:.3g} in a fresh process without medfuse" + (f" ({self.note})" if self.note else ""))


def parse_formats(text: str | Sequence[str] | None) -> tuple[str, ...]:
    """``"torchscript,pt2"`` -> ``("torchscript", "pt2")`` (order of :data:`FORMATS`); ``None`` -> the default.

    Raises:
        ZooCheckError: naming an unknown format and the known ones.
    """
    if text is None:
        return DEFAULT_FORMATS
    items = [t.strip().lower() for t in (text.split(",") if isinstance(text, str) else text) if t.strip()]
    unknown = [t for t in items if t not in FORMATS]
    if unknown or not items:
        raise ZooCheckError("format", f"--format {text!r}: unknown format {unknown or '(none given)'}; choose from "
                            f"{', '.join(FORMATS)} (comma-separated, default {','.join(DEFAULT_FORMATS)})")
    return tuple(f for f in FORMATS if f in items)


def _network(infer_cfg: list[str], overrides: Mapping[str, Any], weights: Path):
    from monai.bundle import ConfigParser

    parser = ConfigParser()
    parser.read_config(infer_cfg)
    for k, v in overrides.items():
        parser[k] = v
    net = parser.get_parsed_content("network_def")
    _load_weights(net, weights)
    return net.eval()


_FRESH = r"""
import json, sys
import numpy as np
import torch
fmt, path, data_file, rtol, atol = sys.argv[1], sys.argv[2], sys.argv[3], float(sys.argv[4]), float(sys.argv[5])
cases = torch.load(data_file, weights_only=True)
if fmt == "pt2":
    model = torch.export.load(path).module()
    run = lambda x: model(x)
else:
    import onnxruntime as ort
    session = ort.InferenceSession(path, providers=["CPUExecutionProvider"])
    name = session.get_inputs()[0].name
    run = lambda x: torch.from_numpy(np.asarray(session.run(None, {name: x.numpy()})[0]))
worst = 0.0
with torch.no_grad():
    for x, expected in zip(cases["inputs"], cases["outputs"]):
        got = run(x)
        got = got[0] if isinstance(got, (list, tuple)) else got
        torch.testing.assert_close(got.float(), expected.float(), rtol=rtol, atol=atol)
        worst = max(worst, float((got.float() - expected.float()).abs().max()))
print(json.dumps({"medfuse_imported": any(m.split(".")[0] == "medfuse" for m in sys.modules), "max_abs_diff": worst}))
"""


def _first(out):
    return out[0] if isinstance(out, (list, tuple)) else out


def _fresh_process(fmt: str, path: Path, net, metadata: Mapping[str, Any], workdir: Path, rtol: float,
                   atol: float) -> float:
    """Run ``path`` in a new interpreter (``-I``, no medfuse) on batches of :data:`_BATCHES` sizes; its max |diff|."""
    import torch

    inputs = [_fake_input(metadata, batch=b) for b in _BATCHES]
    with torch.no_grad():
        outputs = [_first(net(x)) for x in inputs]
    data = workdir / f"{fmt}_roundtrip_io.pt"
    torch.save({"inputs": inputs, "outputs": outputs}, data)
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    env["OMP_NUM_THREADS"] = "1"
    if fmt == "onnx" and os.environ.get("PYTHONPATH"):
        env["PYTHONPATH"] = os.environ["PYTHONPATH"]  # where onnxruntime may be installed; medfuse is checked below
    args = [sys.executable, "-c", _FRESH, fmt, str(path.resolve()), str(data.resolve()), str(rtol), str(atol)]
    proc = subprocess.run(args if fmt == "onnx" else [args[0], "-I", *args[1:]], cwd=str(workdir), env=env,
                          capture_output=True, text=True, timeout=600)
    data.unlink()
    if proc.returncode != 0:
        tail = (proc.stderr.strip().splitlines() or ["no output"])[-1]
        raise ZooCheckError(fmt, f"{path}: loading and running it in a fresh Python process failed: {tail}")
    report = json.loads(proc.stdout.strip().splitlines()[-1])
    if report["medfuse_imported"]:
        raise ZooCheckError(fmt, f"{path}: loading it imported medfuse; the file must stand alone")
    return float(report["max_abs_diff"])


def _compare(fmt: str, path: Path, got, expected, rtol: float, atol: float) -> float:
    import torch

    diff = _max_diff(got, expected)
    try:
        torch.testing.assert_close(got, expected, rtol=rtol, atol=atol)
    except AssertionError as e:
        raise ZooCheckError(fmt, f"{path}: outputs differ from the checkpoint's beyond rtol={rtol}, atol={atol} "
                            f"(max |difference| {diff:.3g})") from e
    return diff


def export_pt2(stage: Path, infer_cfg: list[str], overrides: Mapping[str, Any], metadata: Mapping[str, Any],
               tmp: Path) -> FormatCheck:
    """``models/model.pt2``: ``torch.export.export`` with a dynamic batch dimension, checked as the module says."""
    import torch

    path = stage / "models" / "model.pt2"
    net = _network(infer_cfg, overrides, stage / "models" / "model.pt")
    x = _fake_input(metadata, batch=_BATCHES[0])
    batch = torch.export.Dim("batch", min=1, max=4096)
    try:
        program = torch.export.export(net, (x,), dynamic_shapes=({0: batch},))
        torch.export.save(program, str(path))
    except Exception as e:
        first = (str(e).strip().splitlines() or [type(e).__name__])[0]
        raise ZooCheckError(
            "pt2", f"{infer_cfg[0]}: 'network_def' cannot be exported with torch.export.export (dynamic batch): "
            f"{type(e).__name__}: {first}; leave pt2 out of --format, or make forward free of data-dependent Python "
            "control flow") from e
    with torch.no_grad():
        diff = _compare("pt2", path, _first(torch.export.load(str(path)).module()(x)), _first(net(x)), RTOL, ATOL)
    fresh = _fresh_process("pt2", path, net, metadata, tmp, RTOL, ATOL)
    return FormatCheck("pt2", "models/model.pt2", diff, fresh, f"batch dynamic, checked with batches {_BATCHES}")


def require_onnx() -> None:
    """Raise :class:`ZooCheckError` naming the ``medfuse[onnx]`` packages that are not installed."""
    from monai.utils import optional_import

    missing = [m for m in ("onnx", "onnxruntime", "onnxscript") if not optional_import(m)[1]]
    if missing:
        raise ZooCheckError("onnx", f"--format onnx needs {', '.join(missing)}: pip install 'medfuse[onnx]' "
                            "(or leave onnx out of --format)")


def export_onnx(stage: Path, infer_cfg: list[str], overrides: Mapping[str, Any], metadata: Mapping[str, Any],
                tmp: Path) -> FormatCheck:
    """``models/model.onnx`` with ``monai.bundle onnx_export``, run with onnxruntime here and in a fresh process.

    Raises:
        ZooCheckError: without ``onnx``/``onnxruntime`` (install ``medfuse[onnx]``), or when a check fails.
    """
    require_onnx()
    import onnxruntime as ort
    import torch
    from monai.bundle import onnx_export

    path = stage / "models" / "model.onnx"
    x = _fake_input(metadata, batch=_BATCHES[0])
    try:
        onnx_export(
            net_id="network_def", filepath=str(path), ckpt_file=str(stage / "models" / "model.pt"),
            meta_file=str(stage / "configs" / "metadata.json"), config_file=infer_cfg, input_shape=list(x.shape),
            converter_kwargs={"input_names": ["input"], "dynamic_axes": {"input": {0: "batch"}}}, **dict(overrides),
        )
    except Exception as e:
        first = (str(e).strip().splitlines() or [type(e).__name__])[0]
        raise ZooCheckError("onnx", f"{infer_cfg[0]}: ONNX export failed: {type(e).__name__}: {first}") from e
    net = _network(infer_cfg, overrides, stage / "models" / "model.pt")
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    got = torch.from_numpy(session.run(None, {session.get_inputs()[0].name: x.numpy()})[0])
    with torch.no_grad():
        diff = _compare("onnx", path, got, _first(net(x)), ONNX_RTOL, ONNX_ATOL)
    fresh = _fresh_process("onnx", path, net, metadata, tmp, ONNX_RTOL, ONNX_ATOL)
    return FormatCheck("onnx", "models/model.onnx", diff, fresh, f"onnxruntime, rtol {ONNX_RTOL}, atol {ONNX_ATOL}")
