# Copyright (c) medfuse contributors
# Licensed under the Apache License, Version 2.0
"""Network building blocks, one concept per file."""

from .cbam import CBAM, CBAMChannelAttention, CBAMSpatialAttention
from .cross_attention_fusion import (
    BidirectionalCrossAttentionFusion,
    CrossAttentionLayer,
    MultiScaleCrossAttentionFusion,
    sincos_position_embedding_2d,
    sincos_position_embedding_coords,
)
from .difm import ChannelMeanGate, DualInteractiveFusion
from .dualattnet_heads import DualAttentionHead, ImageLevelAttention, fine_grained_disease_attention
from .global_spatial_attention import GlobalSpatialAttention

__all__ = [
    "BidirectionalCrossAttentionFusion",
    "CBAM",
    "CBAMChannelAttention",
    "CBAMSpatialAttention",
    "ChannelMeanGate",
    "CrossAttentionLayer",
    "DualAttentionHead",
    "DualInteractiveFusion",
    "GlobalSpatialAttention",
    "ImageLevelAttention",
    "MultiScaleCrossAttentionFusion",
    "fine_grained_disease_attention",
    "sincos_position_embedding_2d",
    "sincos_position_embedding_coords",
]
