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
from .global_spatial_attention import GlobalSpatialAttention

__all__ = [
    "BidirectionalCrossAttentionFusion",
    "CBAM",
    "CBAMChannelAttention",
    "CBAMSpatialAttention",
    "CrossAttentionLayer",
    "GlobalSpatialAttention",
    "MultiScaleCrossAttentionFusion",
    "sincos_position_embedding_2d",
]
