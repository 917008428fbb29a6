# Copyright (c) medfuse contributors
# Licensed under the Apache License, Version 2.0
"""Class activation maps confined to the predicted lung field (method 4 of the design notes).

For a network that segments the lungs and classifies the image (:class:`~medfuse.networks.nets.MultiOutputUNet`):

* :func:`lung_masked_cam`: Grad-CAM (or Grad-CAM++) on a named encoder/bottleneck layer for the predicted (or a
  chosen) class, and the same map multiplied by the network's own lung mask (foreground probability thresholded,
  then dilated by a few pixels) and renormalised; both are returned, with the mask and the class probabilities;
* :func:`cam_mass_inside`: the fraction of a map's mass inside a region (e.g. the reference lung mask), the
  number that says how much of an explanation falls on the lungs;
* :func:`save_lung_cam_overlay`: a PNG with the image and lung outline, the unmasked CAM and the lung-masked CAM
  side by side.

The CAM itself is :func:`medfuse.visualize.cam.compute_cam` (per-image class scores, model state restored) and the
restriction is :func:`medfuse.visualize.cam.restrict_cam` / :func:`~medfuse.visualize.cam.dilate_mask`; this module
only adds the segmentation branch that provides the mask.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Optional, Sequence

import numpy as np
import torch
import torch.nn as nn
from monai.utils import convert_to_tensor

from medfuse.utils.distributed import unwrap_module
from medfuse.visualize.cam import _save_panels, compute_cam, dilate_mask, overlay_cam, restrict_cam

__all__ = [
    "ClassLogitsView",
    "LungCAM",
    "lung_masked_cam",
    "predicted_lung_mask",
    "cam_mass_inside",
    "save_lung_cam_overlay",
]


class ClassLogitsView(nn.Module):
    """A view of a multi-output network that returns only its class logits (for Grad-CAM).

    The wrapped network is the submodule ``net``, so its layers are named ``net.<name>``. The network must have
    ``forward_all(x) -> (seg_logits, class_logits)`` (as :class:`~medfuse.networks.nets.MultiOutputUNet`), or
    return that tuple from ``forward``.

    Args:
        net: the multi-output network (unwrapped from DataParallel / DDP).
    """

    def __init__(self, net: nn.Module) -> None:
        super().__init__()
        self.net = net
        n = getattr(net, "num_classes", None)
        if isinstance(n, int):
            self.num_classes = n

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if hasattr(self.net, "forward_all"):
            return self.net.forward_all(x)[1]
        out = self.net(x)
        if not isinstance(out, (tuple, list)) or len(out) != 2:
            raise ValueError("the network must return (seg_logits, class_logits) or have forward_all()")
        return out[1]


@dataclass
class LungCAM:
    """What :func:`lung_masked_cam` returns (all ``(B, ...)`` tensors on the images' device).

    Attributes:
        cam: unmasked map ``(B, 1, H, W)`` in [0, 1].
        masked_cam: the map times the dilated lung mask, renormalised ``(B, 1, H, W)`` in [0, 1] (0 outside).
        lung_mask: the (undilated) boolean lung mask used ``(B, 1, H, W)``.
        region: the dilated mask the CAM was restricted to ``(B, 1, H, W)``.
        class_index: the class explained per image ``(B,)``.
        probs: class probabilities ``(B, K)``.
        seg_probs: segmentation probabilities ``(B, C, H, W)`` (softmax).
    """

    cam: torch.Tensor
    masked_cam: torch.Tensor
    lung_mask: torch.Tensor
    region: torch.Tensor
    class_index: torch.Tensor
    probs: torch.Tensor
    seg_probs: torch.Tensor


def _region(mask: Any, batch: int, spatial: Sequence[int]) -> torch.Tensor:
    """``mask`` ((H, W), (B, H, W) or (B, 1, H, W)) as a boolean ``(B, 1, H, W)`` tensor, binarised at 0.5."""
    m = convert_to_tensor(mask, track_meta=False).float()
    if m.ndim == 2:
        m = m[None, None]
    elif m.ndim == 3:
        m = m[:, None]
    if m.ndim != 4 or m.shape[1] != 1 or tuple(m.shape[2:]) != tuple(spatial) or m.shape[0] not in (1, batch):
        raise ValueError(
            f"mask must be (H, W), (B, H, W) or (B, 1, H, W) matching {batch} image(s) of size {tuple(spatial)}, "
            f"got shape {tuple(convert_to_tensor(mask, track_meta=False).shape)}"
        )
    return (m > 0.5).expand(batch, 1, *spatial)


def predicted_lung_mask(seg_probs: torch.Tensor, threshold: float = 0.5, classes: Optional[Sequence[int]] = None) -> torch.Tensor:
    """Boolean ``(B, 1, H, W)`` lung mask from segmentation probabilities ``(B, C, H, W)``.

    The lung probability is the sum of the probabilities of ``classes`` (default: every channel but the background,
    channel 0); pixels above ``threshold`` are lung.

    Raises:
        ValueError: a threshold outside (0, 1), classes out of range, or input that is not 4-D.
    """
    if seg_probs.ndim != 4 or seg_probs.shape[1] < 2:
        raise ValueError(f"seg_probs must be (B, C>=2, H, W), got shape {tuple(seg_probs.shape)}")
    if not 0.0 < float(threshold) < 1.0:
        raise ValueError(f"threshold must be in (0, 1), got {threshold}")
    chans = list(range(1, seg_probs.shape[1])) if classes is None else [int(c) for c in classes]
    if not chans or min(chans) < 0 or max(chans) >= seg_probs.shape[1]:
        raise ValueError(f"lung classes {chans} out of range for {seg_probs.shape[1]} segmentation channels")
    return seg_probs[:, chans].sum(dim=1, keepdim=True) > float(threshold)


def lung_masked_cam(
    model: nn.Module,
    images: torch.Tensor,
    target_layer: Optional[str] = None,
    class_index: Any = None,
    method: str = "gradcam",
    threshold: float = 0.5,
    dilate: int = 3,
    lung_classes: Optional[Sequence[int]] = None,
    mask: Any = None,
) -> LungCAM:
    """Grad-CAM of a multi-output network, unmasked and confined to its predicted lung field.

    The network runs once without gradients (eval mode) for the segmentation and class probabilities; the lung
    mask is the foreground probability above ``threshold``. Grad-CAM explains ``class_index`` (default: each
    image's predicted class) on ``target_layer``; the masked map is ``restrict_cam(cam, lung_mask, dilate)``: 0
    outside the mask dilated by ``dilate`` pixels, maximum 1 inside (all 0 when the network finds no lung or the
    map is 0 on it). The model's parameters, gradients and train/eval modes are as before afterwards.

    Args:
        model: a :class:`~medfuse.networks.nets.MultiOutputUNet` (any ``output`` mode) or a network with
            ``forward_all`` returning ``(seg_logits, class_logits)``; DataParallel / DDP are unwrapped.
        images: ``(B, C, H, W)``.
        target_layer: layer name of ``model`` (e.g. ``"unet.down_4"``, the BasicUNet bottleneck, or
            ``"unet.down_3"`` for a finer stride-8 map); defaults to ``model.cam_layer`` (the contract of every
            medfuse network), or a legacy ``model.cam_target_layer`` of a user network that has no ``cam_layer``.
        class_index: None (predicted class), one int, or one int per image.
        method: ``"gradcam"`` or ``"gradcam++"``. Defaults to ``"gradcam"``.
        threshold: lung probability threshold. Defaults to 0.5.
        dilate: dilation of the lung mask in pixels before the restriction. Defaults to 3.
        lung_classes: segmentation channels that are lung (default all but channel 0).
        mask: use this region ``(B, 1, H, W)`` / ``(B, H, W)`` / ``(H, W)`` instead of the predicted mask (for
            example a reference mask); the prediction is still returned in ``seg_probs``.

    Returns:
        :class:`LungCAM`.

    Raises:
        ValueError: an unknown layer or method, bad ``threshold``/``dilate``/``class_index``.

    Examples::

        >>> res = lung_masked_cam(net, x)                       # predicted class, bottleneck layer
        >>> res.masked_cam[(~res.region)].abs().max()           # tensor(0.)
        >>> inside = cam_mass_inside(res.cam, reference_masks)  # how much of the plain CAM is on the lungs
    """
    net = unwrap_module(model)
    if target_layer is None:
        target_layer = getattr(net, "cam_layer", None)
        if not isinstance(target_layer, str):
            target_layer = getattr(net, "cam_target_layer", None)  # legacy name, still accepted
        if not isinstance(target_layer, str):
            raise ValueError("give target_layer: the model has no 'cam_layer' attribute")
    if isinstance(dilate, bool) or int(dilate) != dilate or dilate < 0:
        raise ValueError(f"dilate must be a non-negative integer number of pixels, got {dilate!r}")
    out_device = images.device if isinstance(images, torch.Tensor) else torch.device("cpu")
    view = ClassLogitsView(net)
    x = convert_to_tensor(images, track_meta=False).detach().float()
    if x.ndim != 4:
        raise ValueError(f"images must be (B, C, H, W), got shape {tuple(x.shape)}")
    device = next(iter(net.parameters())).device
    modes = [(m, m.training) for m in net.modules()]
    try:
        net.eval()
        with torch.no_grad(), torch.autocast(device_type=device.type, enabled=False):
            if hasattr(net, "forward_all"):
                seg, cls = net.forward_all(x.to(device))
            else:
                seg, cls = net(x.to(device))
    finally:
        for m, mode in modes:
            m.training = mode
    seg_probs = torch.softmax(seg.float(), dim=1)
    probs = torch.softmax(cls.float(), dim=1)
    if class_index is None:
        idx = probs.argmax(dim=1)
    else:
        idx = torch.as_tensor(np.asarray(class_index) if not isinstance(class_index, torch.Tensor) else class_index)
        idx = idx.long().reshape(-1).expand(x.shape[0]).clone() if idx.numel() == 1 else idx.long().reshape(-1)
    cam = compute_cam(view, x.to(device), target_layer=f"net.{target_layer}", class_index=idx.cpu(), method=method)
    if mask is None:
        lung = predicted_lung_mask(seg_probs, threshold, lung_classes)
    else:
        lung = _region(mask, cam.shape[0], cam.shape[2:]).to(cam.device)
    region = dilate_mask(lung.to(cam.device), int(dilate))
    masked = restrict_cam(cam, region)
    return LungCAM(
        cam=cam.to(out_device),
        masked_cam=masked.to(out_device),
        lung_mask=lung.to(out_device),
        region=region.to(out_device),
        class_index=idx.to(out_device),
        probs=probs.to(out_device),
        seg_probs=seg_probs.to(out_device),
    )


def cam_mass_inside(cam: torch.Tensor, region: Any) -> torch.Tensor:
    """Fraction of each map's mass inside ``region``: ``sum(cam * region) / sum(cam)`` per image.

    Args:
        cam: non-negative maps ``(B, 1, H, W)``.
        region: ``(B, 1, H, W)``, ``(B, H, W)`` or ``(H, W)``; binarised at 0.5.

    Returns:
        float ``(B,)`` in [0, 1]; ``nan`` for a map that is 0 everywhere (no mass to place).

    Raises:
        ValueError: shapes that do not fit, or negative map values.
    """
    if cam.ndim != 4 or cam.shape[1] != 1:
        raise ValueError(f"cam must be (B, 1, H, W), got shape {tuple(cam.shape)}")
    c = cam.detach().float()
    if bool((c < 0).any()):
        raise ValueError("cam must be non-negative (a Grad-CAM after ReLU, or a normalised map)")
    inside = _region(region, c.shape[0], c.shape[2:]).to(c.device)
    total = c.flatten(1).sum(1)
    within = (c * inside.to(c.device)).flatten(1).sum(1)
    return torch.where(total > 0, within / torch.where(total > 0, total, torch.ones_like(total)),
                       torch.full_like(total, float("nan")))


def _np2d(a: Any) -> np.ndarray:
    arr = a.detach().float().cpu().numpy() if isinstance(a, torch.Tensor) else np.asarray(a, dtype=np.float32)
    while arr.ndim > 2 and arr.shape[0] == 1:
        arr = arr[0]
    if arr.ndim != 2:
        raise ValueError(f"expected a 2-D (H, W) array, got shape {arr.shape}")
    return arr.astype(np.float32)


def save_lung_cam_overlay(
    path: str | os.PathLike,
    image: Any,
    cam: Any,
    masked_cam: Any,
    lung_mask: Any = None,
    title: Optional[str] = None,
    alpha: float = 0.4,
    colormap: str = "jet",
    panel_inches: float = 2.6,
    dpi: int = 100,
    inside_fractions: Optional[tuple[float, float]] = None,
) -> Path:
    """Write a PNG with three panels: image (lung outline in green), unmasked CAM, lung-masked CAM.

    Args:
        path: output ``.png`` (folder created).
        image: grey ``(H, W)`` in [0, 1].
        cam, masked_cam: ``(H, W)`` maps in [0, 1].
        lung_mask: ``(H, W)`` mask drawn as an outline on the first panel. Defaults to None.
        title: caption above the panels.
        alpha, colormap: overlay settings (:func:`medfuse.visualize.cam.overlay_cam`).
        panel_inches, dpi: size of each panel and resolution.
        inside_fractions: ``(unmasked, masked)`` CAM mass inside the lungs, printed under the panels.

    Returns:
        the path written.

    Raises:
        ValueError: sizes that differ.
    """
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    img = np.clip(_np2d(image), 0.0, 1.0)
    panels = [overlay_cam(img, _np2d(cam), alpha=alpha, colormap=colormap),
              overlay_cam(img, _np2d(masked_cam), alpha=alpha, colormap=colormap)]
    h, w = img.shape
    fig = Figure(figsize=(3 * panel_inches, panel_inches * h / max(w, 1) + (0.7 if title else 0.4)), dpi=int(dpi))
    FigureCanvasAgg(fig)
    axes = fig.subplots(1, 3)
    axes[0].imshow(img, cmap="gray", vmin=0.0, vmax=1.0, interpolation="nearest")
    if lung_mask is not None:
        m = _np2d(lung_mask)
        if m.shape != img.shape:
            raise ValueError(f"lung_mask {m.shape} and image {img.shape} differ in size")
        axes[0].contour(m > 0.5, levels=[0.5], colors="lime", linewidths=0.8)
    names = ["image + predicted lungs", "Grad-CAM", "Grad-CAM in the lungs"]
    if inside_fractions is not None:
        names[1] += f"\n{100 * inside_fractions[0]:.0f}% inside lungs"
        names[2] += f"\n{100 * inside_fractions[1]:.0f}% inside lungs"
    axes[0].set_title(names[0], fontsize=8)
    for ax, rgb, name in zip(axes[1:], panels, names[1:]):
        ax.imshow(rgb, interpolation="nearest")
        ax.set_title(name, fontsize=8)
    return _save_panels(fig, axes, path, title, fontsize=9)
