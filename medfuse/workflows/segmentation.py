# Copyright (c) medfuse contributors
# Licensed under the Apache License, Version 2.0
"""Workflow glue for segmentation + classification networks (the ``cxr_multi_output_unet`` bundle).

The pieces a bundle config needs around :class:`~medfuse.networks.nets.MultiOutputUNet` and
:class:`~medfuse.networks.losses.MultiOutputLoss`:

* :func:`multi_output_items`: manifest items with an image, an optional ``mask`` and an optional ``label``
  (missing label -> ``-1``), so that partly annotated data trains;
* :func:`multi_output_transforms`: load, normalise, letterbox and (for training) augment image and mask together;
  an item without a mask gets an all-zero placeholder and ``has_mask = 0``;
* :class:`MultiOutputPrepareBatch`: batch -> ``(image, {"mask", "has_mask", "label"})`` for MONAI engines;
* :class:`MultiOutputInferer`: network output -> ``{"seg": logits, "cls": logits}``;
* :class:`MultiOutputPostd`: per item: ``pred`` = class probabilities, ``seg`` = label map, ``mask``,
  ``has_mask``, ``label`` (``None`` when missing) at the top level;
* :class:`SegmentationMetric`: validation Dice / IoU as an ignite metric; :func:`labelled_outputs` for
  :class:`~medfuse.workflows.ClassificationMetric` on partly labelled data;
* :class:`SegmentationEvaluator`: evaluation handler writing Dice / IoU / HD95 per case and per class, and the
  fraction of Grad-CAM mass inside the reference lungs (unmasked vs. lung-masked CAM);
* :class:`MaskWriter`, :class:`LungCAMWriter`: inference outputs (mask PNG at the original image size, NIfTI
  optional; CAM overlays unmasked vs. lung-masked).
"""

from __future__ import annotations

import csv
import json
import logging
import math
import os
from collections.abc import Hashable, Mapping, Sequence
from pathlib import Path
from typing import Any, Callable, Optional

import numpy as np
import torch
import torch.nn.functional as F
from ignite.engine import Engine, Events
from ignite.metrics import Metric
from monai.config import KeysCollection
from monai.engines.utils import PrepareBatch
from monai.inferers import Inferer
from monai.transforms import Compose, MapTransform

from medfuse.data.manifest import load_split
from medfuse.errors import DataError, ManifestError
from medfuse.networks.losses import MISSING_LABEL
from medfuse.transforms.spatial import FillMissingMaskd, fit_size
from medfuse.utils.io import atomic_write_csv, atomic_write_json
from medfuse.workflows.engine import flag
from medfuse.workflows.runs import is_main_process

__all__ = [
    "multi_output_items",
    "multi_output_transforms",
    "FillMissingMaskd",
    "MultiOutputPrepareBatch",
    "MultiOutputInferer",
    "MultiOutputPostd",
    "SegmentationMetric",
    "labelled_outputs",
    "SegmentationEvaluator",
    "MaskWriter",
    "LungCAMWriter",
    "mask_to_original",
    "multi_output_inference_items",
    "print_segmentation_summary",
    "segmentation_report",
    "load_initial_weights",
]

logger = logging.getLogger(__name__)
DEFAULT_META_KEYS = ("patient_id", "view", "sex", "site")


# ----------------------------------------------------------------------------------------------------------
# items and transforms


def multi_output_items(
    manifest: str | os.PathLike,
    split: str = "training",
    meta_keys: Sequence[str] = DEFAULT_META_KEYS,
    limit: int = 0,
    require: str = "any",
) -> list[dict]:
    """Items of one manifest split for a segmentation + classification network.

    Each item: ``image``, ``image_path`` (a copy that survives the transforms), ``mask`` when the manifest item
    has one, ``label`` (the class index, or ``-1`` when the item has none), ``has_label`` and the ``meta_keys``
    present in the split (``""`` where an item lacks one, so batches collate).

    Args:
        manifest: a medfuse manifest (validated, files checked).
        split: ``training``, ``validation`` or ``test``.
        meta_keys: grouping columns kept for the predictions file.
        limit: keep the first ``limit`` items when > 0.
        require: ``"any"`` (an item needs a mask or a label; for training and evaluation), ``"none"`` (images
            alone are fine; for inference), ``"mask"``, ``"label"`` or ``"both"``.

    Raises:
        ManifestError: a missing or empty split, items lacking what ``require`` asks, non-integer labels.
    """
    if require not in ("any", "none", "mask", "label", "both"):
        raise ValueError(f"require must be 'any', 'none', 'mask', 'label' or 'both', got {require!r}")
    items = load_split(manifest, split)
    if not items:
        raise ManifestError(f"the manifest has no '{split}' items; add them (or choose another split)", manifest)
    out = []
    present = [k for k in meta_keys if any(k in it for it in items)]
    for it in items:
        label = it.get("label")
        if label is not None and (isinstance(label, bool) or not isinstance(label, int)):
            raise ManifestError(
                f"{it['image']}: label {label!r} is not a class index; this bundle needs one integer label per "
                "image (or none)", manifest,
            )
        has_mask, has_label = bool(it.get("mask")), label is not None
        ok = {"any": has_mask or has_label, "none": True, "mask": has_mask, "label": has_label,
              "both": has_mask and has_label}[require]
        if not ok:
            need = {"any": "a 'mask' or a 'label'", "mask": "a 'mask'", "label": "a 'label'",
                    "both": "a 'mask' and a 'label'"}[require]
            raise ManifestError(f"'{split}' item {it['image']} has neither {need}; add it or drop the item", manifest)
        item = {"image": it["image"], "image_path": it["image"], "label": int(label) if has_label else MISSING_LABEL,
                "has_label": int(has_label)}
        if has_mask:
            item["mask"] = it["mask"]
        for k in present:
            v = it.get(k, "")
            item[k] = v if isinstance(v, (str, int, float)) and not isinstance(v, bool) else str(v)
        out.append(item)
    return out[:limit] if limit and limit > 0 else out


def multi_output_inference_items(
    manifest: str | os.PathLike | None = "",
    input_dir: str | os.PathLike | None = "",
    split: str = "test",
    meta_keys: Sequence[str] = DEFAULT_META_KEYS,
    limit: int = 0,
) -> list[dict]:
    """Items to predict: a folder of images (``input_dir``) or a manifest split (``manifest``), exactly one.

    Manifest items keep their mask and label when they have them (so that the CAM writer can compare), folder
    items have neither.

    Raises:
        DataError: when neither or both inputs are given, or the folder holds no image.
    """
    from medfuse.workflows.data import inference_items

    def with_masks(manifest, split, meta_keys, limit):
        return multi_output_items(manifest, split, meta_keys=meta_keys, limit=limit, require="none")

    return inference_items(manifest, input_dir, split, meta_keys=meta_keys, limit=limit, manifest_items=with_masks)


def multi_output_transforms(
    image_size: int = 256,
    train: bool = False,
    in_channels: int = 1,
    image_key: str = "image",
    mask_key: str = "mask",
    percentiles: Optional[Sequence[float]] = (0.5, 99.5),
    mask_threshold: float = 0.5,
    apply_voi: bool = False,
    rotate_degrees: float = 10.0,
    scale_range: float = 0.1,
    translate_fraction: float = 0.05,
    affine_prob: float = 0.5,
    intensity_prob: float = 0.3,
    noise_prob: float = 0.2,
    noise_std: float = 0.02,
) -> Compose:
    """Chest X-ray + optional lung mask pipeline (training when ``train``, deterministic otherwise): the CXR
    presets of :mod:`medfuse.transforms.presets` with ``optional_mask=True`` and no flips.

    Load (DICOM / PNG / JPEG / NIfTI, DICOM display pipeline) -> percentile normalisation to [0, 1] -> mask read in
    [0, 1] and thresholded at ``mask_threshold`` (0/255 PNG masks with anti-aliased edges: 0.5 means 127.5) ->
    placeholder mask where there is none (:class:`FillMissingMaskd`) -> letterbox both to ``image_size`` (mask
    nearest) -> training only: one random affine moving image and mask together (no left-right flip: laterality
    matters), gamma / contrast / brightness, Gaussian noise, clip to [0, 1] -> grey repeated when
    ``in_channels=3``.

    Output per item: ``image`` float32 ``(in_channels, S, S)``, ``mask`` float32 ``(1, S, S)`` in {0, 1},
    ``has_mask`` 0/1, the other keys untouched.

    Raises:
        ValueError: a non-positive ``image_size`` or ``in_channels`` other than 1 or 3.
    """
    from medfuse.transforms.presets import cxr_eval_transforms, cxr_train_transforms

    common = dict(keys=(image_key,), image_size=image_size, in_channels=in_channels, mask_key=mask_key,
                  percentiles=tuple(percentiles) if percentiles is not None else None, apply_voi=apply_voi,
                  mask_threshold=float(mask_threshold), optional_mask=True)
    if not train:
        return cxr_eval_transforms(**common)
    return cxr_train_transforms(**common, flip=False, rotate_degrees=rotate_degrees, scale_range=scale_range,
                                translate_fraction=translate_fraction, affine_prob=affine_prob,
                                intensity_prob=intensity_prob, noise_prob=noise_prob, noise_std=noise_std)


# ----------------------------------------------------------------------------------------------------------
# engine pieces


def load_initial_weights(network: torch.nn.Module, path: str | os.PathLike | None = "") -> Optional[str]:
    """Start training from the weights of an earlier run (e.g. a run at a smaller ``image_size``: the network is
    fully convolutional, so the weights fit any size); nothing happens when ``path`` is empty.

    Args:
        network: the network (DataParallel / DDP unwrapped).
        path: a ``model.pt`` state dict of the same architecture.

    Returns:
        the path loaded, or None.

    Raises:
        DataError: a missing file, or weights of another architecture (the message names the mismatched keys).
    """
    if not path:
        return None
    p = Path(path)
    if not p.is_file():
        raise DataError(f"{p}: init_ckpt not found; give the model.pt of an earlier run, or leave init_ckpt empty")
    state = torch.load(p, map_location="cpu", weights_only=True)
    if isinstance(state, Mapping) and "model" in state and isinstance(state["model"], Mapping):
        state = state["model"]
    try:
        _unwrap(network).load_state_dict(state)
    except RuntimeError as err:
        raise DataError(
            f"{p}: these weights do not fit the network ({str(err).splitlines()[0]}); train with the same "
            "backbone, features, seg_classes and classes as the run that wrote them"
        ) from err
    logger.info("initial weights loaded from %s", p)
    return str(p)


class MultiOutputPrepareBatch(PrepareBatch):
    """``batch -> (image, {"mask": long (B, 1, H, W), "has_mask": bool (B,), "label": long (B,)})``.

    A batch without ``mask`` / ``has_mask`` / ``label`` (plain inference items) gets zeros / False / -1.
    """

    def __init__(self, image_key: str = "image", mask_key: str = "mask", label_key: str = "label") -> None:
        self.image_key, self.mask_key, self.label_key = image_key, mask_key, label_key

    def __call__(self, batchdata: dict, device: Any = None, non_blocking: bool = False, **kwargs: Any):
        image = batchdata[self.image_key]
        batch = image.shape[0]
        image = image.to(device=device, non_blocking=non_blocking, **kwargs)
        mask = batchdata.get(self.mask_key)
        if mask is None:
            mask = torch.zeros((batch, 1, *image.shape[2:]), dtype=torch.long)
        mask = torch.as_tensor(mask).round().long().to(device=device, non_blocking=non_blocking)
        has_mask = batchdata.get("has_mask")
        has_mask = torch.zeros(batch, dtype=torch.bool) if has_mask is None else torch.as_tensor(has_mask).reshape(-1).bool()
        label = batchdata.get(self.label_key)
        label = torch.full((batch,), MISSING_LABEL, dtype=torch.long) if label is None else torch.as_tensor(label).reshape(-1).long()
        return image, {"mask": mask, "has_mask": has_mask.to(device), "label": label.to(device)}


class MultiOutputInferer(Inferer):
    """Run a multi-output network and return ``{"seg": seg_logits, "cls": class_logits}``.

    The network must return the tuple (``MultiOutputUNet(output="both")``, the bundle's setting).
    """

    def __call__(self, inputs: torch.Tensor, network: torch.nn.Module, *args: Any, **kwargs: Any) -> dict:
        out = network(inputs, *args, **kwargs)
        if not isinstance(out, (tuple, list)) or len(out) != 2:
            raise ValueError(
                "MultiOutputInferer needs a network returning (seg_logits, class_logits); build it with output='both'"
            )
        return {"seg": out[0], "cls": out[1]}


def clean_label_map(label_map: torch.Tensor, keep_components: int = 0, fill_holes: bool = False) -> torch.Tensor:
    """Clean a ``(1, H, W)`` integer label map: the foreground (label > 0) keeps only its ``keep_components``
    largest connected components (8-connected; 0: all), then holes enclosed by it are filled with the label of
    the surrounding foreground (``scipy.ndimage``). Background stays 0; labels of kept pixels do not change."""
    from scipy import ndimage

    lm = label_map.detach().cpu().numpy().astype(np.int64)
    out = lm.copy()
    for c in range(lm.shape[0]):
        fg = lm[c] > 0
        if keep_components > 0:
            comps, n = ndimage.label(fg, structure=np.ones((3,) * fg.ndim))
            if n > keep_components:
                sizes = np.bincount(comps.ravel())[1:]
                keep = np.argsort(sizes)[::-1][:keep_components] + 1
                fg = np.isin(comps, keep)
                out[c][~fg] = 0
        if fill_holes:
            filled = ndimage.binary_fill_holes(fg)
            holes = filled & ~fg
            if holes.any():  # each hole takes the nearest foreground label
                idx = ndimage.distance_transform_edt(~fg, return_distances=False, return_indices=True)
                out[c][holes] = out[c][tuple(i[holes] for i in idx)]
    return torch.as_tensor(out, dtype=label_map.dtype, device=label_map.device)


class MultiOutputPostd(MapTransform):
    """Per decollated item: class probabilities to ``pred``, the label map to ``seg``, targets to the top level.

    In: ``pred = {"seg": (C, H, W) logits, "cls": (K,) logits}`` and, from :class:`MultiOutputPrepareBatch`,
    ``label = {"mask", "has_mask", "label"}``. Out: ``pred`` = softmax ``(K,)``; ``seg`` = argmax ``(1, H, W)``
    (float); ``seg_prob`` = foreground probability ``(1, H, W)`` when ``keep_prob``; the reference mask
    ``ref_mask`` ``(1, H, W)`` and ``has_ref_mask`` (bool); ``label`` (int, or None when missing). (New key
    names: MONAI's engines write post-processed keys that exist in the batch, like ``mask``, back to the batch,
    where metrics do not see them.)

    Optional clean-up of the label map (:func:`clean_label_map`): ``keep_components`` > 0 keeps that many
    largest connected components of the foreground (2 for a pair of lungs; 0: off), ``fill_holes`` fills holes
    enclosed by the foreground.
    """

    def __init__(self, keys: KeysCollection = "pred", keep_prob: bool = False, keep_components: int = 0,
                 fill_holes: bool = False) -> None:
        super().__init__(keys)
        self.keep_prob = bool(keep_prob)
        self.keep_components = int(keep_components)
        self.fill_holes = flag(fill_holes, "fill_holes")

    def __call__(self, data: Mapping[Hashable, Any]) -> dict:
        d = dict(data)
        for key in self.key_iterator(d):
            pred = d[key]
            if isinstance(pred, Mapping):
                seg, cls = pred["seg"], pred["cls"]
            else:
                seg, cls = pred[0], pred[1]
            seg = torch.as_tensor(seg).float()
            probs = torch.softmax(seg, dim=0)
            label_map = probs.argmax(dim=0, keepdim=True)
            if self.keep_components > 0 or self.fill_holes:
                label_map = clean_label_map(label_map, self.keep_components, self.fill_holes)
            d["seg"] = label_map.float()
            if self.keep_prob:
                d["seg_prob"] = 1.0 - probs[:1]
            d[key] = torch.softmax(torch.as_tensor(cls).float(), dim=0)
        target = d.get("label")
        if isinstance(target, Mapping):
            d["ref_mask"] = target.get("mask")
            d["has_ref_mask"] = bool(torch.as_tensor(target.get("has_mask", False)).item())
            lab = int(torch.as_tensor(target.get("label", MISSING_LABEL)).item())
            d["label"] = None if lab == MISSING_LABEL else lab
        return d


def labelled_outputs(output: Any) -> tuple[list, list]:
    """Output transform for :class:`~medfuse.workflows.ClassificationMetric`: ``(probs, labels)`` of the labelled
    items only (items whose ``label`` is None or -1 are dropped)."""
    items = output if isinstance(output, (list, tuple)) else [output]
    probs, labels = [], []
    for it in items:
        lab = it.get("label")
        if lab is None or int(torch.as_tensor(lab).reshape(-1)[0]) == MISSING_LABEL:
            continue
        probs.append(torch.as_tensor(it["pred"]))
        labels.append(torch.as_tensor(lab).reshape(()))
    return probs, labels


def _one_hot(label_map: torch.Tensor, num_classes: int) -> torch.Tensor:
    """``(N, 1, *spatial)`` or ``(N, *spatial)`` integer map -> ``(N, C, *spatial)`` float one-hot."""
    lm = label_map.long()
    if lm.ndim >= 3 and lm.shape[1] == 1:
        lm = lm[:, 0]
    return F.one_hot(lm.clamp_min(0), num_classes).movedim(-1, 1).float()


class SegmentationMetric(Metric):
    """Mean per-image Dice or IoU of the foreground classes over the items that have a mask (ignite metric).

    Reads ``seg`` (label map) and ``ref_mask`` (reference) of each decollated item (:class:`MultiOutputPostd`);
    items with ``has_ref_mask`` False are skipped, and so are (image, class) pairs whose reference is empty (MONAI's
    ``ignore_empty``).

    Args:
        num_classes: segmentation classes including the background. Defaults to 2.
        metric: ``"dice"`` or ``"iou"``. Defaults to ``"dice"``.
    """

    def __init__(self, num_classes: int = 2, metric: str = "dice", output_transform: Callable = lambda x: x,
                 device: str | torch.device = "cpu") -> None:
        if metric not in ("dice", "iou"):
            raise ValueError(f"metric must be 'dice' or 'iou', got {metric!r}")
        self.num_classes = int(num_classes)
        self.metric = metric
        self._values: list[float] = []
        super().__init__(output_transform=output_transform, device=device)

    def reset(self) -> None:
        self._values = []

    def update(self, output: Any) -> None:
        from monai.metrics import compute_dice, compute_iou

        items = output if isinstance(output, (list, tuple)) else [output]
        for it in items:
            if not it.get("has_ref_mask", True) or it.get("ref_mask") is None:
                continue
            pred = _one_hot(torch.as_tensor(it["seg"]).unsqueeze(0), self.num_classes)
            ref = _one_hot(torch.as_tensor(it["ref_mask"]).round().unsqueeze(0), self.num_classes)
            fn = compute_dice if self.metric == "dice" else compute_iou
            vals = fn(pred, ref, include_background=False, ignore_empty=True).reshape(-1)
            vals = vals[~torch.isnan(vals)]
            if vals.numel():
                self._values.append(float(vals.mean()))

    def compute(self) -> float:
        from medfuse.workflows.metrics import _gather

        vals = _gather(torch.tensor(self._values, dtype=torch.float64))
        if vals.numel() == 0:
            logger.warning("SegmentationMetric: no item with a mask was seen; reporting 0")
            return 0.0
        return float(vals.mean())


# ----------------------------------------------------------------------------------------------------------
# segmentation metrics (replaced by medfuse.evaluation.segmentation at merge)


def _summary(values: Sequence[float]) -> dict:
    arr = np.asarray([v for v in values if v is not None and np.isfinite(v)], dtype=np.float64)
    if arr.size == 0:
        return {"mean": None, "std": None, "median": None, "n": 0}
    return {"mean": float(arr.mean()), "std": float(arr.std()), "median": float(np.median(arr)), "n": int(arr.size)}


def fit_head_calibration(run_dir: str | os.PathLike, network: torch.nn.Module, dataloader: Any, classes: Sequence[str],
                         **kwargs: Any) -> Optional[dict]:
    """:func:`medfuse.evaluation.fit_run_calibration` for the diagnosis head of a multi-output network.

    The network answers with class logits alone (``set_output("cls")``) while the temperature and threshold
    are fitted on the labelled validation items, and is put back in its previous output mode afterwards.
    """
    from medfuse.evaluation.calibration import fit_run_calibration

    net = _unwrap(network)
    previous = net.output
    try:
        return fit_run_calibration(run_dir, net.set_output("cls"), dataloader, classes, **kwargs)
    finally:
        net.set_output(previous)


def print_segmentation_summary(path: str | os.PathLike) -> dict:
    """Print the per-class means of a ``segmentation_metrics.json`` (and the CAM statistic); return its content."""
    with open(path, encoding="utf-8") as f:
        result = json.load(f)
    print(f"segmentation of {result.get('n_cases', 0)} case(s) with a reference mask "
          f"({result.get('skipped_without_mask', 0)} without one skipped)")
    for name, vals in (result.get("per_class") or {}).items():
        parts = []
        for m in ("dice", "iou", "hd95"):
            v = vals[m]
            if v["mean"] is not None:
                parts.append(f"{m} {v['mean']:.4f} +/- {v['std']:.4f} (median {v['median']:.4f})")
        print(f"  {name}: " + ", ".join(parts))
    cam = result.get("cam_inside_lungs")
    if cam:
        u, m = cam["unmasked"], cam["lung_masked"]
        print(f"  Grad-CAM mass inside the reference lungs ({cam['n_images']} images): unmasked "
              f"{u['mean']:.3f} (median {u['median']:.3f}), lung-masked {m['mean']:.3f} (median {m['median']:.3f})")
    return result


def segmentation_report(pred, target, seg_classes: Sequence[str] = ("background", "lung"), spacing=None) -> dict:
    """Segmentation metrics of the foreground classes; ``seg_classes`` names every channel, background first.

    Computed by the shared evaluation layer, :func:`medfuse.evaluation.segmentation.segmentation_metrics`.
    """
    from medfuse.evaluation.segmentation import segmentation_metrics

    return segmentation_metrics(pred, target, class_names=list(seg_classes)[1:], include_background=False,
                                spacing=spacing)


# ----------------------------------------------------------------------------------------------------------
# evaluation and inference handlers


def _unwrap(net: torch.nn.Module) -> torch.nn.Module:
    while isinstance(net, (torch.nn.DataParallel, torch.nn.parallel.DistributedDataParallel)):
        net = net.module
    return net


def _items(engine: Engine) -> list[tuple[dict, dict]]:
    outputs, batches = engine.state.output, engine.state.batch
    if isinstance(outputs, Mapping):
        raise ValueError("this handler needs decollated outputs (the engine's decollate=True)")
    pairs = []
    for i, out in enumerate(outputs):
        batch = batches[i] if isinstance(batches, (list, tuple)) and i < len(batches) else {}
        pairs.append((out, batch))
    return pairs


def _path(out: Mapping, batch: Mapping) -> str:
    for src in (out, batch):
        v = src.get("image_path") if isinstance(src, Mapping) else None
        if v:
            return str(v)
    meta = getattr(out.get("image"), "meta", None)
    return str(meta.get("filename_or_obj", "")) if isinstance(meta, dict) else ""


def _stem(path: str) -> str:
    from medfuse.workflows.cam import _stem as cam_stem

    return cam_stem(path)


class SegmentationEvaluator:
    """Evaluation handler: segmentation metrics per case and per class, and CAM mass inside the lungs.

    Collects ``seg`` and ``ref_mask`` of every item with a reference mask (:class:`MultiOutputPostd`); at the end of the run it
    writes ``<output_dir>/segmentation_metrics.json`` (per class: Dice, IoU, HD95 mean / std / median, and the
    mean over classes) and ``<output_dir>/segmentation_per_case.csv``. With ``cam_images > 0`` it also computes,
    for up to that many images with a mask, the Grad-CAM of the predicted class unmasked and confined to the
    network's own (dilated) lung mask, and reports the fraction of each map's mass inside the *reference* lung
    mask (``cam_inside_lungs``: mean / median for ``unmasked`` and ``lung_masked``). Under torch.distributed only
    rank 0 writes (its own items).

    Args:
        output_dir: folder of the outputs.
        class_names: segmentation class names, background first. Defaults to ``("background", "lung")``.
        cam_images: images for the CAM statistic (0 = none, < 0 = all). Defaults to 64.
        cam_layer: Grad-CAM layer (default: the network's ``cam_layer``).
        threshold, dilate: lung mask threshold and dilation for the masked CAM. Defaults 0.5, 3.
        network: defaults to ``engine.network``.
    """

    def __init__(
        self,
        output_dir: str | os.PathLike,
        class_names: Sequence[str] = ("background", "lung"),
        cam_images: int = 64,
        cam_layer: Optional[str] = None,
        threshold: float = 0.5,
        dilate: int = 3,
        network: Optional[torch.nn.Module] = None,
    ) -> None:
        self.output_dir = Path(output_dir)
        self.class_names = [str(c) for c in class_names]
        self.cam_images = int(cam_images)
        self.cam_layer = cam_layer
        self.threshold = float(threshold)
        self.dilate = int(dilate)
        self.network = network
        self.reset()

    def attach(self, engine: Engine) -> None:
        engine.add_event_handler(Events.EPOCH_STARTED, self.reset)
        engine.add_event_handler(Events.ITERATION_COMPLETED, self.collect)
        engine.add_event_handler(Events.EPOCH_COMPLETED, self.write)

    def reset(self, engine: Optional[Engine] = None) -> None:
        self.paths: list[str] = []
        self.preds: list[torch.Tensor] = []
        self.refs: list[torch.Tensor] = []
        self.cam_inside: dict[str, list[float]] = {"unmasked": [], "lung_masked": []}
        self.skipped_no_mask = 0
        self.result: dict = {}

    def collect(self, engine: Engine) -> None:
        images, refs = [], []
        for out, batch in _items(engine):
            if not out.get("has_ref_mask") or out.get("ref_mask") is None:
                self.skipped_no_mask += 1
                continue
            seg = torch.as_tensor(out["seg"]).detach().cpu().round().long()
            ref = torch.as_tensor(out["ref_mask"]).detach().cpu().round().long()
            self.paths.append(_path(out, batch))
            self.preds.append(seg[0])
            self.refs.append(ref[0])
            if self.cam_images < 0 or len(self.cam_inside["unmasked"]) + len(images) < self.cam_images:
                images.append(torch.as_tensor(out["image"]).detach())
                refs.append(ref)
        if images:
            from medfuse.visualize.lung_cam import cam_mass_inside, lung_masked_cam

            net = _unwrap(self.network if self.network is not None else engine.network)
            res = lung_masked_cam(net, torch.stack(images), target_layer=self.cam_layer, threshold=self.threshold,
                                  dilate=self.dilate)
            ref = torch.stack(refs).to(res.cam.device)
            self.cam_inside["unmasked"] += cam_mass_inside(res.cam, ref).tolist()
            self.cam_inside["lung_masked"] += cam_mass_inside(res.masked_cam, ref).tolist()

    def write(self, engine: Optional[Engine] = None) -> Optional[dict]:
        if not is_main_process():
            return None
        self.output_dir.mkdir(parents=True, exist_ok=True)
        if not self.preds:
            logger.warning("SegmentationEvaluator: no item with a reference mask; no segmentation metrics")
            result: dict = {"n_cases": 0, "skipped_without_mask": self.skipped_no_mask}
        else:
            metrics = segmentation_report(torch.stack(self.preds), torch.stack(self.refs), seg_classes=self.class_names)
            result = {
                "n_cases": len(self.preds),
                "skipped_without_mask": self.skipped_no_mask,
                "per_class": metrics["per_class"],
                "mean": metrics["mean"],
            }
            with open(self.output_dir / "segmentation_per_case.csv", "w", newline="", encoding="utf-8") as f:
                names = list(metrics["per_class"].keys())
                cols = ["image"] + [f"{m}_{n}" for n in names for m in ("dice", "iou", "hd95")]
                w = csv.writer(f, lineterminator="\n")
                w.writerow(cols)
                for path, row in zip(self.paths, metrics["per_case"]):
                    w.writerow([path] + ["" if row[n][m] is None else f"{row[n][m]:.6g}" for n in names
                                         for m in ("dice", "iou", "hd95")])
        if self.cam_inside["unmasked"]:
            result["cam_inside_lungs"] = {
                "reference": "fraction of the Grad-CAM mass of the predicted class inside the reference lung mask",
                "n_images": len(self.cam_inside["unmasked"]),
                "dilate": self.dilate,
                "threshold": self.threshold,
                "unmasked": _summary(self.cam_inside["unmasked"]),
                "lung_masked": _summary(self.cam_inside["lung_masked"]),
            }
        atomic_write_json(self.output_dir / "segmentation_metrics.json", result)
        self.result = result
        if "mean" in result:
            logger.info("segmentation: %s", json.dumps(result["mean"]))
        return result


def mask_to_original(mask: torch.Tensor, original_shape: Sequence[int]) -> np.ndarray:
    """Undo the letterbox of :class:`~medfuse.transforms.spatial.ResizeWithPad` on a label map.

    Args:
        mask: ``(1, S, S)`` or ``(S, S)`` label map at the network's size.
        original_shape: ``(H, W)`` of the image as loaded (rows, columns).

    Returns:
        ``uint8`` ``(H, W)`` label map (nearest-neighbour resampling of the unpadded part).
    """
    m = torch.as_tensor(mask).float()
    m = m[0] if m.ndim == 3 else m
    size = tuple(m.shape)
    h, w = fit_size(tuple(int(s) for s in original_shape), size)
    top, left = (size[0] - h) // 2, (size[1] - w) // 2
    crop = m[top : top + h, left : left + w]
    out = F.interpolate(crop[None, None], size=tuple(int(s) for s in original_shape), mode="nearest")[0, 0]
    return out.round().clamp(0, 255).to(torch.uint8).numpy()


def _original_shape(out: Mapping, fallback: Sequence[int]) -> tuple[int, int]:
    meta = getattr(out.get("image"), "meta", None)
    shape = meta.get("spatial_shape") if isinstance(meta, dict) else None
    if shape is None:
        return tuple(int(s) for s in fallback)  # type: ignore[return-value]
    return tuple(int(s) for s in torch.as_tensor(shape).reshape(-1)[:2].tolist())  # type: ignore[return-value]


class MaskWriter:
    """Inference handler: write each predicted mask at the original image size.

    ``<output_dir>/<stem>_mask.png`` (8-bit; 255 for a binary lung mask, the class index otherwise) and, with
    ``nifti=True``, ``<stem>_mask.nii.gz`` (nibabel, identity affine, rows x columns); ``<output_dir>/masks.csv``
    lists ``image``, ``mask`` (file name), ``height``, ``width``, ``foreground_fraction``. Under
    torch.distributed only rank 0 writes (its own items).

    Args:
        output_dir: folder (created).
        num_classes: segmentation classes including background (2: PNG values 0/255). Defaults to 2.
        nifti: also write NIfTI. Defaults to False.
    """

    def __init__(self, output_dir: str | os.PathLike, num_classes: int = 2, nifti: bool = False) -> None:
        self.output_dir = Path(output_dir)
        self.num_classes = int(num_classes)
        self.nifti = bool(nifti)
        self.rows: list[dict] = []
        self._names: set[str] = set()

    def attach(self, engine: Engine) -> None:
        engine.add_event_handler(Events.EPOCH_STARTED, self.reset)
        engine.add_event_handler(Events.ITERATION_COMPLETED, self)
        engine.add_event_handler(Events.EPOCH_COMPLETED, self.write_index)

    def reset(self, engine: Optional[Engine] = None) -> None:
        self.rows, self._names = [], set()

    def _name(self, path: str) -> str:
        from medfuse.workflows.cam import _safe

        base = _safe(_stem(path)) if path else f"image{len(self.rows):05d}"
        name, k = f"{base}_mask", 1
        while name in self._names:
            k += 1
            name = f"{base}_mask-{k}"
        self._names.add(name)
        return name

    def __call__(self, engine: Engine) -> None:
        if not is_main_process():
            return
        from PIL import Image

        self.output_dir.mkdir(parents=True, exist_ok=True)
        for out, batch in _items(engine):
            seg = torch.as_tensor(out["seg"]).detach().cpu()
            path = _path(out, batch)
            mask = mask_to_original(seg, _original_shape(out, seg.shape[-2:]))
            name = self._name(path)
            png = (mask > 0).astype(np.uint8) * 255 if self.num_classes == 2 else mask
            Image.fromarray(png).save(self.output_dir / f"{name}.png")
            if self.nifti:
                import nibabel as nib

                nib.save(nib.Nifti1Image(mask.astype(np.uint8), np.eye(4)), str(self.output_dir / f"{name}.nii.gz"))
            self.rows.append({"image": path, "mask": f"{name}.png", "height": mask.shape[0], "width": mask.shape[1],
                              "foreground_fraction": round(float((mask > 0).mean()), 6)})

    def write_index(self, engine: Optional[Engine] = None) -> Optional[Path]:
        if not is_main_process():
            return None
        path = atomic_write_csv(self.output_dir / "masks.csv", self.rows,
                                ["image", "mask", "height", "width", "foreground_fraction"])
        if engine is not None:
            logger.info("wrote %d masks to %s", len(self.rows), self.output_dir)
        return path


class LungCAMWriter:
    """Inference handler: Grad-CAM overlays, unmasked and confined to the predicted lungs, side by side.

    For the first ``max_images`` images: :func:`medfuse.visualize.lung_cam.lung_masked_cam` of the predicted
    class, saved by :func:`~medfuse.visualize.lung_cam.save_lung_cam_overlay` as ``<output_dir>/<stem>_<pred>.png``
    (image with the predicted lung outline, unmasked CAM, lung-masked CAM); ``<output_dir>/index.csv`` lists
    ``image``, ``pred``, ``prob``, ``cam_inside_pred_lungs`` (unmasked CAM mass inside the predicted lungs),
    ``overlay``.

    Args:
        output_dir: folder (created).
        classes: diagnosis class names.
        max_images: overlays per run (<= 0: all). Defaults to 50.
        cam_layer: Grad-CAM layer (default: the network's ``cam_layer``).
        method: ``"gradcam"`` or ``"gradcam++"``.
        threshold, dilate: lung mask threshold and dilation. Defaults 0.5, 3.
        network: defaults to ``engine.network``.
    """

    def __init__(
        self,
        output_dir: str | os.PathLike,
        classes: Optional[Sequence[str]] = None,
        max_images: int = 50,
        cam_layer: Optional[str] = None,
        method: str = "gradcam",
        threshold: float = 0.5,
        dilate: int = 3,
        network: Optional[torch.nn.Module] = None,
    ) -> None:
        self.output_dir = Path(output_dir)
        self.classes = [str(c) for c in classes] if classes is not None else None
        self.max_images = int(max_images)
        self.cam_layer = cam_layer
        self.method = method
        self.threshold = float(threshold)
        self.dilate = int(dilate)
        self.network = network
        self.rows: list[dict] = []

    def attach(self, engine: Engine) -> None:
        engine.add_event_handler(Events.EPOCH_STARTED, self.reset)
        engine.add_event_handler(Events.ITERATION_COMPLETED, self)
        engine.add_event_handler(Events.EPOCH_COMPLETED, self.write_index)

    def reset(self, engine: Optional[Engine] = None) -> None:
        self.rows = []

    def __call__(self, engine: Engine) -> None:
        if not is_main_process():
            return
        from medfuse.visualize.lung_cam import cam_mass_inside, lung_masked_cam, save_lung_cam_overlay
        from medfuse.workflows.cam import _display, _safe

        left = None if self.max_images <= 0 else self.max_images - len(self.rows)
        pairs = _items(engine)
        if left is not None:
            pairs = pairs[: max(left, 0)]
        if not pairs:
            return
        images = torch.stack([torch.as_tensor(out["image"]).detach() for out, _ in pairs])
        net = _unwrap(self.network if self.network is not None else engine.network)
        res = lung_masked_cam(net, images, target_layer=self.cam_layer, method=self.method, threshold=self.threshold,
                              dilate=self.dilate)
        inside = cam_mass_inside(res.cam, res.lung_mask).tolist()
        inside_masked = cam_mass_inside(res.masked_cam, res.lung_mask).tolist()
        for k, (out, batch) in enumerate(pairs):
            path = _path(out, batch)
            c = int(res.class_index[k])
            cname = self.classes[c] if self.classes and c < len(self.classes) else str(c)
            prob = float(res.probs[k, c])
            name = f"{_safe(_stem(path)) if path else f'image{len(self.rows):05d}'}_{_safe(cname)}.png"
            save_lung_cam_overlay(
                self.output_dir / name, _display(images[k]), res.cam[k, 0], res.masked_cam[k, 0], res.lung_mask[k, 0],
                title=f"{_stem(path) or name}: {cname} (p = {prob:.3f})",
                inside_fractions=(inside[k], inside_masked[k]) if not math.isnan(inside[k]) else None,
            )
            self.rows.append({"image": path, "pred": cname, "prob": round(prob, 6),
                              "cam_inside_pred_lungs": "" if math.isnan(inside[k]) else round(inside[k], 6),
                              "overlay": name})
        self.write_index()

    def write_index(self, engine: Optional[Engine] = None) -> Optional[Path]:
        if not is_main_process():
            return None
        return atomic_write_csv(self.output_dir / "index.csv", self.rows,
                                ["image", "pred", "prob", "cam_inside_pred_lungs", "overlay"])
