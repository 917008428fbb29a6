# Copyright (c) medfuse contributors
# Licensed under the Apache License, Version 2.0
"""2-D segmentation networks on 2-D images or slice by slice on NIfTI volumes (the ``difm_segmentation`` bundle).

Built on :mod:`medfuse.workflows.segmentation` (post-processing, metric, evaluator and mask writer of the task layer);
this module adds what volumes need and the architecture switch of the DIFM bundle:

* :func:`segmentation_network`: ``difm`` (:class:`~medfuse.networks.nets.DIFMUNet`, original + enhanced image),
  ``unet`` (MONAI ``BasicUNet`` on the original), ``unet2ch`` (``BasicUNet`` on both channels);
  :func:`network_in_channels`, :func:`uses_enhanced`;
* :func:`segmentation_classes`: background + the manifest's classes (or the lung split);
* :func:`slice_segmentation_items`, :func:`slice_inference_items`, :func:`items_without_mask`: manifest items of
  task ``segmentation`` / ``segmentation_classification`` with their files checked against ``data_mode``
  (:func:`check_item`: a 2-D file in volume mode or the reverse, several channels, a label grid unlike its image
  are one-line :class:`~medfuse.errors.DataError` messages naming the file and the fix);
* :func:`slice_inferer` (``SliceInferer`` over whole volumes, ``SimpleInferer`` in 2d), :func:`slice_postprocessing`
  (label map by :class:`~medfuse.workflows.segmentation.SegmentationPostd`, then MONAI ``Invertd`` back to the input
  grid for volume evaluation and inference);
* :class:`SliceSegmentationEvaluator`: the task layer's evaluator; for volumes, 3-D Dice / IoU / HD95 (mm and
  voxels) per volume on the original grid against the label file;
* :class:`VolumeMaskWriter`: ``<stem>_seg.nii.gz`` (int16, the input's affine and shape) and ``volumes.csv``.
"""

from __future__ import annotations

import csv
import logging
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Optional

import numpy as np
import torch
from ignite.engine import Engine, Events

from medfuse.data.manifest import load_split, read_manifest
from medfuse.errors import DataError, ManifestError
from medfuse.utils.distributed import is_main_process
from medfuse.utils.images import NIFTI_EXTENSIONS, PIL_EXTENSIONS
from medfuse.utils.io import atomic_write_csv, atomic_write_json
from medfuse.workflows.segmentation import (
    SegmentationEvaluator,
    SegmentationPostd,
    decollated_items,
    item_path,
    unique_output_name,
)

__all__ = [
    "ARCHITECTURES",
    "SEGMENTATION_TASKS",
    "network_in_channels",
    "uses_enhanced",
    "segmentation_network",
    "segmentation_classes",
    "check_item",
    "slice_segmentation_items",
    "slice_inference_items",
    "items_without_mask",
    "slice_inferer",
    "slice_postprocessing",
    "SliceSegmentationEvaluator",
    "VolumeMaskWriter",
]

logger = logging.getLogger(__name__)
#: Values of ``architecture``.
ARCHITECTURES = ("difm", "unet", "unet2ch")
#: Manifest tasks this module reads.
SEGMENTATION_TASKS = ("segmentation", "segmentation_classification")
DEFAULT_META_KEYS = ("patient_id", "frame", "view", "sex", "site")
LUNG_CLASSES = ("background", "right_lung", "left_lung")
_AFFINE_TOLERANCE = 1e-3


# ----------------------------------------------------------------------------------------------------------
# network


def _check_architecture(architecture: str) -> str:
    if architecture not in ARCHITECTURES:
        raise ValueError(f"architecture must be one of {ARCHITECTURES}, got {architecture!r}")
    return architecture


def uses_enhanced(architecture: str) -> bool:
    """Whether the network input stacks the enhanced copy after the original (``difm``, ``unet2ch``)."""
    return _check_architecture(architecture) != "unet"


def network_in_channels(architecture: str, image_channels: int = 1) -> int:
    """Channels of the network input: ``2 * image_channels`` with the enhanced copy, else ``image_channels``."""
    return (2 if uses_enhanced(architecture) else 1) * int(image_channels)


def segmentation_network(
    architecture: str = "difm",
    in_channels: int = 2,
    out_channels: int = 2,
    features: Sequence[int] = (32, 32, 64, 128, 256, 32),
    share_encoder: bool = False,
    difm_levels: Sequence[int] = (0, 1, 2, 3, 4),
    num_heads: int = 4,
    kv_size: int = 16,
) -> torch.nn.Module:
    """The network of ``architecture``; ``in_channels`` counts the network input (original + enhanced for
    ``difm`` and ``unet2ch``). ``share_encoder``, ``difm_levels``, ``num_heads``, ``kv_size`` apply to ``difm``.

    Raises:
        ValueError: an unknown architecture, or odd ``in_channels`` for ``difm`` (it takes an original and an
            enhanced image of equal channels).
    """
    _check_architecture(architecture)
    in_channels, out_channels = int(in_channels), int(out_channels)
    if architecture == "difm":
        if in_channels % 2:
            raise ValueError(
                f"difm takes the original and the enhanced image stacked along channels, so in_channels must be even, "
                f"got {in_channels}; leave in_channels to the bundle (2 for one grey image) or use architecture 'unet'"
            )
        from medfuse.networks.nets import DIFMUNet

        return DIFMUNet(spatial_dims=2, in_channels=in_channels // 2, out_channels=out_channels, features=features,
                        share_encoder=bool(share_encoder), difm_levels=difm_levels, num_heads=int(num_heads),
                        kv_size=int(kv_size))
    from monai.networks.nets import BasicUNet

    return BasicUNet(spatial_dims=2, in_channels=in_channels, out_channels=out_channels, features=tuple(features))


# ----------------------------------------------------------------------------------------------------------
# classes and items


def _manifest(manifest: str | os.PathLike) -> dict:
    m = read_manifest(manifest, validate=False)
    if m.get("task") not in SEGMENTATION_TASKS:
        raise ManifestError(f"task {m.get('task')!r}: this bundle reads manifests of task "
                            f"{' or '.join(SEGMENTATION_TASKS)} (items with a 'mask')", manifest)
    return m


def segmentation_classes(manifest: str | os.PathLike, split_lungs: bool = False) -> list[str]:
    """Segmentation class names, background first.

    ``split_lungs``: background, right lung, left lung. Else a ``segmentation`` manifest's ``classes`` are the mask
    labels 1..K (``["background", *classes]``); a ``segmentation_classification`` manifest's classes are diagnoses
    and its masks binary (``["background", "foreground"]``).
    """
    if split_lungs:
        return list(LUNG_CLASSES)
    m = _manifest(manifest)
    classes = [str(c) for c in (m.get("classes") or [])]
    if m.get("task") == "segmentation" and classes:
        return ["background", *classes]
    return ["background", "foreground"]


def _is_nifti(path: str) -> bool:
    return str(path).lower().endswith(NIFTI_EXTENSIONS)


def _nifti_header(path: str):
    import nibabel as nib

    try:
        return nib.load(path)
    except Exception as e:  # nibabel raises ImageFileError, OSError, EOFError ...
        raise DataError(f"{path}: unreadable NIfTI ({type(e).__name__}: {str(e).splitlines()[0][:120]}); "
                        "re-export the file or drop the item") from e


def _spatial_shape(img, path: str) -> tuple[int, ...]:
    """The 3-D grid of a NIfTI volume (trailing singleton axes beyond the third dropped)."""
    shape = tuple(int(s) for s in img.shape)
    while len(shape) > 3 and shape[-1] == 1:
        shape = shape[:-1]
    if len(shape) > 3:
        raise DataError(
            f"{path}: {len(shape)}-D NIfTI {shape} has {int(np.prod(shape[3:]))} channels or frames; the network takes "
            "one grey channel per image: write one frame (e.g. ED / ES) or one channel per file"
        )
    return shape


def check_item(item: dict, data_mode: str = "2d", label_key: str = "label") -> None:
    """Raise a one-line :class:`DataError` naming the file and the fix when ``item`` does not fit ``data_mode``.

    Volume mode: the image must be a NIfTI volume (not a 2-D file or a single slice) with one channel, and its label
    the same grid (shape, and affine within 1e-3). 2d mode: the image must not be a NIfTI volume with several slices,
    and a NIfTI or PNG / JPEG / TIFF mask must have the image's rows and columns. Only headers are read.
    """
    path = str(item["image"])
    label = item.get(label_key)
    if data_mode == "volume":
        if not _is_nifti(path):
            raise DataError(f"{path}: a 2-D image file, but data_mode is 'volume' (NIfTI volumes); set data_mode "
                            "to '2d' for image files, or convert the image to a NIfTI volume")
        img = _nifti_header(path)
        shape = _spatial_shape(img, path)
        if len(shape) < 3 or shape[2] == 1:
            raise DataError(f"{path}: a 2-D NIfTI image {shape}, but data_mode is 'volume'; set data_mode to '2d' "
                            "(or give the whole volume)")
        import nibabel as nib

        codes = nib.aff2axcodes(img.affine)
        if codes[2] not in ("S", "I"):  # after Orientationd("RAS") the inferer slices along S: across these slices
            logger.warning("%s: its slice axis points %s (orientation %s), not head-feet; after RAS reorientation the "
                           "2-D network sees planes across the acquired slices", path, codes[2], "".join(codes))
        if label:
            if not _is_nifti(str(label)):
                raise DataError(f"{label}: the label of the volume {path} must be a NIfTI volume on the same grid; "
                                "convert it (medfuse nifti2manifest checks pairs)")
            lab = _nifti_header(str(label))
            lshape = tuple(int(s) for s in lab.shape)
            while len(lshape) > 3 and lshape[-1] == 1:
                lshape = lshape[:-1]
            if lshape != shape:
                raise DataError(f"{label}: label grid {lshape} unlike its image {path} {shape}; resample the label "
                                "onto the image grid (nearest neighbour) or pair the right files")
            diff = float(np.abs(np.asarray(lab.affine) - np.asarray(img.affine)).max())
            if diff > _AFFINE_TOLERANCE:
                raise DataError(f"{label}: label affine differs from its image {path} by {diff:.3g} (> 1e-3); "
                                "resample the label onto the image grid or fix its header")
        return
    if _is_nifti(path):
        shape = _spatial_shape(_nifti_header(path), path)
        if len(shape) >= 3 and shape[2] > 1:
            raise DataError(f"{path}: a NIfTI volume {shape}, but data_mode is '2d'; set data_mode to 'volume' "
                            "(slice by slice), or export 2-D slices")
    ishape = lshape = None
    if label and _is_nifti(str(label)) and _is_nifti(path):
        lshape = _spatial_shape(_nifti_header(str(label)), str(label))[:2]
        ishape = _spatial_shape(_nifti_header(path), path)[:2]
    elif label and str(label).lower().endswith(PIL_EXTENSIONS) and path.lower().endswith(PIL_EXTENSIONS):
        from PIL import Image

        try:  # the header only: (width, height)
            with Image.open(path) as im, Image.open(str(label)) as lm:
                ishape, lshape = tuple(im.size[::-1]), tuple(lm.size[::-1])
        except OSError as e:
            raise DataError(f"{path}: unreadable image or mask ({e}); re-export the file or drop the item") from e
    if lshape != ishape:
        raise DataError(f"{label}: label grid {lshape} unlike its image {path} {ishape}; resample the label "
                        "onto the image grid (nearest neighbour) or pair the right files")


def _item(it: dict, present: Sequence[str], data_mode: str = "2d") -> dict:
    # volume mode: no "image_path" key, because MONAI's Spacingd updates every "image_*" key as a meta dict; the
    # path is the image's meta "filename_or_obj" there (what item_path falls back to)
    item = {"image": it["image"]} if data_mode == "volume" else {"image": it["image"], "image_path": it["image"]}
    if it.get("mask"):
        item["label"] = it["mask"]
        item["mask_path"] = it["mask"]
    for k in present:
        v = it.get(k, "")
        item[k] = v if isinstance(v, (str, int, float)) and not isinstance(v, bool) else str(v)
    return item


def items_without_mask(manifest: str | os.PathLike, split: str = "training") -> int:
    """How many items of ``split`` have no ``mask`` (training and evaluation leave them out)."""
    return sum(1 for it in load_split(manifest, split) if not it.get("mask"))


def slice_segmentation_items(
    manifest: str | os.PathLike,
    split: str = "training",
    data_mode: str = "2d",
    meta_keys: Sequence[str] = DEFAULT_META_KEYS,
    limit: int = 0,
    require_mask: bool = True,
) -> list[dict]:
    """Items of one split: ``image``, ``image_path`` (2d only), ``label`` and ``mask_path`` (the mask), the ``meta_keys``
    present. With ``require_mask`` items without a mask are left out (and counted in the log; the bundle's
    ``run_info.json`` records :func:`items_without_mask`). Every item is checked by :func:`check_item`.

    Raises:
        ManifestError: another task, a missing or empty split, no item with a mask.
        DataError: see :func:`check_item`.
    """
    _manifest(manifest)
    items = load_split(manifest, split)
    if not items:
        raise ManifestError(f"the manifest has no '{split}' items; add them (or choose another split)", manifest)
    present = [k for k in meta_keys if any(k in it for it in items)]
    out = [_item(it, present, data_mode) for it in items if it.get("mask") or not require_mask]
    if require_mask and len(out) < len(items):
        logger.warning("%s: %d '%s' item(s) without a mask left out", manifest, len(items) - len(out), split)
        if not out:
            raise ManifestError(f"no '{split}' item has a 'mask'; segmentation needs masks", manifest)
    out = out[:limit] if limit and limit > 0 else out
    for it in out:
        check_item(it, data_mode)
    return out


def slice_inference_items(
    manifest: str | os.PathLike | None = "",
    input_dir: str | os.PathLike | None = "",
    split: str = "test",
    data_mode: str = "2d",
    meta_keys: Sequence[str] = DEFAULT_META_KEYS,
    limit: int = 0,
) -> list[dict]:
    """Items to predict: a folder of images or volumes (``input_dir``) or a manifest split (masks kept when present),
    each checked by :func:`check_item`.

    Raises:
        DataError: neither or both inputs, an empty folder, see :func:`check_item`.
    """
    from medfuse.workflows.data import inference_items

    def with_masks(manifest, split, meta_keys, limit):
        return slice_segmentation_items(manifest, split, data_mode, meta_keys, limit, require_mask=False)

    items = inference_items(manifest, input_dir, split, meta_keys=meta_keys, limit=limit, manifest_items=with_masks)
    if input_dir:
        for it in items:
            check_item(it, data_mode)
            if data_mode == "volume":
                it.pop("image_path", None)
    return items


# ----------------------------------------------------------------------------------------------------------
# inferer and post-processing


def slice_inferer(data_mode: str = "2d", image_size: int = 128, sw_batch_size: int = 8, overlap: float = 0.25):
    """``SimpleInferer`` for 2-D batches; for volumes ``monai.inferers.SliceInferer(spatial_dim=2,
    roi_size=(image_size, image_size))``: every axial slice through the 2-D network (sliding windows when larger)."""
    from monai.inferers import SimpleInferer, SliceInferer

    if data_mode != "volume":
        return SimpleInferer()
    return SliceInferer(spatial_dim=2, roi_size=(int(image_size), int(image_size)), sw_batch_size=int(sw_batch_size),
                        overlap=float(overlap), progress=False)


def slice_postprocessing(
    data_mode: str = "2d",
    preprocessing: Any = None,
    invert: bool = False,
    keep_components: int = 0,
    fill_holes: bool = False,
    label_key: str = "label",
):
    """:class:`~medfuse.workflows.segmentation.SegmentationPostd` (``seg``, ``ref_mask``; cleaned by ``keep_components``
    / ``fill_holes``, the task layer's :func:`~medfuse.workflows.segmentation.clean_label_map`), then for volumes with
    ``invert`` MONAI ``Invertd`` of ``seg`` through ``preprocessing`` (orientation, spacing, padding undone; nearest)."""
    from monai.transforms import Compose, Invertd

    xforms: list = [SegmentationPostd("pred", mask_key=label_key, keep_components=int(keep_components),
                                      fill_holes=fill_holes)]
    if data_mode == "volume" and invert:
        if preprocessing is None:
            raise ValueError("invert needs the preprocessing transform")
        xforms.append(Invertd("seg", transform=preprocessing, orig_keys="image", nearest_interp=True, to_tensor=True))
    return Compose(xforms)


# ----------------------------------------------------------------------------------------------------------
# evaluation and inference handlers


def _reference_volume(path: str) -> tuple[np.ndarray, tuple[float, ...]]:
    import nibabel as nib

    img = nib.load(path)
    data = np.asarray(img.dataobj)
    while data.ndim > 3 and data.shape[-1] == 1:
        data = data[..., 0]
    return np.rint(data).astype(np.int64), tuple(float(z) for z in img.header.get_zooms()[:3])


def _stats(values: Sequence[Optional[float]]) -> dict:
    arr = np.asarray([np.nan if v is None else v for v in values], dtype=np.float64)
    ok = arr[np.isfinite(arr)]
    return {"mean": float(ok.mean()) if ok.size else None, "std": float(ok.std()) if ok.size else None,
            "median": float(np.median(ok)) if ok.size else None, "n": int(ok.size), "n_undefined": int(arr.size - ok.size)}


class SliceSegmentationEvaluator(SegmentationEvaluator):
    """:class:`~medfuse.workflows.segmentation.SegmentationEvaluator`; with ``volume=True`` per volume in 3-D.

    Volumes: the label map ``pred_key`` (already inverted to the input grid, :func:`slice_postprocessing`) is compared
    with the label file (``mask_path``) on its own grid: Dice, IoU, HD95 in mm (the file's voxel size) and HD95 in
    voxels per class (:func:`medfuse.evaluation.segmentation.segmentation_metrics`, ``include_background=False``).
    ``segmentation_metrics.json`` has the task layer's keys plus ``hd95_units`` ``"mm"`` and ``hd95_voxels``;
    ``segmentation_per_case.csv`` the task layer's columns plus the volume columns ``hd95_voxels_<class>``,
    ``spacing`` and ``shape``.
    """

    def __init__(self, output_dir: str | os.PathLike, class_names: Sequence[str] = ("background", "foreground"),
                 volume: bool = False, pred_key: str = "seg", label_key: str = "ref_mask") -> None:
        self.volume = bool(volume)
        super().__init__(output_dir, class_names, pred_key=pred_key, label_key=label_key)

    def reset(self, engine: Optional[Engine] = None) -> None:
        super().reset(engine)
        self.cases: list[dict] = []

    def collect(self, engine: Engine) -> None:
        if not self.volume:
            return super().collect(engine)
        from medfuse.evaluation.segmentation import segmentation_metrics

        names = self.class_names[1:]
        for out, batch in decollated_items(engine):
            mask_path = out.get("mask_path") or batch.get("mask_path")
            if not mask_path:
                self.skipped_no_mask += 1
                continue
            seg = torch.as_tensor(out[self.pred_key]).detach().cpu().round().long()[0].numpy()
            ref, spacing = _reference_volume(str(mask_path))
            if ref.shape != seg.shape:
                raise DataError(f"{mask_path}: label grid {ref.shape} unlike the prediction on its image's grid "
                                f"{seg.shape}; resample the label onto the image grid")
            mm = segmentation_metrics(seg[None], ref[None], class_names=names, spacing=spacing, spatial_dims=3)
            vox = segmentation_metrics(seg[None], ref[None], class_names=names, spatial_dims=3)
            row = {"image": item_path(out, batch), "spacing": spacing, "shape": seg.shape}
            for n in names:
                row[n] = dict(mm["per_case"][0][n], hd95_voxels=vox["per_case"][0][n]["hd95"])
            self.cases.append(row)

    def write(self, engine: Optional[Engine] = None) -> Optional[dict]:
        if not self.volume:
            return super().write(engine)
        if not is_main_process():
            return None
        self.output_dir.mkdir(parents=True, exist_ok=True)
        names = self.class_names[1:]
        result: dict = {"n_cases": len(self.cases), "skipped_without_mask": self.skipped_no_mask}
        if self.cases:
            per_class = {n: {m: _stats([c[n][m] for c in self.cases]) for m in ("dice", "iou", "hd95")} for n in names}
            means = {m: [per_class[n][m]["mean"] for n in names if per_class[n][m]["mean"] is not None]
                     for m in ("dice", "iou", "hd95")}
            result.update(
                per_class=per_class,
                mean={m: float(np.mean(v)) if v else None for m, v in means.items()},
                hd95_units="mm",
                hd95_voxels={n: _stats([c[n]["hd95_voxels"] for c in self.cases]) for n in names},
                level="volume (3-D metrics per volume on the input grid)",
            )
            cols = (["image"] + [f"{m}_{n}" for n in names for m in ("dice", "iou", "hd95")]
                    + [f"hd95_voxels_{n}" for n in names] + ["spacing", "shape"])

            def fmt(v):
                return "" if v is None else f"{v:.6g}"

            with open(self.output_dir / "segmentation_per_case.csv", "w", newline="", encoding="utf-8") as f:
                w = csv.writer(f, lineterminator="\n")
                w.writerow(cols)
                for c in self.cases:
                    w.writerow([c["image"]] + [fmt(c[n][m]) for n in names for m in ("dice", "iou", "hd95")]
                               + [fmt(c[n]["hd95_voxels"]) for n in names]
                               + ["x".join(f"{s:g}" for s in c["spacing"]), "x".join(str(s) for s in c["shape"])])
        else:
            logger.warning("SliceSegmentationEvaluator: no volume with a label; no segmentation metrics")
        atomic_write_json(self.output_dir / "segmentation_metrics.json", result)
        self.result = result
        return result


class VolumeMaskWriter:
    """Inference handler for volumes: ``<output_dir>/<stem>_seg.nii.gz`` per input volume (int16 label map with the
    input file's affine and shape; the prediction must already be on the input grid, :func:`slice_postprocessing`
    with ``invert``) and ``<output_dir>/volumes.csv`` (``image``, ``seg``, ``voxels_<class>`` per foreground class).
    File names as the task layer's :class:`~medfuse.workflows.segmentation.MaskWriter` makes them (the image stem,
    made safe, ``-2``, ``-3`` ... on repeats). Under torch.distributed only rank 0 writes.

    Raises:
        DataError: a prediction whose grid differs from its input file (the inversion failed).
    """

    def __init__(self, output_dir: str | os.PathLike, class_names: Sequence[str] = ("background", "foreground"),
                 pred_key: str = "seg") -> None:
        self.output_dir = Path(output_dir)
        self.class_names = [str(c) for c in class_names]
        self.pred_key = pred_key
        self.reset()

    def attach(self, engine: Engine) -> None:
        engine.add_event_handler(Events.EPOCH_STARTED, self.reset)
        engine.add_event_handler(Events.ITERATION_COMPLETED, self)
        engine.add_event_handler(Events.EPOCH_COMPLETED, self.write_index)

    def reset(self, engine: Optional[Engine] = None) -> None:
        self.rows: list[dict] = []
        self._names: set[str] = set()

    def _name(self, path: str) -> str:
        return unique_output_name(path, "_seg", self._names, f"volume{len(self.rows):05d}")

    def __call__(self, engine: Engine) -> None:
        if not is_main_process():
            return
        import nibabel as nib

        self.output_dir.mkdir(parents=True, exist_ok=True)
        for out, batch in decollated_items(engine):
            path = item_path(out, batch)
            seg = torch.as_tensor(out[self.pred_key]).detach().cpu().round()[0].numpy().astype(np.int16)
            src = nib.load(path)
            shape = tuple(int(s) for s in src.shape[:3])
            if seg.shape != shape:
                raise DataError(f"{path}: prediction grid {seg.shape} differs from the input {shape}; the volume "
                                "pipeline must end on the input grid (Invertd)")
            img = nib.Nifti1Image(seg, np.asarray(src.affine, dtype=np.float64))
            img.set_qform(src.affine, code=1)
            img.set_sform(src.affine, code=1)
            name = self._name(path)
            nib.save(img, str(self.output_dir / f"{name}.nii.gz"))
            row = {"image": path, "seg": f"{name}.nii.gz"}
            for k, c in enumerate(self.class_names[1:], start=1):
                row[f"voxels_{c}"] = int((seg == k).sum())
            self.rows.append(row)

    def write_index(self, engine: Optional[Engine] = None) -> Optional[Path]:
        if not is_main_process():
            return None
        cols = ["image", "seg"] + [f"voxels_{c}" for c in self.class_names[1:]]
        return atomic_write_csv(self.output_dir / "volumes.csv", self.rows, cols)
