# Copyright (c) medfuse contributors
# Licensed under the Apache License, Version 2.0
"""Manifests (one datalist format for every task), public-layout converters, demo data."""

from .manifest import (
    SCHEMA_VERSION,
    SPLITS,
    TASKS,
    load_split,
    make_provenance,
    new_manifest,
    read_manifest,
    summarize_manifest,
    validate_manifest,
    write_manifest,
)

__all__ = [
    "SCHEMA_VERSION",
    "SPLITS",
    "TASKS",
    "load_split",
    "make_provenance",
    "new_manifest",
    "read_manifest",
    "summarize_manifest",
    "validate_manifest",
    "write_manifest",
]
