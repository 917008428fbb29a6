# Copyright (c) medfuse contributors
# Licensed under the Apache License, Version 2.0
"""medfuse networks: MONAI-based blocks and classifiers, backbones by name, Monte-Carlo dropout."""

from .backbones import PretrainedWeightsError, build_backbone, load_pretrained_weights
from .blocks import (
    CBAM,
    BidirectionalCrossAttentionFusion,
    CBAMChannelAttention,
    CBAMSpatialAttention,
    CrossAttentionLayer,
    MultiScaleCrossAttentionFusion,
)
from .blocks import GlobalSpatialAttention
from .nets import GSANet, GlobalSpatialAttentionNet
from .losses import MultiOutputLoss
from .losses import GlobalSpatialAttentionLoss
from .nets import DCAT, DCATNet, DualCrossAttentionNet, MultiOutputUnet, MultiOutputUNet
from .nets import DualAttNet, DualAttNetDetector
from .uncertainty import (
    MCDropoutResult,
    enable_mc_dropout,
    expected_entropy,
    mc_dropout_outputs,
    mc_dropout_predict,
    mutual_information,
    predictive_entropy,
)

__all__ = [
    "BidirectionalCrossAttentionFusion",
    "CBAM",
    "CBAMChannelAttention",
    "CBAMSpatialAttention",
    "CrossAttentionLayer",
    "DCAT",
    "DCATNet",
    "DualCrossAttentionNet",
    "GSANet",
    "GlobalSpatialAttention",
    "GlobalSpatialAttentionLoss",
    "GlobalSpatialAttentionNet",
    "MCDropoutResult",
    "MultiScaleCrossAttentionFusion",
    "MultiOutputLoss",
    "MultiOutputUNet",
    "MultiOutputUnet",
    "PretrainedWeightsError",
    "build_backbone",
    "enable_mc_dropout",
    "expected_entropy",
    "load_pretrained_weights",
    "mc_dropout_outputs",
    "mc_dropout_predict",
    "mutual_information",
    "predictive_entropy",
]
__all__ += ["DualAttNet", "DualAttNetDetector"]

from .blocks import ChannelMeanGate, DualInteractiveFusion  # noqa: E402
from .losses import DIFMLoss, MultiScaleBoundaryLoss  # noqa: E402
from .nets import DIFMUnet, DIFMUNet  # noqa: E402

__all__ += ["ChannelMeanGate", "DIFMLoss", "DIFMUNet", "DIFMUnet", "DualInteractiveFusion", "MultiScaleBoundaryLoss"]
