# Copyright (c) medfuse contributors
# Licensed under the Apache License, Version 2.0
"""Images/s per data-loader worker of the bundle's training transforms, per source format, with and without MONAI
metadata tracking, and the workers needed to feed a given GPU rate.

Each source is timed in this one process on one thread (a data-loader worker runs one torch thread), over
``--items`` items (the source's files repeated when it has fewer), after ``--warmup`` items; the transforms are the
bundle's, ``medfuse.transforms.presets.cxr_train_transforms(image_size=...)`` (load, letterbox, percentile
normalisation, random affine / intensity / noise). ``track_meta`` off is what training batches use now
(``make_dataset(..., track_meta=False)``). Workers needed = ceil(GPU images/s / the slowest setting's rate).

Sources (under ``--data``, ``../shared/data`` by default): ``dicom_cxr`` uncompressed (``RG1_UNCR.dcm``), JPEG 2000
lossless (``RG1_J2KR.dcm``) and lossy (``RG1_J2KI.dcm``), 1955x1841 15-bit; ``kermany_cxr_224`` JPEG;
``lung_seg_cxr/cxr`` 512 px PNG; the ``medfuse dicom2manifest --cache-dir`` 16-bit PNGs of ``dicom_cxr``.

Usage::

    python benchmarks/data_throughput.py --size 224 --items 40 --gpu-rate 1000 --out docs/benchmarks/data_throughput_cpu.json
"""

from __future__ import annotations

import argparse
import math
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
from medfuse.utils.paths import checkout_env  # noqa: E402


def _sources(data: Path, cache_dir: Path) -> dict[str, list[Path]]:
    dicom = data / "dicom_cxr"
    out = {
        "dicom_uncompressed": [dicom / "RG1_UNCR.dcm"],
        "dicom_jpeg2000_lossless": [dicom / "RG1_J2KR.dcm"],
        "dicom_jpeg2000_lossy": [dicom / "RG1_J2KI.dcm"],
        "jpeg_kermany_224": sorted((data / "kermany_cxr_224").rglob("*.jpeg"))[:50],
        "png_lung_seg_512": sorted((data / "lung_seg_cxr" / "cxr").glob("*.png"))[:50],
    }
    if not dicom.is_dir():
        return {k: [p for p in v if p.is_file()] for k, v in out.items()}
    # dicom2manifest --cache-dir: each DICOM decoded once into a 16-bit PNG
    subprocess.run([sys.executable, "-m", "medfuse", "dicom2manifest", str(dicom), "--out", str(cache_dir / "m.json"),
                    "--cache-dir", str(cache_dir / "png"), "--classes", "normal,abnormal", "--no-progress"], check=True, capture_output=True, cwd=REPO,
                   env=checkout_env())
    out["png16_dicom2manifest_cache"] = sorted((cache_dir / "png").rglob("*.png"))
    return {k: [p for p in v if p.is_file()] for k, v in out.items()}


def time_source(files: list[Path], size: int, items: int, warmup: int, track_meta: bool) -> dict:
    from monai.data import set_track_meta

    from medfuse.transforms.presets import cxr_train_transforms

    transform = cxr_train_transforms(image_size=size)
    transform.set_random_state(0)
    set_track_meta(track_meta)
    try:
        times = []
        for i in range(warmup + items):
            t0 = time.perf_counter()
            out = transform({"image": str(files[i % len(files)])})
            assert tuple(out["image"].shape[-2:]) == (size, size)
            if i >= warmup:
                times.append(time.perf_counter() - t0)
    finally:
        set_track_meta(True)
    med = statistics.median(times)
    return {"ms_per_image": round(1000 * med, 2), "images_per_s_per_worker": round(1.0 / med, 1)}


def main(argv=None) -> dict:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--data", default=str(REPO.parent / "shared" / "data"))
    p.add_argument("--size", type=int, default=224)
    p.add_argument("--items", type=int, default=40)
    p.add_argument("--warmup", type=int, default=3)
    p.add_argument("--gpu-rate", type=float, default=0.0,
                   help="training images/s the GPU reaches (train_throughput.py's fusion row); 0: not computed")
    p.add_argument("--out", default="")
    args = p.parse_args(argv)
    torch.set_num_threads(1)
    data = Path(args.data)
    if not data.is_dir():
        raise SystemExit(f"{data}: no shared data folder; pass --data ../shared/data")
    result = {"command": "python " + " ".join([Path(sys.argv[0]).as_posix()] + sys.argv[1:]), "host": platform.node(),
              "cpu": platform.processor() or platform.machine(), "cores": os.cpu_count(), "image_size": args.size,
              "load_average_before": [round(x, 2) for x in os.getloadavg()], "sources": {}}
    with tempfile.TemporaryDirectory() as tmp:
        sources = _sources(data, Path(tmp))
        for name, files in sources.items():
            if not files:
                result["sources"][name] = {"skipped": "no files found"}
                print(f"{name:32s} skipped: no files", flush=True)
                continue
            row = {"files": len(files)}
            for meta in (True, False):
                row["track_meta_on" if meta else "track_meta_off"] = time_source(files, args.size, args.items,
                                                                                  args.warmup, meta)
            slowest = min(row["track_meta_on"]["images_per_s_per_worker"], row["track_meta_off"]["images_per_s_per_worker"])
            if args.gpu_rate > 0:
                row["workers_needed_track_meta_off"] = math.ceil(args.gpu_rate / row["track_meta_off"]["images_per_s_per_worker"])
            result["sources"][name] = row
            print(f"{name:32s} meta on {row['track_meta_on']['ms_per_image']:7.1f} ms  off "
                  f"{row['track_meta_off']['ms_per_image']:7.1f} ms  ({slowest:.1f} img/s/worker at worst)", flush=True)
    result["gpu_rate"] = args.gpu_rate or None
    result["load_average_after"] = [round(x, 2) for x in os.getloadavg()]
    if args.out:
        from medfuse.utils.io import atomic_write_json

        atomic_write_json(args.out, result, indent=2)
    return result


if __name__ == "__main__":
    main()
