# Copyright (c) medfuse contributors
# Licensed under the Apache License, Version 2.0
"""How close MONAI's intensity transforms come to :class:`medfuse.transforms.IntensityNormalize`.

Usage::

    .venv/bin/python benchmarks/compare_intensity_normalize.py [--data ../shared/data]

For each setting of ``IntensityNormalize`` used by medfuse (percentiles, channel-wise percentiles,
percentiles + standardisation, standardisation alone, ImageNet mean/std) it runs the medfuse transform and the
closest MONAI composition (``ScaleIntensityRangePercentiles`` + ``NormalizeIntensity``) on real chest X-rays
(Kermany JPEG, DICOM), OCT B-scans, the demo phantoms, random arrays and three edge cases (mostly constant, constant,
NaN / inf pixels), and prints the largest absolute difference on the ordinary images and every image where the two
differ by more than 1e-6 or disagree on NaNs. The docstring of ``IntensityNormalize`` quotes its output.
"""

from __future__ import annotations

import argparse
import warnings
from pathlib import Path

import numpy as np
import torch
from monai.transforms import NormalizeIntensity, ScaleIntensityRangePercentiles

from medfuse.data.demo import cxr_phantom, oct_bscan
from medfuse.transforms import IntensityNormalize, LoadXray
from medfuse.utils.paths import shared_data_dir

EDGE_CASES = ("mostly-constant", "constant", "nan-inf")
SETTINGS = {
    "percentiles (0.5, 99.5)": dict(percentiles=(0.5, 99.5)),
    "percentiles (1, 99), channel-wise": dict(percentiles=(1, 99), channel_wise=True),
    "percentiles + standardize": dict(percentiles=(0.5, 99.5), standardize=True),
    "standardize alone, channel-wise": dict(percentiles=None, standardize=True, channel_wise=True),
    "ImageNet mean/std (3 channels)": dict(percentiles=None, mean=(0.485, 0.456, 0.406), std=(0.229, 0.224, 0.225)),
}




def images(data: Path | None):
    """(name, channel-first float32 array) pairs."""
    if data is not None:
        load = LoadXray()
        samples = (("kermany_cxr_224/train/*/*.jpeg", 20), ("dicom_cxr/*.dcm", 6), ("oct_kermany_samples/*/*.jpeg", 8))
        for pattern, n in samples:
            for p in sorted(data.glob(pattern))[:n]:
                try:
                    yield f"{p.parent.name}/{p.name}", np.asarray(load(str(p)), dtype=np.float32)
                except Exception as e:  # an undecodable sample (missing codec) is reported, not fatal
                    print(f"  skipped {p.name}: {type(e).__name__}: {e}")
    for i in range(5):
        yield f"demo cxr {i}", np.asarray(cxr_phantom(i, 128, positive=bool(i % 2))[0], np.float32)[None]
    for i in range(3):
        yield f"demo oct {i}", np.asarray(oct_bscan(i, 128), np.float32)[None]
    rng = np.random.default_rng(0)
    yield "random 3-channel", rng.normal(size=(3, 64, 48)).astype(np.float32) * 100
    yield "random 12-bit", rng.integers(0, 4096, size=(1, 64, 64)).astype(np.float32)
    m = np.zeros((1, 32, 32), np.float32)
    m[0, :2, :2] = 5.0
    yield "mostly-constant", m
    yield "constant", np.full((1, 8, 8), 0.7, np.float32)
    n = rng.uniform(size=(1, 16, 16)).astype(np.float32)
    n[0, 0, 0], n[0, 1, 1] = np.nan, np.inf
    yield "nan-inf", n


def monai_version(x: np.ndarray, kw: dict) -> np.ndarray:
    """The MONAI composition closest to ``IntensityNormalize(**kw)``."""
    y = torch.as_tensor(x.copy())
    cw = kw.get("channel_wise", False)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # "Divide by zero (a_min == a_max)" on the edge cases
        if kw.get("percentiles"):
            low, high = kw["percentiles"]
            y = ScaleIntensityRangePercentiles(low, high, 0.0, 1.0, clip=True, channel_wise=cw)(y)
        if kw.get("standardize"):
            y = NormalizeIntensity(channel_wise=cw)(y)
        if kw.get("mean") is not None:
            y = NormalizeIntensity(subtrahend=list(kw["mean"]), divisor=list(kw["std"]), channel_wise=True)(y)
    return np.asarray(y, dtype=np.float32)


def compare(data: Path | None) -> None:
    arrays = list(images(data))
    for name, kw in SETTINGS.items():
        worst, off = 0.0, []
        for image_name, x in arrays:
            if kw.get("mean") is not None and x.shape[0] != 3:
                x = np.repeat(x[:1], 3, axis=0)
            ours = np.asarray(IntensityNormalize(**kw)(x), dtype=np.float64)
            theirs = monai_version(x, kw).astype(np.float64)
            same_nan = np.array_equal(np.isnan(ours), np.isnan(theirs))
            both = ~np.isnan(ours) & ~np.isnan(theirs)
            with np.errstate(invalid="ignore"):  # inf - inf on the NaN / inf edge case
                diff = float(np.nan_to_num(np.abs(ours[both] - theirs[both])).max()) if both.any() else 0.0
            if image_name not in EDGE_CASES:
                worst = max(worst, diff)
            if diff > 1e-6 or not same_nan:
                off.append(f"{image_name} ({diff:.3g}{'' if same_nan else ', NaN where medfuse has none'})")
        print(f"{name}: max |difference| {worst:.3g} over {len(arrays) - len(EDGE_CASES)} ordinary images; "
              f"> 1e-6 or NaN mismatch: {', '.join(off) or 'none'}")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, default=None, help="real data folder (default: ../shared/data)")
    args = parser.parse_args()
    compare(args.data or shared_data_dir())
