# Copyright (c) medfuse contributors
# Licensed under the Apache License, Version 2.0
"""medfuse: MONAI-based pipeline for explainable, uncertainty-aware medical image analysis."""

__version__ = "0.1.0"

__all__ = ["__version__", "load_model"]


def __getattr__(name: str):
    # ``medfuse.load_model`` without importing torch at ``import medfuse`` (the CLI's --help stays light)
    if name == "load_model":
        from medfuse.inference import load_model

        return load_model
    raise AttributeError(f"module 'medfuse' has no attribute {name!r}")
