# Copyright (c) medfuse contributors
# Licensed under the Apache License, Version 2.0
"""Small helpers shared across medfuse: atomic writes, hashing, locating shared data, safe file names, the image
file endings (:mod:`medfuse.utils.images`) and ``torch.distributed`` helpers (:mod:`medfuse.utils.distributed`).

Nothing here imports torch or MONAI at import time.
"""

from .distributed import is_main_process, unwrap_module
from .images import (
    DICOM_EXTENSIONS,
    IMAGE_EXTENSIONS,
    NIFTI_EXTENSIONS,
    PIL_EXTENSIONS,
    has_image_extension,
    image_stem,
)
from .io import atomic_write_bytes, atomic_write_csv, atomic_write_json, atomic_write_text, sha256_file
from .paths import safe_file_name, shared_data_dir

__all__ = [
    "atomic_write_bytes",
    "atomic_write_csv",
    "atomic_write_json",
    "atomic_write_text",
    "sha256_file",
    "shared_data_dir",
    "safe_file_name",
    "DICOM_EXTENSIONS",
    "IMAGE_EXTENSIONS",
    "NIFTI_EXTENSIONS",
    "PIL_EXTENSIONS",
    "has_image_extension",
    "image_stem",
    "is_main_process",
    "unwrap_module",
]
