# Copyright (c) medfuse contributors
# Licensed under the Apache License, Version 2.0
"""Detection metrics with MONAI's COCO metric: mAP over IoU 0.50:0.95, AP50, AP at further IoUs, recall.

Boxes are ``[x_min, y_min, x_max, y_max]`` (2-D) or ``[x1, y1, z1, x2, y2, z2]`` (3-D), the same
convention for predictions and ground truth; IoU does not depend on which axis comes first, so
manifest boxes (x = column) can be passed as they are. Unlike MONAI's ``COCOMetric`` defaults
(IoU 0.10:0.50), the thresholds here are COCO's: mAP averages AP over IoU 0.50, 0.55, ... 0.95;
``ap_iou`` adds AP at any other IoU asked for (VinDr-CXR reports mAP at IoU 0.4). AP is the
101-point interpolated precision-recall area of COCO, computed by MONAI.

Example::

    >>> m = detection_metrics(pred_boxes, pred_classes, pred_scores, gt_boxes, gt_classes, classes=["nodule"])
    >>> m["map"], m["ap50"], m["per_class"]["nodule"]["ap50"]
"""

from __future__ import annotations

from typing import Any, Sequence

import numpy as np

__all__ = ["detection_metrics"]


def _arrays(seq: Sequence[Any], what: str, width: int | None, dtype) -> list[np.ndarray]:
    out = []
    for i, x in enumerate(seq):
        a = x.detach().cpu().numpy() if hasattr(x, "detach") else np.asarray(x)
        a = a.astype(dtype)
        if width is not None:
            a = a.reshape(-1, width) if a.size else np.zeros((0, width), dtype)
            if a.size and np.any(a[:, width // 2:] < a[:, : width // 2]):
                raise ValueError(f"{what} of image {i}: boxes must be [min corner, max corner], got {a.tolist()[:3]}")
        else:
            a = a.reshape(-1)
        out.append(a)
    return out


def detection_metrics(
    pred_boxes: Sequence[Any],
    pred_classes: Sequence[Any],
    pred_scores: Sequence[Any],
    gt_boxes: Sequence[Any],
    gt_classes: Sequence[Any],
    classes: Sequence[str],
    iou_thresholds: Sequence[float] = (0.5,),
    iou_range: tuple[float, float, float] = (0.5, 0.95, 0.05),
    max_detections: int = 100,
) -> dict:
    """mAP, AP50 and recall over a set of images, overall and per class (MONAI ``COCOMetric``).

    Args:
        pred_boxes: per image, ``(D, 2 * dims)`` predicted boxes.
        pred_classes: per image, ``(D,)`` class indices.
        pred_scores: per image, ``(D,)`` confidences.
        gt_boxes: per image, ``(G, 2 * dims)`` true boxes.
        gt_classes: per image, ``(G,)`` class indices.
        classes: class names in index order.
        iou_thresholds: IoUs at which AP is reported on its own (0.5 always included).
        iou_range: ``(start, stop, step)`` of the IoUs averaged into mAP. Defaults to COCO's 0.50:0.95.
        max_detections: detections per image considered, highest scores first. Defaults to 100.

    Returns:
        ``{"map", "ap50", "ap_iou": {"0.50": ..., ...}, "mar", "per_class": {name: {"map", "ap50",
        "ap_iou", "mar", "n_gt"}}, "n_images", "n_gt", "n_pred", "iou_range", "max_detections"}``.
        A class with no true box has AP ``None`` (MONAI reports -1 there).

    Raises:
        ValueError: when the per-image lists differ in length or boxes are malformed.
    """
    from monai.apps.detection.metrics.coco import COCOMetric
    from monai.apps.detection.metrics.matching import matching_batch
    from monai.data.box_utils import box_iou

    classes = [str(c) for c in classes]
    n = len(gt_boxes)
    lens = {len(pred_boxes), len(pred_classes), len(pred_scores), len(gt_boxes), len(gt_classes)}
    if len(lens) != 1:
        raise ValueError(f"pred_boxes, pred_classes, pred_scores, gt_boxes and gt_classes must have one entry per image; "
                         f"got lengths {len(pred_boxes)}, {len(pred_classes)}, {len(pred_scores)}, {len(gt_boxes)}, {len(gt_classes)}")
    first = next((np.asarray(b).reshape(len(np.asarray(b)), -1).shape[1] for b in list(gt_boxes) + list(pred_boxes)
                  if np.asarray(b).size), 4)
    pb = _arrays(pred_boxes, "pred_boxes", first, np.float64)
    gb = _arrays(gt_boxes, "gt_boxes", first, np.float64)
    pc = _arrays(pred_classes, "pred_classes", None, np.int64)
    ps = _arrays(pred_scores, "pred_scores", None, np.float64)
    gc = _arrays(gt_classes, "gt_classes", None, np.int64)
    for i in range(n):
        if len(pb[i]) != len(pc[i]) or len(pb[i]) != len(ps[i]):
            raise ValueError(f"image {i}: {len(pb[i])} predicted boxes but {len(pc[i])} classes and {len(ps[i])} scores")
        if len(gb[i]) != len(gc[i]):
            raise ValueError(f"image {i}: {len(gb[i])} true boxes but {len(gc[i])} classes")
        for what, c in (("pred_classes", pc[i]), ("gt_classes", gc[i])):
            if c.size and (c.min() < 0 or c.max() >= len(classes)):
                raise ValueError(f"image {i}: {what} {sorted(set(c.tolist()))} outside 0..{len(classes) - 1}")
    ious = sorted(set([0.5] + [float(t) for t in iou_thresholds]))
    metric = COCOMetric(classes=classes, iou_list=ious, iou_range=iou_range, max_detection=[int(max_detections)],
                        per_class=True, verbose=False)
    matched = matching_batch(box_iou, metric.iou_thresholds, pb, pc, ps, gb, gc, max_detections=int(max_detections))
    values, _ = metric(matched)
    rng = f"{iou_range[0]:.2f}_{iou_range[1]:.2f}_{iou_range[2]:.2f}"
    md = int(max_detections)

    def _get(key: str):
        v = values.get(key)
        return None if v is None or not np.isfinite(v) or v < 0 else float(v)

    n_gt_per_class = np.bincount(np.concatenate(gc) if gc else np.zeros(0, np.int64), minlength=len(classes))
    per_class = {}
    for k, name in enumerate(classes):
        defined = n_gt_per_class[k] > 0
        per_class[name] = {
            "map": _get(f"{name}_mAP_IoU_{rng}_MaxDet_{md}") if defined else None,
            "ap50": _get(f"{name}_AP_IoU_0.50_MaxDet_{md}") if defined else None,
            "ap_iou": {f"{t:.2f}": (_get(f"{name}_AP_IoU_{t:.2f}_MaxDet_{md}") if defined else None) for t in ious},
            "mar": _get(f"{name}_mAR_IoU_{rng}_MaxDet_{md}") if defined else None,
            "n_gt": int(n_gt_per_class[k]),
        }

    def _macro(key: str):
        v = [pc_[key] for pc_ in per_class.values() if pc_[key] is not None]
        return float(np.mean(v)) if v else None

    return {
        "map": _macro("map"),
        "ap50": _macro("ap50"),
        "ap_iou": {f"{t:.2f}": (lambda vals: float(np.mean(vals)) if vals else None)(
            [p["ap_iou"][f"{t:.2f}"] for p in per_class.values() if p["ap_iou"][f"{t:.2f}"] is not None]) for t in ious},
        "mar": _macro("mar"),
        "per_class": per_class,
        "n_images": int(n),
        "n_gt": int(n_gt_per_class.sum()),
        "n_pred": int(sum(len(x) for x in pb)),
        "iou_range": list(iou_range),
        "max_detections": md,
        "interpolation": "COCO 101-point (MONAI COCOMetric)",
    }
