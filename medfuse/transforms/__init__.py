# Copyright (c) medfuse contributors
# Licensed under the Apache License, Version 2.0
"""Image loading and preprocessing for chest X-ray and OCT: MONAI-style array/dictionary transform pairs.

All loaders return a float32 ``monai.data.MetaTensor``, channel-first ``(C, H, W)`` with
``H`` = image rows (not transposed), values in [0, 1].
"""

from .boxes import ResizeWithPadBoxd, detection_eval_transforms, detection_train_transforms, monai_to_xyxy, xyxy_to_monai
from .dicom import (
    LoadDicomXray,
    LoadDicomXrayd,
    LoadDicomXrayD,
    LoadDicomXrayDict,
    is_dicom_file,
    read_dicom_dataset,
    read_dicom_image,
)
from .intensity import (
    ContrastEnhance,
    ContrastEnhanced,
    ContrastEnhanceD,
    ContrastEnhanceDict,
    IntensityNormalize,
    IntensityNormalized,
    IntensityNormalizeD,
    IntensityNormalizeDict,
    RandSpeckleNoise,
    RandSpeckleNoised,
    RandSpeckleNoiseD,
    RandSpeckleNoiseDict,
    clahe,
)
from .io import (
    LoadOCT,
    LoadOCTd,
    LoadOCTD,
    LoadOCTDict,
    LoadXray,
    LoadXrayd,
    LoadXrayD,
    LoadXrayDict,
    detect_image_format,
    read_image,
    read_nifti_image,
    read_pil_image,
)
from .presets import cxr_eval_transforms, cxr_train_transforms, oct_eval_transforms, oct_train_transforms
from .spatial import FillMissingMaskd, ResizeWithPad, ResizeWithPadd, ResizeWithPadD, ResizeWithPadDict, fit_size
from .tta import cxr_tta_transforms

__all__ = [
    "cxr_tta_transforms",
    "FillMissingMaskd",
    "read_dicom_dataset",
    "read_dicom_image",
    "is_dicom_file",
    "LoadDicomXray",
    "LoadDicomXrayd",
    "LoadDicomXrayD",
    "LoadDicomXrayDict",
    "detect_image_format",
    "read_image",
    "read_pil_image",
    "read_nifti_image",
    "LoadXray",
    "LoadXrayd",
    "LoadXrayD",
    "LoadXrayDict",
    "LoadOCT",
    "LoadOCTd",
    "LoadOCTD",
    "LoadOCTDict",
    "ResizeWithPad",
    "ResizeWithPadd",
    "ResizeWithPadD",
    "ResizeWithPadDict",
    "fit_size",
    "clahe",
    "IntensityNormalize",
    "IntensityNormalized",
    "IntensityNormalizeD",
    "IntensityNormalizeDict",
    "ContrastEnhance",
    "ContrastEnhanced",
    "ContrastEnhanceD",
    "ContrastEnhanceDict",
    "RandSpeckleNoise",
    "RandSpeckleNoised",
    "RandSpeckleNoiseD",
    "RandSpeckleNoiseDict",
    "cxr_train_transforms",
    "cxr_eval_transforms",
    "oct_train_transforms",
    "oct_eval_transforms",
]
__all__ += ["ResizeWithPadBoxd", "detection_train_transforms", "detection_eval_transforms", "xyxy_to_monai", "monai_to_xyxy"]
