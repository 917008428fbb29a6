# Copyright (c) medfuse contributors
# Licensed under the Apache License, Version 2.0
"""The segmentation task layer: what any N-class segmentation network needs in a bundle config.

Nothing here assumes a classification head or a number of classes (class 0 is the background):

* :func:`segmentation_items`: manifest items with an image and (for training / evaluation) a ``mask``;
* :class:`SegmentationPostd`: per item, logits -> label map ``seg`` (optionally cleaned by :func:`clean_label_map`),
  the reference mask to ``ref_mask`` / ``has_ref_mask``;
* :class:`SegmentationMetric`: validation Dice or IoU as an ignite metric, for any number of classes;
* :class:`SegmentationEvaluator`: evaluation handler writing ``segmentation_metrics.json`` and
  ``segmentation_per_case.csv`` (Dice, IoU, HD95 per class per case, by :mod:`medfuse.evaluation.segmentation`);
* :class:`MaskWriter`: inference handler writing each predicted mask at the original image size as PNG and
  (optionally) NIfTI, with the input's affine when the input is a NIfTI file;
* :func:`mask_to_original`, :func:`segmentation_report`, :func:`print_segmentation_summary`, and the handler
  helpers :func:`decollated_items`, :func:`item_path`, :func:`summary_stats`.

What only the multi-output U-Net (segmentation + diagnosis) needs lives in :mod:`medfuse.workflows.multi_output`,
built on this module and :mod:`medfuse.workflows.classification`. Its names were defined here before; they stay
importable from here (``medfuse.workflows.segmentation.MultiOutputInferer`` ...) for one release, so that bundles
exported before the split still run: see :data:`MOVED_TO_MULTI_OUTPUT`.
"""

from __future__ import annotations

import csv
import importlib
import json
import logging
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
from monai.transforms import MapTransform

from medfuse.data.manifest import load_split
from medfuse.errors import ManifestError
from medfuse.transforms.spatial import fit_size
from medfuse.utils.distributed import is_main_process
from medfuse.utils.images import NIFTI_EXTENSIONS, image_stem
from medfuse.utils.io import atomic_write_csv, atomic_write_json
from medfuse.utils.paths import safe_file_name
from medfuse.workflows.engine import flag

__all__ = [
    "segmentation_items",
    "clean_label_map",
    "SegmentationPostd",
    "SegmentationMetric",
    "SegmentationEvaluator",
    "MaskWriter",
    "mask_to_original",
    "segmentation_report",
    "print_segmentation_summary",
    "decollated_items",
    "item_path",
    "summary_stats",
]

logger = logging.getLogger(__name__)
DEFAULT_META_KEYS = ("patient_id", "view", "sex", "site")

#: Names that moved to :mod:`medfuse.workflows.multi_output` (issue 11); ``medfuse.workflows.segmentation.<name>``
#: still resolves to them for one release (bundles exported before 0.2 name them here). New configs use the new home.
MOVED_TO_MULTI_OUTPUT = (
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
    "LungCAMWriter",
)


def __getattr__(name: str) -> Any:  # the aliases of MOVED_TO_MULTI_OUTPUT (imported lazily: that module imports this)
    if name in MOVED_TO_MULTI_OUTPUT:
        return getattr(importlib.import_module("medfuse.workflows.multi_output"), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


# ----------------------------------------------------------------------------------------------------------
# items


def segmentation_items(
    manifest: str | os.PathLike,
    split: str = "training",
    meta_keys: Sequence[str] = DEFAULT_META_KEYS,
    limit: int = 0,
    require_mask: bool = True,
) -> list[dict]:
    """Items of one manifest split for a segmentation network.

    Each item: ``image``, ``image_path`` (a copy that survives the transforms), ``mask`` when the manifest item has
    one, and the ``meta_keys`` present in the split (``""`` where an item lacks one, so batches collate).

    Args:
        manifest: a medfuse manifest.
        split: ``training``, ``validation`` or ``test``.
        meta_keys: grouping columns kept for the outputs.
        limit: keep the first ``limit`` items when > 0.
        require_mask: every item must have a mask (training, evaluation); False for inference.

    Raises:
        ManifestError: a missing or empty split, or an item without a mask when ``require_mask``.
    """
    items = load_split(manifest, split)
    if not items:
        raise ManifestError(f"the manifest has no '{split}' items; add them (or choose another split)", manifest)
    present = [k for k in meta_keys if any(k in it for it in items)]
    out = []
    for it in items:
        if require_mask and not it.get("mask"):
            raise ManifestError(f"'{split}' item {it['image']} has no 'mask'; add it or drop the item", manifest)
        item = {"image": it["image"], "image_path": it["image"]}
        if it.get("mask"):
            item["mask"] = it["mask"]
        for k in present:
            v = it.get(k, "")
            item[k] = v if isinstance(v, (str, int, float)) and not isinstance(v, bool) else str(v)
        out.append(item)
    return out[:limit] if limit and limit > 0 else out


# ----------------------------------------------------------------------------------------------------------
# post-processing and metrics


def clean_label_map(label_map: torch.Tensor, keep_components: int = 0, fill_holes: bool = False) -> torch.Tensor:
    """Clean a ``(1, H, W)`` integer label map: the foreground (label > 0) keeps only its ``keep_components``
    largest connected components (8-connected; 0: all), then holes enclosed by it are filled with the label of
    the nearest foreground pixel. Background stays 0; labels of kept pixels do not change.

    Holes are found by MONAI's ``FillHoles`` (``connectivity=1``, the 4-connected background of
    ``scipy.ndimage.binary_fill_holes``) applied to the foreground as one label. Two MONAI pieces are not used,
    on purpose:

    * ``KeepLargestConnectedComponent`` (``independent=False, connectivity=2, num_components=n`` would give the
      same components) labels through scikit-image, which medfuse does not depend on and which is not installed
      in the project environment: on CPU it raises "Skimage.measure required". ``scipy.ndimage.label`` with the
      full 3x3 structure does the same labelling; only ties between equally large components may be broken
      differently (MONAI and this code both keep the first ``n`` of a descending ``argsort``).
    * ``FillHoles`` on the label map itself fills per label: for label ``L`` everything that is not ``L`` and
      not reachable from the border becomes ``L``, so a region of another class enclosed by ``L`` is overwritten,
      and a hole bordered by two classes is left empty. On binary maps (the lung bundle) it equals this function
      (``tests/workflows/test_segmentation.py`` compares them on demo-data lung masks with speckle: identical);
      on the 3-class maps of that test it changes up to 0.13 % of the pixels (0.03 % on average), which is why
      the hole pixels take the nearest label here. With this split, old and new code agree exactly on every map
      of that test (binary and 3-class, ``keep_components`` 0-3, with and without ``fill_holes``).
    """
    from monai.transforms import FillHoles
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
            filled = np.asarray(FillHoles(applied_labels=[1], connectivity=1)(fg[None].astype(np.uint8)))[0] > 0
            holes = filled & ~fg
            if holes.any():  # each hole takes the nearest foreground label
                idx = ndimage.distance_transform_edt(~fg, return_distances=False, return_indices=True)
                out[c][holes] = out[c][tuple(i[holes] for i in idx)]
    return torch.as_tensor(out, dtype=label_map.dtype, device=label_map.device)


def label_map_from_logits(seg: Any, keep_components: int = 0, fill_holes: bool = False) -> tuple[torch.Tensor,
                                                                                                  torch.Tensor]:
    """``(C, H, W)`` logits -> (``(1, H, W)`` long arg-max label map, cleaned as asked; ``(C, H, W)`` softmax)."""
    probs = torch.softmax(torch.as_tensor(seg).float(), dim=0)
    label_map = probs.argmax(dim=0, keepdim=True)
    if keep_components > 0 or fill_holes:
        label_map = clean_label_map(label_map, keep_components, fill_holes)
    return label_map, probs


class SegmentationPostd(MapTransform):
    """Per decollated item of a plain segmentation network: logits to a label map, the reference mask aside.

    In: ``pred`` ``(C, H, W)`` logits and, from the batch, ``mask_key`` (the reference, when the item has one).
    Out: ``seg`` = arg-max ``(1, H, W)`` (float; cleaned by :func:`clean_label_map` with ``keep_components`` /
    ``fill_holes``), ``seg_prob`` = ``(C, H, W)`` softmax when ``keep_prob``, ``ref_mask`` and ``has_ref_mask``.
    (New key names: MONAI's engines write post-processed keys that exist in the batch back to the batch, where
    metrics do not see them.)
    """

    def __init__(self, keys: KeysCollection = "pred", mask_key: str = "label", keep_prob: bool = False,
                 keep_components: int = 0, fill_holes: bool = False) -> None:
        super().__init__(keys)
        self.mask_key = mask_key
        self.keep_prob = bool(keep_prob)
        self.keep_components = int(keep_components)
        self.fill_holes = flag(fill_holes, "fill_holes")

    def __call__(self, data: Mapping[Hashable, Any]) -> dict:
        d = dict(data)
        for key in self.key_iterator(d):
            label_map, probs = label_map_from_logits(d[key], self.keep_components, self.fill_holes)
            d["seg"] = label_map.float()
            if self.keep_prob:
                d["seg_prob"] = probs
        ref = d.get(self.mask_key)
        d["ref_mask"] = ref
        d["has_ref_mask"] = ref is not None and torch.as_tensor(ref).ndim >= 2
        return d


class SegmentationMetric(Metric):
    """Mean per-image Dice or IoU of the foreground classes over the items that have a mask (ignite metric).

    Reads the label map ``pred_key`` and the reference ``label_key`` of each decollated item
    (:class:`SegmentationPostd`, :class:`~medfuse.workflows.multi_output.MultiOutputPostd`); items with
    ``has_ref_mask`` False are skipped, and so are (image, class) pairs whose reference is empty (MONAI's
    ``ignore_empty``). Label maps become one-hot with :func:`monai.networks.utils.one_hot`.

    Args:
        num_classes: segmentation classes including the background. Defaults to 2.
        metric: ``"dice"`` or ``"iou"``. Defaults to ``"dice"``.
        pred_key, label_key: item keys of the predicted and the reference label map. Defaults ``seg``, ``ref_mask``.
    """

    def __init__(self, num_classes: int = 2, metric: str = "dice", output_transform: Callable = lambda x: x,
                 device: str | torch.device = "cpu", pred_key: str = "seg", label_key: str = "ref_mask") -> None:
        if metric not in ("dice", "iou"):
            raise ValueError(f"metric must be 'dice' or 'iou', got {metric!r}")
        self.num_classes = int(num_classes)
        self.metric = metric
        self.pred_key, self.label_key = pred_key, label_key
        self._values: list[float] = []
        super().__init__(output_transform=output_transform, device=device)

    def reset(self) -> None:
        self._values = []

    def _one_hot(self, label_map: Any) -> torch.Tensor:
        """``(1, *spatial)`` integer map -> ``(1, C, *spatial)`` float one-hot (negative labels count as 0)."""
        from monai.networks.utils import one_hot

        lm = torch.as_tensor(label_map).round().long().clamp_min(0)
        return one_hot(lm.unsqueeze(0), self.num_classes, dtype=torch.float32, dim=1)

    def update(self, output: Any) -> None:
        from monai.metrics import compute_dice, compute_iou

        items = output if isinstance(output, (list, tuple)) else [output]
        for it in items:
            if not it.get("has_ref_mask", True) or it.get(self.label_key) is None:
                continue
            pred, ref = self._one_hot(it[self.pred_key]), self._one_hot(it[self.label_key])
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


def summary_stats(values: Sequence[Optional[float]]) -> dict:
    """``{"mean", "std", "median", "n"}`` of the finite values (None entries when there is none)."""
    arr = np.asarray([v for v in values if v is not None and np.isfinite(v)], dtype=np.float64)
    if arr.size == 0:
        return {"mean": None, "std": None, "median": None, "n": 0}
    return {"mean": float(arr.mean()), "std": float(arr.std()), "median": float(np.median(arr)), "n": int(arr.size)}


def segmentation_report(pred, target, seg_classes: Sequence[str] = ("background", "lung"), spacing=None) -> dict:
    """Segmentation metrics of the foreground classes; ``seg_classes`` names every channel, background first.

    Computed by the shared evaluation layer, :func:`medfuse.evaluation.segmentation.segmentation_metrics`.
    """
    from medfuse.evaluation.segmentation import segmentation_metrics

    return segmentation_metrics(pred, target, class_names=list(seg_classes)[1:], include_background=False,
                                spacing=spacing)


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


# ----------------------------------------------------------------------------------------------------------
# evaluation and inference handlers


def decollated_items(engine: Engine) -> list[tuple[dict, dict]]:
    """``(output item, batch item)`` pairs of an engine's last iteration (the engine must decollate)."""
    outputs, batches = engine.state.output, engine.state.batch
    if isinstance(outputs, Mapping):
        raise ValueError("this handler needs decollated outputs (the engine's decollate=True)")
    pairs = []
    for i, out in enumerate(outputs):
        batch = batches[i] if isinstance(batches, (list, tuple)) and i < len(batches) else {}
        pairs.append((out, batch))
    return pairs


def item_path(out: Mapping, batch: Mapping) -> str:
    """The image path of an item: ``image_path`` of the output or the batch, else the image's ``filename_or_obj``."""
    for src in (out, batch):
        v = src.get("image_path") if isinstance(src, Mapping) else None
        if v:
            return str(v)
    meta = getattr(out.get("image"), "meta", None)
    return str(meta.get("filename_or_obj", "")) if isinstance(meta, dict) else ""


class SegmentationEvaluator:
    """Evaluation handler: segmentation metrics per case and per class, for any number of classes.

    Collects the label map ``pred_key`` and the reference ``label_key`` of every item with a reference mask
    (:class:`SegmentationPostd` or :class:`~medfuse.workflows.multi_output.MultiOutputPostd`); at the end of the
    run it writes ``<output_dir>/segmentation_metrics.json`` (per class: Dice, IoU, HD95 mean / std / median, and
    the mean over classes) and ``<output_dir>/segmentation_per_case.csv`` (one row per case, ``dice_<class>``,
    ``iou_<class>``, ``hd95_<class>``). Under torch.distributed only rank 0 writes (its own items).

    Subclasses add statistics by overriding :meth:`collect_more` (called with the kept items of each iteration)
    and :meth:`more_results` (merged into the JSON); :class:`~medfuse.workflows.multi_output.MultiOutputEvaluator`
    adds the Grad-CAM mass inside the lungs that way.

    Args:
        output_dir: folder of the outputs.
        class_names: segmentation class names, background first. Defaults to ``("background", "lung")``.
        pred_key, label_key: item keys of the predicted and the reference label map. Defaults ``seg``, ``ref_mask``.
        legacy: ``cam_images``, ``cam_layer``, ``threshold``, ``dilate``, ``network`` of the evaluator this name
            meant before the multi-output split: given, the object is a
            :class:`~medfuse.workflows.multi_output.MultiOutputEvaluator` (bundles exported before the split).
    """

    def __new__(cls, *args: Any, **kwargs: Any):
        if cls is SegmentationEvaluator and set(kwargs) & {"cam_images", "cam_layer", "threshold", "dilate", "network"}:
            from medfuse.workflows.multi_output import MultiOutputEvaluator

            return super().__new__(MultiOutputEvaluator)
        return super().__new__(cls)

    def __init__(self, output_dir: str | os.PathLike, class_names: Sequence[str] = ("background", "lung"),
                 pred_key: str = "seg", label_key: str = "ref_mask") -> None:
        self.output_dir = Path(output_dir)
        self.class_names = [str(c) for c in class_names]
        self.pred_key, self.label_key = pred_key, label_key
        self.reset()

    def attach(self, engine: Engine) -> None:
        engine.add_event_handler(Events.EPOCH_STARTED, self.reset)
        engine.add_event_handler(Events.ITERATION_COMPLETED, self.collect)
        engine.add_event_handler(Events.EPOCH_COMPLETED, self.write)

    def reset(self, engine: Optional[Engine] = None) -> None:
        self.paths: list[str] = []
        self.preds: list[torch.Tensor] = []
        self.refs: list[torch.Tensor] = []
        self.skipped_no_mask = 0
        self.result: dict = {}

    def collect(self, engine: Engine) -> None:
        kept = []
        for out, batch in decollated_items(engine):
            if not out.get("has_ref_mask") or out.get(self.label_key) is None:
                self.skipped_no_mask += 1
                continue
            seg = torch.as_tensor(out[self.pred_key]).detach().cpu().round().long()
            ref = torch.as_tensor(out[self.label_key]).detach().cpu().round().long()
            self.paths.append(item_path(out, batch))
            self.preds.append(seg[0])
            self.refs.append(ref[0])
            kept.append((out, ref))
        if kept:
            self.collect_more(engine, kept)

    def collect_more(self, engine: Engine, kept: list[tuple[dict, torch.Tensor]]) -> None:
        """Hook: more statistics from this iteration's items with a reference (``(output item, ref (1, H, W))``)."""

    def more_results(self) -> dict:
        """Hook: more entries of ``segmentation_metrics.json``."""
        return {}

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
        result.update(self.more_results())
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


def _image_meta(out: Mapping) -> dict:
    meta = getattr(out.get("image"), "meta", None)
    return meta if isinstance(meta, dict) else {}


def _original_shape(out: Mapping, fallback: Sequence[int]) -> tuple[int, int]:
    shape = _image_meta(out).get("spatial_shape")
    if shape is None:
        return tuple(int(s) for s in fallback)  # type: ignore[return-value]
    return tuple(int(s) for s in torch.as_tensor(shape).reshape(-1)[:2].tolist())  # type: ignore[return-value]


def nifti_affine(path: str, slice_index: Any = None) -> np.ndarray:
    """The 4x4 affine of the mask of ``path``: the NIfTI file's own affine (moved to the slice ``slice_index`` of a
    volume, as :func:`medfuse.transforms.io.read_nifti` does) when ``path`` is a readable NIfTI file; identity
    otherwise. The loaders keep the file's voxel order (rows = axis i, columns = axis j), so the mask array fits it.
    """
    if not path or not str(path).lower().endswith(NIFTI_EXTENSIONS) or not os.path.isfile(path):
        return np.eye(4)
    import nibabel as nib

    try:
        affine = np.asarray(nib.load(path).affine, dtype=np.float64)
    except Exception as e:  # the mask is still written, with the identity
        logger.warning("%s: could not read the NIfTI affine (%s); the mask gets the identity", path, e)
        return np.eye(4)
    k = int(torch.as_tensor(slice_index).reshape(-1)[0]) if slice_index is not None else -1
    if k >= 0:
        shift = np.eye(4)
        shift[2, 3] = k
        affine = affine @ shift
    return affine


def unique_output_name(path: str, suffix: str, taken: set, fallback: str) -> str:
    """``<stem of path><suffix>`` (``fallback`` when there is no path), made unique within ``taken`` by ``-2``,
    ``-3`` ...; the name is added to ``taken``. Writers use it so two inputs with one stem never overwrite."""
    base = safe_file_name(image_stem(path)) if path else fallback
    name, k = f"{base}{suffix}", 1
    while name in taken:
        k += 1
        name = f"{base}{suffix}-{k}"
    taken.add(name)
    return name


class MaskWriter:
    """Inference handler: write each predicted mask at the original image size.

    ``<output_dir>/<stem>_mask.png`` (8-bit; 255 for a binary mask, the class index otherwise) and, with
    ``nifti=True``, ``<stem>_mask.nii.gz`` (nibabel, rows x columns; the input's affine when the input is a NIfTI
    file, see :func:`nifti_affine`, the identity otherwise); ``<output_dir>/masks.csv`` lists ``image``, ``mask``
    (file name), ``height``, ``width``, ``foreground_fraction``. Under torch.distributed only rank 0 writes (its
    own items).

    Args:
        output_dir: folder (created).
        num_classes: segmentation classes including background (2: PNG values 0/255). Defaults to 2.
        nifti: also write NIfTI. Defaults to False.
        pred_key: item key of the label map. Defaults to ``seg``.
    """

    def __init__(self, output_dir: str | os.PathLike, num_classes: int = 2, nifti: bool = False,
                 pred_key: str = "seg") -> None:
        self.output_dir = Path(output_dir)
        self.num_classes = int(num_classes)
        self.nifti = bool(nifti)
        self.pred_key = pred_key
        self.rows: list[dict] = []
        self._names: set[str] = set()

    def attach(self, engine: Engine) -> None:
        engine.add_event_handler(Events.EPOCH_STARTED, self.reset)
        engine.add_event_handler(Events.ITERATION_COMPLETED, self)
        engine.add_event_handler(Events.EPOCH_COMPLETED, self.write_index)

    def reset(self, engine: Optional[Engine] = None) -> None:
        self.rows, self._names = [], set()

    def _name(self, path: str) -> str:
        return unique_output_name(path, "_mask", self._names, f"image{len(self.rows):05d}")

    def __call__(self, engine: Engine) -> None:
        if not is_main_process():
            return
        from PIL import Image

        self.output_dir.mkdir(parents=True, exist_ok=True)
        for out, batch in decollated_items(engine):
            seg = torch.as_tensor(out[self.pred_key]).detach().cpu()
            path = item_path(out, batch)
            mask = mask_to_original(seg, _original_shape(out, seg.shape[-2:]))
            name = self._name(path)
            png = (mask > 0).astype(np.uint8) * 255 if self.num_classes == 2 else mask
            Image.fromarray(png).save(self.output_dir / f"{name}.png")
            if self.nifti:
                import nibabel as nib

                affine = nifti_affine(path, _image_meta(out).get("slice_index"))
                nib.save(nib.Nifti1Image(mask.astype(np.uint8), affine), str(self.output_dir / f"{name}.nii.gz"))
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
