# Copyright (c) medfuse contributors
# Licensed under the Apache License, Version 2.0
"""The end-to-end demo that ``make demo`` runs: ``python -m medfuse.demo --out runs/demo``.

The demo is a sequence of named steps (:data:`STEPS`). Each step is a function that takes
the shared :class:`DemoContext` and returns a dict of results (paths, counts, metrics);
the results are kept in ``context.results[step_name]`` for the steps after it, printed in
the closing summary and written to ``<out>/demo_summary.json``.

Steps: ``data`` (build the synthetic demo data in ``<out>/data``, or reuse it when a
stamp shows it was built with the same parameters), ``validate`` (validate every
manifest, check that MONAI's ``load_decathlon_datalist`` reads it, print the data
summaries), ``train`` (the chest X-ray dual cross-attention bundle, small configuration
:data:`DEMO_MODEL`, on a CPU), ``evaluate`` (test split, 20 Monte-Carlo dropout passes:
``metrics.json`` and ``predictions.csv``) and ``infer`` (the demo DICOM folder to
``predictions.csv`` with entropy and mutual information) and ``export`` (the trained model to
a local model zoo in ``<out>/zoo``: the zoo's checks, TorchScript, release zip; see
:func:`medfuse.zoo.export_bundle`). To add a step (train, evaluate, export ...), write ``def step_x(ctx) -> dict``
and append ``DemoStep("x", step_x, "what it does")`` to :data:`STEPS`; ``--steps`` selects
a subset by name.

Examples::

    python -m medfuse.demo --out runs/demo
    python -m medfuse.demo --out /tmp/demo --n-cxr 16 --n-oct 16 --size 64 --steps data,validate
"""

from __future__ import annotations

import argparse
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Sequence

__all__ = [
    "DemoContext",
    "DemoStep",
    "STEPS",
    "build_parser",
    "format_results",
    "main",
    "run_steps",
    "step_data",
    "step_evaluate",
    "step_export",
    "step_infer",
    "step_train",
    "step_validate",
]


@dataclass
class DemoContext:
    """What the steps share: the output folder, the parsed options and earlier results."""

    out: Path
    args: argparse.Namespace
    results: dict[str, dict[str, Any]] = field(default_factory=dict)

    @property
    def data_dir(self) -> Path:
        """Folder of the demo data set (``<out>/data``)."""
        return self.out / "data"

    def log(self, message: str = "") -> None:
        """Print a progress line (flushed, so ``make demo`` shows it at once)."""
        print(message, flush=True)


@dataclass(frozen=True)
class DemoStep:
    """One named step: ``func(context) -> dict`` of results."""

    name: str
    func: Callable[[DemoContext], dict]
    description: str


def _data_parameters(args: argparse.Namespace) -> dict[str, Any]:
    return {
        "n_cxr": args.n_cxr,
        "n_oct": args.n_oct,
        "image_size": args.size,
        "seed": args.seed,
        "dicom": not args.no_dicom,
    }


def step_data(ctx: DemoContext) -> dict:
    """Build the synthetic data into ``<out>/data`` unless an up-to-date copy is there."""
    from medfuse.data.demo import MANIFEST_NAMES, STAMP_NAME, demo_data_is_current, make_demo_data, read_demo_stamp

    params = _data_parameters(ctx.args)
    if not ctx.args.rebuild_data and demo_data_is_current(ctx.data_dir, **params):
        stamp = read_demo_stamp(ctx.data_dir) or {}
        manifests = {k: ctx.data_dir / name for k, name in stamp.get("manifests", {}).items()}
        ctx.log(f"  reusing {ctx.data_dir} (built earlier with the same parameters; --rebuild-data rebuilds it)")
        status = "reused"
    else:
        ctx.log(f"  generating {params['n_cxr']} chest phantoms and {params['n_oct']} OCT B-scans into {ctx.data_dir}")
        manifests = make_demo_data(ctx.data_dir, **params)
        status = "built"
    manifests = {k: manifests[k] for k in MANIFEST_NAMES if k in manifests}
    return {"status": status, "data_dir": ctx.data_dir, "manifests": manifests, "stamp": ctx.data_dir / STAMP_NAME}


def step_validate(ctx: DemoContext) -> dict:
    """Validate every manifest (files, hashes, labels, patient leakage), read it with MONAI, print summaries."""
    from monai.data import load_decathlon_datalist

    from medfuse.data.manifest import SPLITS, format_summary, read_manifest, summarize_manifest

    manifests = ctx.results.get("data", {}).get("manifests")
    if not manifests:
        from medfuse.data.demo import read_demo_stamp
        from medfuse.errors import DataError

        stamp = read_demo_stamp(ctx.data_dir)
        if not stamp:
            raise DataError(f"no demo data in {ctx.data_dir}; run the 'data' step first (leave --steps out)")
        manifests = {k: ctx.data_dir / name for k, name in stamp.get("manifests", {}).items()}
    items: dict[str, int] = {}
    for key, path in manifests.items():
        manifest = read_manifest(path, check_hashes=True)
        summary = summarize_manifest(manifest)
        for split in SPLITS:
            if split in manifest:  # MONAI must read every split as it is
                load_decathlon_datalist(str(path), is_segmentation=False, data_list_key=split)
        items[key] = summary["total"]
        ctx.log(format_summary(summary, title=f"== {key}: {path}"))
        ctx.log()
    return {"valid_manifests": len(manifests), "items": items}


#: The small dual cross-attention configuration the demo trains on a CPU (about a minute).
DEMO_MODEL: dict[str, Any] = {
    "image_size": 128,
    "backbones": ["efficientnet-b0", "resnet18"],
    "hidden_size": 32,
    "num_heads": 4,
    "batch_size": 8,
    "epochs": 8,
    "learning_rate": 3e-4,
    "num_workers": 0,
    "progress": False,
    # the demo's few validation cases could never back a threshold under the default of 50 (see
    # medfuse.evaluation.thresholds); 5 shows the threshold path, and is not a setting for real data
    "threshold_min_cases": 5,
}
#: ``--tiny``: a seconds-long smoke configuration (tests, quick checks of an install).
TINY_MODEL: dict[str, Any] = dict(
    DEMO_MODEL, image_size=64, backbones=["efficientnet-b0", "resnet10"], hidden_size=16, num_heads=2, epochs=1
)
DEMO_BUNDLE = "cxr_dual_cross_attention"


def _demo_runs(ctx: DemoContext) -> Path:
    return ctx.out / "runs" / DEMO_BUNDLE


def _manifest(ctx: DemoContext, key: str) -> Path:
    manifests = ctx.results.get("data", {}).get("manifests") or {}
    if key in manifests:
        return Path(manifests[key])
    from medfuse.data.demo import read_demo_stamp
    from medfuse.errors import DataError

    stamp = read_demo_stamp(ctx.data_dir) or {}
    name = stamp.get("manifests", {}).get(key)
    if not name:
        raise DataError(f"no '{key}' manifest in {ctx.data_dir}; run the 'data' step first (leave --steps out)")
    return ctx.data_dir / name


def step_train(ctx: DemoContext) -> dict:
    """Train the small chest X-ray dual cross-attention classifier on the demo data."""
    from medfuse.workflows.bundle import run_bundle

    model = TINY_MODEL if ctx.args.tiny else DEMO_MODEL
    overrides = dict(model, epochs=ctx.args.epochs or model["epochs"])
    ctx.log(f"  bundle {DEMO_BUNDLE}: {overrides}")
    res = run_bundle(DEMO_BUNDLE, "train", manifest=str(_manifest(ctx, "cxr")), output_dir=str(_demo_runs(ctx)),
                     run_name="demo", **overrides)
    return {k: res[k] for k in ("run_dir", "checkpoint", "best_val_auc", "best_epoch", "epochs_run", "log")}


def step_evaluate(ctx: DemoContext) -> dict:
    """Evaluate the trained run on the held-out test split with Monte-Carlo dropout."""
    from medfuse.workflows.bundle import run_bundle

    res = run_bundle(DEMO_BUNDLE, "evaluate", manifest=str(_manifest(ctx, "cxr")), output_dir=str(_demo_runs(ctx)),
                     run_name="demo", num_workers=0, progress=False, mc_samples=20)
    m = res["metrics"]
    keep = {k: m[k] for k in ("n", "auc", "aupr", "accuracy") if k in m}
    cal = res["run_dir"] / "calibration.json"
    return {**keep, "metrics_json": res["eval_dir"] / "metrics.json", "predictions": res["predictions"],
            "calibration": cal if cal.is_file() else "none (T = 1, argmax)", "report": res["eval_dir"] / "index.html"}


def step_infer(ctx: DemoContext) -> dict:
    """Inference on the demo's DICOM folder (or the test split) with MC-dropout uncertainty."""
    import csv

    from medfuse.workflows.bundle import run_bundle

    dicom_dir = ctx.data_dir / "cxr" / "dicom"
    source = {"input_dir": str(dicom_dir)} if dicom_dir.is_dir() else {"manifest": str(_manifest(ctx, "cxr"))}
    res = run_bundle(DEMO_BUNDLE, "inference", output_dir=str(_demo_runs(ctx)), run_name="demo", num_workers=0,
                     mc_samples=20, **source)
    with open(res["predictions"], newline="", encoding="utf-8") as f:
        rows = list(csv.DictReader(f))
    most_uncertain = max(rows, key=lambda r: float(r.get("entropy") or 0.0)) if rows else {}
    return {
        "input": next(iter(source.values())),
        "images": len(rows),
        "predictions": res["predictions"],
        "most_uncertain": {k: most_uncertain.get(k) for k in ("image", "pred", "entropy", "mutual_info")},
    }


def step_export(ctx: DemoContext) -> dict:
    """Export the trained demo model to a local model zoo in ``<out>/zoo`` (checks, TorchScript, release zip)."""
    import shutil

    from medfuse.workflows.bundle import bundle_dir
    from medfuse.zoo import export_bundle

    run_dir = Path(ctx.results.get("train", {}).get("run_dir") or _demo_runs(ctx) / "demo")
    zoo = ctx.out / "zoo"
    if zoo.exists():  # the demo's zoo is rebuilt on every run (a real zoo refuses a version it already has)
        shutil.rmtree(zoo)
    res = export_bundle(
        bundle_dir(DEMO_BUNDLE), zoo, weights=run_dir / "model.pt",
        data_source="medfuse synthetic demo data (chest phantoms written by `medfuse demo-data`, built by make demo)",
        data_license="Apache-2.0 (synthetic images generated by medfuse; no patient data)",
        log=lambda m: ctx.log(m),
        require_schema=False,  # without the shared data's schema file the check is skipped, and said so
    )
    for w in res.warnings:
        ctx.log(f"  warning: {w}")
    return {
        "zoo": zoo,
        "metadata_schema": "checked" if not any("NOT checked" in c for c in res.checks) else "NOT checked (no schema file)",
        "bundle": res.bundle_dir,
        "release": res.release,
        "model_info": res.model_info,
        "torchscript_max_abs_diff": res.round_trip_max_abs_diff,
    }


def step_predict(ctx: DemoContext) -> dict:
    """``medfuse predict`` on one DICOM file with the exported release (the run folder when nothing was exported)."""
    import csv
    import os
    import subprocess

    from medfuse.errors import DataError

    dicoms = sorted((ctx.data_dir / "cxr" / "dicom").glob("*.dcm"))
    if not dicoms:
        raise DataError(f"{ctx.data_dir / 'cxr' / 'dicom'}: no demo DICOM file to predict; run the data step with DICOM")
    model = ctx.results.get("export", {}).get("release") or ctx.results.get("train", {}).get("run_dir") \
        or _demo_runs(ctx) / "demo"
    out = ctx.out / "predict_one"
    cmd = [sys.executable, "-m", "medfuse", "predict", str(dicoms[0]), "--model", str(model), "--out", str(out),
           "--no-progress"]
    ctx.log("  $ medfuse predict " + " ".join(cmd[4:]))
    env = dict(os.environ, MEDFUSE_CACHE=str(ctx.out / "cache"))
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env)
    for line in proc.stdout.strip().splitlines():
        ctx.log("  " + line)
    if proc.returncode != 0:
        raise DataError(f"medfuse predict failed ({proc.returncode}): {proc.stderr.strip().splitlines()[-1:]}")
    with open(out / "predictions.csv", newline="", encoding="utf-8") as f:
        row = next(csv.DictReader(f))
    return {"input": dicoms[0], "model": model, "pred": row["pred"], "threshold": row["threshold"],
            "temperature": row["temperature"], "input_check": row["input_check"], "predictions": out / "predictions.csv"}


#: The demo, in order. Later steps read earlier results from ``ctx.results``.
STEPS: list[DemoStep] = [
    DemoStep("data", step_data, "build the synthetic chest X-ray / OCT demo data (or reuse it)"),
    DemoStep("validate", step_validate, "validate the manifests, read them with MONAI, print data summaries"),
    DemoStep("train", step_train, "train a small dual cross-attention classifier on the demo chest X-rays (CPU)"),
    DemoStep("evaluate", step_evaluate, "evaluate it on the test split with Monte-Carlo dropout"),
    DemoStep("infer", step_infer, "predict the demo DICOM folder with uncertainty (predictions.csv)"),
    DemoStep("export", step_export, "export the demo model to a local model zoo (<out>/zoo): zoo checks, TorchScript"),
    DemoStep("predict", step_predict, "medfuse predict on one DICOM file with the exported model"),
]


def _flatten(prefix: str, value: Any, out: list[tuple[str, Any]]) -> None:
    if isinstance(value, dict):
        for k, v in value.items():
            _flatten(f"{prefix}.{k}" if prefix else str(k), v, out)
    else:
        out.append((prefix, value))


def _jsonable(value: Any) -> Any:
    if isinstance(value, dict):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_jsonable(v) for v in value]
    if isinstance(value, Path):
        return str(value)
    if isinstance(value, (str, int, float, bool)) or value is None:
        return value
    return str(value)


def format_results(results: dict[str, dict], seconds: dict[str, float]) -> str:
    """The closing summary: every step with its time and results, one ``key: value`` a line."""
    lines = []
    for name, res in results.items():
        lines.append(f"  {name} ({seconds.get(name, 0.0):.1f} s)")
        flat: list[tuple[str, Any]] = []
        _flatten("", res, flat)
        for key, value in flat:
            lines.append(f"    {key}: {value}")
    return "\n".join(lines)


def run_steps(ctx: DemoContext, steps: Sequence[DemoStep]) -> dict[str, float]:
    """Run ``steps`` in order, storing each result in ``ctx.results``; returns seconds per step."""
    seconds: dict[str, float] = {}
    for i, step in enumerate(steps, 1):
        ctx.log(f"[{i}/{len(steps)}] {step.name}: {step.description}")
        start = time.perf_counter()
        result = step.func(ctx)
        seconds[step.name] = time.perf_counter() - start
        ctx.results[step.name] = dict(result or {})
    return seconds


def _size(text: str):
    from medfuse.commands.demo_data import parse_size

    return parse_size(text)


def build_parser(prog: str = "python -m medfuse.demo") -> argparse.ArgumentParser:
    from medfuse.commands.demo_data import parse_count, parse_seed

    names = ", ".join(s.name for s in STEPS)
    p = argparse.ArgumentParser(
        prog=prog,
        description="medfuse end-to-end demo on synthetic data (what 'make demo' runs). Steps: " + names + ".",
    )
    p.add_argument("--out", default="runs/demo", help="output folder (default runs/demo); the data go to OUT/data")
    p.add_argument("--n-cxr", type=parse_count, default=96, metavar="N", help="chest phantoms (default 96)")
    p.add_argument("--n-oct", type=parse_count, default=80, metavar="N", help="OCT B-scans (default 80)")
    p.add_argument("--size", type=_size, default=128, metavar="S", help="image side, or ROWSxCOLUMNS (default 128)")
    p.add_argument("--seed", type=parse_seed, default=0, help="random seed (default 0)")
    p.add_argument("--no-dicom", action="store_true", help="no DICOM copies in the demo data")
    p.add_argument("--rebuild-data", action="store_true",
                   help="rebuild the demo data even when an up-to-date copy exists")
    p.add_argument("--epochs", type=parse_count, default=0, metavar="N",
                   help=f"training epochs of the demo model (default {DEMO_MODEL['epochs']}, or 1 with --tiny)")
    p.add_argument("--tiny", action="store_true",
                   help="train a tiny network for one epoch (a smoke test of the install, seconds)")
    p.add_argument("--steps", default=None, metavar="A,B",
                   help=f"run only these steps, in the demo's order (from: {names})")
    return p


def _select(steps_arg: str | None) -> list[DemoStep]:
    if not steps_arg:
        return list(STEPS)
    wanted = [s.strip() for s in steps_arg.split(",") if s.strip()]
    known = {s.name for s in STEPS}
    unknown = [s for s in wanted if s not in known]
    if unknown or not wanted:
        raise ValueError(f"unknown step(s) {unknown or steps_arg!r}; choose from {', '.join(s.name for s in STEPS)}")
    return [s for s in STEPS if s.name in wanted]


def main(argv: Sequence[str] | None = None) -> int:
    """Run the demo; returns 0 on success, 1 on an input error, 2 on an argument error."""
    from medfuse.errors import MedfuseError

    parser = build_parser()
    args = parser.parse_args(argv)
    if args.n_cxr == 0 and args.n_oct == 0:
        parser.error("--n-cxr and --n-oct are both 0, so there is no data; give at least one a count above 0")
    try:
        steps = _select(args.steps)
    except ValueError as e:
        parser.error(str(e))
    ctx = DemoContext(out=Path(args.out), args=args)
    start = time.perf_counter()
    try:
        seconds = run_steps(ctx, steps)
    except MedfuseError as e:
        print(f"medfuse demo: error: {e}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("medfuse demo: interrupted", file=sys.stderr)
        return 130
    total = time.perf_counter() - start
    summary_path = ctx.out / "demo_summary.json"
    from medfuse.utils.io import atomic_write_json

    atomic_write_json(
        summary_path,
        {
            "out": str(ctx.out),
            "seconds": {k: round(v, 3) for k, v in seconds.items()},
            "results": _jsonable(ctx.results),
        },
    )
    ctx.log(f"== medfuse demo done in {total:.1f} s; outputs under {ctx.out}")
    ctx.log(format_results(ctx.results, seconds))
    ctx.log(f"  summary: {summary_path}")
    report = ctx.results.get("evaluate", {}).get("report")
    if report:
        ctx.log(f"  evaluation report: {report}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
