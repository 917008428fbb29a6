# Copyright (c) medfuse contributors
# Licensed under the Apache License, Version 2.0
"""Detection task layer: what a bundle config needs around a MONAI detector (``DualAttNetDetector``).

Contract (also in docs/architecture.md, "Detection task"):

* **boxes in**: manifest items with ``boxes`` ``[[x_min, y_min, x_max, y_max], ...]`` in pixels of the stored
  image (x = column) and ``box_labels`` (class indices); inside the engines boxes are MONAI order
  ``[row_min, col_min, row_max, col_max]`` in pixels of the letterboxed network input;
* **boxes out**: ``boxes.csv`` with ``image,x1,y1,x2,y2,class,score`` in pixels of the stored image (x =
  column; the letterbox of ``ResizeWithPadBoxd`` undone), ``predictions.csv`` with ``image``,
  ``label_<class>`` (0/1, when the image has reference boxes) and ``prob_<class>`` (the detector's image-level
  score), and for evaluation ``detection_metrics.json`` (mAP IoU 0.50:0.95, AP at IoU 0.4 and 0.5, per class)
  and ``froc.json`` (sensitivity at 1/8 ... 8 false positives per image, IoU 0.4).

Pieces:

* :func:`detection_items` / :func:`detection_inference_items`: items of a manifest split or a folder;
* :func:`detection_transforms`: the detection presets of :mod:`medfuse.transforms.boxes`;
* :func:`detection_collate`: a batch with stacked images and per-image box lists (and the map back to the
  stored image's pixels);
* :class:`DetectionPrepareBatch`, :class:`DetectionLoss`, :class:`DetectionTrainer`: MONAI's
  ``SupervisedTrainer`` runs the detector in training mode (the targets reach it through the inferer's
  arguments) and sums its loss dictionary; the trainer's output is a one-item list so the base's
  ``StatsHandler`` / ``EpochLogger`` / progress bar read ``loss`` as for the other tasks;
* :func:`anchor_generator`, :func:`make_detector`, :func:`detection_pos_weight`;
* :class:`DetectionMetric`: ``val_map``, ``val_ap50``, ``val_ap40``, ``val_image_auc`` as ignite metrics of
  MONAI's ``SupervisedEvaluator`` (gathered over ranks);
* :class:`DetectionWriter`: evaluation / inference handler writing the files above and ``overlays/<stem>.png``.
"""

from __future__ import annotations

import csv
import io
import logging
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, Callable, Optional

import numpy as np
import torch
from ignite.engine import Engine, Events
from ignite.metrics import Metric
from monai.engines import SupervisedTrainer
from monai.engines.utils import PrepareBatch

from medfuse.data.manifest import load_split, read_manifest
from medfuse.errors import ManifestError
from medfuse.utils.io import atomic_write_json, atomic_write_text
from medfuse.workflows.runs import is_main_process

__all__ = [
    "DETECTION_METRICS",
    "POS_WEIGHT_MODES",
    "detection_items",
    "detection_inference_items",
    "detection_transforms",
    "detection_collate",
    "DetectionPrepareBatch",
    "DetectionLoss",
    "DetectionTrainer",
    "anchor_generator",
    "make_detector",
    "detection_pos_weight",
    "DetectionMetric",
    "DetectionWriter",
    "boxes_to_original",
    "load_detection_results",
    "print_detection_summary",
]

logger = logging.getLogger(__name__)
DEFAULT_META_KEYS = ("patient_id", "view", "sex", "site")
#: Metrics of :class:`DetectionMetric`.
DETECTION_METRICS = ("map", "ap50", "ap40", "image_auc")
#: ``pos_weight`` of the attention loss: ``none`` or ``balanced`` (images without / with the class).
POS_WEIGHT_MODES = ("none", "balanced")
_STACKED = ("image", "label")


# ----------------------------------------------------------------------------------------------------------
# items, transforms, batches


def _meta(it: Mapping, present: Sequence[str]) -> dict:
    out = {}
    for k in present:
        v = it.get(k, "")
        out[k] = v if isinstance(v, (str, int, float)) and not isinstance(v, bool) else str(v)
    return out


def detection_items(
    manifest: str | os.PathLike,
    split: str = "training",
    meta_keys: Sequence[str] = DEFAULT_META_KEYS,
    limit: int = 0,
    require_boxes: bool = True,
) -> list[dict]:
    """Items of one split of a ``detection`` manifest (validated: reversed or non-numeric boxes and labels
    outside ``classes`` stop here with one line naming the item and the classes).

    Each item: ``image``, ``image_path``, ``boxes`` / ``box_labels`` (manifest order, ``[]`` for a negative),
    ``gt_boxes`` / ``gt_labels`` (copies that the transforms leave alone), ``label`` (multi-hot over the
    classes), ``has_gt`` (1 when the item states its boxes) and the ``meta_keys`` present in the split.

    Args:
        manifest: a medfuse manifest of task ``detection``.
        split: ``training``, ``validation`` or ``test``.
        meta_keys: grouping columns kept for the output files.
        limit: keep the first ``limit`` items when > 0.
        require_boxes: every item must state its boxes (training and evaluation). Defaults to True.

    Raises:
        ManifestError: another task, a missing or empty split, invalid boxes, items without boxes.
    """
    m = read_manifest(manifest, validate=False)
    if m.get("task") != "detection":
        raise ManifestError(f"task is {m.get('task')!r}: this bundle needs a 'detection' manifest (items with "
                            "'boxes' and 'box_labels')", manifest)
    items = load_split(manifest, split)  # validates the whole manifest
    if not items:
        raise ManifestError(f"the manifest has no '{split}' items; add them (or choose another split)", manifest)
    num_classes = len(m.get("classes") or [])
    present = [k for k in meta_keys if any(k in it for it in items)]
    out = []
    for it in items:
        has_gt = isinstance(it.get("boxes"), list)
        if require_boxes and not has_gt:
            raise ManifestError(f"'{split}' item {it['image']} has no 'boxes'; give 'boxes' and 'box_labels' "
                                "(empty lists for an image without findings)", manifest)
        boxes = [[float(v) for v in b] for b in (it.get("boxes") or [])]
        labels = [int(v) for v in (it.get("box_labels") or [])]
        label = it.get("label") if has_gt else [0] * num_classes
        out.append({"image": it["image"], "image_path": it["image"], "boxes": boxes, "box_labels": labels,
                    "gt_boxes": [list(b) for b in boxes], "gt_labels": list(labels),
                    "label": [int(v) for v in label], "has_gt": int(has_gt), **_meta(it, present)})
    return out[:limit] if limit and limit > 0 else out


def detection_inference_items(
    manifest: str | os.PathLike | None = "",
    input_dir: str | os.PathLike | None = "",
    split: str = "test",
    meta_keys: Sequence[str] = DEFAULT_META_KEYS,
    limit: int = 0,
) -> list[dict]:
    """Items to predict: a folder of images (``input_dir``) or a manifest split, exactly one. Folder items (and
    manifest items without boxes) get empty boxes and ``has_gt = 0``.

    Raises:
        DataError: neither or both inputs, or a folder without images.
        ManifestError: as :func:`detection_items`.
    """
    from medfuse.workflows.data import inference_items

    def manifest_items(manifest, split, meta_keys, limit):
        return detection_items(manifest, split, meta_keys=meta_keys, limit=limit, require_boxes=False)

    items = inference_items(manifest, input_dir, split, meta_keys=meta_keys, limit=limit, manifest_items=manifest_items)
    for it in items:
        if "has_gt" not in it:
            it.update({"image_path": it.get("image_path", it["image"]), "boxes": [], "box_labels": [], "gt_boxes": [],
                       "gt_labels": [], "has_gt": 0})
            it.pop("label", None)
    return items


def detection_transforms(image_size: int = 512, train: bool = False, in_channels: int = 1, **kwargs: Any):
    """:func:`~medfuse.transforms.boxes.detection_train_transforms` (``train``) or the deterministic
    :func:`~medfuse.transforms.boxes.detection_eval_transforms`; ``kwargs`` go to the preset."""
    from medfuse.transforms.boxes import detection_eval_transforms, detection_train_transforms

    make = detection_train_transforms if train else detection_eval_transforms
    return make(image_size=int(image_size), in_channels=int(in_channels), **kwargs)


def _plain(x: Any) -> torch.Tensor:
    t = torch.as_tensor(x)
    return t.as_tensor() if hasattr(t, "as_tensor") else t


def _to_original(image: Any) -> list[float]:
    """``[a_row, a_col, c_row, c_col]``: a network-input coordinate ``v`` maps to ``v * a + c`` on the stored
    image (the inverse of the image's ``ResizeWithPad``); identity when the image carries no trace."""
    from medfuse.transforms.boxes import ResizeWithPadBoxd

    if not getattr(image, "applied_operations", None):
        return [1.0, 1.0, 0.0, 0.0]
    try:
        unit = ResizeWithPadBoxd("b", ref_key="image").inverse(
            {"image": image, "b": torch.tensor([[0.0, 0.0, 1.0, 1.0]])})["b"].reshape(-1)
    except ValueError:
        return [1.0, 1.0, 0.0, 0.0]
    u = [float(v) for v in unit]
    return [u[2] - u[0], u[3] - u[1], u[0], u[1]]


def _original_shape(image: Any) -> list[int]:
    meta = getattr(image, "meta", None)
    shape = meta.get("spatial_shape") if isinstance(meta, Mapping) else None
    if shape is None:
        return []
    return [int(s) for s in torch.as_tensor(shape).reshape(-1)[:2].tolist()]


def detection_collate(batch: Sequence[Mapping]) -> dict:
    """Collate detection items: ``image`` ``(B, C, H, W)`` and ``label`` ``(B, K)`` stacked, every other key a
    list per image (boxes differ in number), plus ``to_original`` (see :func:`boxes_to_original`) and
    ``original_shape`` (rows, columns of the stored image; ``[]`` when unknown)."""
    if not batch:
        return {}
    out: dict[str, Any] = {}
    for key in batch[0]:
        values = [b.get(key) for b in batch]
        if key == "image":
            out[key] = torch.stack([_plain(v) for v in values])
        elif key == "label" and all(v is not None for v in values):
            out[key] = torch.stack([_plain(v).float().reshape(-1) for v in values])
        else:
            out[key] = values
    out["to_original"] = [_to_original(b["image"]) for b in batch]
    out["original_shape"] = [_original_shape(b["image"]) for b in batch]
    return out


class DetectionPrepareBatch(PrepareBatch):
    """``batch -> (images, targets)``; with ``train=True`` the targets are also passed to the inferer
    (``(images, targets, (targets,), {})``), so ``SimpleInferer`` calls ``detector(images, targets)`` and gets the
    loss dictionary. Targets: per image ``{"boxes": (N, 4) MONAI order, "labels": (N,)}``."""

    def __init__(self, train: bool = False, image_key: str = "image", box_key: str = "boxes",
                 label_key: str = "box_labels") -> None:
        self.train = bool(train)
        self.image_key, self.box_key, self.label_key = image_key, box_key, label_key

    def __call__(self, batchdata: Mapping, device: Any = None, non_blocking: bool = False, **kwargs: Any):
        images = _plain(batchdata[self.image_key]).to(device=device, non_blocking=non_blocking, **kwargs)
        boxes = batchdata.get(self.box_key) or [[] for _ in range(images.shape[0])]
        labels = batchdata.get(self.label_key) or [[] for _ in range(images.shape[0])]
        targets = [{"boxes": _plain(b).float().reshape(-1, 4).to(images.device),
                    "labels": _plain(lab).long().reshape(-1).to(images.device)} for b, lab in zip(boxes, labels)]
        if self.train:
            return images, targets, (targets,), {}
        return images, targets


class DetectionLoss(torch.nn.Module):
    """Sum of a detector's loss dictionary (``classification``, ``box_regression``, ``attention``); the parts of
    the last call are kept in :attr:`last` (floats)."""

    def __init__(self) -> None:
        super().__init__()
        self.last: dict[str, float] = {}

    def forward(self, losses: Mapping[str, torch.Tensor], targets: Any = None) -> torch.Tensor:
        if not isinstance(losses, Mapping) or not losses:
            raise ValueError("DetectionLoss needs the detector's loss dictionary (run the detector in training mode "
                             "with targets: DetectionPrepareBatch(train=True) and SimpleInferer)")
        self.last = {k: float(v.detach()) for k, v in losses.items()}
        return sum(losses.values())


class DetectionTrainer(SupervisedTrainer):
    """MONAI's ``SupervisedTrainer`` whose per-iteration output is ``[output]`` (one dictionary in a list), so
    ``from_engine(["loss"], first=True)`` (StatsHandler, EpochLogger, progress bar) reads the loss without
    decollating the detection outputs. Use it with ``decollate=False``."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        kwargs.setdefault("decollate", False)
        super().__init__(*args, **kwargs)

    def _iteration(self, engine: Any, batchdata: dict) -> list:
        return [super()._iteration(engine, batchdata)]


# ----------------------------------------------------------------------------------------------------------
# detector


def anchor_generator(fpn_strides: Sequence[int] = (8, 16, 32), extra_levels: int = 1,
                     base_anchor_shapes: Sequence[Sequence[float]] = ((24, 24), (32, 32), (48, 48))):
    """MONAI ``AnchorGeneratorWithAnchorShape`` for a :class:`~medfuse.networks.nets.DualAttNet` pyramid:
    ``base_anchor_shapes`` (rows, columns) at the finest level, doubled per coarser level."""
    from monai.apps.detection.utils.anchor_utils import AnchorGeneratorWithAnchorShape

    taps = sorted(int(s) for s in fpn_strides)
    strides = taps + [taps[-1] * 2 ** (i + 1) for i in range(int(extra_levels))]
    scales = [s // taps[0] for s in strides]
    shapes = tuple(tuple(float(v) for v in s) for s in base_anchor_shapes)
    if not shapes or any(len(s) != 2 for s in shapes):
        raise ValueError(f"base_anchor_shapes must be (rows, columns) pairs, got {base_anchor_shapes!r}")
    return AnchorGeneratorWithAnchorShape(feature_map_scales=scales, base_anchor_shapes=shapes)


def detection_pos_weight(items: Sequence[Mapping], num_classes: int, mode: str = "none") -> Optional[list[float]]:
    """``pos_weight`` of the attention loss: ``none`` -> None; ``balanced`` -> per class, images without the class
    over images with it (1 for a class no image has).

    Raises:
        ValueError: an unknown mode.
    """
    mode = str(mode).lower()
    if mode not in POS_WEIGHT_MODES:
        raise ValueError(f"pos_weight must be one of {list(POS_WEIGHT_MODES)}, got {mode!r}")
    if mode == "none":
        return None
    counts = np.zeros(int(num_classes))
    for it in items:
        for c in set(int(v) for v in it.get("box_labels") or []):
            counts[c] += 1
    n = len(items)
    return [float((n - c) / c) if c > 0 else 1.0 for c in counts]


def make_detector(network: torch.nn.Module, anchor_generator: Any, attention_weight: float = 1.0,
                  pos_weight: Optional[Sequence[float]] = None, score_thresh: float = 0.05, nms_thresh: float = 0.5,
                  detections_per_img: int = 100, topk_candidates_per_level: int = 1000, device: Any = None):
    """A :class:`~medfuse.networks.nets.DualAttNetDetector` with its box selection set (score threshold, NMS IoU,
    boxes per image), on ``device``."""
    from medfuse.networks.nets import DualAttNetDetector

    det = DualAttNetDetector(network, anchor_generator, attention_weight=float(attention_weight), pos_weight=pos_weight)
    det.set_box_selector_parameters(score_thresh=float(score_thresh), topk_candidates_per_level=int(topk_candidates_per_level),
                                    nms_thresh=float(nms_thresh), detections_per_img=int(detections_per_img))
    return det.to(device) if device is not None else det


# ----------------------------------------------------------------------------------------------------------
# metrics


def _gather(obj: Any) -> list:
    import torch.distributed as dist

    if dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1:
        parts: list = [None] * dist.get_world_size()
        dist.all_gather_object(parts, obj)
        return [x for p in parts for x in p]
    return list(obj)


def _auc(y: np.ndarray, s: np.ndarray) -> Optional[float]:
    """Rank (Mann-Whitney) AUC, ties counted half; None without both classes."""
    pos, neg = s[y > 0], s[y <= 0]
    if not len(pos) or not len(neg):
        return None
    diff = pos[:, None] - neg[None, :]
    return float(((diff > 0).sum() + 0.5 * (diff == 0).sum()) / (len(pos) * len(neg)))


def image_auc(labels: np.ndarray, scores: np.ndarray) -> Optional[float]:
    """Macro AUC over the classes with positive and negative images."""
    vals = [_auc(labels[:, k], scores[:, k]) for k in range(labels.shape[1])] if labels.size else []
    vals = [v for v in vals if v is not None]
    return float(np.mean(vals)) if vals else None


_CACHE: dict = {}


def _summarise(records: list[dict], classes: Sequence[str]) -> dict:
    from medfuse.evaluation.detection import detection_metrics

    import hashlib

    digest = hashlib.sha1(repr(list(classes)).encode())
    for r in records:  # the same records (all metrics of one evaluator run) share one COCO matching
        for k in ("boxes", "classes", "scores", "gt_boxes", "gt_classes", "label", "image_scores"):
            digest.update(np.ascontiguousarray(r[k]).tobytes())
            digest.update(b"|")
    key = (len(records), digest.hexdigest())
    if _CACHE.get("key") == key:
        return _CACHE["value"]
    m = detection_metrics([r["boxes"] for r in records], [r["classes"] for r in records], [r["scores"] for r in records],
                          [r["gt_boxes"] for r in records], [r["gt_classes"] for r in records], classes,
                          iou_thresholds=(0.4, 0.5))
    labels = np.stack([r["label"] for r in records]) if records else np.zeros((0, len(classes)))
    probs = np.stack([r["image_scores"] for r in records]) if records else np.zeros((0, len(classes)))
    m["image_auc"] = image_auc(labels, probs)
    _CACHE.update(key=key, value=m)
    return m


def _records_from(pred: Sequence[Mapping], targets: Sequence[Mapping], num_classes: int) -> list[dict]:
    out = []
    for p, t in zip(pred, targets):
        gl = _plain(t["labels"]).detach().cpu().long().numpy().reshape(-1)
        label = np.zeros(num_classes)
        label[gl] = 1.0
        scores = p.get("image_scores")
        out.append({
            "boxes": _plain(p["boxes"]).detach().float().cpu().numpy().reshape(-1, 4),
            "classes": _plain(p["labels"]).detach().cpu().long().numpy().reshape(-1),
            "scores": _plain(p["labels_scores"]).detach().float().cpu().numpy().reshape(-1),
            "gt_boxes": _plain(t["boxes"]).detach().float().cpu().numpy().reshape(-1, 4),
            "gt_classes": gl,
            "label": label,
            "image_scores": (np.zeros(num_classes) if scores is None
                             else _plain(scores).detach().float().cpu().numpy().reshape(-1)),
        })
    return out


class DetectionMetric(Metric):
    """A detection metric over the evaluator's run, for MONAI's ``SupervisedEvaluator`` (``decollate=False``,
    ``DetectionPrepareBatch``, the detector as network): reads ``pred`` (the detector's per-image dictionaries)
    and ``label`` (the targets). Boxes stay in network-input pixels (IoU does not change under the letterbox).

    ``metric``: ``map`` (IoU 0.50:0.95, macro over classes with boxes), ``ap50``, ``ap40`` (VinDr-CXR's),
    ``image_auc`` (macro AUC of the image-level scores against the labels derived from the boxes). An undefined
    value (no reference box) is reported as 0. Gathered over ranks under ``torch.distributed``; the COCO matching
    is shared by the metrics of one run.
    """

    required_output_keys = ("pred", "label")

    def __init__(self, classes: Sequence[str], metric: str = "map", output_transform: Callable = lambda x: x,
                 device: Any = "cpu") -> None:
        if metric not in DETECTION_METRICS:
            raise ValueError(f"metric must be one of {list(DETECTION_METRICS)}, got {metric!r}")
        self.classes = [str(c) for c in classes]
        self.metric = metric
        super().__init__(output_transform=output_transform, device=device)

    def reset(self) -> None:
        self._records: list[dict] = []

    def update(self, output: Any) -> None:
        pred, targets = output
        self._records += _records_from(pred, targets, len(self.classes))

    def compute(self) -> float:
        m = _summarise(_gather(self._records), self.classes)
        value = {"map": m["map"], "ap50": m["ap50"], "ap40": m["ap_iou"].get("0.40"), "image_auc": m["image_auc"]}[self.metric]
        return 0.0 if value is None else float(value)


# ----------------------------------------------------------------------------------------------------------
# outputs


def boxes_to_original(boxes: Any, to_original: Sequence[float], shape: Sequence[int] = ()) -> np.ndarray:
    """MONAI-order boxes on the network input -> ``[x_min, y_min, x_max, y_max]`` (x = column) on the stored image,
    clipped to ``shape`` (rows, columns) when given."""
    b = _plain(boxes).detach().float().cpu().numpy().reshape(-1, 4).astype(np.float64)
    a_r, a_c, c_r, c_c = (float(v) for v in to_original)
    rows = b[:, [0, 2]] * a_r + c_r
    cols = b[:, [1, 3]] * a_c + c_c
    if len(shape) == 2:
        rows = np.clip(rows, 0.0, float(shape[0]))
        cols = np.clip(cols, 0.0, float(shape[1]))
    return np.stack([cols[:, 0], rows[:, 0], cols[:, 1], rows[:, 1]], axis=1)


def _overlay(path: str, boxes: np.ndarray, classes: np.ndarray, scores: np.ndarray, gt: np.ndarray,
             names: Sequence[str], out: Path) -> None:
    """The stored image (DICOM: its Rows x Columns grid) with the predicted boxes (class colour, score) and the
    reference boxes (green)."""
    from PIL import Image, ImageDraw

    from medfuse.transforms.io import LoadXrayd

    img = np.asarray(_plain(LoadXrayd("image")({"image": path})["image"]), dtype=np.float64)[0]
    lo, hi = np.percentile(img, [0.5, 99.5])
    grey = np.clip((img - lo) / (hi - lo if hi > lo else 1.0), 0, 1)
    canvas = Image.fromarray((grey * 255).astype(np.uint8)).convert("RGB")
    draw = ImageDraw.Draw(canvas)
    palette = [(255, 64, 64), (64, 160, 255), (255, 200, 0), (200, 80, 255), (255, 128, 0), (0, 220, 220)]
    width = max(1, round(max(canvas.size) / 256))
    for b in gt:
        draw.rectangle([float(v) for v in b], outline=(0, 220, 0), width=width)
    for b, c, s in zip(boxes, classes, scores):
        colour = palette[int(c) % len(palette)]
        draw.rectangle([float(v) for v in b], outline=colour, width=width)
        draw.text((float(b[0]) + 1, float(b[1]) + 1), f"{names[int(c)] if int(c) < len(names) else c} {s:.2f}", fill=colour)
    out.parent.mkdir(parents=True, exist_ok=True)
    canvas.save(out)


class DetectionWriter:
    """Evaluation / inference handler: ``boxes.csv``, ``predictions.csv`` and, with ``metrics=True``,
    ``detection_metrics.json`` + ``froc.json`` in ``output_dir``; with ``overlays > 0`` (or < 0: all) that many
    ``overlays/<stem>.png``. Boxes in pixels of the stored image, x = column. Rows are gathered over ranks;
    rank 0 writes.

    Args:
        output_dir: folder (created).
        classes: class names in index order.
        metrics: write the metrics files (items with reference boxes only). Defaults to False.
        overlays: number of overlay images. Defaults to 0.
        iou_thresholds: IoUs reported besides mAP 0.50:0.95. Defaults to (0.4, 0.5).
        froc_iou: IoU of a FROC hit. Defaults to 0.4.
        extra_keys: item keys added as columns of ``predictions.csv`` when present.
    """

    def __init__(self, output_dir: str | os.PathLike, classes: Sequence[str], metrics: bool = False, overlays: int = 0,
                 iou_thresholds: Sequence[float] = (0.4, 0.5), froc_iou: float = 0.4, extra_keys: Sequence[str] = ()) -> None:
        self.output_dir = Path(output_dir)
        self.classes = [str(c) for c in classes]
        self.metrics = bool(metrics)
        self.overlays = int(overlays)
        self.iou_thresholds = tuple(float(t) for t in iou_thresholds)
        self.froc_iou = float(froc_iou)
        self.extra_keys = tuple(extra_keys)
        self.reset()

    def attach(self, engine: Engine) -> None:
        engine.add_event_handler(Events.EPOCH_STARTED, self.reset)
        engine.add_event_handler(Events.ITERATION_COMPLETED, self.collect)
        engine.add_event_handler(Events.EPOCH_COMPLETED, self.write)

    def reset(self, engine: Optional[Engine] = None) -> None:
        self.rows: list[dict] = []
        self._stems: set[str] = set()
        self.result: dict = {}

    def _stem(self, path: str) -> str:
        from medfuse.utils.images import image_stem
        from medfuse.utils.paths import safe_file_name

        base = safe_file_name(image_stem(path)) if path else f"image{len(self.rows):05d}"
        name, k = base, 1
        while name in self._stems:
            k += 1
            name = f"{base}-{k}"
        self._stems.add(name)
        return name

    def collect(self, engine: Engine) -> None:
        out, batch = engine.state.output, engine.state.batch
        if not isinstance(out, Mapping) or not isinstance(batch, Mapping):
            raise ValueError("DetectionWriter needs the evaluator's batch outputs (decollate=False)")
        n = len(out["pred"])
        for i in range(n):
            p = out["pred"][i]
            shape = batch["original_shape"][i] if "original_shape" in batch else []
            to_orig = batch["to_original"][i] if "to_original" in batch else [1.0, 1.0, 0.0, 0.0]
            scores = p.get("image_scores")
            row = {
                "image": str(batch.get("image_path", [""] * n)[i] or ""),
                "boxes": boxes_to_original(p["boxes"], to_orig, shape),
                "classes": _plain(p["labels"]).detach().cpu().long().numpy().reshape(-1),
                "scores": _plain(p["labels_scores"]).detach().float().cpu().numpy().reshape(-1),
                "image_scores": (np.zeros(len(self.classes)) if scores is None
                                 else _plain(scores).detach().float().cpu().numpy().reshape(-1)),
                "has_gt": bool(batch.get("has_gt", [0] * n)[i]),
                "gt_boxes": np.asarray(batch.get("gt_boxes", [[]] * n)[i] or np.zeros((0, 4)), dtype=np.float64).reshape(-1, 4),
                "gt_classes": np.asarray(batch.get("gt_labels", [[]] * n)[i] or [], dtype=np.int64).reshape(-1),
            }
            for k in self.extra_keys:
                if k in batch:
                    row[k] = batch[k][i]
            if is_main_process() and (self.overlays < 0 or sum(1 for r in self.rows if r.get("overlay")) < self.overlays):
                stem = self._stem(row["image"])
                try:
                    _overlay(row["image"], row["boxes"], row["classes"], row["scores"],
                             row["gt_boxes"] if row["has_gt"] else np.zeros((0, 4)), self.classes,
                             self.output_dir / "overlays" / f"{stem}.png")
                    row["overlay"] = f"overlays/{stem}.png"
                except Exception as err:  # an overlay must not stop the run
                    logger.warning("overlay of %s not written: %s", row["image"], err)
            self.rows.append(row)

    def write(self, engine: Optional[Engine] = None) -> Optional[dict]:
        rows = _gather(self.rows)
        if not is_main_process():
            return None
        self.output_dir.mkdir(parents=True, exist_ok=True)
        buf = io.StringIO()
        w = csv.writer(buf, lineterminator="\n")
        w.writerow(["image", "x1", "y1", "x2", "y2", "class", "score"])
        for r in rows:
            for b, c, s in zip(r["boxes"], r["classes"], r["scores"]):
                w.writerow([r["image"], *(f"{v:.2f}" for v in b), self.classes[int(c)], f"{float(s):.6f}"])
        atomic_write_text(self.output_dir / "boxes.csv", buf.getvalue())
        with_gt = bool(rows) and all(r["has_gt"] for r in rows)
        extra = [k for k in self.extra_keys if any(k in r for r in rows)]
        buf = io.StringIO()
        w = csv.writer(buf, lineterminator="\n")
        w.writerow(["image"] + ([f"label_{c}" for c in self.classes] if with_gt else [])
                   + [f"prob_{c}" for c in self.classes] + extra)
        for r in rows:
            labels = np.zeros(len(self.classes), dtype=int)
            labels[r["gt_classes"]] = 1
            w.writerow([r["image"]] + ([int(v) for v in labels] if with_gt else [])
                       + [f"{float(v):.6g}" for v in r["image_scores"]] + [r.get(k, "") for k in extra])
        atomic_write_text(self.output_dir / "predictions.csv", buf.getvalue())
        result: dict = {"n_images": len(rows), "n_boxes": int(sum(len(r["boxes"]) for r in rows))}
        if self.metrics:
            from medfuse.evaluation.detection import detection_metrics, froc

            scored = [r for r in rows if r["has_gt"]]
            if not scored:
                logger.warning("DetectionWriter: no item with reference boxes; no detection metrics")
            else:
                args = ([r["boxes"] for r in scored], [r["classes"] for r in scored], [r["scores"] for r in scored],
                        [r["gt_boxes"] for r in scored], [r["gt_classes"] for r in scored])
                metrics = detection_metrics(*args, classes=self.classes, iou_thresholds=self.iou_thresholds)
                labels = np.zeros((len(scored), len(self.classes)))
                for i, r in enumerate(scored):
                    labels[i, r["gt_classes"]] = 1
                metrics["image_auc"] = image_auc(labels, np.stack([r["image_scores"] for r in scored]))
                metrics["boxes"] = "pixels of the stored image, [x_min, y_min, x_max, y_max], x = column"
                fr = froc(*args, iou_threshold=self.froc_iou)
                atomic_write_json(self.output_dir / "detection_metrics.json", metrics)
                atomic_write_json(self.output_dir / "froc.json", fr)
                result.update(metrics=metrics, froc=fr)
        self.result = result
        logger.info("wrote %d boxes of %d images to %s", result["n_boxes"], len(rows), self.output_dir / "boxes.csv")
        return result


def load_detection_results(eval_dir: str | os.PathLike) -> dict:
    """``detection_metrics.json`` with ``froc.json`` under ``"froc"`` (what ``evaluate_predictions(detection=...)``
    takes).

    Raises:
        DataError: when ``detection_metrics.json`` is missing.
    """
    import json

    from medfuse.errors import DataError

    p = Path(eval_dir) / "detection_metrics.json"
    if not p.is_file():
        raise DataError(f"{p} not found: the evaluation found no item with reference boxes")
    out = json.loads(p.read_text())
    f = Path(eval_dir) / "froc.json"
    if f.is_file():
        out["froc"] = json.loads(f.read_text())
    return out


def print_detection_summary(eval_dir: str | os.PathLike) -> dict:
    """Print mAP, AP40, AP50, image AUC and FROC mean sensitivity; returns :func:`load_detection_results`."""
    r = load_detection_results(eval_dir)

    def f(v):
        return "n/a" if v is None else f"{v:.4f}"

    fr = r.get("froc") or {}
    print(f"detection: mAP@[0.50:0.95] {f(r.get('map'))}  AP40 {f(r['ap_iou'].get('0.40'))}  AP50 {f(r.get('ap50'))}  "
          f"image AUC {f(r.get('image_auc'))}  FROC mean sensitivity {f(fr.get('mean_sensitivity'))} "
          f"({r.get('n_images')} images, {r.get('n_gt')} boxes)")
    return r
