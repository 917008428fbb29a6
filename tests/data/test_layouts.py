# Copyright (c) medfuse contributors
# Licensed under the Apache License, Version 2.0
"""Converters on small synthetic layouts (tiny PNGs written with PIL, a minimal DICOM, npz)."""

import json
from collections import Counter
from pathlib import Path

import numpy as np
import pytest
from monai.data import load_decathlon_datalist
from PIL import Image

from medfuse.data.layouts import (
    ConversionReport,
    download_medmnist,
    folder_to_manifest,
    inspect_image,
    medmnist_to_manifest,
    pairs_to_manifest,
)
from medfuse.data.manifest import read_manifest, write_manifest
from medfuse.data.splits import find_leakage
from medfuse.errors import DataError
from tests.data.synth import make_tree, write_dicom, write_npz, write_png


def _split_of(manifest):
    return {Path(it["image"]).name: s for s in ("training", "validation", "test") for it in manifest.get(s, [])}


def _write_and_read(manifest, out):
    out.parent.mkdir(parents=True, exist_ok=True)  # the command does this before writing
    write_manifest(manifest, out)
    back = read_manifest(out, check_hashes=True)
    if "training" in back:
        load_decathlon_datalist(str(out), is_segmentation=False, data_list_key="training")
    return back


def _class_tree(root, n_normal=12, n_pneu=12):
    files = {}
    for i in range(n_normal):
        files[f"NORMAL/IM-{i:04d}-0001.png"] = None
    for i in range(n_pneu):
        files[f"PNEUMONIA/person{i}_bacteria_{i}.png"] = None
    return make_tree(root, files)


# ----------------------------------------------------------------------------- folders
def test_class_folders_without_split_folders(tmp_path):
    root = _class_tree(tmp_path / "data")
    # one patient with two files, and a duplicate pair across patients
    write_png(root / "PNEUMONIA/person3_virus_99.png")
    (root / "NORMAL/IM-0005-0002.png").write_bytes((root / "NORMAL/IM-0004-0001.png").read_bytes())
    out = tmp_path / "out" / "m.json"
    manifest, report = folder_to_manifest(root, out, split="0.6,0.2,0.2", seed=1, progress=False)
    assert manifest["classes"] == ["NORMAL", "PNEUMONIA"]
    assert report.found == report.written == 26 and not report.skipped
    where = _split_of(manifest)
    assert where["person3_bacteria_3.png"] == where["person3_virus_99.png"]
    assert where["IM-0004-0001.png"] == where["IM-0005-0002.png"] == where["IM-0005-0001.png"]
    assert report.duplicate_sets == [["NORMAL/IM-0004-0001.png", "NORMAL/IM-0005-0002.png"]]
    item = manifest["training"][0]
    assert set(item) == {"image", "label", "patient_id", "sha256"}
    assert item["image"].startswith("../data/")  # relative to the manifest's folder
    back = _write_and_read(manifest, out)
    assert find_leakage({s: back.get(s, []) for s in ("training", "validation", "test")}) == []
    assert back["provenance"]["tool"] == "medfuse folder2manifest"
    assert back["provenance"]["counts"]["found"] == 26


def test_split_folders_carve_validation_and_keep_test(tmp_path):
    root = tmp_path / "chest_xray"
    _class_tree(root / "train", 20, 20)
    make_tree(root / "test", {"NORMAL/IM-0900-0001.png": None, "PNEUMONIA/person900_virus_1.png": None})
    out = root / "m.json"
    manifest, report = folder_to_manifest(root, out, val_fraction=0.25, seed=0, progress=False)
    assert len(manifest["test"]) == 2
    assert {it["source_split"] for it in manifest["test"]} == {"test"}
    assert {it["source_split"] for it in manifest["validation"]} == {"train"}
    assert len(manifest["training"]) + len(manifest["validation"]) == 40
    assert 8 <= len(manifest["validation"]) <= 12
    assert any("carved" in n for n in report.notes)
    assert manifest["training"][0]["image"].startswith("train/")
    _write_and_read(manifest, out)
    # --val-fraction 0: no validation split at all
    manifest0, _ = folder_to_manifest(root, out, val_fraction=0, progress=False)
    assert "validation" not in manifest0 and len(manifest0["training"]) == 40


def test_existing_val_folder_is_used(tmp_path):
    root = tmp_path / "d"
    _class_tree(root / "train", 4, 4)
    _class_tree(root / "val", 1, 1)
    make_tree(root, {"val/NORMAL/IM-0100-0001.png": None, "val/PNEUMONIA/person100_virus_1.png": None})
    manifest, report = folder_to_manifest(root, tmp_path / "m.json", progress=False, val_fraction=0.5)
    assert len(manifest["validation"]) == 4
    assert any("--val-fraction ignored" in n for n in report.notes)


def test_patient_in_train_and_test_folders_kept_in_test_only(tmp_path):
    root = tmp_path / "d"
    _class_tree(root / "train", 6, 6)
    make_tree(root / "test", {"PNEUMONIA/person2_virus_50.png": None, "NORMAL/IM-0700-0001.png": None})
    manifest, report = folder_to_manifest(root, tmp_path / "m.json", val_fraction=0, progress=False)
    where = _split_of(manifest)
    assert "person2_bacteria_2.png" not in where  # the training copy of patient 2 is dropped
    assert where["person2_virus_50.png"] == "test"
    reasons = report.skipped_by_reason()
    (reason,) = reasons
    assert "leakage" in reason and reasons[reason][0][0] == "train/PNEUMONIA/person2_bacteria_2.png"
    assert report.found == report.written + len(report.skipped) == 14
    with pytest.raises(DataError, match="spans split folders"):
        folder_to_manifest(root, tmp_path / "m.json", leakage="error", progress=False)


def test_images_subfolders_masks_skipped_and_counted(tmp_path):
    root = make_tree(
        tmp_path / "COVID-19_Radiography_Dataset",
        {
            "COVID/images/COVID-1.png": None,
            "COVID/images/COVID-2.png": None,
            "COVID/masks/COVID-1.png": None,
            "COVID/masks/COVID-2.png": None,
            "Normal/images/Normal-1.png": None,
            "Normal/images/Normal-2.png": None,
            "Normal/masks/Normal-1.png": None,
            "COVID.metadata.xlsx": b"PK\x03\x04 not really",
            "README.md.txt": b"readme",
            ".DS_Store": b"\0",
        },
    )
    manifest, report = folder_to_manifest(root, tmp_path / "m.json", split="0.5,0.5", progress=False)
    assert manifest["classes"] == ["COVID", "Normal"]
    assert report.written == 4
    reasons = Counter(r for _, r, _ in report.skipped)
    assert reasons["outside the class folders"] == 2 and reasons["hidden or system file"] == 1
    assert sum(v for k, v in reasons.items() if k.startswith("mask file")) == 3
    assert report.found == 10 == report.written + len(report.skipped)
    assert report.missing_patient_ids == 4  # no patient in COVID-1.png: each file its own patient
    assert all("/images/" in it["image"] for s in ("training", "validation") for it in manifest.get(s, []))


def test_corrupt_and_non_image_files_skipped_with_reason(tmp_path):
    root = _class_tree(tmp_path / "d", 5, 5)
    good = (root / "NORMAL/IM-0000-0001.png").read_bytes()
    (root / "NORMAL/broken.png").write_bytes(b"\x89PNG\r\n\x1a\n garbage")
    (root / "NORMAL/truncated.png").write_bytes(good[: len(good) // 2])
    (root / "PNEUMONIA/notes.txt").write_text("hello")
    (root / "PNEUMONIA/empty.jpg").write_bytes(b"")
    manifest, report = folder_to_manifest(root, tmp_path / "m.json", progress=False)
    by = report.skipped_by_reason()
    assert sorted(p for p, _ in by["unreadable image"]) == ["NORMAL/broken.png", "NORMAL/truncated.png", "PNEUMONIA/empty.jpg"]
    assert [p for p, _ in by["not an image file"]] == ["PNEUMONIA/notes.txt"]
    assert report.found == 14 and report.written == 10
    text = report.format()
    assert "found 14 = written 10 + skipped 4" in text and "unreadable image" in text
    json.dumps(report.to_dict())


def test_dicom_files_with_and_without_extension(tmp_path):
    root = tmp_path / "d"
    write_dicom(root / "A/one.dcm")
    write_dicom(root / "A/IM000001")  # extensionless DICOM
    write_dicom(root / "B/two.dcm")
    write_dicom(root / "B/sr.dcm", with_pixels=False)
    (root / "B/README").write_text("not dicom")
    manifest, report = folder_to_manifest(root, tmp_path / "m.json", split="1", progress=False)
    assert sorted(Path(it["image"]).name for it in manifest["training"]) == ["IM000001", "one.dcm", "two.dcm"]
    by = report.skipped_by_reason()
    assert by["unreadable image"][0] == ("B/sr.dcm", "DICOM file without pixel data")
    assert by["not an image file"][0][0] == "B/README"


def test_classes_order_fixes_indices_and_unlisted_folder_skipped(tmp_path):
    root = _class_tree(tmp_path / "d", 4, 4)
    make_tree(root, {"OTHER/x1.png": None, "OTHER/x2.png": None})
    manifest, report = folder_to_manifest(root, tmp_path / "m.json", classes="PNEUMONIA,NORMAL", split="1", progress=False)
    assert manifest["classes"] == ["PNEUMONIA", "NORMAL"]
    labels = {Path(it["image"]).parent.name: it["label"] for it in manifest["training"]}
    assert labels == {"PNEUMONIA": 0, "NORMAL": 1}
    assert [p for p, _ in report.skipped_by_reason()["class folder not in --classes"]] == ["OTHER/x1.png", "OTHER/x2.png"]
    assert report.found == 10


@pytest.mark.parametrize(
    "setup, kwargs, message",
    [
        (lambda r: None, {}, "folder not found"),
        (lambda r: make_tree(r, {"a.png": None}), {}, "no class folders"),
        (lambda r: make_tree(r, {"train/a.png": None}), {}, r"train: no class folders"),
        (lambda r: (_class_tree(r, 2, 2), (r / "EMPTY").mkdir()), {}, "EMPTY: class folder holds no readable images"),
        (lambda r: (_class_tree(r, 2, 2), make_tree(r, {"BAD/x.png": b"nope"})), {}, r"BAD: .*\(1 unreadable image\)"),
        (lambda r: _class_tree(r, 2, 2), {"classes": "NORMAL,COVID"}, "class 'COVID' from --classes has no folder"),
        (lambda r: _class_tree(r / "chest_xray" / "train", 2, 2), {}, "holds split folders"),
        (lambda r: (_class_tree(r / "train", 1, 1), _class_tree(r / "training", 1, 1)), {}, "keep one of them"),
        (lambda r: _class_tree(r, 2, 2), {"classes": "NORMAL,,X"}, "empty name"),
    ],
)
def test_folder_errors(tmp_path, setup, kwargs, message):
    root = tmp_path / "root"
    setup(root)
    with pytest.raises(DataError, match=message):
        folder_to_manifest(root, tmp_path / "m.json", progress=False, **kwargs)


def test_inspect_image_decode_catches_truncated_jpeg(tmp_path):
    p = tmp_path / "a.jpg"
    Image.fromarray(np.random.default_rng(0).integers(0, 256, (64, 64), dtype=np.uint8)).save(p, quality=95)
    data = p.read_bytes()
    (tmp_path / "cut.jpg").write_bytes(data[: len(data) * 2 // 3])
    assert inspect_image(p)[1] is None
    assert inspect_image(tmp_path / "cut.jpg", check="decode")[1] is not None


def test_report_count_check_is_strict():
    report = ConversionReport(tool="t", found=2)
    report.summary = {"total": 1}
    with pytest.raises(RuntimeError, match="internal error"):
        report.check_counts()


# ------------------------------------------------------------------------------- pairs
def _pairs(root, n=10):
    files = {}
    for i in range(n):
        files[f"cxr/CHNCXR_{i:04d}_{i % 2}.png"] = None
        files[f"masks/CHNCXR_{i:04d}_{i % 2}.png"] = None
    return make_tree(root, files)


def test_pairs_with_labels_and_masks(tmp_path):
    root = _pairs(tmp_path / "lung")
    out = tmp_path / "m" / "lung.json"
    manifest, report = pairs_to_manifest(root / "cxr", root / "masks", out, split="0.6,0.2,0.2", progress=False)
    assert manifest["task"] == "segmentation_classification"
    assert manifest["classes"] == ["normal", "tuberculosis"]
    items = [it for s in ("training", "validation", "test") for it in manifest.get(s, [])]
    assert len(items) == 10 and all("mask" in it for it in items)
    assert Counter(it["label"] for it in items) == {0: 5, 1: 5}
    assert {it["patient_id"] for it in items} == {f"CHNCXR_{i:04d}" for i in range(10)}
    assert report.found == 20 and report.paired == 10
    assert all(Path(it["mask"]).stem == Path(it["image"]).stem for it in items)
    _write_and_read(manifest, out)


def test_pairs_missing_masks_keep_or_skip_and_orphan_masks(tmp_path):
    root = _pairs(tmp_path / "lung")
    (root / "masks/CHNCXR_0001_1.png").unlink()
    (root / "masks/CHNCXR_0002_0.png").unlink()
    write_png(root / "masks/CHNCXR_0999_0.png")  # mask without image
    manifest, report = pairs_to_manifest(root / "cxr", root / "masks", tmp_path / "m.json", split="1", progress=False)
    items = manifest["training"]
    assert len(items) == 10
    no_mask = sorted(Path(it["image"]).name for it in items if "mask" not in it)
    assert no_mask == ["CHNCXR_0001_1.png", "CHNCXR_0002_0.png"]
    assert all("label" in it for it in items)
    assert report.skipped_by_reason()["mask without image"] == [("masks/CHNCXR_0999_0.png", "")]
    assert any("no mask" in n for n in report.notes)
    assert report.found == 19 == report.written + report.paired + len(report.skipped)

    manifest, report = pairs_to_manifest(
        root / "cxr", root / "masks", tmp_path / "m.json", split="1", missing_mask="skip", progress=False
    )
    assert len(manifest["training"]) == 8
    assert len(report.skipped_by_reason()["image without mask (--missing-mask skip)"]) == 2
    assert report.found == report.written + report.paired + len(report.skipped)


def test_pairs_same_folder_with_suffix_and_other_extension(tmp_path):
    root = make_tree(
        tmp_path / "demo",
        {"1.jpg": None, "1-mask.png": None, "2.jpg": None, "2-mask.png": None, "3.jpg": None, "idx.csv": b"a,b"},
    )
    Image.open(root / "1.jpg").convert("RGB").save(root / "1.jpg")  # a real JPEG
    manifest, report = pairs_to_manifest(root, root, tmp_path / "m.json", split="1", progress=False)
    assert manifest["task"] == "segmentation"  # default pattern finds no _0/_1 labels
    items = manifest["training"]
    assert sorted((Path(it["image"]).name, Path(it.get("mask", "-")).name) for it in items) == [
        ("1.jpg", "1-mask.png"), ("2.jpg", "2-mask.png"),
    ]
    by = report.skipped_by_reason()
    assert [p for p, _ in by["image without mask and without label"]] == ["demo/3.jpg"]
    assert [p for p, _ in by["not an image file"]] == ["demo/idx.csv"]


def test_pairs_custom_pattern_classes_and_errors(tmp_path):
    root = make_tree(
        tmp_path / "d",
        {"img/a_covid.png": None, "img/b_normal.png": None, "img/c_other.png": None,
         "msk/a_covid_mask.png": None, "msk/b_normal_mask.png": None, "msk/c_other_mask.png": None},
    )
    pattern = r"_(?P<label>covid|normal)$"
    m, _ = pairs_to_manifest(root / "img", root / "msk", tmp_path / "m.json", label_pattern=pattern, split="1", progress=False)
    assert m["classes"] == ["covid", "normal"]
    labels = {Path(it["image"]).name: it.get("label") for it in m["training"]}
    assert labels == {"a_covid.png": 0, "b_normal.png": 1, "c_other.png": None}
    m, r = pairs_to_manifest(
        root / "img", root / "msk", tmp_path / "m.json", label_pattern=pattern, classes="normal", split="1", progress=False
    )
    assert r.skipped_by_reason()["label not in --classes"][0][0] == "img/a_covid.png"
    m, _ = pairs_to_manifest(root / "img", root / "msk", tmp_path / "m.json", task="segmentation", split="1", progress=False)
    assert m["classes"] == [] and all("label" not in it for it in m["training"])
    with pytest.raises(DataError, match="found no label"):
        pairs_to_manifest(root / "img", root / "msk", tmp_path / "m.json", task="segmentation_classification", progress=False)
    with pytest.raises(DataError, match="no named group 'label'"):
        pairs_to_manifest(root / "img", root / "msk", tmp_path / "m.json", label_pattern="_(x)$", progress=False)
    with pytest.raises(DataError, match="mask folder not found"):
        pairs_to_manifest(root / "img", root / "nope", tmp_path / "m.json", progress=False)
    with pytest.raises(DataError, match="no image files"):
        pairs_to_manifest(root / "msk" / "..", root / "msk", tmp_path / "m.json", progress=False)


def test_pairs_unreadable_mask(tmp_path):
    root = _pairs(tmp_path / "lung", 4)
    (root / "masks/CHNCXR_0000_0.png").write_bytes(b"broken")
    m, r = pairs_to_manifest(root / "cxr", root / "masks", tmp_path / "m.json", split="1", progress=False)
    assert r.skipped_by_reason()["unreadable mask"][0][0] == "masks/CHNCXR_0000_0.png"
    assert sum("mask" in it for it in m["training"]) == 3 and len(m["training"]) == 4


# ----------------------------------------------------------------------------- medmnist
def test_medmnist_official_splits_rgb(tmp_path):
    npz = write_npz(tmp_path / "bloodmnist.npz", rgb=True, labels={
        "train": np.array([[0], [7], [3], [1], [2], [5]]), "val": np.array([[4], [6], [0]]), "test": np.array([[1], [1], [2]]),
    })
    out = tmp_path / "out"
    m, r = medmnist_to_manifest(npz, out, progress=False)
    assert m["classes"][0] == "basophil" and len(m["classes"]) == 8
    assert [len(m[s]) for s in ("training", "validation", "test")] == [6, 3, 3]
    first = m["validation"][1]
    assert first["image"] == "images/val/val_1.png" and first["label"] == 6 and first["source_split"] == "val"
    with Image.open(out / first["image"]) as im:
        assert im.mode == "RGB"
        assert np.array_equal(np.asarray(im), np.load(npz)["val_images"][1])
    assert "no patient identifiers" in m["provenance"]["patient_ids"]
    _write_and_read(m, out / "manifest.json")


def test_medmnist_multilabel(tmp_path):
    rng = np.random.default_rng(0)
    labels = {s: rng.integers(0, 2, (k, 14)).astype(np.uint8) for s, k in (("train", 6), ("val", 3), ("test", 3))}
    npz = write_npz(tmp_path / "chestmnist.npz", labels=labels)
    m, _ = medmnist_to_manifest(npz, tmp_path / "o", progress=False)
    assert m["task"] == "multilabel" and m["classes"][:2] == ["atelectasis", "cardiomegaly"]
    assert m["training"][2]["label"] == labels["train"][2].tolist()
    _write_and_read(m, tmp_path / "o" / "manifest.json")
    with pytest.raises(DataError, match="multi-label"):
        medmnist_to_manifest(npz, tmp_path / "o", task="classification", progress=False)
    with pytest.raises(DataError, match="14 columns"):
        medmnist_to_manifest(npz, tmp_path / "o", classes="a,b", progress=False)


def test_medmnist_train_only_carves_validation_and_unknown_dataset(tmp_path):
    npz = write_npz(tmp_path / "mystery.npz", splits=("train",), n=(20,))
    m, r = medmnist_to_manifest(npz, tmp_path / "o", val_fraction=0.25, progress=False)
    assert m["classes"] == ["class_0", "class_1"]
    assert len(m["training"]) + len(m["validation"]) == 20 and len(m["validation"]) == 5
    assert any("carved" in n for n in r.notes) and any("not recognised" in n for n in r.notes)


def test_medmnist_cross_split_duplicates_keep_or_drop(tmp_path):
    npz = tmp_path / "pneumoniamnist.npz"
    rng = np.random.default_rng(0)
    tr = rng.integers(0, 256, (5, 4, 4), dtype=np.uint8)
    va = rng.integers(0, 256, (3, 4, 4), dtype=np.uint8)
    va[1] = tr[2]  # the same image in the official train and val arrays
    lab = lambda n: (np.arange(n) % 2).reshape(n, 1)  # noqa: E731
    np.savez(npz, train_images=tr, train_labels=lab(5), val_images=va, val_labels=lab(3))
    m, r = medmnist_to_manifest(npz, tmp_path / "keep", progress=False)
    marked = [it["image"] for s in ("training", "validation") for it in m[s] if it.get("cross_split_duplicate")]
    assert marked == ["images/train/train_2.png", "images/val/val_1.png"]
    assert all("sha256" not in it for s in ("training", "validation") for it in m[s] if it.get("cross_split_duplicate"))
    assert m["provenance"]["cross_split_duplicates"] == [marked]
    _write_and_read(m, tmp_path / "keep" / "manifest.json")
    m, r = medmnist_to_manifest(npz, tmp_path / "drop", cross_split_duplicates="drop", progress=False)
    assert len(m["validation"]) == 2 and r.skipped[0][0] == "images/val/val_1.png"
    assert all("sha256" in it for s in ("training", "validation") for it in m[s])
    assert r.found == 8 == r.written + len(r.skipped)


@pytest.mark.parametrize(
    "content, message",
    [
        (b"this is not a zip", "no zip header"),
        (b"PK\x03\x04" + b"\0" * 40, "not a readable .npz"),
        (None, "no '\\*_images' arrays"),
        ("npy", "single .npy array"),
        ("nolabels", "no train_labels"),
        ("3d", "3-D MedMNIST volumes are not supported"),
    ],
)
def test_medmnist_bad_files(tmp_path, content, message):
    path = tmp_path / "bad.npz"
    if content is None:
        np.savez(path, x=np.zeros(3))
    elif content == "npy":
        with open(path, "wb") as f:
            np.save(f, np.zeros(3))
    elif content == "nolabels":
        np.savez(path, train_images=np.zeros((2, 4, 4), np.uint8))
    elif content == "3d":
        np.savez(path, train_images=np.zeros((2, 4, 4, 4), np.uint8), train_labels=np.zeros((2, 1)))
    else:
        path.write_bytes(content)
    with pytest.raises(DataError, match=message) as e:
        medmnist_to_manifest(path, tmp_path / "o", progress=False)
    assert str(path) in str(e.value) and "\n" not in str(e.value)


def test_medmnist_corrupt_member(tmp_path):
    path = write_npz(tmp_path / "pneumoniamnist.npz", n=(50, 5, 5), size=16)
    data = bytearray(path.read_bytes())
    data[200:260] = b"\xff" * 60  # damage the compressed train_images member
    path.write_bytes(bytes(data))
    with pytest.raises(DataError, match="pneumoniamnist.npz"):
        medmnist_to_manifest(path, tmp_path / "o", progress=False)


def test_download_fails_clearly_offline(tmp_path):
    with pytest.raises(DataError) as e:
        download_medmnist("pneumoniamnist", tmp_path, url="http://127.0.0.1:9/pneumoniamnist.npz", timeout=2)
    msg = str(e.value)
    assert "could not download pneumoniamnist" in msg and "by hand" in msg and "pass it as FILE" in msg
    assert list(tmp_path.iterdir()) == []  # no partial file left behind
    with pytest.raises(DataError, match="not a MedMNIST name"):
        download_medmnist("../etc", tmp_path)
    existing = write_npz(tmp_path / "breastmnist.npz")
    assert download_medmnist("breastmnist", tmp_path) == existing  # kept, no network needed


def test_download_through_local_server(tmp_path, monkeypatch):
    import functools
    import http.server
    import threading

    from medfuse.data import layouts

    served = tmp_path / "served"
    write_npz(served / "pneumoniamnist.npz")
    write_npz(served / "mysterymnist.npz")
    handler = functools.partial(http.server.SimpleHTTPRequestHandler, directory=str(served))
    handler.log_message = lambda *a, **k: None
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        base = f"http://127.0.0.1:{server.server_address[1]}"
        monkeypatch.setattr(layouts, "medmnist_url", lambda name: f"{base}/{name}.npz")
        got = download_medmnist("mysterymnist", tmp_path / "dl", timeout=5)
        assert got.read_bytes() == (served / "mysterymnist.npz").read_bytes()
        # a known dataset from the official address must match the published MD5
        with pytest.raises(DataError, match="MD5"):
            download_medmnist("pneumoniamnist", tmp_path / "dl", timeout=5)
        assert sorted(p.name for p in (tmp_path / "dl").iterdir()) == ["mysterymnist.npz"]
    finally:
        server.shutdown()
        server.server_close()


def test_medmnist_default_url_is_official():
    from medfuse.data.layouts import medmnist_url

    url = medmnist_url("pneumoniamnist")
    assert url.startswith("https://") and "pneumoniamnist.npz" in url
