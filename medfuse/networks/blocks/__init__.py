# Copyright (c) medfuse contributors
# Licensed under the Apache License, Version 2.0
"""Network building blocks, one concept per file."""

from .cbam import CBAM, CBAMChannelAttention, CBAMSpatialAttention
from .cross_attention_fusion import (
    BidirectionalCrossAttentionFusion,
    CrossAttentionLayer,
    MultiScaleCrossAttentionFusion,
    sincos_position_embedding_2d,
)
from .dualattnet_heads import DualAttentionHead, ImageLevelAttention, fine_grained_disease_attention

__all__ = [
    "BidirectionalCrossAttentionFusion",
    "CBAM",
    "CBAMChannelAttention",
    "CBAMSpatialAttention",
    "CrossAttentionLayer",
    "MultiScaleCrossAttentionFusion",
    "sincos_position_embedding_2d",
    "DualAttentionHead", "ImageLevelAttention", "fine_grained_disease_attention",
]

from .cross_attention_fusion import sincos_position_embedding_coords  # noqa: E402
from .difm import ChannelMeanGate, DualInteractiveFusion  # noqa: E402

__all__ += ["ChannelMeanGate", "DualInteractiveFusion", "sincos_position_embedding_coords"]
