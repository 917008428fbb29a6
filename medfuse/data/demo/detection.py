# Copyright (c) medfuse contributors
# Licensed under the Apache License, Version 2.0
"""Synthetic lesion-detection data: chest phantoms of :mod:`medfuse.data.demo` with boxed findings.

Two classes, ``opacity`` (the phantom's own blurred opacities, whose boxes it returns) and ``nodule``
(small round dense spots drawn here inside the lung fields). Each image has 0 to 3 boxes; a third of the
images (rounded) are negatives with ``boxes: []``. Boxes are ``[x_min, y_min, x_max, y_max]`` in pixels
(x = column), like every manifest.
"""

from __future__ import annotations

import hashlib
import io
import os
from pathlib import Path

import numpy as np

from medfuse.data.demo.cxr import cxr_phantom

__all__ = ["DETECTION_CLASSES", "DETECTION_MANIFEST_NAME", "DETECTION_DIR", "make_demo_detection"]

#: Classes of the detection demo, in label order.
DETECTION_CLASSES = ("opacity", "nodule")
#: File name of the manifest written by :func:`make_demo_detection` (in ``out_dir``).
DETECTION_MANIFEST_NAME = "cxr_detection_manifest.json"
#: Sub-folder of ``out_dir`` that holds the images.
DETECTION_DIR = "cxr_detection"
_MAX_BOXES = 3


def _draw_nodules(image: np.ndarray, lungs: np.ndarray, count: int, rng: np.random.Generator) -> list[list[float]]:
    """Add ``count`` round dense spots inside the lungs of ``image`` (uint8, in place); their boxes."""
    rows, cols = image.shape
    ys, xs = np.nonzero(lungs)
    if ys.size == 0:
        ys, xs = np.array([rows // 2]), np.array([cols // 2])
    rr, cc = np.arange(rows)[:, None], np.arange(cols)[None, :]
    out = image.astype(np.float64)
    boxes = []
    for _ in range(count):
        i = int(rng.integers(ys.size))
        cy, cx = float(ys[i]) + 0.5, float(xs[i]) + 0.5
        radius = float(rng.uniform(0.025, 0.045)) * min(rows, cols)
        amp = float(rng.uniform(70.0, 110.0))
        dist = np.sqrt((rr + 0.5 - cy) ** 2 + (cc + 0.5 - cx) ** 2)
        spot = np.clip(radius + 0.5 - dist, 0.0, 1.0)  # anti-aliased disc
        out += amp * spot
        boxes.append([max(0.0, cx - radius), max(0.0, cy - radius), min(float(cols), cx + radius), min(float(rows), cy + radius)])
    image[...] = np.clip(np.round(out), 0, 255).astype(np.uint8)
    return boxes


def make_demo_detection(out_dir: str | os.PathLike, n: int, seed: int = 0, image_size: int = 128) -> Path:
    """Write ``n`` synthetic chest radiographs with lesion boxes and their detection manifest.

    Files: ``<out_dir>/cxr_detection/DET####.png`` (8-bit) and ``<out_dir>/cxr_detection_manifest.json``
    (task ``detection``, classes ``opacity``, ``nodule``; items with ``image``, ``boxes``, ``box_labels``,
    ``patient_id``, ``sha256``). ``round(n / 3)`` images are negatives; the others have 1 to 3 boxes (opacities
    from :func:`medfuse.data.demo.cxr_phantom`, nodules drawn here). Every image is its own patient; the split
    is 60/20/20 %, stratified by positive / negative. Other files in ``out_dir`` are left alone (the images'
    folder is replaced).

    Args:
        out_dir: output folder (created).
        n: number of images (>= 1).
        seed: non-negative seed; the same seed gives byte-identical files. Defaults to 0.
        image_size: side in pixels (>= 32). Defaults to 128.

    Returns:
        the path of the manifest.

    Raises:
        ValueError: for ``n < 1``, a negative seed or a size below 32.

    Examples::

        >>> path = make_demo_detection("demo", n=30, seed=0)
        >>> read_manifest(path)["classes"]
        ['opacity', 'nodule']
    """
    from medfuse.data.manifest import make_provenance, new_manifest, write_manifest
    from medfuse.data.splits import split_items

    if isinstance(n, bool) or int(n) < 1:
        raise ValueError(f"n must be >= 1, got {n!r}")
    if int(seed) < 0:
        raise ValueError(f"seed must be >= 0, got {seed!r}")
    if int(image_size) < 32:
        raise ValueError(f"image_size must be at least 32 pixels, got {image_size!r}")
    n, seed, size = int(n), int(seed), int(image_size)
    out = Path(out_dir)
    folder = out / DETECTION_DIR
    if folder.is_dir():
        for old in folder.glob("DET*.png"):
            old.unlink()
    folder.mkdir(parents=True, exist_ok=True)
    order = np.random.default_rng([seed, 7001]).permutation(n)
    negatives = set(int(i) for i in order[: int(round(n / 3))])
    items = []
    for i in range(n):
        rng = np.random.default_rng([seed, 7002, i])
        positive = i not in negatives
        with_opacity = positive and bool(rng.random() < 0.5)
        image, mask, info = cxr_phantom(rng, size, positive=with_opacity, return_info=True)
        boxes = [[float(v) for v in b] for b in info["boxes"][:_MAX_BOXES]]
        labels = [0] * len(boxes)
        if positive:
            room = _MAX_BOXES - len(boxes)
            low = 0 if boxes else 1
            count = int(rng.integers(low, room + 1)) if room >= low else 0
            nodules = _draw_nodules(image, mask > 0, count, rng)
            boxes += nodules
            labels += [1] * len(nodules)
        buf = io.BytesIO()
        from PIL import Image

        Image.fromarray(image).save(buf, format="PNG")
        data = buf.getvalue()
        name = f"DET{i:04d}.png"
        (folder / name).write_bytes(data)
        items.append({
            "image": f"{DETECTION_DIR}/{name}",
            "boxes": [[round(v, 2) for v in b] for b in boxes],
            "box_labels": labels,
            "patient_id": f"DET{i:04d}",
            "sha256": hashlib.sha256(data).hexdigest(),
            "_stratum": int(bool(boxes)),
        })
    parts = split_items(items, (0.6, 0.2, 0.2), seed=seed, label_key="_stratum")
    for item in items:
        del item["_stratum"]
    provenance = make_provenance(
        "medfuse.data.demo.detection.make_demo_detection", out,
        {"n": n, "seed": seed, "image_size": size},
        box_format="[x_min, y_min, x_max, y_max] pixels, x = column",
    )
    manifest = new_manifest("detection", DETECTION_CLASSES, provenance, **parts)
    return write_manifest(manifest, out / DETECTION_MANIFEST_NAME)
