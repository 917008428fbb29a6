# Copyright (c) medfuse contributors
# Licensed under the Apache License, Version 2.0
import random
from collections import Counter

import pytest

from medfuse.data.splits import (
    assign_groups,
    carve_validation,
    find_leakage,
    group_indices,
    group_label,
    parse_fractions,
    split_items,
    validate_fractions,
)
from medfuse.errors import DataError


def _dataset(n_patients=300, seed=0, dup_pairs=20):
    """Patients with 1-4 images each, labels 25/75, plus duplicate files shared by two patients."""
    rng = random.Random(seed)
    items = []
    for p in range(n_patients):
        label = 0 if rng.random() < 0.25 else 1
        for k in range(rng.randint(1, 4)):
            items.append({"image": f"p{p}_{k}.png", "label": label, "patient_id": str(p), "sha256": f"h{p}_{k}"})
    for d in range(dup_pairs):  # byte-identical files under two different patient ids
        a, b = rng.sample(range(len(items)), 2)
        items[b]["sha256"] = items[a]["sha256"]
    return items


@pytest.mark.parametrize(
    "text, expected",
    [("0.8,0.1,0.1", (0.8, 0.1, 0.1)), ("0.9,0.1", (0.9, 0.1, 0.0)), ("1", (1.0, 0.0, 0.0)), ([0.5, 0.5, 0], (0.5, 0.5, 0.0))],
)
def test_parse_fractions(text, expected):
    assert parse_fractions(text) == pytest.approx(expected)


@pytest.mark.parametrize(
    "text, message",
    [
        ("0.8,0.3,0.1", r"sum to 1, got 0.8, 0.3, 0.1 \(sum 1.2\)"),
        ("1.2,-0.1,-0.1", r"non-negative, got 1.2, -0.1, -0.1"),
        ("0.8,x,0.1", r"'0.8,x,0.1'.*comma-separated numbers"),
        ("0.5,0.2,0.2,0.1", "at most 3 values"),
        ("nan,0.5,0.5", "finite"),
        ("", "none given|sum to 1"),
    ],
)
def test_bad_fractions_show_what_was_given(text, message):
    with pytest.raises(DataError, match=message):
        parse_fractions(text)


def test_sum_tolerance():
    validate_fractions([0.7, 0.2, 0.1 + 5e-7])
    with pytest.raises(DataError):
        validate_fractions([0.7, 0.2, 0.1 + 1e-5])


def test_group_indices_union_of_patient_and_hash():
    items = [
        {"patient_id": "a", "sha256": "1"},
        {"patient_id": "a", "sha256": "2"},
        {"patient_id": "b", "sha256": "2"},  # identical to item 1 -> joins patient a
        {"patient_id": "c", "sha256": "3"},
        {"sha256": "4"},
        {"patient_id": None, "sha256": None},
        {"patient_id": "b", "sha256": "5"},  # patient b -> joins the first group too
    ]
    assert group_indices(items) == [[0, 1, 2, 6], [3], [4], [5]]
    assert group_indices(items, keys=("patient_id",)) == [[0, 1], [2, 6], [3], [4], [5]]


def test_group_label_majority_then_first():
    assert group_label([1, 0, 1]) == 1
    assert group_label([0, 1]) == 0  # tie: first seen
    assert group_label([None, 2]) == 2
    assert group_label([None]) is None
    assert group_label([[0, 1], [0, 1], [1, 0]]) == (0, 1)


def test_split_is_leakage_free_and_complete():
    items = _dataset()
    parts = split_items(items, "0.8,0.1,0.1", seed=3)
    assert sum(len(v) for v in parts.values()) == len(items)
    ids = sorted(id(it) for v in parts.values() for it in v)
    assert ids == sorted(id(it) for it in items)  # every item exactly once
    assert find_leakage(parts) == []
    for name, frac in zip(("training", "validation", "test"), (0.8, 0.1, 0.1)):
        assert abs(len(parts[name]) / len(items) - frac) < 0.02


def test_two_files_of_one_patient_and_a_duplicate_pair_never_split():
    items = [{"image": f"{i}.png", "label": i % 2, "patient_id": f"q{i}", "sha256": f"s{i}"} for i in range(40)]
    items[5]["patient_id"] = items[6]["patient_id"] = "same-patient"
    items[10]["sha256"] = items[30]["sha256"] = "same-bytes"
    for seed in range(25):
        parts = split_items(items, (0.5, 0.25, 0.25), seed=seed)
        where = {it["image"]: name for name, v in parts.items() for it in v}
        assert where["5.png"] == where["6.png"]
        assert where["10.png"] == where["30.png"]


def test_deterministic_with_seed():
    items = _dataset(seed=1)
    a = split_items(items, "0.7,0.15,0.15", seed=42)
    b = split_items(items, "0.7,0.15,0.15", seed=42)
    c = split_items(items, "0.7,0.15,0.15", seed=43)
    names = lambda parts: {k: [it["image"] for it in v] for k, v in parts.items()}  # noqa: E731
    assert names(a) == names(b)
    assert names(a) != names(c)


def test_stratification_holds():
    items = [{"image": f"{i}.png", "label": 0 if i < 300 else 1} for i in range(400)]  # 300 / 100
    parts = split_items(items, "0.8,0.1,0.1", seed=0)
    for name, frac in zip(("training", "validation", "test"), (0.8, 0.1, 0.1)):
        counts = Counter(it["label"] for it in parts[name])
        assert abs(counts[0] - 300 * frac) <= 1
        assert abs(counts[1] - 100 * frac) <= 1


def test_zero_fraction_split_stays_empty_and_multilabel_works():
    items = [{"image": f"{i}.png", "label": [i % 2, 1 - i % 2]} for i in range(30)]
    parts = split_items(items, "0.9,0.1,0", seed=0)
    assert parts["test"] == []
    assert len(parts["training"]) + len(parts["validation"]) == 30


def test_assign_groups_rejects_bad_fractions():
    with pytest.raises(DataError, match="sum to 1"):
        assign_groups([[0]], [0], (0.5, 0.4, 0.0))


def test_carve_validation():
    items = _dataset(n_patients=100, seed=2)
    train, val = carve_validation(items, 0.2, seed=0)
    assert len(train) + len(val) == len(items)
    assert abs(len(val) / len(items) - 0.2) < 0.03
    assert find_leakage({"training": train, "validation": val}) == []
    train0, val0 = carve_validation(items, 0.0)
    assert val0 == [] and len(train0) == len(items)
    for bad in (1.5, -0.1, "x"):
        with pytest.raises(DataError, match="--val-fraction"):
            carve_validation(items, bad)


def test_find_leakage_reports_values():
    problems = find_leakage({"training": [{"patient_id": "7"}], "test": [{"patient_id": "7"}, {"sha256": "x"}]})
    assert problems == ["patient_id '7' occurs in ['test', 'training']"]
