# Copyright (c) medfuse contributors
# Licensed under the Apache License, Version 2.0
"""A network that runs in eager mode but cannot be compiled by ``torch.jit.script`` (tests only)."""

from __future__ import annotations

import math

import torch
from torch import nn

__all__ = ["UnscriptableNet"]


class UnscriptableNet(nn.Module):
    """Pooled features -> linear classifier; its forward calls a Python helper with ``**kwargs``."""

    def __init__(self, in_channels: int = 1, num_classes: int = 2):
        super().__init__()
        self.fc = nn.Linear(in_channels, num_classes)

    @staticmethod
    def _scale(x, **options):  # **kwargs: TorchScript cannot compile this
        return x * options.get("factor", 1.0)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        pooled = x.mean(dim=(2, 3))
        return self.fc(self._scale(pooled, factor=math.sqrt(1.0)))
