# Copyright (c) medfuse contributors
# Licensed under the Apache License, Version 2.0
"""Glue of the ``cxr_gsa_classifier`` bundle: the global spatial attention classifier (method 5) and its map files.

* :func:`build_gsa_classifier`: ``GlobalSpatialAttentionNet`` (``gsa=True``) or, for the ablation arm
  (``gsa=False``), the same classifier built by the same name without the block (no ``gsa.*`` weights; with
  the same seed it starts from the same weights as the ``net.*`` of the GSA arm);
* :func:`build_gsa_loss`: ``GlobalSpatialAttentionLoss`` around weighted cross-entropy, or the cross-entropy
  alone without a block;
* :func:`image_basis_from_items`: the ``(K, h, w)`` basis of ``gsa_mode: image_basis`` from training images;
* :func:`write_gsa_maps`: ``gsa_map.npy`` / ``gsa_map.png`` / ``gsa_overlay.png`` (+ ``gsa_collapsed`` in
  ``run_info.json``) for a run or an evaluation folder;
* :func:`gsa_map_mean`: mean of the map, the ``gsa_map_mean`` column of ``log.csv``.
"""

from __future__ import annotations

import logging
import math
import os
from pathlib import Path
from typing import Any, Mapping, Optional, Sequence

import numpy as np
import torch

from medfuse.errors import DataError
from medfuse.networks.blocks.global_spatial_attention import GSA_MODES, GlobalSpatialAttention
from medfuse.networks.nets.global_spatial_attention_net import GSA_NETWORKS, GlobalSpatialAttentionNet
from medfuse.utils.distributed import is_main_process, unwrap_module
from medfuse.workflows.runs import update_run_info

__all__ = [
    "COLLAPSE_HIGH",
    "COLLAPSE_LOW",
    "build_gsa_classifier",
    "build_gsa_loss",
    "gsa_block",
    "optimizer_params",
    "gsa_map_mean",
    "add_log_columns",
    "image_basis_from_items",
    "log_columns",
    "map_collapsed",
    "write_gsa_maps",
]

logger = logging.getLogger(__name__)

#: a map whose minimum is above COLLAPSE_HIGH (all ones: no attention) or whose maximum is below COLLAPSE_LOW
#: (all zeros: the image is erased) is reported as collapsed
COLLAPSE_HIGH = 0.98
COLLAPSE_LOW = 0.02


def _pair(map_size: Any) -> tuple[int, int]:
    size = [int(map_size)] * 2 if isinstance(map_size, (int, np.integer)) else [int(s) for s in map_size]
    if len(size) != 2:
        raise ValueError(f"gsa_map_size must be [h, w], got {map_size!r}")
    return size[0], size[1]


def build_gsa_classifier(
    classifier: str = "resnet18",
    in_channels: int = 1,
    num_classes: int = 2,
    gsa: Any = True,
    at: str = "input",
    map_size: Any = (16, 16),
    mode: str = "logit_map",
    basis: Any = None,
    basis_k: int = 16,
    init_logit: float = 3.0,
    net_kwargs: Optional[Mapping[str, Any]] = None,
) -> torch.nn.Module:
    """The bundle's network: ``classifier`` with a global spatial attention map, or without (``gsa`` false).

    Args:
        classifier: one of :data:`~medfuse.networks.nets.GSA_NETWORKS` (``"resnet18"`` ...).
        in_channels: image channels.
        num_classes: number of classes.
        gsa: use the block (a bool, or ``"true"`` / ``"false"`` from the command line). False builds the plain
            classifier (the ablation arm): ``classifier`` made by the same constructor, without ``gsa.*``
            weights, and the other ``gsa_*`` arguments are ignored.
        at: ``"input"`` or a stage of the classifier (``"layer2"`` ...).
        map_size: ``[h, w]`` of the map.
        mode: ``"logit_map"`` or ``"image_basis"``.
        basis: ``(K, h, w)`` basis for ``"image_basis"`` (see :func:`image_basis_from_items`); None builds a zero
            placeholder of ``basis_k`` images, for a network whose weights (the basis buffer included) are then
            loaded from a checkpoint (evaluation, inference, export).
        basis_k: K of the placeholder basis.
        init_logit: the map's initial logit.
        net_kwargs: more constructor arguments of the classifier.

    Raises:
        ValueError: an unknown ``classifier``, ``at`` or ``mode``; the message, one line, lists the valid values.
    """
    from medfuse.workflows.engine import flag

    if classifier not in GSA_NETWORKS:
        raise ValueError(f"unknown classifier {classifier!r}: valid values are {', '.join(GSA_NETWORKS)}")
    if mode not in GSA_MODES:
        raise ValueError(f"unknown gsa_mode {mode!r}: valid values are {', '.join(GSA_MODES)}")
    size = _pair(map_size)
    if mode == "image_basis" and basis is None:
        basis = torch.zeros(int(basis_k), *size)
    if mode == "logit_map":
        basis = None
    try:
        model = GlobalSpatialAttentionNet(
            classifier, in_channels=in_channels, num_classes=num_classes, at="input", map_size=size, mode=mode,
            basis=basis, init_logit=init_logit, net_kwargs=net_kwargs,
        )
    except ValueError as err:
        raise ValueError(f"classifier {classifier!r}: {err}") from err
    if not flag(gsa, "gsa"):
        return model.net  # the same classifier, built by the same name: no block, no gsa.* keys
    if at != "input":
        stages = dict(model.net.named_modules())
        if not isinstance(at, str) or at not in stages or at == "":
            valid = ", ".join(("input",) + tuple(model.stages))
            raise ValueError(f"unknown gsa_at {at!r} for classifier {classifier!r}: valid values are {valid}")
        # rebuild with the block at the stage, from the same classifier weights
        model = GlobalSpatialAttentionNet(
            model.net, at=at, map_size=size, mode=mode, basis=basis, init_logit=init_logit,
            in_channels=in_channels, num_classes=num_classes,
        )
    return model


def gsa_block(network: Any) -> Optional[GlobalSpatialAttention]:
    """The network's :class:`GlobalSpatialAttention` block (through DDP / DataParallel), or None."""
    if network is None:
        return None
    net = unwrap_module(network)
    if isinstance(net, GlobalSpatialAttention):
        return net
    block = getattr(net, "gsa", None)
    return block if isinstance(block, GlobalSpatialAttention) else None


def gsa_map_mean(network: Any) -> Optional[float]:
    """Mean of the network's map at ``map_size`` (None without a block): the ``gsa_map_mean`` log column."""
    block = gsa_block(network)
    if block is None:
        return None
    with torch.no_grad():
        return float(block.get_map().mean())


def log_columns(network: Any) -> dict:
    """``{"gsa_map_mean": callable(engine)}``: the ``extra_columns`` of the bundle's ``EpochLogger``."""

    def _map_mean(engine: Any = None) -> Optional[float]:
        return gsa_map_mean(network)

    return {"gsa_map_mean": _map_mean}


def add_log_columns(handlers: Sequence[Any], network: Any) -> int:
    """Add :func:`log_columns` to every ``EpochLogger`` among ``handlers`` (the trainer's); returns how many.

    Called from the bundle's ``initialize`` (``$medfuse.workflows.gsa.add_log_columns(@train#handlers, @network)``),
    so the bundle adds its ``gsa_map_mean`` column without restating the base's handler list.
    """
    from medfuse.workflows.handlers import EpochLogger

    loggers = [h for h in handlers if isinstance(h, EpochLogger)]
    for h in loggers:
        h.extra_columns.update(log_columns(network))
    return len(loggers)


def optimizer_params(network: Any, learning_rate: float, gsa_lr_scale: float = 1.0) -> Any:
    """What the bundle's optimizer trains: ``network.parameters()``, or, with ``gsa_lr_scale`` != 1 and a block,
    two parameter groups: the classifier at ``learning_rate`` and the map's parameters (``z``, or ``w`` and ``b``)
    at ``learning_rate * gsa_lr_scale`` without weight decay.

    Why: one map is shared by every image, so it gets one small Adam step per batch; at the classifier's learning
    rate it can move at most about ``learning_rate`` logits per step (1e-3 x 580 steps = 0.6 logits in 20 epochs
    of 451 images), and in the ablations it stayed within 0.94-0.96 of its start. Weight decay would pull ``z``
    toward 0 (M toward 0.5), a prior the regulariser already sets explicitly. A learning-rate scheduler scales both
    groups alike.

    Raises:
        ValueError: ``gsa_lr_scale`` not a positive number.
    """
    scale = float(gsa_lr_scale)
    if not math.isfinite(scale) or scale <= 0:
        raise ValueError(f"gsa_lr_scale must be a positive number, got {gsa_lr_scale!r}")
    block = gsa_block(network)
    if block is None or scale == 1.0:
        return network.parameters()
    own = {id(q) for q in block.parameters()}
    return [{"params": [q for q in network.parameters() if id(q) not in own]},
            {"params": list(block.parameters()), "lr": float(learning_rate) * scale, "weight_decay": 0.0}]


def build_gsa_loss(
    network: Any,
    class_weights: Optional[torch.Tensor] = None,
    reg_weight: float = 0.1,
    target_fraction: float = 0.5,
    entropy_weight: float = 0.01,
) -> torch.nn.Module:
    """Weighted cross-entropy, plus the map's regularisation when ``network`` has a block.

    Returns:
        :class:`~medfuse.networks.losses.GlobalSpatialAttentionLoss` around ``CrossEntropyLoss(weight=class_weights)``
        for a GSA network; the cross-entropy alone for the plain classifier (the ablation arm).
    """
    from medfuse.networks.losses import GlobalSpatialAttentionLoss

    base = torch.nn.CrossEntropyLoss(weight=class_weights)
    block = gsa_block(network)
    if block is None:
        return base
    return GlobalSpatialAttentionLoss(
        block, base=base, reg_weight=reg_weight, target_fraction=target_fraction, entropy_weight=entropy_weight
    )


def _load_images(items: Sequence[Mapping], image_size: int, in_channels: int = 1) -> list[torch.Tensor]:
    from medfuse.transforms.presets import cxr_eval_transforms

    tf = cxr_eval_transforms(keys=["image"], image_size=int(image_size), in_channels=int(in_channels))
    # plain tensors, not MONAI MetaTensors: a basis built from them is saved in the checkpoint
    return [torch.from_numpy(np.asarray(tf(dict(it))["image"], dtype=np.float32)) for it in items]


def image_basis_from_items(
    items: Sequence[Mapping],
    k: int = 16,
    map_size: Any = (16, 16),
    limit: int = 2000,
    image_size: int = 224,
    in_channels: int = 1,
    seed: int = 0,
) -> torch.Tensor:
    """The ``(k, h, w)`` basis of ``gsa_mode: image_basis`` from up to ``limit`` training images.

    The images (``items``' ``image`` paths, loaded and letterboxed to ``image_size`` as for validation) go to
    :meth:`GlobalSpatialAttention.basis_from_images`. With more than ``limit`` items a seeded random subset is
    used.

    Raises:
        DataError: fewer images than ``k`` (the message names the count).
    """
    items = list(items)
    limit = int(limit)
    if limit > 0 and len(items) > limit:
        pick = np.sort(np.random.default_rng(int(seed)).choice(len(items), size=limit, replace=False))
        items = [items[i] for i in pick]
    if len(items) < int(k):
        raise DataError(
            f"gsa_mode 'image_basis' needs at least gsa_basis_k = {int(k)} training images for its basis, "
            f"got {len(items)}; lower gsa_basis_k or use gsa_mode 'logit_map'"
        )
    images = _load_images(items, image_size, in_channels)
    return GlobalSpatialAttention.basis_from_images(images, k=int(k), map_size=_pair(map_size))


def map_collapsed(m: np.ndarray) -> bool:
    """True when the map is (almost) all ones or all zeros."""
    return bool(float(np.min(m)) > COLLAPSE_HIGH or float(np.max(m)) < COLLAPSE_LOW)


def _mean_image(data: Any, image_size: int, image_key: str = "image", limit: int = 0) -> Optional[np.ndarray]:
    """Mean grey image ``(image_size, image_size)`` of a dataloader's batches, or of a list of items / images."""
    import torch.nn.functional as F

    total, n = None, 0
    items = isinstance(data, (list, tuple)) and data and isinstance(data[0], Mapping)
    if items and isinstance(data[0].get(image_key), str):
        data = [torch.stack(_load_images(data[i:i + 16], image_size)) for i in range(0, len(data), 16)]
    for batch in data if data is not None else []:
        x = batch[image_key] if isinstance(batch, Mapping) else batch
        x = torch.as_tensor(x).detach().float().cpu()
        x = x[None] if x.ndim == 3 else x
        x = x.mean(dim=1, keepdim=True)
        if tuple(x.shape[-2:]) != (image_size, image_size):
            x = F.interpolate(x, size=(image_size, image_size), mode="bilinear", align_corners=False)
        s = x.sum(dim=0)[0]
        total = s if total is None else total + s
        n += x.shape[0]
        if limit and n >= limit:
            break
    return None if total is None or n == 0 else (total / n).numpy()


def write_gsa_maps(
    out_dir: str | os.PathLike,
    network: Any,
    data: Any = None,
    image_size: int = 224,
    checkpoint: Optional[str | os.PathLike] = None,
    device: Any = None,
) -> Optional[dict]:
    """Write the learned map of ``network`` into ``out_dir``; nothing for a network without a block.

    Files: ``gsa_map.npy`` (float32, at ``map_size``), ``gsa_map.png`` (the map at ``image_size``, grey, 0-255),
    ``gsa_overlay.png`` (the map over the mean image of ``data``: a dataloader, or items with image paths; the
    map alone when ``data`` is None). ``out_dir/run_info.json`` gets ``gsa_map_mean``, ``gsa_map_min``,
    ``gsa_map_max`` and ``gsa_collapsed`` (min > 0.98 or max < 0.02, also logged as a warning). Only the main
    process writes.

    Args:
        out_dir: the run folder or the evaluation folder.
        network: the network (wrapped or not).
        data: validation / test dataloader or items, for the overlay background.
        image_size: side of the PNG files (the map is resized, so any evaluation size works).
        checkpoint: weights to load first (``model.pt``), when given and present.
        device: where to load the checkpoint to.

    Returns:
        ``{"map_mean", "map_min", "map_max", "collapsed", "files"}``, or None (no block, or not the main process).
    """
    block = gsa_block(network)
    if block is None or not is_main_process():
        return None
    if checkpoint and Path(checkpoint).is_file():
        state = torch.load(checkpoint, map_location=device or "cpu", weights_only=True)
        unwrap_module(network).load_state_dict(state)
    from PIL import Image

    from medfuse.visualize import overlay_cam

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    size = int(image_size)
    with torch.no_grad():
        small = block.get_map().detach().float().cpu().numpy()[0, 0].astype(np.float32)
        big = block.get_map([size, size]).detach().float().cpu().numpy()[0, 0]
    np.save(out / "gsa_map.npy", small)
    Image.fromarray(np.clip(np.round(big * 255.0), 0, 255).astype(np.uint8)).save(out / "gsa_map.png")
    mean_image = _mean_image(data, size)
    background = mean_image if mean_image is not None else np.zeros((size, size), np.float32)
    lo, hi = float(background.min()), float(background.max())
    background = (background - lo) / (hi - lo) if hi > lo else np.zeros_like(background)
    Image.fromarray(overlay_cam(background, big, alpha=0.5)).save(out / "gsa_overlay.png")
    collapsed = map_collapsed(small)
    result = {
        "map_mean": float(small.mean()),
        "map_min": float(small.min()),
        "map_max": float(small.max()),
        "collapsed": collapsed,
        "files": [str(out / n) for n in ("gsa_map.npy", "gsa_map.png", "gsa_overlay.png")],
    }
    if collapsed:
        logger.warning(
            "the global spatial attention map collapsed (min %.4f, max %.4f): it is all %s; raise gsa_reg_weight "
            "or check gsa_target_fraction", result["map_min"], result["map_max"],
            "ones (no attention)" if result["map_min"] > COLLAPSE_HIGH else "zeros",
        )
    update_run_info(out, {"gsa_map_mean": result["map_mean"], "gsa_map_min": result["map_min"],
                           "gsa_map_max": result["map_max"], "gsa_collapsed": collapsed})
    print(f"global spatial attention map written to {out / 'gsa_map.png'} (mean {result['map_mean']:.3f}"
          f"{', collapsed' if collapsed else ''})")
    return result
