# Copyright (c) medfuse contributors
# Licensed under the Apache License, Version 2.0
"""Patient-level, leakage-free splits of manifest items.

Two items that come from one patient, or that are byte-for-byte the same file, must end up
in the same split; otherwise a model is evaluated on what it was trained on. The functions
here therefore split *groups*, never single items:

1. :func:`group_indices` merges items that share a ``patient_id`` or a ``sha256`` (union-find,
   so chains like "A and B are one patient, B and C are identical files" make one group).
2. :func:`assign_groups` gives each group to a split. Groups are stratified by their label
   (the most frequent label of the group, ties broken by the label seen first); within each
   stratum the groups are shuffled with the seed, ordered largest first, and each goes to the
   split furthest below its target item count (fraction x items of the strata so far, so the
   rounding of one stratum is made up in the next). Every group is assigned exactly once, so
   split counts always add up to the number of items.
3. :func:`split_items` and :func:`carve_validation` wrap both steps for lists of items;
   :func:`kfold_assignment` gives every item a cross-validation fold by the same two steps.

Everything is deterministic for a given seed and input order. Items without ``patient_id``
and ``sha256`` are their own group.
"""

from __future__ import annotations

import math
import random
from collections import Counter, defaultdict
from typing import Any, Hashable, Mapping, Sequence

from medfuse.errors import DataError

__all__ = [
    "duplicate_content",
    "DEFAULT_SPLIT_NAMES",
    "parse_fractions",
    "validate_fractions",
    "group_indices",
    "group_label",
    "assign_groups",
    "split_items",
    "carve_validation",
    "find_leakage",
    "kfold_assignment",
]

#: Split names in the order that fractions refer to (the manifest's datalist keys).
DEFAULT_SPLIT_NAMES = ("training", "validation", "test")
_TOL = 1e-6


def validate_fractions(fractions: Sequence[float], what: str = "split fractions") -> tuple[float, ...]:
    """Check that fractions are finite, non-negative, not all zero and sum to 1 (within 1e-6).

    Returns:
        the fractions as a tuple of floats.

    Raises:
        DataError: naming the values given and the rule they break.
    """
    try:
        values = tuple(float(f) for f in fractions)
    except (TypeError, ValueError) as e:
        raise DataError(f"{what} must be numbers, got {list(fractions)!r}") from e
    shown = ", ".join(f"{v:g}" for v in values)
    if not values:
        raise DataError(f"{what}: none given; write e.g. 0.8,0.1,0.1")
    if any(not math.isfinite(v) for v in values):
        raise DataError(f"{what} must be finite numbers, got {shown}")
    if any(v < 0 for v in values):
        raise DataError(f"{what} must be non-negative, got {shown}")
    total = sum(values)
    if abs(total - 1.0) > _TOL:
        raise DataError(f"{what} must sum to 1, got {shown} (sum {total:g}); e.g. 0.8,0.1,0.1")
    return values


def parse_fractions(value: str | Sequence[float], n: int = 3, what: str = "split fractions") -> tuple[float, ...]:
    """Parse ``"0.8,0.1,0.1"`` (or a sequence) into ``n`` validated fractions.

    Fewer than ``n`` values are padded with zeros (``"0.9,0.1"`` -> ``(0.9, 0.1, 0.0)``), so
    a split without a test part can be written briefly.

    Raises:
        DataError: on non-numbers, more than ``n`` values, negative values, or a sum other than 1.
    """
    if isinstance(value, str):
        parts = [p.strip() for p in value.replace(";", ",").split(",") if p.strip()]
        try:
            numbers = [float(p) for p in parts]
        except ValueError as e:
            raise DataError(f"{what} {value!r}: expected comma-separated numbers such as 0.8,0.1,0.1") from e
    else:
        numbers = list(value)
    if len(numbers) > n:
        raise DataError(f"{what} {value!r}: at most {n} values (training, validation, test), got {len(numbers)}")
    numbers = list(numbers) + [0.0] * (n - len(numbers))
    return validate_fractions(numbers, what=what)


class _UnionFind:
    def __init__(self, n: int):
        self.parent = list(range(n))

    def find(self, i: int) -> int:
        root = i
        while self.parent[root] != root:
            root = self.parent[root]
        while self.parent[i] != root:  # path compression
            self.parent[i], i = root, self.parent[i]
        return root

    def union(self, a: int, b: int) -> None:
        ra, rb = self.find(a), self.find(b)
        if ra != rb:
            # keep the smaller index as root so group order is stable
            if rb < ra:
                ra, rb = rb, ra
            self.parent[rb] = ra


def group_indices(
    items: Sequence[Mapping[str, Any]], keys: Sequence[str] = ("patient_id", "sha256")
) -> list[list[int]]:
    """Indices of ``items`` grouped so that items sharing any value of ``keys`` are together.

    Args:
        items: manifest items (dicts).
        keys: item keys whose equal, non-``None`` values join items into one group.
            Defaults to ``("patient_id", "sha256")``: same patient or byte-identical file.

    Returns:
        groups as sorted index lists, ordered by their first index; together they hold every
        index exactly once.
    """
    uf = _UnionFind(len(items))
    for key in keys:
        first: dict[Any, int] = {}
        for i, item in enumerate(items):
            value = item.get(key)
            if value is None:
                continue
            value = str(value)
            if value in first:
                uf.union(first[value], i)
            else:
                first[value] = i
    groups: dict[int, list[int]] = defaultdict(list)
    for i in range(len(items)):
        groups[uf.find(i)].append(i)
    return sorted(groups.values(), key=lambda g: g[0])


def _hashable(label: Any) -> Hashable:
    return tuple(label) if isinstance(label, list) else label


def group_label(labels: Sequence[Any]) -> Hashable:
    """The label a group is stratified by: the most frequent one, ties to the one seen first.

    List labels (multi-label) are compared as tuples; ``None`` entries (unknown) are ignored
    unless all are unknown, in which case the result is ``None``.
    """
    known = [_hashable(lab) for lab in labels if lab is not None]
    if not known:
        return None
    counts = Counter(known)
    best = max(counts.values())
    for lab in known:
        if counts[lab] == best:
            return lab
    return None  # unreachable


def _stratum_order(key: Hashable) -> tuple:
    return (key is None, type(key).__name__, repr(key))


def assign_groups(
    groups: Sequence[Sequence[int]],
    labels: Sequence[Any] | None,
    fractions: Sequence[float],
    seed: int = 0,
    stratify: bool = True,
) -> list[int]:
    """Split index (into ``fractions``) for every group.

    Args:
        groups: index lists as returned by :func:`group_indices`.
        labels: one label per item (``None`` when unknown), or ``None`` for no labels.
        fractions: target share of items per split; validated (non-negative, sum 1).
        seed: seed of the shuffle that decides which groups go where. Defaults to 0.
        stratify: balance each label's items across splits by the fractions. Defaults to True.

    Returns:
        a list with one split index per group; a split with fraction 0 never gets a group.

    Raises:
        DataError: when the fractions are invalid.
    """
    fractions = validate_fractions(fractions)
    active = [s for s, f in enumerate(fractions) if f > 0]
    strata: dict[Hashable, list[int]] = defaultdict(list)
    for g, members in enumerate(groups):
        key = group_label([labels[i] for i in members]) if (stratify and labels is not None) else None
        strata[key].append(g)
    rng = random.Random(seed)
    assignment = [-1] * len(groups)
    counts = [0] * len(fractions)  # items per split over all strata so far
    seen = 0  # items in the strata done so far
    for key in sorted(strata, key=_stratum_order):
        order = list(strata[key])
        rng.shuffle(order)
        order.sort(key=lambda g: -len(groups[g]))  # stable: shuffled order kept within equal sizes
        seen += sum(len(groups[g]) for g in order)
        # cumulative targets: each stratum is split by the fractions, and the rounding left
        # over by earlier strata is made up here, so the overall counts follow the fractions too
        targets = [f * seen for f in fractions]
        for g in order:
            best = max(active, key=lambda s: (targets[s] - counts[s], -s))
            assignment[g] = best
            counts[best] += len(groups[g])
    return assignment


def split_items(
    items: Sequence[Mapping[str, Any]],
    fractions: Sequence[float] | str,
    seed: int = 0,
    split_names: Sequence[str] = DEFAULT_SPLIT_NAMES,
    stratify: bool = True,
    label_key: str = "label",
    group_keys: Sequence[str] = ("patient_id", "sha256"),
) -> dict[str, list]:
    """Split items patient-level (and duplicate-level) by fractions, stratified by label.

    Args:
        items: manifest items; ``patient_id`` and ``sha256`` (see ``group_keys``) group them.
        fractions: one fraction per name in ``split_names`` (a string ``"0.8,0.1,0.1"`` works).
        seed: shuffle seed. Defaults to 0.
        split_names: names of the splits. Defaults to training, validation, test.
        stratify: stratify groups by label. Defaults to True.
        label_key: item key holding the label. Defaults to ``"label"``.
        group_keys: item keys that join items into groups. Defaults to patient id and sha256.

    Returns:
        ``{name: [items]}`` for every name (possibly empty lists), items in input order.

    Examples::

        >>> items = [{"image": f"{i}.png", "label": i % 2, "patient_id": str(i // 2)} for i in range(10)]
        >>> parts = split_items(items, "0.6,0.2,0.2", seed=1)
        >>> sum(len(v) for v in parts.values())
        10
    """
    if isinstance(fractions, str):
        fractions = parse_fractions(fractions, n=len(split_names))
    if len(fractions) != len(split_names):
        raise DataError(f"{len(fractions)} fractions given for {len(split_names)} splits {list(split_names)}")
    groups = group_indices(items, group_keys)
    labels = [item.get(label_key) for item in items]
    assignment = assign_groups(groups, labels, fractions, seed=seed, stratify=stratify)
    where = [0] * len(items)
    for g, members in enumerate(groups):
        for i in members:
            where[i] = assignment[g]
    out: dict[str, list] = {name: [] for name in split_names}
    for i, item in enumerate(items):
        out[split_names[where[i]]].append(item)
    return out


def carve_validation(
    items: Sequence[Mapping[str, Any]],
    val_fraction: float,
    seed: int = 0,
    stratify: bool = True,
    label_key: str = "label",
    group_keys: Sequence[str] = ("patient_id", "sha256"),
) -> tuple[list, list]:
    """Move about ``val_fraction`` of a training split's items, by whole groups, to validation.

    Returns:
        ``(training, validation)``; together they hold every item once.

    Raises:
        DataError: when ``val_fraction`` is not in [0, 1].
    """
    try:
        f = float(val_fraction)
    except (TypeError, ValueError) as e:
        raise DataError(f"--val-fraction must be a number between 0 and 1, got {val_fraction!r}") from e
    if not (0.0 <= f <= 1.0) or not math.isfinite(f):
        raise DataError(f"--val-fraction must be between 0 and 1, got {val_fraction!r}")
    parts = split_items(
        items, (1.0 - f, f), seed=seed, split_names=("training", "validation"), stratify=stratify,
        label_key=label_key, group_keys=group_keys,
    )
    return parts["training"], parts["validation"]


def find_leakage(
    splits: Mapping[str, Sequence[Mapping[str, Any]]], keys: Sequence[str] = ("patient_id", "sha256")
) -> list[str]:
    """Problems where one patient id or one file hash occurs in more than one split.

    Returns:
        one message per leaking value (empty when the splits are clean).
    """
    problems = []
    for key in keys:
        seen: dict[str, set[str]] = defaultdict(set)
        for name, items in splits.items():
            for item in items:
                value = item.get(key)
                if value is not None:
                    seen[str(value)].add(name)
        for value, names in sorted(seen.items()):
            if len(names) > 1:
                problems.append(f"{key} {value!r} occurs in {sorted(names)}")
    return problems


def duplicate_content(
    splits: Mapping[str, Sequence[Mapping[str, Any]]], base_dir: Any = None, compute: bool = True
) -> tuple[list[str], list[str], int]:
    """Identical image content across and within splits, by ``sha256`` (computed for items that carry none).

    Args:
        splits: split name -> items (``image`` relative to ``base_dir`` or absolute).
        base_dir: folder the relative ``image`` paths start from (the manifest's folder).
        compute: hash the files of items without ``sha256``; when False those items are not compared.

    Returns:
        ``(errors, warnings, unchecked)``: one error per content found in two or more splits (an image in training
        and test inflates the test metrics), one warning per content repeated inside one split (it weighs twice in
        training, or counts twice in a metric), and the number of items whose content could not be checked (no
        ``sha256`` and ``compute`` off, or the file unreadable).
    """
    import os

    from medfuse.utils.io import sha256_file

    where: dict[str, list[tuple[str, str]]] = defaultdict(list)
    unchecked = 0
    for name, items in splits.items():
        for item in items:
            digest = item.get("sha256")
            image = str(item.get("image", ""))
            if not digest and compute and image:
                try:
                    digest = sha256_file(os.path.join(str(base_dir or ""), image))
                except OSError:
                    digest = None
            if not digest:
                unchecked += 1
                continue
            where[str(digest)].append((name, image))
    errors, warnings = [], []
    for digest, places in sorted(where.items()):
        if len(places) < 2:
            continue
        names = sorted({n for n, _ in places})
        listed = ", ".join(f"{img} ({n})" for n, img in places[:4]) + (" ..." if len(places) > 4 else "")
        if len(names) > 1:
            errors.append(f"identical image content in splits {names}: {listed}; keep one copy, in one split")
        else:
            warnings.append(f"identical image content {len(places)} times in '{names[0]}': {listed}")
    return errors, warnings, unchecked


def kfold_assignment(
    items: Sequence[Mapping[str, Any]],
    folds: int,
    seed: int = 0,
    stratify: bool = True,
    label_key: str = "label",
    group_keys: Sequence[str] = ("patient_id", "sha256"),
) -> list[int]:
    """The cross-validation fold (0 .. ``folds`` - 1) of every item: patient-level, stratified by label.

    The same rule as the manifest splits (:func:`group_indices`, then :func:`assign_groups` with ``folds``
    equal fractions), so one patient, or one file, never sits in two folds. scikit-learn's
    ``StratifiedGroupKFold`` is not used: it takes one group id per item, while items here are joined by
    patient id *or* file hash (chains included), and its fold sizes follow a different balancing rule than the
    splits of ``medfuse.data`` that users already know.

    Raises:
        DataError: when ``folds`` < 2, or when there are fewer groups (patients) than folds.
    """
    k = int(folds)
    if k < 2:
        raise DataError(f"--folds must be at least 2, got {folds}")
    groups = group_indices(items, group_keys)
    if len(groups) < k:
        raise DataError(f"{k} folds need at least {k} patients (groups of items), but the training split has "
                        f"{len(groups)}; use fewer folds")
    labels = [item.get(label_key) for item in items]
    assignment = assign_groups(groups, labels, [1.0 / k] * k, seed=seed, stratify=stratify)
    fold = [0] * len(items)
    for g, members in enumerate(groups):
        for i in members:
            fold[i] = assignment[g]
    return fold
