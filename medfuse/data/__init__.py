# Copyright (c) medfuse contributors
# Licensed under the Apache License, Version 2.0
"""Manifests (one datalist format for every task), patient-level splits, patient ids from
file names, public-layout converters, demo data.

The converters of :mod:`medfuse.data.layouts` import numpy and urllib, so they are loaded on
first use of one of their names: ``import medfuse.data`` (and the ``medfuse validate`` /
``summary`` commands, which read manifests only) stays light.
"""

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
from .patients import PATIENT_RULES, PatientIdParser, compile_patient_regex, patient_id_from_name
from .splits import (
    DEFAULT_SPLIT_NAMES,
    assign_groups,
    carve_validation,
    find_leakage,
    group_indices,
    group_label,
    parse_fractions,
    split_items,
    validate_fractions,
)

# the public names of medfuse.data.layouts (keep in step with its __all__), imported on first access
_LAYOUTS_NAMES = (
    "IMAGE_EXTENSIONS",
    "SPLIT_FOLDERS",
    "DEFAULT_FRACTIONS",
    "DEFAULT_VAL_FRACTION",
    "DEFAULT_LABEL_PATTERN",
    "DEFAULT_MASK_SUFFIXES",
    "MEDMNIST_CLASSES",
    "ConversionReport",
    "is_dicom_bytes",
    "inspect_image",
    "folder_to_manifest",
    "pairs_to_manifest",
    "medmnist_to_manifest",
    "medmnist_url",
    "download_medmnist",
    "nifti_to_manifest",
    "vindr_to_manifest",
    "coco_to_manifest",
)

__all__ = [
    # manifest
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
    # patients
    "PATIENT_RULES",
    "PatientIdParser",
    "compile_patient_regex",
    "patient_id_from_name",
    # splits
    "DEFAULT_SPLIT_NAMES",
    "assign_groups",
    "carve_validation",
    "find_leakage",
    "group_indices",
    "group_label",
    "parse_fractions",
    "split_items",
    "validate_fractions",
    # layouts (lazy)
    *_LAYOUTS_NAMES,
]


def __getattr__(name: str):
    if name in _LAYOUTS_NAMES:
        from . import layouts

        value = getattr(layouts, name)
        globals()[name] = value  # later lookups skip this function
        return value
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__))
