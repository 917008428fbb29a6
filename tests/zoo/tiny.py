# Copyright (c) medfuse contributors
# Licensed under the Apache License, Version 2.0
"""Tiny training settings for the "every bundle exports" tests.

Every folder under ``bundles/`` with a ``configs/metadata.json`` is trained for one epoch on
the synthetic demo data through its own ``configs/train.json`` and then exported. The
overrides come from two places, both here in ``tests/`` (the zoo never sees them):

* :data:`GENERIC`: run-size keys; each is applied only when the bundle's ``train.json`` has
  it as a top-level key, so a new bundle that follows the medfuse conventions needs nothing;
* :data:`PER_BUNDLE`: the network keys that shrink one bundle (a new bundle adds an entry when
  its default network is too big for a CPU test). The special key ``demo_manifest`` names the
  demo manifest to train on (default: the bundle's own ``manifest`` default, found in the demo
  data folder through ``dataset_dir``).
"""

from __future__ import annotations

from typing import Any, Mapping

__all__ = ["GENERIC", "PER_BUNDLE", "tiny_overrides"]

GENERIC: dict[str, Any] = {
    "image_size": 64,
    "epochs": 1,
    "batch_size": 4,
    "num_workers": 0,
    "num_threads": 1,
    "progress": False,
    "cache_rate": 0.0,
    "mc_samples": 3,
}

_DUAL_CROSS_ATTENTION = {"backbones": ["efficientnet-b0", "resnet10"], "hidden_size": 16, "num_heads": 2}

PER_BUNDLE: dict[str, dict[str, Any]] = {
    "cxr_dual_cross_attention": dict(_DUAL_CROSS_ATTENTION),
    "oct_dual_cross_attention": dict(_DUAL_CROSS_ATTENTION),
    # issue 6's bundle (arrives with that branch): a narrow BasicUNet, as in its own bundle tests
    "cxr_multi_output_unet": {"features": [4, 4, 8, 8, 16, 4]},
    # issue 13's DIFM bundle: two narrow encoders, DIFM keys/values pooled to 4 x 4 (2d lung phantoms by default)
    "difm_segmentation": {"features": [4, 4, 8, 8, 16, 4], "kv_size": 4},
}


def tiny_overrides(bundle: str, train_config: Mapping[str, Any]) -> dict[str, Any]:
    """The overrides for ``bundle``: :data:`GENERIC` keys its train config has, then its :data:`PER_BUNDLE` entry."""
    out = {k: v for k, v in GENERIC.items() if k in train_config}
    out.update({k: v for k, v in PER_BUNDLE.get(bundle, {}).items() if k != "demo_manifest"})
    return out
