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
    >>> froc(pred_boxes, pred_classes, pred_scores, gt_boxes, gt_classes)["sensitivity"]  # at 1/8 ... 8 FP/image
"""

from __future__ import annotations

from typing import Any, Sequence

import numpy as np

__all__ = ["detection_metrics", "froc", "detection_section", "FROC_FP_RATES"]

#: False positives per image at which :func:`froc` reports sensitivity (the LUNA16 / VinDr-style points).
FROC_FP_RATES = (0.125, 0.25, 0.5, 1.0, 2.0, 4.0, 8.0)


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


def _iou_matrix(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    half = a.shape[1] // 2
    lo = np.maximum(a[:, None, :half], b[None, :, :half])
    hi = np.minimum(a[:, None, half:], b[None, :, half:])
    inter = np.prod(np.clip(hi - lo, 0.0, None), axis=2)
    area_a = np.prod(a[:, half:] - a[:, :half], axis=1)
    area_b = np.prod(b[:, half:] - b[:, :half], axis=1)
    union = area_a[:, None] + area_b[None, :] - inter
    return np.where(union > 0, inter / np.where(union > 0, union, 1.0), 0.0)


def froc(
    pred_boxes: Sequence[Any],
    pred_classes: Sequence[Any],
    pred_scores: Sequence[Any],
    gt_boxes: Sequence[Any],
    gt_classes: Sequence[Any],
    fp_rates: Sequence[float] = FROC_FP_RATES,
    iou_threshold: float = 0.4,
) -> dict:
    """Free-response ROC: lesion sensitivity at given numbers of false positives per image.

    In each image the detections are taken by descending score; one is a true positive when it overlaps a
    not yet matched true box of the same class with IoU >= ``iou_threshold`` (the best such box), otherwise a
    false positive (duplicates included). The detections of all images are then pooled by score; the
    sensitivity at a rate ``r`` is the highest ``TP / true boxes`` over the score thresholds whose
    ``FP / images`` is at most ``r`` (0 when none is). Images without true boxes count in the denominator of
    the FP rate. Boxes as in :func:`detection_metrics` (any axis order, the same for both).

    Args:
        pred_boxes, pred_classes, pred_scores, gt_boxes, gt_classes: per image, as :func:`detection_metrics`.
        fp_rates: false positives per image. Defaults to 0.125, 0.25, 0.5, 1, 2, 4, 8.
        iou_threshold: IoU of a hit. Defaults to 0.4 (VinDr-CXR's).

    Returns:
        ``{"fp_rates": [...], "sensitivity": [...], "mean_sensitivity", "iou_threshold", "n_images", "n_gt",
        "n_pred", "curve": {"fp_per_image": [...], "sensitivity": [...], "score": [...]}}``; the sensitivities
        are None when there is no true box.

    Raises:
        ValueError: when the per-image lists differ in length, boxes are malformed or a rate is negative.
    """
    n = len(gt_boxes)
    if len({len(pred_boxes), len(pred_classes), len(pred_scores), len(gt_boxes), len(gt_classes)}) != 1:
        raise ValueError(f"pred_boxes, pred_classes, pred_scores, gt_boxes and gt_classes must have one entry per image; "
                         f"got lengths {len(pred_boxes)}, {len(pred_classes)}, {len(pred_scores)}, {len(gt_boxes)}, {len(gt_classes)}")
    rates = [float(r) for r in fp_rates]
    if any(r < 0 for r in rates):
        raise ValueError(f"fp_rates must be >= 0, got {list(fp_rates)}")
    width = next((np.asarray(b).reshape(len(np.asarray(b)), -1).shape[1] for b in list(gt_boxes) + list(pred_boxes)
                  if np.asarray(b).size), 4)
    pb = _arrays(pred_boxes, "pred_boxes", width, np.float64)
    gb = _arrays(gt_boxes, "gt_boxes", width, np.float64)
    pc = _arrays(pred_classes, "pred_classes", None, np.int64)
    ps = _arrays(pred_scores, "pred_scores", None, np.float64)
    gc = _arrays(gt_classes, "gt_classes", None, np.int64)
    scores, hits = [], []
    for i in range(n):
        if len(pb[i]) != len(pc[i]) or len(pb[i]) != len(ps[i]):
            raise ValueError(f"image {i}: {len(pb[i])} predicted boxes but {len(pc[i])} classes and {len(ps[i])} scores")
        if len(gb[i]) != len(gc[i]):
            raise ValueError(f"image {i}: {len(gb[i])} true boxes but {len(gc[i])} classes")
        order = np.argsort(-ps[i], kind="stable")
        iou = _iou_matrix(pb[i][order], gb[i]) if len(gb[i]) and len(order) else np.zeros((len(order), len(gb[i])))
        iou = np.where(pc[i][order][:, None] == gc[i][None, :], iou, -1.0)  # same class only
        taken = np.zeros(len(gb[i]), dtype=bool)
        for row, j in enumerate(order):
            cand = np.where(taken, -1.0, iou[row]) if iou.shape[1] else np.zeros(0)
            best = int(np.argmax(cand)) if cand.size else -1
            hit = best >= 0 and cand[best] >= iou_threshold
            if hit:
                taken[best] = True
            scores.append(float(ps[i][j]))
            hits.append(bool(hit))
    n_gt = int(sum(len(g) for g in gb))
    s = np.asarray(scores)
    h = np.asarray(hits, dtype=bool)
    order = np.argsort(-s, kind="stable")
    s, h = s[order], h[order]
    tp, fp = np.cumsum(h), np.cumsum(~h)
    last = np.r_[s[1:] != s[:-1], True] if s.size else np.zeros(0, dtype=bool)  # one point per distinct score
    fp_per_image = fp[last] / max(n, 1)
    sens = tp[last] / n_gt if n_gt else np.full(int(last.sum()), np.nan)
    out_sens: list[float | None] = []
    for r in rates:
        ok = fp_per_image <= r + 1e-12
        out_sens.append(None if not n_gt else float(sens[ok].max()) if ok.any() else 0.0)
    valid = [v for v in out_sens if v is not None]
    return {
        "fp_rates": rates,
        "sensitivity": out_sens,
        "mean_sensitivity": float(np.mean(valid)) if valid and len(valid) == len(out_sens) else None,
        "iou_threshold": float(iou_threshold),
        "n_images": int(n),
        "n_gt": n_gt,
        "n_pred": int(s.size),
        "curve": {
            "fp_per_image": [float(v) for v in fp_per_image],
            "sensitivity": [float(v) for v in sens] if n_gt else [],
            "score": [float(v) for v in s[last]],
        },
    }


def detection_section(results: dict) -> str:
    """HTML of the report's Detection section: mAP (IoU 0.50:0.95), AP per IoU, mAR and true boxes, overall and per
    class, the image-level AUC and, when ``results["froc"]`` is there, FROC sensitivities."""
    from html import escape

    def f(v: Any) -> str:
        return "n/a" if v is None else f"{float(v):.4f}"

    ious = [t for t in sorted((results.get("ap_iou") or {}).keys()) if t != "0.50"]
    head = ["", "mAP@[0.50:0.95]", "AP@0.50"] + [f"AP@{t}" for t in ious] + ["mAR", "true boxes"]

    def row(name: str, r: dict) -> list:
        return ([escape(name), f(r.get("map")), f(r.get("ap50"))] + [f((r.get("ap_iou") or {}).get(t)) for t in ious]
                + [f(r.get("mar")), escape(str(r.get("n_gt", "")))])

    rows = [row("all (macro)", results)] + [row(str(k), v) for k, v in (results.get("per_class") or {}).items()
                                             if isinstance(v, dict)]
    table = ("<table><tr>" + "".join(f"<th>{escape(h)}</th>" for h in head) + "</tr>"
             + "".join("<tr>" + "".join(f"<td>{c}</td>" for c in r) + "</tr>" for r in rows) + "</table>")
    text = (f"<h2>Detection</h2><p class='muted'>{escape(str(results.get('n_images', '')))} images, "
            f"{escape(str(results.get('n_pred', '')))} predicted boxes; AP is COCO's 101-point interpolation "
            f"(MONAI COCOMetric), at most {escape(str(results.get('max_detections', '')))} boxes per image. "
            f"Image-level AUC (macro): {f(results.get('image_auc'))}.</p>" + table)
    fr = results.get("froc")
    if fr:
        cells = "".join(f"<td>{f(s)}</td>" for s in fr.get("sensitivity") or [])
        rates = "".join(f"<th>{escape(str(r))}</th>" for r in fr.get("fp_rates") or [])
        text += (f"<p>FROC (IoU {escape(str(fr.get('iou_threshold')))}): mean sensitivity "
                 f"{f(fr.get('mean_sensitivity'))}.</p><table><tr><th>false positives / image</th>{rates}</tr>"
                 f"<tr><td>sensitivity</td>{cells}</tr></table>")
    return text
