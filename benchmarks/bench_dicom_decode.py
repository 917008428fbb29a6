# Copyright (c) medfuse contributors
# Licensed under the Apache License, Version 2.0
"""DICOM chest radiograph decoding speed: medfuse's loader against MONAI's PydicomReader.

Usage::

    .venv/bin/python benchmarks/bench_dicom_decode.py [--repeats 5]

Reads the real radiographs of ``../shared/data/dicom_cxr`` (or ``$MEDFUSE_SHARED_DATA``):
the 1955x1841 15-bit RG1 chest CR uncompressed, JPEG 2000 lossless and lossy, and the SIIM
1024x1024 JPEG baseline file. Reports the median seconds per file over ``--repeats`` reads.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time

from medfuse.transforms import read_dicom_image
from medfuse.utils.paths import shared_data_dir

FILES = ["RG1_UNCR.dcm", "RG1_J2KR.dcm", "RG1_J2KI.dcm", "SIIM_CR_chest_PA_jpegbaseline.dcm"]


def _median_time(fn, repeats):
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--repeats", type=int, default=5)
    args = p.parse_args(argv)
    root = shared_data_dir()
    if root is None:
        print("shared data not found: set MEDFUSE_SHARED_DATA", file=sys.stderr)
        return 1
    from monai.transforms import LoadImage

    monai_load = LoadImage(reader="PydicomReader", image_only=True)
    print("| file | transfer syntax | size | medfuse s/file | MONAI PydicomReader s/file |")
    print("|---|---|---|---|---|")
    for name in FILES:
        path = root / "dicom_cxr" / name
        _, meta = read_dicom_image(path)
        ours = _median_time(lambda: read_dicom_image(path), args.repeats)
        try:
            theirs = f"{_median_time(lambda: monai_load(str(path)), args.repeats):.3f}"
        except Exception as e:  # MONAI may lack a decoder for some syntaxes
            theirs = f"fails ({type(e).__name__})"
        print(f"| {name} | {meta.get('transfer_syntax', '?')} | {tuple(meta['spatial_shape'])} | {ours:.3f} | {theirs} |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
