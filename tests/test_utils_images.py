# Copyright (c) medfuse contributors
# Licensed under the Apache License, Version 2.0
"""medfuse.utils.images: the one list of image file endings, and its users."""

import pytest

import medfuse.workflows
from medfuse.utils.images import (
    DICOM_EXTENSIONS,
    IMAGE_EXTENSIONS,
    NIFTI_EXTENSIONS,
    PIL_EXTENSIONS,
    has_image_extension,
    image_stem,
)


def test_folder_endings_are_readable_by_the_loader():
    readers = set(DICOM_EXTENSIONS) | set(NIFTI_EXTENSIONS) | set(PIL_EXTENSIONS)
    assert set(IMAGE_EXTENSIONS) <= readers
    assert not set(DICOM_EXTENSIONS) & set(NIFTI_EXTENSIONS) and not set(NIFTI_EXTENSIONS) & set(PIL_EXTENSIONS)
    assert all(e == e.lower() and e.startswith(".") for e in readers)
    assert medfuse.workflows.IMAGE_EXTENSIONS is IMAGE_EXTENSIONS


@pytest.mark.parametrize(
    "path, expected",
    [("x/a.BMP", True), ("a.tif", True), ("a.nii.gz", True), ("a.NII.GZ", True), ("a.gz", False), ("a.txt", False),
     ("IM0001", False), ("dir.png/", True)],
)
def test_has_image_extension(path, expected):
    assert has_image_extension(path) is expected


def test_has_image_extension_with_other_endings():
    assert has_image_extension("a.hdr", NIFTI_EXTENSIONS) and not has_image_extension("a.hdr")


def test_image_stem():
    assert image_stem("/data/case.nii.gz") == "case"
    assert image_stem("C:\\x\\scan.DCM".replace("\\", "/")) == "scan"
    assert image_stem("a.bmp") == "a" and image_stem(".png") == ".png" and image_stem("notes.txt") == "notes.txt"
