# Copyright (c) medfuse contributors
# Licensed under the Apache License, Version 2.0
"""Small helpers shared across medfuse: atomic writes, hashing, locating shared data."""

from .io import atomic_write_bytes, atomic_write_csv, atomic_write_json, atomic_write_text, sha256_file
from .paths import shared_data_dir

__all__ = ["atomic_write_bytes", "atomic_write_csv", "atomic_write_json", "atomic_write_text", "sha256_file", "shared_data_dir"]
