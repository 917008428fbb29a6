# Copyright (c) medfuse contributors
# Licensed under the Apache License, Version 2.0
"""Networks, one per file."""

from .difm_unet import DIFMUnet, DIFMUNet
from .dual_cross_attention import DCAT, DCATNet, DualCrossAttentionNet
from .ensemble import EnsembleNet
from .dualattnet import DualAttentionNet, DualAttNet, DualAttNetDetector
from .multi_output_unet import MultiOutputUnet, MultiOutputUNet
from .global_spatial_attention_net import GSANet, GlobalSpatialAttentionNet

__all__ = [
    "DCAT",
    "DCATNet",
    "DIFMUNet",
    "DIFMUnet",
    "DualAttNet",
    "DualAttNetDetector",
    "DualAttentionNet",
    "DualCrossAttentionNet",
    "EnsembleNet",
    "GSANet",
    "GlobalSpatialAttentionNet",
    "MultiOutputUNet",
    "MultiOutputUnet",
]
