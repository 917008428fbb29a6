# Copyright (c) medfuse contributors
# Licensed under the Apache License, Version 2.0
"""What only segmentation + classification networks need (the ``cxr_multi_output_unet`` bundle).

Built on the two task layers, :mod:`medfuse.workflows.segmentation` (items with masks, metrics, mask writer,
evaluator) and :mod:`medfuse.workflows.classification` (class metrics, predictions writer, calibration), this
module holds the pieces around :class:`~medfuse.networks.nets.MultiOutputUNet` and
:class:`~medfuse.networks.losses.MultiOutputLoss`:

* :func:`multi_output_items`, :func:`multi_output_inference_items`: manifest items with an image, an optional
  ``mask`` and an optional ``label`` (missing label -> ``-1``), so that partly annotated data trains;
* :func:`multi_output_transforms`: load, normalise, letterbox and (for training) augment image and mask together;
  an item without a mask gets an all-zero placeholder and ``has_mask = 0`` (:class:`FillMissingMaskd`);
* :func:`load_initial_weights`: start from an earlier run's weights;
* :class:`MultiOutputPrepareBatch`: batch -> ``(image, {"mask", "has_mask", "label"})`` for MONAI engines;
* :class:`MultiOutputInferer`: network output -> ``{"seg": logits, "cls": logits}``;
* :class:`MultiOutputPostd`: per item: ``pred`` = class probabilities, ``seg`` = label map, ``ref_mask``,
  ``has_ref_mask``, ``label`` (``None`` when missing) at the top level;
* :func:`labelled_outputs`: :class:`~medfuse.workflows.classification.ClassificationMetric` on partly labelled data;
* :func:`fit_head_calibration`: temperature and threshold of the diagnosis head;
* :class:`MultiOutputEvaluator`: :class:`~medfuse.workflows.segmentation.SegmentationEvaluator` plus the fraction
  of Grad-CAM mass inside the reference lungs (unmasked vs. lung-masked CAM);
* :class:`LungCAMWriter`: inference CAM overlays, unmasked vs. lung-masked.

These names used to live in :mod:`medfuse.workflows.segmentation`, which still resolves them for one release.
"""

from __future__ import annotations

import logging
import math
import os
from collections.abc import Hashable, Mapping, Sequence
from pathlib import Path
from typing import Any, Optional

import torch
from ignite.engine import Engine, Events
from monai.config import KeysCollection
from monai.engines.utils import PrepareBatch
from monai.inferers import Inferer
from monai.transforms import Compose, MapTransform

from medfuse.data.manifest import load_split
from medfuse.errors import DataError, ManifestError
from medfuse.networks.losses import MISSING_LABEL
from medfuse.transforms.spatial import FillMissingMaskd
from medfuse.utils.distributed import is_main_process, unwrap_module
from medfuse.utils.images import image_stem
from medfuse.utils.io import atomic_write_csv
from medfuse.utils.paths import safe_file_name
from medfuse.visualize import display_image
from medfuse.workflows.engine import flag
from medfuse.workflows.segmentation import (
    SegmentationEvaluator,
    decollated_items,
    item_path,
    label_map_from_logits,
    summary_stats,
)

__all__ = [
    "multi_output_items",
    "multi_output_inference_items",
    "multi_output_transforms",
    "FillMissingMaskd",
    "load_initial_weights",
    "MultiOutputPrepareBatch",
    "MultiOutputInferer",
    "MultiOutputPostd",
    "labelled_outputs",
    "fit_head_calibration",
    "MultiOutputEvaluator",
    "LungCAMWriter",
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
    shift_augment: bool = False,
) -> Compose:
    """Chest X-ray + optional lung mask pipeline (training when ``train``, deterministic otherwise): the CXR
    presets of :mod:`medfuse.transforms.presets` with ``optional_mask=True`` and no flips.

    Load (DICOM / PNG / JPEG / NIfTI, DICOM display pipeline) -> percentile normalisation to [0, 1] -> mask read in
    [0, 1] and thresholded at ``mask_threshold`` (0/255 PNG masks with anti-aliased edges: 0.5 means 127.5) ->
    placeholder mask where there is none (:class:`FillMissingMaskd`) -> letterbox both to ``image_size`` (mask
    nearest) -> training only: one random affine moving image and mask together (no left-right flip: laterality
    matters), gamma / contrast / brightness, Gaussian noise, clip to [0, 1] -> grey repeated when
    ``in_channels=3``. ``shift_augment`` adds the acquisition-shift augmentations of the presets (training only).

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
                                intensity_prob=intensity_prob, noise_prob=noise_prob, noise_std=noise_std,
                                shift_augment=shift_augment)


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
    from medfuse.workflows.checkpoints import load_weights

    # a truncated, corrupt or non-finite file: one line naming it (CheckpointError); a module. prefix is removed
    state = load_weights(p, fix="give the model.pt of an earlier run that finished, or leave init_ckpt empty")
    try:
        unwrap_module(network).load_state_dict(state)
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


class MultiOutputPostd(MapTransform):
    """Per decollated item: class probabilities to ``pred``, the label map to ``seg``, targets to the top level.

    In: ``pred = {"seg": (C, H, W) logits, "cls": (K,) logits}`` and, from :class:`MultiOutputPrepareBatch`,
    ``label = {"mask", "has_mask", "label"}``. Out: ``pred`` = softmax ``(K,)``; ``seg`` = argmax ``(1, H, W)``
    (float); ``seg_prob`` = foreground probability ``(1, H, W)`` when ``keep_prob``; the reference mask
    ``ref_mask`` ``(1, H, W)`` and ``has_ref_mask`` (bool); ``label`` (int, or None when missing). (New key
    names: MONAI's engines write post-processed keys that exist in the batch, like ``mask``, back to the batch,
    where metrics do not see them.)

    Optional clean-up of the label map (:func:`~medfuse.workflows.segmentation.clean_label_map`):
    ``keep_components`` > 0 keeps that many largest connected components of the foreground (2 for a pair of
    lungs; 0: off), ``fill_holes`` fills holes enclosed by the foreground.
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
            label_map, probs = label_map_from_logits(seg, self.keep_components, self.fill_holes)
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


def fit_head_calibration(run_dir: str | os.PathLike, network: torch.nn.Module, dataloader: Any, classes: Sequence[str],
                         **kwargs: Any) -> Optional[dict]:
    """:func:`medfuse.evaluation.fit_run_calibration` for the diagnosis head of a multi-output network.

    The network answers with class logits alone (``set_output("cls")``) while the temperature and threshold
    are fitted on the labelled validation items, and is put back in its previous output mode afterwards.
    """
    from medfuse.evaluation.calibration import fit_run_calibration

    net = unwrap_module(network)
    previous = net.output
    try:
        return fit_run_calibration(run_dir, net.set_output("cls"), dataloader, classes, **kwargs)
    finally:
        net.set_output(previous)



class MultiOutputEvaluator(SegmentationEvaluator):
    """:class:`~medfuse.workflows.segmentation.SegmentationEvaluator` plus the CAM mass inside the lungs.

    Writes what the segmentation evaluator writes (``segmentation_metrics.json``, ``segmentation_per_case.csv``)
    and, with ``cam_images > 0``, computes for up to that many images with a mask the Grad-CAM of the predicted
    class unmasked and confined to the network's own (dilated) lung mask, and reports the fraction of each map's
    mass inside the *reference* lung mask (``cam_inside_lungs``: mean / median for ``unmasked`` and
    ``lung_masked``).

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
        self.cam_images = int(cam_images)
        self.cam_layer = cam_layer
        self.threshold = float(threshold)
        self.dilate = int(dilate)
        self.network = network
        super().__init__(output_dir, class_names)

    def reset(self, engine: Optional[Engine] = None) -> None:
        super().reset(engine)
        self.cam_inside: dict[str, list[float]] = {"unmasked": [], "lung_masked": []}

    def collect_more(self, engine: Engine, kept: list[tuple[dict, torch.Tensor]]) -> None:
        if self.cam_images >= 0:
            kept = kept[: max(self.cam_images - len(self.cam_inside["unmasked"]), 0)]
        if not kept:
            return
        from medfuse.visualize.lung_cam import cam_mass_inside, lung_masked_cam

        images = torch.stack([torch.as_tensor(out["image"]).detach() for out, _ in kept])
        net = unwrap_module(self.network if self.network is not None else engine.network)
        res = lung_masked_cam(net, images, target_layer=self.cam_layer, threshold=self.threshold, dilate=self.dilate)
        ref = torch.stack([r for _, r in kept]).to(res.cam.device)
        self.cam_inside["unmasked"] += cam_mass_inside(res.cam, ref).tolist()
        self.cam_inside["lung_masked"] += cam_mass_inside(res.masked_cam, ref).tolist()

    def more_results(self) -> dict:
        if not self.cam_inside["unmasked"]:
            return {}
        return {"cam_inside_lungs": {
            "reference": "fraction of the Grad-CAM mass of the predicted class inside the reference lung mask",
            "n_images": len(self.cam_inside["unmasked"]),
            "dilate": self.dilate,
            "threshold": self.threshold,
            "unmasked": summary_stats(self.cam_inside["unmasked"]),
            "lung_masked": summary_stats(self.cam_inside["lung_masked"]),
        }}


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

        left = None if self.max_images <= 0 else self.max_images - len(self.rows)
        pairs = decollated_items(engine)
        if left is not None:
            pairs = pairs[: max(left, 0)]
        if not pairs:
            return
        images = torch.stack([torch.as_tensor(out["image"]).detach() for out, _ in pairs])
        net = unwrap_module(self.network if self.network is not None else engine.network)
        res = lung_masked_cam(net, images, target_layer=self.cam_layer, method=self.method, threshold=self.threshold,
                              dilate=self.dilate)
        inside = cam_mass_inside(res.cam, res.lung_mask).tolist()
        inside_masked = cam_mass_inside(res.masked_cam, res.lung_mask).tolist()
        for k, (out, batch) in enumerate(pairs):
            path = item_path(out, batch)
            c = int(res.class_index[k])
            cname = self.classes[c] if self.classes and c < len(self.classes) else str(c)
            prob = float(res.probs[k, c])
            stem = safe_file_name(image_stem(path)) if path else f"image{len(self.rows):05d}"
            name = f"{stem}_{safe_file_name(cname)}.png"
            save_lung_cam_overlay(
                self.output_dir / name, display_image(images[k]), res.cam[k, 0], res.masked_cam[k, 0], res.lung_mask[k, 0],
                title=f"{image_stem(path) or name}: {cname} (p = {prob:.3f})",
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
