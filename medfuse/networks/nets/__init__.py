# Copyright (c) medfuse contributors
# Licensed under the Apache License, Version 2.0
"""Networks, one per file."""

from .dual_cross_attention import DCAT, DCATNet, DualCrossAttentionNet
from .multi_output_unet import MultiOutputUnet, MultiOutputUNet

__all__ = ["DCAT", "DCATNet", "DualCrossAttentionNet", "MultiOutputUNet", "MultiOutputUnet"]

from .difm_unet import DIFMUnet, DIFMUNet  # noqa: E402

__all__ += ["DIFMUNet", "DIFMUnet"]
