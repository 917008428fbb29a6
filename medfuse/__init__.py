# Copyright (c) medfuse contributors
# Licensed under the Apache License, Version 2.0
"""medfuse: MONAI-based pipeline for explainable, uncertainty-aware medical image analysis."""

__version__ = "0.1.0"
