# Copyright (c) medfuse contributors
# Licensed under the Apache License, Version 2.0
import json
import os
from pathlib import Path

import jsonschema
import pytest
from monai.data import load_decathlon_datalist

from medfuse.data.manifest import (
    SCHEMA_VERSION,
    format_summary,
    load_split,
    make_provenance,
    new_manifest,
    read_manifest,
    summarize_manifest,
    validate_manifest,
    write_manifest,
)
from medfuse.errors import ManifestError

SCHEMA = json.loads((Path(__file__).resolve().parents[2] / "data_manifests" / "manifest.schema.json").read_text())


def _files(root: Path, names):
    for n in names:
        p = root / n
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_bytes(n.encode())  # distinct content per name
    return root


@pytest.fixture
def simple(tmp_path):
    _files(tmp_path, ["img/a.png", "img/b.png", "img/c.png", "img/d.png", "mask/a.png"])
    m = new_manifest(
        "classification",
        ["normal", "pneumonia"],
        make_provenance("test", tmp_path, {"x": 1}),
        training=[
            {"image": "img/a.png", "label": 0, "patient_id": "p1", "mask": "mask/a.png", "view": "PA"},
            {"image": "img/b.png", "label": 1, "patient_id": "p2"},
        ],
        validation=[{"image": "img/c.png", "label": 1, "patient_id": "p3"}],
        test=[],
    )
    return tmp_path, m


def test_write_read_roundtrip_keeps_extra_keys_and_omits_empty_splits(simple):
    root, m = simple
    out = write_manifest(m, root / "m.json")
    raw = json.loads(out.read_text())
    assert "test" not in raw  # empty split omitted
    assert list(raw)[:4] == ["schema_version", "task", "classes", "provenance"]
    assert raw["schema_version"] == SCHEMA_VERSION
    assert raw["training"][0]["view"] == "PA"  # extra key kept
    jsonschema.validate(raw, SCHEMA)
    back = read_manifest(out)
    assert back["training"] == m["training"]
    assert back["provenance"]["tool"] == "test" and back["provenance"]["arguments"] == {"x": 1}


def test_monai_reads_manifest(simple):
    root, m = simple
    path = write_manifest(m, root / "m.json")
    items = load_decathlon_datalist(str(path), is_segmentation=False, data_list_key="training")
    assert [Path(i["image"]).name for i in items] == ["a.png", "b.png"]
    assert all(os.path.isabs(i["image"]) for i in items)
    assert items[1]["label"] == 1
    val = load_decathlon_datalist(str(path), is_segmentation=False, data_list_key="validation")
    assert len(val) == 1


def test_load_split_resolves_masks_and_missing_split(simple):
    root, m = simple
    path = write_manifest(m, root / "m.json")
    items = load_split(path, "training")
    assert items[0]["mask"] == str((root / "mask/a.png").resolve())
    assert load_split(path, "test") == []
    with pytest.raises(ManifestError, match="unknown split"):
        load_split(path, "train")


def test_atomic_write_leaves_no_temp_files(simple):
    root, m = simple
    write_manifest(m, root / "m.json")
    write_manifest(m, root / "m.json")  # overwrite
    assert sorted(p.name for p in root.iterdir() if p.is_file()) == ["m.json"]


def test_invalid_manifest_is_never_written(simple):
    root, m = simple
    m["training"][0]["label"] = 5
    with pytest.raises(ManifestError):
        write_manifest(m, root / "bad.json")
    assert not (root / "bad.json").exists()


@pytest.mark.parametrize(
    "mutate, message",
    [
        (lambda m: m["training"][1].update(image="img/zzz.png"), "file not found"),
        (lambda m: m["training"][0].update(mask="mask/none.png"), "mask file not found"),
        (lambda m: m["training"][1].update(label=2), "outside classes"),
        (lambda m: m["training"][1].update(label="pneumonia"), "did you mean 1"),
        (lambda m: m["training"][1].update(label=None), "leave the 'label' key out"),
        (lambda m: m["training"][1].update(label=True), "boolean"),
        (lambda m: m["training"][1].update(label=[0, 1]), "is a list but the task"),
        (lambda m: m["training"][1].pop("label"), "training item without 'label'"),
        (lambda m: m["validation"][0].update(patient_id="p1"), "patient_id 'p1' appears in"),
        (lambda m: m["training"][1].pop("image"), "missing 'image'"),
        (lambda m: m.update(task="regression"), "task 'regression'"),
        (lambda m: m.update(classes=["a", "a"]), "repeats"),
        (lambda m: m.update(schema_version="2.0"), "not supported"),
        (lambda m: m.update(validation=[]), "'validation' is empty"),
        (lambda m: m["validation"].append(dict(m["training"][1], patient_id="p9")), "listed 2 times"),
        (lambda m: m["training"][1].update(boxes=[[0, 0, 5, 5]]), "give both"),
        (lambda m: m["training"][1].update(boxes=[[5, 0, 1, 5]], box_labels=[0]), "x_max >= x_min"),
        (lambda m: m["training"][1].update(boxes=[[0, 0, 5, 5]], box_labels=[3]), "box_labels[0]"),
        (lambda m: [m.pop(k) for k in ("training", "validation")], "no split"),
    ],
)
def test_validation_errors_name_item_and_fix(simple, mutate, message):
    root, m = simple
    mutate(m)
    with pytest.raises(ManifestError) as err:
        validate_manifest(m, base_dir=root)
    assert any(message in p for p in err.value.problems), err.value.problems


def test_error_names_split_index_and_image(simple):
    root, m = simple
    m["training"][1]["label"] = 7
    with pytest.raises(ManifestError) as err:
        validate_manifest(m, base_dir=root, path=root / "m.json")
    assert "training[1] ('img/b.png')" in str(err.value)
    assert str(root / "m.json") in str(err.value)


def test_duplicate_image_bytes_across_splits_is_leakage(simple):
    root, m = simple
    (root / "img/d.png").write_bytes((root / "img/a.png").read_bytes())
    from medfuse.utils.io import sha256_file

    m["training"][0]["sha256"] = sha256_file(root / "img/a.png")
    m["validation"].append({"image": "img/d.png", "label": 0, "patient_id": "p4", "sha256": sha256_file(root / "img/d.png")})
    with pytest.raises(ManifestError) as err:
        validate_manifest(m, base_dir=root)
    assert any("identical image" in p and "training[0]" in p and "validation[1]" in p for p in err.value.problems)


def test_check_hashes_detects_changed_file(simple):
    root, m = simple
    from medfuse.utils.io import sha256_file

    m["training"][1]["sha256"] = sha256_file(root / "img/b.png")
    path = write_manifest(m, root / "m.json")
    read_manifest(path, check_hashes=True)
    (root / "img/b.png").write_bytes(b"changed")
    with pytest.raises(ManifestError, match="sha256 does not match"):
        read_manifest(path, check_hashes=True)


def test_multilabel_labels(tmp_path):
    _files(tmp_path, ["a.png", "b.png"])
    m = new_manifest("multilabel", ["x", "y", "z"], make_provenance("t"), training=[{"image": "a.png", "label": [1, 0, 1]}])
    validate_manifest(m, base_dir=tmp_path)
    m["training"].append({"image": "b.png", "label": [1, 0]})
    with pytest.raises(ManifestError, match="3 zeros/ones"):
        validate_manifest(m, base_dir=tmp_path)


def test_inference_manifest_without_labels(tmp_path):
    _files(tmp_path, ["a.dcm"])
    m = new_manifest("classification", ["normal", "tb"], make_provenance("t"), test=[{"image": "a.dcm"}])
    path = write_manifest(m, tmp_path / "infer.json")
    assert load_split(path, "test")[0]["image"].endswith("a.dcm")
    assert "label" not in load_split(path, "test")[0]


def test_read_errors_name_the_file(tmp_path):
    with pytest.raises(ManifestError, match="manifest not found") as err:
        read_manifest(tmp_path / "nope.json")
    assert "nope.json" in str(err.value)
    bad = tmp_path / "bad.json"
    bad.write_text("{not json")
    with pytest.raises(ManifestError, match=r"not valid JSON \(line 1"):
        read_manifest(bad)


def test_summary_counts(simple):
    root, m = simple
    s = summarize_manifest(m)
    assert s["splits"]["training"]["per_class"] == {"normal": 1, "pneumonia": 1}
    assert s["splits"]["training"]["masks"] == 1
    assert s["splits"]["validation"]["patients"] == 1
    assert s["total"] == 3
    text = format_summary(s)
    assert "training" in text and "pneumonia" in text


def test_write_creates_folder_for_relative_parent_paths(tmp_path):
    _files(tmp_path, ["imgs/a.png"])
    m = new_manifest("classification", ["n"], make_provenance("t"), training=[{"image": "../imgs/a.png", "label": 0}])
    out = write_manifest(m, tmp_path / "new" / "m.json")
    assert load_split(out, "training")[0]["image"] == str((tmp_path / "imgs/a.png").resolve())


@pytest.mark.parametrize("name", ["cxr_classification.json", "lung_segmentation_classification.json"])
def test_example_manifests_match_schema_and_validator(name):
    path = Path(__file__).resolve().parents[2] / "data_manifests" / "examples" / name
    raw = json.loads(path.read_text())
    jsonschema.validate(raw, SCHEMA)
    validate_manifest(raw, check_files=False)  # the example's images are not shipped


def test_schema_rejects_structural_errors():
    raw = json.loads((Path(__file__).resolve().parents[2] / "data_manifests/examples/cxr_classification.json").read_text())
    raw["training"][0]["label"] = "NORMAL"
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.validate(raw, SCHEMA)
    raw["training"][0]["label"] = 0
    raw["validation"] = []
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.validate(raw, SCHEMA)


def test_validate_catches_misspelt_split_and_item_keys(simple, capsys):
    """Failed on main: 'trainig' and 'lable' were reported "valid" and summary dropped the misspelt split's items."""
    from medfuse.commands.summary import main as summary_main
    from medfuse.commands.validate import main as validate_main

    root, m = simple
    bad = dict(m)
    bad["trainig"] = bad.pop("training")
    path = root / "typo_split.json"
    path.write_text(json.dumps(bad))
    with pytest.raises(ManifestError, match="unknown top-level key 'trainig' \\(its 2 items are not read\\); did you mean 'training'\\?"):
        read_manifest(path)
    assert validate_main([str(path)]) == 1
    assert "did you mean 'training'?" in capsys.readouterr().err
    # summary reads what it can but counts the stray items aloud
    text = format_summary(summarize_manifest(bad))
    assert "not counted: 2 items under 'trainig', which is not a split" in text
    assert summary_main([str(path)]) == 1  # summary validates first: the typo is named, not skipped
    assert "trainig" in capsys.readouterr().err

    lab = json.loads(json.dumps(m))
    lab["validation"][0]["lable"] = lab["validation"][0].pop("label")
    path = root / "typo_item.json"
    path.write_text(json.dumps(lab))
    with pytest.raises(ManifestError, match="validation\\[0\\].*unknown key 'lable'; did you mean 'label'\\?"):
        read_manifest(path)
    # extra keys that are not near-misses stay allowed
    ok = json.loads(json.dumps(m))
    ok["training"][1].update(view="AP", sex="F", site="B", source="x.dcm")
    validate_manifest(ok, base_dir=root)
