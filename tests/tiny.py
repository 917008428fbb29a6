# Copyright (c) medfuse contributors
# Licensed under the Apache License, Version 2.0
"""The one set of tiny training settings of the bundle tests and the "every bundle exports" tests.

* :data:`RUN_SIZE`: the run-size keys every bundle understands (64 px, one epoch, batch 4, no workers, one thread,
  ``threshold_min_cases`` 1);
* :data:`PER_BUNDLE`: the network keys that shrink one bundle (a new bundle adds an entry when its default network
  is too big for a CPU test). The special key ``demo_manifest`` names the demo manifest to train on (default: the
  bundle's own ``manifest`` default, found in the demo data folder through ``dataset_dir``);
* :func:`bundle_overrides`: what a bundle test passes (``manifest``, ``output_dir``, the two above, its changes);
* :func:`tiny_overrides`: what the zoo test passes: :data:`GENERIC` keys the bundle's composed train config has,
  then its :data:`PER_BUNDLE` entry.
"""

from __future__ import annotations

import os
from typing import Any, Mapping

__all__ = ["RUN_SIZE", "GENERIC", "PER_BUNDLE", "bundle_overrides", "tiny_overrides"]

RUN_SIZE: dict[str, Any] = {
    "image_size": 64,
    "epochs": 1,
    "batch_size": 4,
    "num_workers": 0,
    "num_threads": 1,
    "progress": False,
    # a handful of validation cases: let a threshold be fitted so the threshold path stays tested
    "threshold_min_cases": 1,
}
GENERIC: dict[str, Any] = {**RUN_SIZE, "cache_rate": 0.0}

_DUAL_CROSS_ATTENTION = {"backbones": ["efficientnet-b0", "resnet10"], "hidden_size": 16, "num_heads": 2,
                         "mc_samples": 3}

PER_BUNDLE: dict[str, dict[str, Any]] = {
    "cxr_dual_cross_attention": dict(_DUAL_CROSS_ATTENTION),
    "oct_dual_cross_attention": dict(_DUAL_CROSS_ATTENTION),
    "cxr_multi_output_unet": {"features": [4, 4, 8, 8, 16, 4]},
    # two narrow encoders, DIFM keys/values pooled to 4 x 4 (2d lung phantoms by default)
    "difm_segmentation": {"features": [4, 4, 8, 8, 16, 4], "kv_size": 4},
    "cxr_dualattnet_detection": {"demo_manifest": "cxr_detection", "backbone": "resnet18", "fpn_channels": 32,
                                 "base_anchor_shapes": [[4, 4], [8, 8], [16, 16]]},
}


def tiny_overrides(bundle: str, train_config: Mapping[str, Any]) -> dict[str, Any]:
    """The overrides for ``bundle``: :data:`GENERIC` keys its train config has, then its :data:`PER_BUNDLE` entry."""
    out = {k: v for k, v in GENERIC.items() if k in train_config}
    out.update({k: v for k, v in PER_BUNDLE.get(bundle, {}).items() if k != "demo_manifest"})
    return out


def bundle_overrides(bundle: str, manifest: str | os.PathLike, output_dir: str | os.PathLike, **changes: Any) -> dict:
    """A bundle test's overrides: ``manifest``, ``output_dir``, :data:`RUN_SIZE`, the bundle's entry, ``changes``."""
    out: dict[str, Any] = {"manifest": str(manifest), "output_dir": str(output_dir), **RUN_SIZE}
    out.update({k: v for k, v in PER_BUNDLE.get(bundle, {}).items() if k != "demo_manifest"})
    out.update(changes)
    return out
