# Copyright (c) medfuse contributors
# Licensed under the Apache License, Version 2.0
"""Ignite handler writing class-activation-map overlays of an evaluator's images.

:class:`CAMWriter` is the optional last step of the bundles' inference workflow (``--save_cam True``): for
each image of each batch (up to ``max_images`` per run) it computes the Grad-CAM of the predicted class with
:func:`medfuse.visualize.compute_cam` and writes ``<output_dir>/<image-stem>_<pred>.png`` (the image and its
overlay side by side, captioned with the predicted class and its probability), plus ``<output_dir>/index.csv``
listing ``image``, ``pred``, ``prob``, ``overlay`` (file name relative to ``index.csv``).
"""

from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import Any, Mapping, Optional, Sequence

import torch
from ignite.engine import Engine, Events

from medfuse.utils.distributed import is_main_process, unwrap_module
from medfuse.utils.images import image_stem
from medfuse.utils.io import atomic_write_csv
from medfuse.utils.paths import safe_file_name
from medfuse.visualize.cam import compute_cam, display_image, save_overlay

__all__ = ["CAMWriter"]

logger = logging.getLogger(__name__)


def _value(item: Any, key: str) -> Any:
    if isinstance(item, Mapping) and key in item and item[key] is not None:
        return item[key]
    return None


class CAMWriter:
    """Write CAM overlays of the predicted class for the first ``max_images`` images of an evaluator run.

    Attach it to a MONAI ``SupervisedEvaluator`` (it is a plain ignite handler: ``attach(engine)``). On every
    ``ITERATION_COMPLETED`` it reads the items of ``engine.state.output`` (decollated, or one batch dictionary):
    the network input under ``image_key`` and the class probabilities under ``pred_key`` (post-processed, e.g.
    the mean Monte-Carlo dropout softmax). The predicted class is the argmax of those probabilities, and the
    CAM explains that class (computed deterministically, dropout off). Each overlay is saved as
    ``<output_dir>/<image-stem>_<pred>.png`` (``-2``, ``-3``... appended when two images share a stem) and
    listed in ``<output_dir>/index.csv`` (columns ``image``, ``pred``, ``prob``, ``overlay``; ``overlay`` is
    relative to the index file), rewritten after every batch that adds overlays. Existing files of an earlier
    run in ``output_dir`` are not deleted; ``index.csv`` lists this run's. Under ``torch.distributed`` only
    rank 0 writes (its own items).

    Args:
        output_dir: folder of the overlays and ``index.csv`` (created), e.g. ``<inference_dir>/cam``.
        classes: class names in index order, used in file names and captions; class indices otherwise.
        max_images: overlays per run at most; ``<= 0`` means every image. Defaults to 50.
        target_layer: layer explained (see :func:`medfuse.visualize.compute_cam`). Defaults to ``"refine"``.
        method: ``"gradcam"`` or ``"gradcam++"``. Defaults to ``"gradcam"``.
        network: the model; defaults to ``engine.network`` (unwrapped from DataParallel / DDP).
        image_key: item key of the network input ``(C, H, W)``. Defaults to ``"image"``.
        pred_key: item key of the class probabilities. Defaults to ``"pred"``.
        path_key: item key of the image path (written to ``index.csv``, stem of the file name); the
            ``filename_or_obj`` meta of the image otherwise. Defaults to ``"image_path"``.
        mask_key: item key of a mask ``(1, H, W)`` restricting the CAM (e.g. the lung field), when the items carry
            one. Defaults to None (no restriction).
        dilate: dilation of that mask in pixels. Defaults to 0.
        alpha: overlay weight. Defaults to 0.4.
        colormap: matplotlib colormap. Defaults to ``"jet"``.
        index_name: file name of the index. Defaults to ``"index.csv"``.
        calibration: a ``calibration.json`` (path or dictionary): the explained class is the decision
            after temperature scaling and the validated threshold (the ``pred`` of ``predictions.csv``),
            and the caption shows the calibrated probability. ``None``: the arg-max.

    Raises:
        ValueError: for an unknown ``method`` or a negative ``dilate``.
    """

    def __init__(
        self,
        output_dir: str | os.PathLike,
        classes: Optional[Sequence[str]] = None,
        max_images: int = 50,
        target_layer: str = "refine",
        method: str = "gradcam",
        network: Optional[torch.nn.Module] = None,
        image_key: str = "image",
        pred_key: str = "pred",
        path_key: str = "image_path",
        mask_key: Optional[str] = None,
        dilate: int = 0,
        alpha: float = 0.4,
        colormap: str = "jet",
        index_name: str = "index.csv",
        calibration: Any = None,
    ) -> None:
        if str(method).lower() not in ("gradcam", "grad-cam", "gradcam++", "gradcampp", "grad-cam++"):
            raise ValueError(f"method must be 'gradcam' or 'gradcam++', got {method!r}")
        if isinstance(dilate, bool) or int(dilate) != dilate or dilate < 0:
            raise ValueError(f"dilate must be a non-negative integer number of pixels, got {dilate!r}")
        self.output_dir = Path(output_dir)
        self.classes = [str(c) for c in classes] if classes is not None else None
        self.max_images = int(max_images)
        self.target_layer = target_layer
        self.method = method
        self.network = network
        self.image_key = image_key
        self.pred_key = pred_key
        self.path_key = path_key
        self.mask_key = mask_key
        self.dilate = int(dilate)
        self.alpha = float(alpha)
        self.colormap = colormap
        self.index_name = index_name
        from medfuse.evaluation.calibration import load_calibration

        self.calibration = load_calibration(calibration or None, self.classes)
        self.rows: list[dict] = []
        self._names: set[str] = set()

    @property
    def index_path(self) -> Path:
        return self.output_dir / self.index_name

    def attach(self, engine: Engine) -> None:
        engine.add_event_handler(Events.EPOCH_STARTED, self.reset)
        engine.add_event_handler(Events.ITERATION_COMPLETED, self)
        engine.add_event_handler(Events.EPOCH_COMPLETED, self.write_index)

    def reset(self, engine: Optional[Engine] = None) -> None:
        self.rows = []
        self._names = set()

    def _remaining(self) -> Optional[int]:
        return None if self.max_images <= 0 else max(self.max_images - len(self.rows), 0)

    def _items(self, engine: Engine) -> list[dict]:
        """Per-item ``{"image", "probs", "path", "mask"}`` of the engine's last iteration."""
        outputs, batches = engine.state.output, engine.state.batch
        if isinstance(outputs, Mapping):  # not decollated: one dictionary of batch tensors
            images, probs = outputs.get(self.image_key), outputs.get(self.pred_key)
            if images is None or probs is None:
                raise ValueError(f"CAMWriter needs '{self.image_key}' and '{self.pred_key}' in the engine output")
            n = len(images)
            paths = _value(batches, self.path_key) if isinstance(batches, Mapping) else None
            masks = outputs.get(self.mask_key) if self.mask_key else None
            if masks is None and self.mask_key and isinstance(batches, Mapping):
                masks = batches.get(self.mask_key)
            return [
                {
                    "image": images[i],
                    "probs": probs[i],
                    "path": paths[i] if isinstance(paths, (list, tuple)) and i < len(paths) else None,
                    "mask": masks[i] if masks is not None else None,
                    "meta_src": images[i],
                }
                for i in range(n)
            ]
        items = []
        for i, out in enumerate(outputs):
            batch = batches[i] if isinstance(batches, (list, tuple)) and i < len(batches) else {}
            image = _value(out, self.image_key)
            if image is None:
                image = _value(batch, self.image_key)
            probs = _value(out, self.pred_key)
            if image is None or probs is None:
                raise ValueError(f"item {i} lacks '{self.image_key}' or '{self.pred_key}'; CAMWriter needs both")
            path = _value(out, self.path_key)
            path = path if path is not None else _value(batch, self.path_key)
            mask = None
            if self.mask_key:
                mask = _value(out, self.mask_key)
                mask = mask if mask is not None else _value(batch, self.mask_key)
            items.append({"image": image, "probs": probs, "path": path, "mask": mask, "meta_src": image})
        return items

    @staticmethod
    def _path_of(item: dict) -> str:
        if item["path"] is not None:
            return str(item["path"])
        meta = getattr(item["meta_src"], "meta", None)
        name = meta.get("filename_or_obj") if isinstance(meta, dict) else None
        return str(name) if name else ""

    def _class_name(self, index: int) -> str:
        if self.classes is not None and 0 <= index < len(self.classes):
            return self.classes[index]
        return str(index)

    def _file_name(self, path: str, pred_name: str) -> str:
        stem = safe_file_name(image_stem(path)) if path else f"image{len(self.rows):05d}"
        base = f"{stem}_{safe_file_name(pred_name)}"
        name, k = f"{base}.png", 1
        while name in self._names:
            k += 1
            name = f"{base}-{k}.png"
        self._names.add(name)
        return name

    def _network(self, engine: Engine) -> torch.nn.Module:
        net = self.network if self.network is not None else getattr(engine, "network", None)
        if net is None:
            raise ValueError("CAMWriter needs a network: pass network=... or attach it to an engine with .network")
        return unwrap_module(net)

    def __call__(self, engine: Engine) -> None:
        """Compute and write the overlays of the engine's last batch (up to the remaining ``max_images``)."""
        if not is_main_process():
            return
        remaining = self._remaining()
        if remaining == 0:
            return
        items = self._items(engine)
        if remaining is not None:
            items = items[:remaining]
        if not items:
            return
        images = torch.stack([torch.as_tensor(it["image"]).detach() for it in items])
        probs = [torch.as_tensor(it["probs"]).detach().float().cpu().reshape(-1) for it in items]
        if self.calibration is not None:
            from medfuse.evaluation.calibration import apply_calibration

            scaled, decided = apply_calibration(torch.stack(probs).numpy(), self.calibration)
            probs = [torch.as_tensor(p, dtype=torch.float32) for p in scaled]
            preds = [int(d) for d in decided]
        else:
            preds = [int(p.argmax()) for p in probs]
        masks = None
        if self.mask_key and any(it["mask"] is not None for it in items):
            # an item without a mask gets a full one, which leaves its CAM unrestricted
            full = torch.ones(images.shape[2:])
            masks = torch.stack(
                [full if it["mask"] is None else torch.as_tensor(it["mask"]).detach().float().cpu().reshape(full.shape)
                 for it in items]
            )
            if any(it["mask"] is None for it in items):
                logger.warning("CAMWriter: some items lack '%s'; their CAMs are not restricted", self.mask_key)
        cams = compute_cam(
            self._network(engine),
            images,
            target_layer=self.target_layer,
            class_index=preds,
            method=self.method,
            mask=masks,
            dilate=self.dilate,
        ).cpu()
        for item, image, cam, p, pred in zip(items, images, cams, probs, preds):
            path = self._path_of(item)
            pred_name = self._class_name(pred)
            name = self._file_name(path, pred_name)
            prob = float(p[pred])
            caption = f"{image_stem(path) or name}: {pred_name} (p = {prob:.3f})"
            save_overlay(self.output_dir / name, display_image(image), cam[0], title=caption, alpha=self.alpha,
                         colormap=self.colormap)
            self.rows.append({"image": path, "pred": pred_name, "prob": round(prob, 6), "overlay": name})
        self.write_index()

    def write_index(self, engine: Optional[Engine] = None) -> Optional[Path]:
        """(Re)write ``index.csv`` with this run's rows (header only when there are none)."""
        if not is_main_process():
            return None
        atomic_write_csv(self.index_path, self.rows, ["image", "pred", "prob", "overlay"])
        if engine is not None:
            logger.info("wrote %d CAM overlays to %s", len(self.rows), self.output_dir)
        return self.index_path
