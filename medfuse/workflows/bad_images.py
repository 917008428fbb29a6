# Copyright (c) medfuse contributors
# Licensed under the Apache License, Version 2.0
"""Unreadable images in a run: stop naming the file, or skip it and say so.

The bundle keys ``on_bad_image`` (``stop`` | ``skip``; the task base configs default to ``stop`` for training and
``skip`` for evaluation and inference) and ``max_bad_fraction`` (0.01) drive:

* :func:`screen_images`: a header check of every item of a split when its dataset is built
  (:func:`medfuse.transforms.io.image_header_problem`: exists, readable, known format, header parses);
* :class:`SkipBadImages`: a wrapper around any dataset that catches the input errors (:class:`~medfuse.errors.DataError`)
  raised while an item is loaded and decoded, with :func:`collate_present` as the data loader's ``collate_fn``;
* :class:`BadImageLog`: ``<output>/skipped_images.csv`` (``split,image,stage,reason``), shared by the data-loader
  worker processes (each row one ``O_APPEND`` write), the counts in ``run_info.json`` and the closing console line.

With ``stop`` the first bad image raises a :class:`~medfuse.errors.DataError` naming the file and the fix; with
``skip`` it is left out and recorded, and more than ``max_bad_fraction`` of a split stops the run anyway.
"""

from __future__ import annotations

import csv
import io
import logging
import os
from pathlib import Path
from typing import Any, Callable, Sequence

import torch

from medfuse.errors import DataError, input_cause

__all__ = ["BadImageLog", "SkipBadImages", "screen_images", "collate_present", "ON_BAD_IMAGE", "SKIPPED_NAME"]

ON_BAD_IMAGE = ("stop", "skip")
SKIPPED_NAME = "skipped_images.csv"
_FIELDS = ("split", "image", "stage", "reason")
logger = logging.getLogger(__name__)


class BadImageLog:
    """The bad images of one output folder (a run, an evaluation, an inference).

    Args:
        output_dir: where ``skipped_images.csv`` and ``run_info.json`` are.
        on_bad_image: ``"stop"`` or ``"skip"``.
        max_bad_fraction: the largest fraction of a split that may be skipped (0.01).

    Raises:
        ValueError: ``on_bad_image`` is neither, or ``max_bad_fraction`` is outside ``[0, 1]``.
    """

    def __init__(self, output_dir: str | os.PathLike, on_bad_image: str = "stop", max_bad_fraction: float = 0.01) -> None:
        if str(on_bad_image) not in ON_BAD_IMAGE:
            raise ValueError(f"on_bad_image must be one of {ON_BAD_IMAGE}, got {on_bad_image!r}.")
        if not 0.0 <= float(max_bad_fraction) <= 1.0:
            raise ValueError(f"max_bad_fraction must be within [0, 1], got {max_bad_fraction}.")
        self.output_dir = Path(output_dir)
        self.policy = str(on_bad_image)
        self.max_bad_fraction = float(max_bad_fraction)
        self.sizes: dict[str, int] = {}
        self._seen: set[tuple[str, str]] = set()

    @property
    def path(self) -> Path:
        return self.output_dir / SKIPPED_NAME

    def rows(self) -> list[dict]:
        """The recorded rows, each ``(split, image)`` once (a file that fails every epoch is listed once)."""
        if not self.path.is_file():
            return []
        with open(self.path, newline="", encoding="utf-8") as f:
            rows = list(csv.DictReader(f))
        seen, out = set(), []
        for r in rows:
            if (r["split"], r["image"]) not in seen:
                seen.add((r["split"], r["image"]))
                out.append(r)
        return out

    def counts(self) -> dict[str, int]:
        out: dict[str, int] = {}
        for r in self.rows():
            out[r["split"]] = out.get(r["split"], 0) + 1
        return out

    def bad(self, split: str, image: str, stage: str, reason: str) -> None:
        """Stop on ``image`` (policy ``stop``) or record it (``skip``), stopping when the split has too many."""
        if self.policy == "stop":
            raise DataError(f"{image}: {reason} ({split} split, {stage}); fix or remove the file, or pass "
                            "--on_bad_image skip to leave it out and list it in skipped_images.csv")
        if (split, image) not in self._seen:
            self._seen.add((split, image))
            self.output_dir.mkdir(parents=True, exist_ok=True)
            buf = io.StringIO()
            writer = csv.writer(buf, lineterminator="\n")
            if not self.path.is_file():
                writer.writerow(_FIELDS)
            writer.writerow([split, image, stage, " ".join(str(reason).split())])
            # one os.write per row on an O_APPEND descriptor: rows of data-loader workers do not interleave
            fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
            try:
                os.write(fd, buf.getvalue().encode("utf-8"))
            finally:
                os.close(fd)
            logger.warning("skipped %s (%s split, %s): %s", image, split, stage, reason)
        self.check_fraction(split)

    def check_fraction(self, split: str) -> None:
        """Raise when more than ``max_bad_fraction`` of ``split`` (its size from :func:`screen_images`) is bad."""
        total = self.sizes.get(split)
        if not total:
            return
        n = self.counts().get(split, 0)
        if n > self.max_bad_fraction * total:
            raise DataError(f"{n} of {total} images of the {split} split are unreadable (more than "
                            f"max_bad_fraction={self.max_bad_fraction:g}); see {self.path}, fix the files, or raise "
                            "--max_bad_fraction")

    def finish(self) -> str:
        """Write the counts into ``run_info.json`` and return (and print) the closing line; main process only."""
        from medfuse.utils.distributed import is_main_process
        from medfuse.workflows.runs import update_run_info

        counts = self.counts()
        if not is_main_process():
            return ""
        update_run_info(self.output_dir, skipped_images=counts)
        total = sum(counts.values())
        line = (f"skipped {total} unreadable image(s) ({', '.join(f'{k}: {v}' for k, v in counts.items())}); "
                f"list: {self.path}") if total else "skipped images: none"
        print(line)
        return line


def screen_images(items: Sequence[dict], split: str, log: BadImageLog, keys: Sequence[str] = ("image",)) -> list[dict]:
    """``items`` less those whose image header does not read (see :class:`BadImageLog` for stop / skip).

    Every path under ``keys`` of every item is checked (a list of paths: each one); items without such a key pass.
    """
    from medfuse.transforms.io import image_header_problem

    items = list(items)
    log.sizes[split] = len(items)
    kept = []
    for item in items:
        problem = None
        for key in keys:
            value = item.get(key) if isinstance(item, dict) else None
            for path in value if isinstance(value, (list, tuple)) else [value]:
                if isinstance(path, (str, os.PathLike)):
                    reason = image_header_problem(path)
                    if reason:
                        problem = (str(path), reason)
                        break
            if problem:
                break
        if problem:
            log.bad(split, problem[0], "header", problem[1])
        else:
            kept.append(item)
    return kept


class SkipBadImages(torch.utils.data.Dataset):
    """Any map-style dataset whose items that fail to load or decode (a ``DataError``) are left out or stop the run.

    A left-out item comes back as ``None``: give the data loader :func:`collate_present` (the task base configs do).

    Args:
        dataset: the dataset (MONAI ``Dataset``, ``CacheDataset`` ... or any with ``__getitem__`` / ``__len__``).
        split: its split name, for the record.
        log: the :class:`BadImageLog`.
        key: the item key holding the image path named in the record.
    """

    def __init__(self, dataset: Any, split: str, log: BadImageLog, key: str = "image") -> None:
        self.dataset, self.split, self.log, self.key = dataset, str(split), log, key

    def __len__(self) -> int:
        return len(self.dataset)

    def __getattr__(self, name: str) -> Any:  # data, transform, set_data ...: the wrapped dataset's
        if name in ("dataset", "split", "log", "key"):
            raise AttributeError(name)
        return getattr(self.dataset, name)

    def __getitem__(self, index: int) -> Any:
        try:
            return self.dataset[index]
        except Exception as err:  # MONAI wraps the loader's DataError in "applying transform ..."
            e = input_cause(err, DataError)
            if e is None or self.log.policy == "stop":  # a bug, or stop: the loader's error names the file already
                raise
            data = getattr(self.dataset, "data", None)
            item = data[index] if isinstance(data, Sequence) and not isinstance(index, slice) else {}
            image = item.get(self.key, f"item {index}") if isinstance(item, dict) else f"item {index}"
            self.log.bad(self.split, str(image), "load", str(e))
            return None


def collate_present(batch: list, collate: Callable | None = None) -> Any:
    """The batch less the items :class:`SkipBadImages` left out, collated by ``collate`` (MONAI's
    ``list_data_collate``).

    Raises:
        DataError: every item of the batch was left out (nothing to run the step on).
    """
    from monai.data import list_data_collate

    present = [b for b in batch if b is not None]
    if not present:
        raise DataError(f"every image of a batch of {len(batch)} was unreadable and skipped; see skipped_images.csv "
                        "in the output folder, fix the files, or lower --batch_size")
    return (collate or list_data_collate)(present)
