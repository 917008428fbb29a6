# Copyright (c) medfuse contributors
# Licensed under the Apache License, Version 2.0
"""Hospital DICOM folders -> manifests: scanning, de-identification, selection, caching.

A package of its own (rather than modules under :mod:`medfuse.data`) because it brings its
own process-pool workers, pseudonymisation and image cache, and because importing it must
stay light: nothing here imports torch or MONAI until pixels are decoded.

- :mod:`~medfuse.dicom.sniff`: is this file DICOM (by content), is its SOP class an image,
  is its transfer syntax lossy;
- :mod:`~medfuse.dicom.scan`: the per-file worker (header, checks, SHA-256, decode) and the pool;
- :mod:`~medfuse.dicom.deid`: salted pseudonyms, the salt file, identifiers in paths;
- :mod:`~medfuse.dicom.labels`: label CSV keyed by a DICOM identifier, or folder labels;
- :mod:`~medfuse.dicom.cache`: the 16-bit PNG/TIFF cache that training reads;
- :mod:`~medfuse.dicom.convert`: :func:`dicom_to_manifest`, the whole pipeline.
"""

from medfuse.dicom.convert import DEFAULT_MODALITIES, REASONS, WARNING_CODES, ScanReport, dicom_to_manifest, output_paths
from medfuse.dicom.sniff import is_image_sop_class, sniff_dicom

__all__ = [
    "DEFAULT_MODALITIES",
    "REASONS",
    "WARNING_CODES",
    "ScanReport",
    "dicom_to_manifest",
    "output_paths",
    "is_image_sop_class",
    "sniff_dicom",
]
