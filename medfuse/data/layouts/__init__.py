# Copyright (c) medfuse contributors
# Licensed under the Apache License, Version 2.0
"""Public dataset layouts -> medfuse manifests.

Three layouts cover the public chest X-ray and OCT datasets medfuse uses:

* **class folders** (:func:`folder_to_manifest`): one folder per class, optionally under
  ``train`` / ``val`` / ``test`` folders. Kermany chest X-ray (``train/NORMAL``,
  ``test/PNEUMONIA``), Kermany OCT2017 (``CNV``, ``DME``, ``DRUSEN``, ``NORMAL``, directly or
  under ``train``/``test``), and the TB / COVID-19 radiography databases, whose class folders
  hold an ``images/`` folder beside a ``masks/`` folder (``COVID/images/COVID-1.png``).
* **image + mask folders** (:func:`pairs_to_manifest`): Shenzhen and Montgomery
  (``cxr/CHNCXR_0001_0.png`` with ``masks/CHNCXR_0001_0.png``), masks matched by file stem,
  optionally with a suffix (``1.jpg`` with ``1-mask.png``), labels read from the stem.
* **MedMNIST npz** (:func:`medmnist_to_manifest`): ``train_images`` / ``train_labels`` /
  ``val_*`` / ``test_*`` arrays, written out as PNG files with the official splits kept.

Each converter returns ``(manifest, report)``: the manifest dictionary (not yet written; use
:func:`medfuse.data.manifest.write_manifest`) and a :class:`ConversionReport` that accounts
for every file found: ``found == written + skipped``, each skipped file with its reason.

Splits are patient-level and duplicate-safe (:mod:`medfuse.data.splits`): items sharing a
patient id (:mod:`medfuse.data.patients`) or identical bytes (``sha256``) always land in one
split. Existing split folders are kept; a group that the folders themselves spread over two
splits keeps only its copies in the most held-out split (test, then validation) and the
others are skipped and reported, unless ``leakage="error"``.

The package holds one module per concern: :mod:`~medfuse.data.layouts.folders`,
:mod:`~medfuse.data.layouts.pairs` and :mod:`~medfuse.data.layouts.medmnist` (the three
2-D converters; MedMNIST download included), :mod:`~medfuse.data.layouts.nifti` (NIfTI / ACDC / Synapse
volumes, ``nifti2manifest``), :mod:`~medfuse.data.layouts.detection` (VinDr-CXR and COCO boxes,
``vindr2manifest`` / ``coco2manifest``), :mod:`~medfuse.data.layouts.sniff` (format
sniffing), :mod:`~medfuse.data.layouts.report` (:class:`ConversionReport`) and
``_common`` (constants, among them the one list of image extensions, and shared helpers).
Every public name is importable from ``medfuse.data.layouts``. The argparse helpers of
the ``*2manifest`` commands live in :mod:`medfuse.commands._common`.
"""

from __future__ import annotations

from medfuse.data.layouts._common import (
    DEFAULT_FRACTIONS,
    DEFAULT_LABEL_PATTERN,
    DEFAULT_MASK_SUFFIXES,
    DEFAULT_VAL_FRACTION,
    IMAGE_EXTENSIONS,
    SPLIT_FOLDERS,
)
from medfuse.data.layouts.folders import folder_to_manifest
from medfuse.data.layouts.medmnist import MEDMNIST_CLASSES, download_medmnist, medmnist_to_manifest, medmnist_url
from medfuse.data.layouts.pairs import pairs_to_manifest
from medfuse.data.layouts.report import ConversionReport
from medfuse.data.layouts.sniff import inspect_image, is_dicom_bytes
from medfuse.data.layouts.nifti import nifti_to_manifest  # noqa: E402  (imports report, not this package)
from medfuse.data.layouts.detection import coco_to_manifest, vindr_to_manifest  # noqa: E402

__all__ = [
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
]


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__))
