# Copyright (c) medfuse contributors
# Licensed under the Apache License, Version 2.0
"""The one prepared GPU session of issue 19: every must-have measurement in order, each step time-boxed, every
result a JSON file under ``--out`` (``$OUT`` on the device machine) plus ``session.json`` (per step: command,
return code, seconds, last lines of output). A step that fails or runs out of time is recorded and the session
goes on.

Order (the issue's must-haves first):

1. ``train_throughput.py`` at 224 and 380 px (B4 + R34, hidden 256, batch 64, bf16, channels_last, with
   ``concurrent_branches``) and the U-Net rows;
2. ``data_throughput.py`` with the measured fusion rate at 224 px: images/s per worker and workers needed;
3. 200 training steps of ``torchrun --nproc_per_node 1 ... multi_gpu_train.json`` (B4 + R34, 224 px, Kermany);
4. ``compile`` on at 224 px (off is step 1);
5. 3 epochs of the full B4 + R34 configuration on ``kermany_cxr_224`` with their validation AUC.

Data: ``kermany_cxr_224`` (steps 3 and 5) and ``dicom_cxr`` (step 2) must be on the device machine, under
``--data``, ``$MEDFUSE_SHARED_DATA``, ``../shared/data`` or ``shared/data`` in the checkout; a source that is
missing is reported as skipped by step 2 (``lung_seg_cxr`` is optional). ``benchmarks/gpu_prepare.py`` puts a
subset that fits the device tool's 64 MiB transfer, and the wheels of what the GPU image lacks (MONAI, pydicom,
...), under ``.devcarry/``; ``benchmarks/gpu_device.sh`` installs the wheels there and runs this script.

What comes back: at most 7 small files under ``--out`` (the device tool returns 8 files, two folders deep);
manifests, run folders and checkpoints stay under ``--work``.

Usage::

    python benchmarks/gpu_prepare.py                         # here: wheels + data under .devcarry/, prints the call
    bash benchmarks/gpu_device.sh                            # there: install the wheels, run this script into $OUT
    python benchmarks/gpu_session.py --smoke --out /tmp/gs   # the same steps at tiny sizes on a CPU
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
from medfuse.utils.paths import checkout_env  # noqa: E402

BUNDLE = REPO / "bundles" / "cxr_dual_cross_attention" / "configs"


def _data_dir(given: str) -> Path:
    for c in (given, os.environ.get("MEDFUSE_SHARED_DATA", ""), REPO.parent / "shared" / "data", REPO / "shared" / "data"):
        if c and Path(c).is_dir():
            return Path(c)
    raise SystemExit("no shared data folder: pass --data (../shared/data or $MEDFUSE_SHARED_DATA)")


class Session:
    def __init__(self, out: Path, budget_s: float, environment: str = "") -> None:
        self.out, self.t0, self.budget, self.environment = out, time.perf_counter(), budget_s, environment
        self.steps: list[dict] = []
        out.mkdir(parents=True, exist_ok=True)

    def left(self) -> float:
        return self.budget - (time.perf_counter() - self.t0)

    def run(self, name: str, cmd: list[str], timeout: float, env: dict | None = None) -> int:
        timeout = min(timeout, max(0.0, self.left()))
        rec: dict = {"step": name, "command": " ".join(str(c) for c in cmd), "timeout_s": round(timeout)}
        if timeout < 20:
            rec.update(rc=None, skipped="no time left in the session budget")
        else:
            t = time.perf_counter()
            try:
                p = subprocess.run([str(c) for c in cmd], cwd=REPO, capture_output=True, text=True, timeout=timeout,
                                   env=checkout_env(**(env or {})))
                rec.update(rc=p.returncode, tail=(p.stdout + p.stderr)[-2500:])
            except subprocess.TimeoutExpired as e:
                out = (e.stdout or b"") + (e.stderr or b"")
                rec.update(rc="timeout", tail=(out.decode(errors="replace") if isinstance(out, bytes) else out)[-2500:])
            rec["seconds"] = round(time.perf_counter() - t, 1)
        self.steps.append(rec)
        print(f"[{name}] rc={rec['rc']} {rec.get('seconds', 0)} s", flush=True)
        self.write()
        return rec["rc"] if isinstance(rec["rc"], int) else -1

    def write(self) -> dict:
        """``session.json`` after every step, so a session cut short still reports what it did."""
        summary = {"environment": self.environment, "steps": self.steps, "total_s": round(time.perf_counter() - self.t0, 1)}
        (self.out / "session.json").write_text(json.dumps(summary, indent=2) + "\n")
        return summary


def _fusion_rate(path: Path, size: int) -> float:
    try:
        rows = json.loads(path.read_text())["fusion"]
        return float(next(r for r in rows if r["size"] == size)["fusion"]["images_per_s"])
    except (OSError, ValueError, KeyError, StopIteration):
        return 0.0


def _train_cmd(torchrun: bool, manifest: Path, out_dir: Path, overrides: dict) -> list[str]:
    files = f"['{BUNDLE / 'train.json'}','{BUNDLE / 'multi_gpu_train.json'}']" if torchrun else str(BUNDLE / "train.json")
    head = ([shutil.which("torchrun", path=os.path.dirname(sys.executable)) or "torchrun", "--standalone", "--nnodes=1",
             "--nproc_per_node=1"] if torchrun else [sys.executable]) + ["-m", "monai.bundle", "run"]
    cmd = head + ["--config_file", files, "--meta_file", str(BUNDLE / "metadata.json"),
                  "--manifest", str(manifest), "--output_dir", str(out_dir)]
    for k, v in overrides.items():
        cmd += [f"--{k}", json.dumps(v) if isinstance(v, list) else str(v)]
    return cmd


def _keep(src: Path, dst: Path) -> None:
    """Copies a run's small record into ``--out`` (run folders stay under ``--work``)."""
    if src.is_file():
        shutil.copy(src, dst)


def main(argv=None) -> dict:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--out", default=os.environ.get("OUT", "gpu_session_out"))
    p.add_argument("--work", default="", help="manifests and run folders (default: a folder beside --out)")
    p.add_argument("--data", default="")
    p.add_argument("--smoke", action="store_true", help="tiny sizes on a CPU: checks every step runs")
    p.add_argument("--budget", type=float, default=0, help="seconds for all steps (default 480; smoke 900)")
    args = p.parse_args(argv)
    out = Path(args.out).resolve()
    work = Path(args.work).resolve() if args.work else out.parent / (out.name + "_work")
    work.mkdir(parents=True, exist_ok=True)
    data = _data_dir(args.data)
    py = sys.executable
    smoke = args.smoke
    device = "cpu" if smoke else "cuda"
    env_info = subprocess.run([py, "-c", "import torch, monai; print(torch.__version__, torch.version.cuda, monai.__version__, "
                               "torch.cuda.get_device_name(0) if torch.cuda.is_available() else 'no GPU')"],
                              capture_output=True, text=True, env=checkout_env())
    env_text = env_info.stdout.strip() or f"environment probe failed: {env_info.stderr.strip()[-500:]}"
    print("environment:", env_text, flush=True)
    s = Session(out, args.budget or (900 if args.smoke else 480), env_text)
    s.write()

    # 1. throughput table
    tt = out / f"train_throughput_{device}.json"
    big = ["--sizes", "224,380", "--batch", "64", "--backbones", "efficientnet-b4,resnet34", "--hidden-size", "256",
           "--bf16", "--channels-last", "--concurrent", "--compare-attention", "--steps", "30", "--warmup", "10"]
    s.run("1_train_throughput", [py, "benchmarks/train_throughput.py", "--device", device,
                                 *(["--smoke"] if smoke else big), "--out", tt], timeout=200)
    # 2. data feed rate and workers needed for the measured fusion rate at 224 px
    rate = _fusion_rate(tt, 64 if smoke else 224) or 1000.0
    s.run("2_data_throughput", [py, "benchmarks/data_throughput.py", "--data", data, "--size", "224",
                                "--items", "4" if smoke else "10", "--warmup", "1", "--gpu-rate", rate,
                                "--out", out / "data_throughput.json"], timeout=120)
    # a manifest of the Kermany JPEGs (train / validation) for steps 3 and 5
    manifest = work / "kermany_manifest.json"
    s.run("prepare_manifest", [py, "-m", "medfuse", "folder2manifest", data / "kermany_cxr_224", "--out", manifest,
                               "--val-fraction", "0.1", "--no-progress"], timeout=120)
    cores = os.cpu_count() or 2
    tiny = {"image_size": 64, "backbones": ["efficientnet-b0", "resnet10"], "hidden_size": 16, "num_heads": 2,
            "batch_size": 4, "max_items": 16}
    full = {"num_workers": max(1, min(12, cores - 2)), "batch_size": 16}
    # 3. 200 steps under torchrun (one process): batch 16 x 200 = 3200 training items, one epoch
    s.run("3_torchrun_200_steps", _train_cmd(True, manifest, work / "runs_torchrun",
                                             {**(tiny if smoke else {**full, "max_items": 3200}), "epochs": 1,
                                              "calibrate": False, "progress": False, "run_name": "steps200"}),
          timeout=150)
    _keep(work / "runs_torchrun" / "steps200" / "run_info.json", out / "steps200_run_info.json")
    # 4. compile on at 224 px (off: step 1)
    s.run("4_compile_224", [py, "benchmarks/train_throughput.py", "--device", device, "--compile",
                            *(["--smoke"] if smoke else ["--sizes", "224", *[a for a in big[2:] if a not in ("--concurrent", "--compare-attention")],
                                                          "--mc", "0", "--unet-sizes", ""]),
                            "--out", out / f"train_throughput_{device}_compile.json"], timeout=180)
    # 5. 3 epochs of the full configuration with their validation AUC
    s.run("5_three_epochs", _train_cmd(False, manifest, work / "runs_full",
                                       {**(tiny if smoke else full), "epochs": 2 if smoke else 3, "calibrate": False,
                                        "progress": False, "run_name": "full3"}), timeout=600)
    _keep(work / "runs_full" / "full3" / "log.csv", out / "full3_log.csv")
    _keep(work / "runs_full" / "full3" / "run_info.json", out / "full3_run_info.json")
    return s.write()


if __name__ == "__main__":
    main()
