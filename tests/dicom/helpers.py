# Copyright (c) medfuse contributors
# Licensed under the Apache License, Version 2.0
"""Builders for the dicom2manifest tests: small DICOM files and the messy hospital-export folder."""

from __future__ import annotations

import io
import os
import shutil
import zipfile
from pathlib import Path

import numpy as np


def pydicom_file(name: str) -> str:
    """Path of a pydicom test file (pydicom's own or pydicom-data's)."""
    from pydicom.data import get_testdata_file

    path = get_testdata_file(name)
    if path is None:
        import pytest

        pytest.skip(f"pydicom test file {name} not available (pip install pydicom-data)")
    return str(path)


def write_cr(
    path: str | os.PathLike,
    patient_id: str | None = "PAT001",
    patient_name: str = "TEST^PATIENT",
    sop_uid: str | None = None,
    study_uid: str | None = None,
    modality: str = "CR",
    body_part: str = "CHEST",
    view: str = "PA",
    burned_in: str | None = None,
    pixels: np.ndarray | None = None,
    with_pixels: bool = True,
    transfer_syntax: str = "1.2.840.10008.1.2.1",
    photometric: str = "MONOCHROME2",
    accession: str = "ACC0001",
    frames: int = 1,
    seed: int = 0,
) -> dict:
    """Write a small 12-bit radiograph (64x64 unless ``pixels`` given); return its UIDs."""
    from pydicom.dataset import Dataset, FileMetaDataset
    from pydicom.encaps import encapsulate
    from pydicom.uid import generate_uid

    sop_class = "1.2.840.10008.5.1.4.1.1.77.1.5.4" if modality == "OPT" else "1.2.840.10008.5.1.4.1.1.1"
    if modality == "DX":
        sop_class = "1.2.840.10008.5.1.4.1.1.1.1"
    sop_uid = sop_uid or generate_uid()
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = sop_class
    meta.MediaStorageSOPInstanceUID = sop_uid
    meta.TransferSyntaxUID = "1.2.840.10008.1.2.1"
    ds = Dataset()
    ds.file_meta = meta
    ds.SOPClassUID, ds.SOPInstanceUID = sop_class, sop_uid
    ds.PatientName = patient_name
    if patient_id is not None:
        ds.PatientID = patient_id
    ds.PatientBirthDate = "19600101"
    ds.AccessionNumber = accession
    ds.StudyInstanceUID = study_uid or generate_uid()
    ds.SeriesInstanceUID = generate_uid()
    ds.Modality, ds.BodyPartExamined, ds.ViewPosition = modality, body_part, view
    if burned_in is not None:
        ds.BurnedInAnnotation = burned_in
    ds.SamplesPerPixel, ds.PhotometricInterpretation = 1, photometric
    if pixels is None:
        rng = np.random.default_rng(seed)
        shape = (frames, 64, 64) if frames > 1 else (64, 64)
        pixels = rng.integers(0, 4096, size=shape, dtype=np.uint16)
    ds.Rows, ds.Columns = pixels.shape[-2:]
    if frames > 1:
        ds.NumberOfFrames = frames
    ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 16, 12, 11, 0
    ds.WindowCenter, ds.WindowWidth = 2048, 4096
    if with_pixels:
        ds.PixelData = np.ascontiguousarray(pixels, dtype="<u2").tobytes()
        if transfer_syntax == "garbage-j2k":  # encapsulated JPEG 2000 that no decoder can read
            ds.file_meta.TransferSyntaxUID = "1.2.840.10008.1.2.4.90"
            ds.PixelData = encapsulate([b"\xff\x4f\xff\x51" + b"\x00" * 60])
            ds["PixelData"].VR = "OB"
        elif transfer_syntax != "1.2.840.10008.1.2.1":
            plugin = "pydicom" if transfer_syntax == "1.2.840.10008.1.2.5" else "pylibjpeg"
            ds.compress(transfer_syntax, pixels, encoding_plugin=plugin, generate_instance_uid=False)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    buf = io.BytesIO()
    ds.save_as(buf, enforce_file_format=True)
    path.write_bytes(buf.getvalue())
    return {"sop_uid": sop_uid, "study_uid": ds.StudyInstanceUID}


def _copy(src: str, dst: Path) -> None:
    dst.parent.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(src, dst)


def build_messy_folder(root: Path, shared_data: Path | None = None) -> dict[str, str | None]:
    """A hospital-export-like folder; returns ``{relative path: expected reason (None = included)}``."""
    from PIL import Image

    expected: dict[str, str | None] = {}

    def put(rel: str, src: str, reason: str | None) -> None:
        _copy(src, root / rel)
        expected[rel] = reason

    # pydicom-data radiographs: RG1/RG3 in several transfer syntaxes; *_UNCI and *_J2KI share a SOP Instance UID
    put("PACS/RG1/UNCR", pydicom_file("RG1_UNCR.dcm"), None)
    put("PACS/RG1/J2KR", pydicom_file("RG1_J2KR.dcm"), None)
    put("PACS/RG1/UNCI", pydicom_file("RG1_UNCI.dcm"), None)  # lossy history, stored uncompressed: kept over J2KI
    put("PACS/RG1/J2KI", pydicom_file("RG1_J2KI.dcm"), "duplicate_sop_instance")
    put("PACS/RG1/copy_of_uncr.dcm", pydicom_file("RG1_UNCR.dcm"), "duplicate_sop_instance")
    put("PACS/RG3/UNCR", pydicom_file("RG3_UNCR.dcm"), None)
    put("PACS/RG3/J2KI", pydicom_file("RG3_J2KI.dcm"), "duplicate_sop_instance")
    put("PACS/RG3/UNCI", pydicom_file("RG3_UNCI.dcm"), None)
    # pydicom's own test files
    for name, reason in [
        ("CT_small.dcm", "modality_not_selected"),
        ("MR_truncated.dcm", "truncated"),
        ("rtplan.dcm", "non_image_sop_class"),
        ("rtplan_truncated.dcm", "truncated"),
        ("test-SR.dcm", "non_image_sop_class"),
        ("no_meta.dcm", "not_dicom"),  # a data set without preamble whose first byte is damaged
        ("ExplVR_LitEndNoMeta.dcm", "non_image_sop_class"),  # no preamble, explicit VR little endian
        ("ExplVR_BigEndNoMeta.dcm", "non_image_sop_class"),  # no preamble, big endian
        ("image_dfl.dcm", "modality_not_selected"),  # deflated transfer syntax, modality OT
        ("MR_small_bigendian.dcm", "modality_not_selected"),
        ("emri_small_jpeg_2k_lossless_too_short.dcm", "truncated"),
        ("waveform_ecg.dcm", "non_image_sop_class"),
        ("OBXXXX1A_rle_2frame.dcm", "modality_not_selected"),  # multi-frame ultrasound
    ]:
        put(f"misc/{Path(name).stem}", pydicom_file(name), reason)
    # a DICOMDIR tree: the directory files are not images, the referenced CR/CT/MR files are scanned like any other
    tree = Path(pydicom_file("CT_small.dcm")).parent / "dicomdirtests"
    if tree.is_dir():
        for src in sorted(p for p in tree.rglob("*") if p.is_file()):
            rel = "cd/" + src.relative_to(tree).as_posix()
            parts = src.relative_to(tree).parts
            if src.name.startswith("README"):
                reason = "not_dicom"  # README text files
            elif src.name.startswith("DICOMDIR"):
                reason = "non_image_sop_class"
            elif parts[0] == "TINY_ALPHA":
                reason = "no_pixel_data"  # CT images whose pixel data was stripped
            elif parts[1].startswith("CR"):
                reason = None
            else:
                reason = "modality_not_selected"
            put(rel, str(src), reason)
    # real chest CR from the shared data (the SIIM file and its relabelled copy share a SOP Instance UID)
    if shared_data is not None and (shared_data / "dicom_cxr").is_dir():
        put("shared/SIIM_CR_chest_PA_jpegbaseline.dcm", str(shared_data / "dicom_cxr/SIIM_CR_chest_PA_jpegbaseline.dcm"), None)
        put("shared/SIIM_CR_chest_PA_jpegbaseline_FAKE_MONOCHROME1.dcm",
            str(shared_data / "dicom_cxr/SIIM_CR_chest_PA_jpegbaseline_FAKE_MONOCHROME1.dcm"), "duplicate_sop_instance")
        put("shared/RG1_J2KR.dcm", str(shared_data / "dicom_cxr/RG1_J2KR.dcm"), "duplicate_sop_instance")
    # junk
    junk = root / "junk"
    junk.mkdir(parents=True, exist_ok=True)
    (junk / "empty.dcm").write_bytes(b"")
    expected["junk/empty.dcm"] = "empty_file"
    buf = io.BytesIO()
    Image.fromarray(np.zeros((8, 8), np.uint8)).save(buf, format="PNG")
    (junk / "screenshot.dcm").write_bytes(buf.getvalue())
    expected["junk/screenshot.dcm"] = "not_dicom"
    (junk / "notes.dcm").write_text("patient called, will bring the CD next week\n")
    expected["junk/notes.dcm"] = "not_dicom"
    with zipfile.ZipFile(junk / "export.dcm", "w") as z:
        z.writestr("readme.txt", "zipped export")
    expected["junk/export.dcm"] = "not_dicom"
    (junk / ".DS_Store").write_bytes(b"\x00\x00\x00\x01Bud1" + bytes(range(200)))
    expected["junk/.DS_Store"] = "not_dicom"
    (junk / "cut_in_header").write_bytes(Path(pydicom_file("RG1_UNCR.dcm")).read_bytes()[:700])
    expected["junk/cut_in_header"] = "truncated"
    # files we make: each one hits one rule
    write_cr(root / "made/nopixels", "PAT010", with_pixels=False)
    expected["made/nopixels"] = "no_pixel_data"
    write_cr(root / "made/burned", "PAT011", burned_in="YES")
    expected["made/burned"] = "burned_in_annotation"
    write_cr(root / "made/burned_no", "PAT011", burned_in="NO", seed=1)
    expected["made/burned_no"] = None
    write_cr(root / "made/no_patient_id", None, seed=2)
    expected["made/no_patient_id"] = None
    write_cr(root / "made/Doe_John/image1", "PAT012", patient_name="DOE^JOHN", seed=3)
    expected["made/Doe_John/image1"] = None
    write_cr(root / "made/lateral", "PAT013", modality="DX", view="LL", body_part="CHEST", seed=4)
    expected["made/lateral"] = None
    write_cr(root / "made/hand", "PAT014", modality="DX", view="PA", body_part="HAND", seed=5)
    expected["made/hand"] = None
    return expected
