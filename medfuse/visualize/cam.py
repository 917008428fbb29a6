# Copyright (c) medfuse contributors
# Licensed under the Apache License, Version 2.0
"""Class activation maps over ``monai.visualize`` (Grad-CAM, Grad-CAM++), masks and overlays.

* :func:`compute_cam`: ``(B, 1, H, W)`` maps in [0, 1] for a batch, per image exactly as if each image had
  been run alone, optionally restricted to a (dilated) mask;
* :func:`restrict_cam`, :func:`dilate_mask`: the mask restriction on its own;
* :func:`overlay_cam`: a CAM blended over a grey image as ``uint8`` RGB;
* :func:`display_image`: a network input ``(C, H, W)`` as the grey ``(H, W)`` image shown under a CAM;
* :func:`save_overlay`: a PNG with the image and its overlay side by side, with a caption.

Why not ``monai.visualize.GradCAM`` as it is (MONAI 1.6.1):

* its class score ``logits[:, class_idx]`` with one predicted class per image is a ``(B, B)`` matrix, so for
  ``B > 1`` every image's map mixes the gradients of the classes predicted for the *other* images of the batch;
* ``GradCAMpp`` multiplies ``exp(score)`` (shape ``(B,)``) into gradients ``(B, C, h, w)``, which broadcasts
  over the *last* spatial dimension: an error for ``B > 1``, or silently wrong maps when ``w == B``;
* its default post-processing maps the maximum to 0 and the minimum to 1;
* its hooks are never removed, and it calls ``model.zero_grad()`` (dropping gradients a training loop holds).

Here the hooks are a removable :class:`~monai.visualize.class_activation_maps.ModelWithHooks` whose class
score picks each image's own class (``(B,)``), Grad-CAM++ runs one image at a time, maps are normalised per
image with the maximum at 1, and the model's parameters, gradients, ``requires_grad`` flags and train/eval
modes are exactly as they were afterwards.

matplotlib is imported inside the plotting functions and only through its object-oriented API (``Figure`` +
the Agg canvas): importing this module neither imports matplotlib nor touches its global backend.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Optional, Union

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F
from monai.utils import convert_to_tensor
from monai.visualize import GradCAM, GradCAMpp
from monai.visualize.class_activation_maps import ModelWithHooks

__all__ = [
    "CAM_METHODS",
    "compute_cam",
    "default_target_layer",
    "dilate_mask",
    "display_image",
    "restrict_cam",
    "overlay_cam",
    "save_overlay",
]

#: Names accepted by ``compute_cam(method=...)``.
CAM_METHODS = ("gradcam", "gradcam++")
_METHOD_ALIASES = {"gradcam": "gradcam", "grad-cam": "gradcam", "gradcam++": "gradcam++", "gradcampp": "gradcam++",
                   "grad-cam++": "gradcam++"}

ClassIndex = Optional[Union[int, Sequence[int], torch.Tensor, np.ndarray]]


class _RemovableHooks(ModelWithHooks):
    """MONAI's ``ModelWithHooks`` on one layer, with removable hooks and a per-image class score.

    ``class_score`` returns ``logits[i, class_idx[i]]`` for every image ``i`` (shape ``(B,)``), so that the
    backward pass of ``score.sum()`` gives each image the gradient of its own class only (the images of a
    batch do not interact in eval mode).
    """

    def __init__(self, model: nn.Module, target_layer: str) -> None:
        super().__init__(model, target_layer, register_forward=False, register_backward=False)
        self.register_forward = True
        self.register_backward = True
        self._handles: list = []
        self._inplace_off: list[nn.Module] = []
        module = dict(model.named_modules())[target_layer]
        if module.__dict__.get("inplace", False):
            # an in-place layer breaks full backward hooks (as in MONAI); switched back in remove()
            module.__dict__["inplace"] = False
            self._inplace_off.append(module)
        self._handles.append(module.register_forward_hook(self.forward_hook(target_layer)))
        self._handles.append(module.register_full_backward_hook(self.backward_hook(target_layer)))

    def class_score(self, logits: torch.Tensor, class_idx: Any) -> torch.Tensor:
        idx = torch.as_tensor(class_idx, device=logits.device).long().reshape(-1)
        if idx.numel() == 1:
            idx = idx.expand(logits.shape[0])
        return logits.gather(1, idx.view(-1, 1)).squeeze(1)

    def remove(self) -> None:
        for handle in self._handles:
            handle.remove()
        for module in self._inplace_off:
            module.__dict__["inplace"] = True
        self._handles, self._inplace_off = [], []
        self.activations.clear()
        self.gradients.clear()
        self.score = None


def _identity(x: torch.Tensor) -> torch.Tensor:
    return x


def _normalise(maps: torch.Tensor) -> torch.Tensor:
    """Per-image min-max scaling of ``(B, 1, *spatial)`` maps to [0, 1]; constant maps become 0."""
    flat = maps.reshape(maps.shape[0], -1)
    lo = flat.min(dim=1).values.view(-1, *[1] * (maps.ndim - 1))
    hi = flat.max(dim=1).values.view(-1, *[1] * (maps.ndim - 1))
    span = hi - lo
    ok = span > torch.finfo(maps.dtype).tiny
    out = torch.where(ok, (maps - lo) / torch.where(ok, span, torch.ones_like(span)), torch.zeros_like(maps))
    return out.clamp_(0.0, 1.0)


def _class_indices(class_index: ClassIndex, batch: int, num_outputs: int) -> Optional[torch.Tensor]:
    if class_index is None:
        return None
    if isinstance(class_index, bool):
        raise ValueError(f"class_index must be an int, a sequence of ints or None, got {class_index!r}")
    idx = torch.as_tensor(np.asarray(class_index) if not isinstance(class_index, torch.Tensor) else class_index)
    if idx.is_floating_point() or idx.dtype == torch.bool:
        raise ValueError(f"class_index must hold integers, got dtype {idx.dtype}")
    idx = idx.long().reshape(-1).cpu()
    if idx.numel() == 1:
        idx = idx.expand(batch).clone()
    if idx.numel() != batch:
        raise ValueError(f"class_index has {idx.numel()} entries but the batch has {batch} images")
    if bool((idx < 0).any()) or bool((idx >= num_outputs).any()):
        raise ValueError(f"class_index {idx.tolist()} out of range for {num_outputs} model outputs")
    return idx


def _as_mask(mask: Any, batch: int, spatial: Sequence[int]) -> torch.Tensor:
    """``mask`` as a boolean ``(B, 1, *spatial)`` tensor (binarised at 0.5), broadcast over the batch."""
    m = convert_to_tensor(mask, track_meta=False)
    m = m.float()
    nd = len(spatial)
    if m.ndim == nd:
        m = m.reshape(1, 1, *m.shape)
    elif m.ndim == nd + 1:
        m = m.unsqueeze(1)
    elif m.ndim != nd + 2 or m.shape[1] != 1:
        raise ValueError(
            f"mask must be (H, W), (B, H, W) or (B, 1, H, W) for images of spatial size {tuple(spatial)}, "
            f"got shape {tuple(m.shape)}"
        )
    if tuple(m.shape[2:]) != tuple(spatial):
        raise ValueError(f"mask spatial size {tuple(m.shape[2:])} differs from the images' {tuple(spatial)}")
    if m.shape[0] not in (1, batch):
        raise ValueError(f"mask has {m.shape[0]} images but the batch has {batch}")
    return (m > 0.5).expand(batch, 1, *spatial)


def dilate_mask(mask: torch.Tensor, pixels: int = 0) -> torch.Tensor:
    """Dilate a boolean ``(B, 1, H, W)`` mask by a disc of radius ``pixels`` (Euclidean distance <= ``pixels``).

    Args:
        mask: boolean or {0, 1} tensor ``(B, 1, H, W)``.
        pixels: dilation radius in pixels; 0 returns the mask unchanged. Defaults to 0.

    Returns:
        boolean ``(B, 1, H, W)``: True where a mask pixel lies within ``pixels`` pixels.

    Raises:
        ValueError: when ``pixels`` is negative or not an integer, or the mask is not 4-D.
    """
    if isinstance(pixels, bool) or int(pixels) != pixels or pixels < 0:
        raise ValueError(f"dilate must be a non-negative integer number of pixels, got {pixels!r}")
    if mask.ndim != 4:
        raise ValueError(f"mask must be (B, 1, H, W), got shape {tuple(mask.shape)}")
    m = mask.bool()
    r = int(pixels)
    if r == 0:
        return m
    yy, xx = torch.meshgrid(torch.arange(-r, r + 1), torch.arange(-r, r + 1), indexing="ij")
    disc = ((yy * yy + xx * xx) <= r * r).to(device=mask.device, dtype=torch.float32).view(1, 1, 2 * r + 1, 2 * r + 1)
    hits = F.conv2d(m.to(torch.float32).reshape(-1, 1, *m.shape[2:]), disc, padding=r)
    return (hits > 0.5).reshape(m.shape)


def restrict_cam(cam: torch.Tensor, mask: Any, dilate: int = 0) -> torch.Tensor:
    """Restrict non-negative maps to a mask: ``normalise(cam * dilate_mask(mask > 0.5, dilate))``.

    The product is min-max scaled per image like an unrestricted CAM: the result is 0 outside the dilated mask,
    its maximum is 1 (unless the map is 0 on the whole dilated mask; then it is 0 everywhere), and a mask
    covering the whole image changes nothing.

    Args:
        cam: non-negative maps ``(B, 1, H, W)`` (raw Grad-CAM, or maps already in [0, 1]).
        mask: ``(H, W)`` (every image), ``(B, H, W)`` or ``(B, 1, H, W)``; binarised at 0.5.
        dilate: grow the mask by this many pixels first (a disc). Defaults to 0.

    Returns:
        float ``(B, 1, H, W)`` in [0, 1].

    Raises:
        ValueError: on shapes that do not fit, or a negative ``dilate``.
    """
    if cam.ndim != 4 or cam.shape[1] != 1:
        raise ValueError(f"cam must be (B, 1, H, W), got shape {tuple(cam.shape)}")
    m = dilate_mask(_as_mask(mask, cam.shape[0], cam.shape[2:]).to(cam.device), dilate)
    return _normalise(cam.float() * m)


def default_target_layer(model: nn.Module) -> str:
    """The layer a CAM of ``model`` explains when none is named (``target_layer="auto"``).

    In order: the model's ``cam_layer`` attribute, the submodule name every medfuse network sets (``"refine"``,
    the CBAM output, for :class:`~medfuse.networks.nets.DualCrossAttentionNet`; the bottleneck for
    :class:`~medfuse.networks.nets.MultiOutputUNet`), see "Contracts" in ``docs/architecture.md``; the legacy
    ``cam_target_layer`` attribute, still accepted for user networks written against older medfuse; the last
    convolution of the model, which for any convolutional classifier (MONAI ResNet, DenseNet, EfficientNet, a
    U-Net encoder) is the deepest feature map that still has a spatial layout. An attribute naming no submodule
    is skipped.

    Raises:
        ValueError: when the model has none of these (e.g. a pure transformer).
    """
    names = dict(model.named_modules())
    for attribute in ("cam_layer", "cam_target_layer"):
        own = getattr(model, attribute, None)
        if isinstance(own, str) and own in names:
            return own
    convs = [n for n, m in model.named_modules() if isinstance(m, (nn.Conv2d, nn.Conv3d)) and n]
    if not convs:
        raise ValueError(f"{type(model).__name__} has no convolution to explain; pass target_layer= by name")
    return convs[-1]


def _module_device(model: nn.Module) -> torch.device:
    for p in model.parameters():
        return p.device
    for b in model.buffers():
        return b.device
    return torch.device("cpu")


def compute_cam(
    model: nn.Module,
    images: torch.Tensor,
    target_layer: str = "refine",
    class_index: ClassIndex = None,
    method: str = "gradcam",
    mask: Any = None,
    dilate: int = 0,
    normalize: bool = True,
) -> torch.Tensor:
    """Grad-CAM / Grad-CAM++ maps of ``images`` for one class each, at the images' resolution.

    The maps are computed in eval mode (dropout off, batch norm on running statistics) without autocast, with
    ``monai.visualize.GradCAM`` / ``GradCAMpp`` on ``target_layer`` (for
    :class:`~medfuse.networks.nets.DualCrossAttentionNet`: ``"refine"``, the CBAM output at stride 8, or
    ``"refine.spatial.gate"``, the CBAM spatial attention map), upsampled bilinearly to the image size, and
    min-max scaled per image so that the maximum is 1. Every image gets the map it would get alone: Grad-CAM
    runs the batch at once with a per-image class score, Grad-CAM++ runs one image at a time.

    Nothing of the model changes: its parameters' ``requires_grad`` flags and ``.grad`` tensors, every
    submodule's train/eval mode and its hooks are as before the call (the gradients flow from an input copy
    that requires grad, never into the parameters).

    Args:
        model: a classifier returning logits ``(B, K)``.
        images: ``(B, C, H, W)`` (a MetaTensor is fine); moved to the model's device.
        target_layer: name of the submodule (``model.named_modules()``) whose output is explained, or
            ``"auto"`` (:func:`default_target_layer`: works for any convolutional classifier). Defaults to ``"refine"``.
        class_index: the class explained: ``None`` for each image's predicted class (argmax of the logits), an
            int for the same class in every image, or one int per image. Defaults to None.
        method: ``"gradcam"`` or ``"gradcam++"``. Defaults to ``"gradcam"``.
        mask: optional region ``(H, W)``, ``(B, H, W)`` or ``(B, 1, H, W)`` (binarised at 0.5), e.g. the lung
            field: the CAM is multiplied by the (dilated) mask and renormalised (:func:`restrict_cam`), so it
            is 0 outside it. Defaults to None.
        dilate: grow the mask by this many pixels (a disc) first. Defaults to 0.
        normalize: scale each map to [0, 1]; False returns the raw upsampled ReLU maps (comparable in
            magnitude across images and models), still restricted to the mask when one is given.
            Defaults to True.

    Returns:
        float32 ``(B, 1, H, W)`` on ``images``' device, in [0, 1] when ``normalize``; an image whose map is 0
        or constant everywhere gets zeros.

    Raises:
        ValueError: unknown ``target_layer`` or ``method``, bad ``class_index`` / ``mask`` / ``dilate``, or
            images that are not ``(B, C, H, W)``.

    Examples::

        >>> net = DualCrossAttentionNet(in_channels=1, num_classes=2, backbones=("efficientnet-b0", "resnet10"))
        >>> cams = compute_cam(net, torch.rand(4, 1, 224, 224))                      # predicted classes
        >>> cams = compute_cam(net, x, class_index=1, method="gradcam++")            # class 1 everywhere
        >>> cams = compute_cam(net, x, mask=lung_masks, dilate=8)                    # inside the lungs only
        >>> rgb = overlay_cam(x[0, 0].numpy(), cams[0, 0].numpy())
    """
    name = _METHOD_ALIASES.get(str(method).lower())
    if name is None:
        raise ValueError(f"method must be one of {list(CAM_METHODS)}, got {method!r}")
    if target_layer == "auto":
        target_layer = default_target_layer(model)
    if _is_ensemble_cam(model, target_layer):
        return _ensemble_cam(model, images, target_layer, class_index, method, mask, dilate, normalize)
    if not isinstance(target_layer, str) or target_layer not in dict(model.named_modules()):
        hint = [n for n, _ in model.named_modules() if n and isinstance(target_layer, str) and n.endswith(target_layer)]
        raise ValueError(
            f"target_layer {target_layer!r} is not a submodule name of {type(model).__name__}"
            + (f" (did you mean {hint[0]!r}?)" if hint else "; list them with [n for n, _ in model.named_modules()]")
        )
    if isinstance(dilate, bool) or int(dilate) != dilate or dilate < 0:
        raise ValueError(f"dilate must be a non-negative integer number of pixels, got {dilate!r}")
    out_device = images.device if isinstance(images, torch.Tensor) else torch.device("cpu")
    device = _module_device(model)
    with torch.inference_mode(False):
        x = convert_to_tensor(images, track_meta=False).detach()
        if x.ndim != 4:
            raise ValueError(f"images must be (B, C, H, W), got shape {tuple(x.shape)}")
        x = x.to(device=device, dtype=torch.float32)
        if x.is_inference():
            x = x.clone()
        batch = x.shape[0]
        region = _as_mask(mask, batch, x.shape[2:]).to(device) if mask is not None else None

        params = list(model.parameters())
        saved_params = [(p, p.requires_grad, p.grad) for p in params]
        saved_modes = [(m, m.training) for m in model.modules()]
        hooks = _RemovableHooks(model, target_layer)
        try:
            for p in params:
                p.requires_grad_(False)
            model.eval()
            with torch.enable_grad(), torch.autocast(device_type=device.type, enabled=False):
                x.requires_grad_(True)
                idx = None
                if class_index is not None:
                    idx = _class_indices(class_index, batch, _num_outputs(model, x)).to(device)
                if name == "gradcam":
                    raw = GradCAM(hooks, target_layer, postprocessing=_identity)(x, class_idx=idx)
                else:
                    cam = GradCAMpp(hooks, target_layer, postprocessing=_identity)
                    raw = torch.cat(
                        [cam(x[i : i + 1], class_idx=None if idx is None else idx[i : i + 1]) for i in range(batch)]
                    )
            raw = raw.detach().float()
        finally:
            hooks.remove()
            for m, mode in saved_modes:
                m.training = mode
            for p, req, grad in saved_params:
                p.requires_grad_(req)
                p.grad = grad
        if region is not None:
            m = dilate_mask(region, int(dilate))
            raw = raw * m
        out = _normalise(raw) if normalize else raw
    return out.to(out_device)


def _is_ensemble_cam(model: nn.Module, target_layer: Any) -> bool:
    """Whether ``target_layer`` asks for an ensemble's CAM, the members' mean (:func:`_ensemble_cam`): it is the
    ensemble's own ``cam_layer`` (``members.0.<layer>``), or a member's layer name (``"refine"``) that the ensemble
    itself lacks. Any other member layer named in full (``members.1.refine``) explains that member alone."""
    if not (getattr(model, "reports_members", False) and isinstance(getattr(model, "members", None), nn.ModuleList)
            and isinstance(target_layer, str)):
        return False
    names = dict(model.named_modules())
    return target_layer == getattr(model, "cam_layer", None) or (
        target_layer not in names and f"members.0.{target_layer}" in names)


def _ensemble_cam(model: nn.Module, images: torch.Tensor, target_layer: str, class_index: ClassIndex, method: str,
                  mask: Any, dilate: int, normalize: bool) -> torch.Tensor:
    """The CAM of an ensemble (:class:`~medfuse.networks.nets.EnsembleNet`): every member's raw map at the same
    layer, for the ensemble's class (its arg-max unless ``class_index``), averaged, then scaled.

    The members' unscaled maps are averaged (not their per-image [0, 1] maps), so a member with more evidence
    weighs more, as its logits do in the ensemble's mean probability.
    """
    layer = target_layer[len("members.0."):] if target_layer.startswith("members.0.") else target_layer
    if class_index is None:
        with torch.no_grad():
            x = convert_to_tensor(images, track_meta=False).to(device=_module_device(model), dtype=torch.float32)
            saved = [(m, m.training) for m in model.modules()]
            model.eval()
            try:
                class_index = model(x).argmax(1).tolist()
            finally:
                for m, mode in saved:
                    m.training = mode
    maps = [compute_cam(member, images, target_layer=layer, class_index=class_index, method=method, mask=mask,
                        dilate=dilate, normalize=False) for member in model.members]
    mean = torch.stack(maps).mean(dim=0)
    return _normalise(mean) if normalize else mean


def _num_outputs(model: nn.Module, x: torch.Tensor) -> int:
    """The number of model outputs, for range-checking ``class_index`` (from the model's attributes, or a
    forward of one image when it has none)."""
    for attr in ("num_classes", "out_channels", "num_outputs"):
        v = getattr(model, attr, None)
        if isinstance(v, int) and not isinstance(v, bool) and v > 0:
            return v
    head = getattr(model, "get_classifier", None)
    if callable(head):
        layer = head()
        if isinstance(layer, nn.Linear):
            return layer.out_features
    with torch.no_grad():
        return int(model(x[:1].detach()).shape[1])


# ----------------------------------------------------------------------------------------------------------
# overlays


def display_image(image: Any) -> np.ndarray:
    """A network input as one grey ``(H, W)`` float image in [0, 1], the background of a CAM overlay.

    Channels ``(C, H, W)`` are averaged; the values are min-max scaled only when they leave [0, 1] by more than
    1e-3 (e.g. after mean/std normalisation; a constant image then becomes 0), then clipped to [0, 1].

    Args:
        image: tensor or array ``(C, H, W)`` or ``(H, W)``.
    """
    img = image if isinstance(image, torch.Tensor) else torch.as_tensor(np.asarray(image))
    img = img.detach().float().cpu()
    img = img.mean(0) if img.ndim == 3 else img
    arr = img.numpy()
    lo, hi = float(arr.min()), float(arr.max())
    if lo < -1e-3 or hi > 1.0 + 1e-3:
        arr = (arr - lo) / (hi - lo) if hi > lo else np.zeros_like(arr)
    return np.clip(arr, 0.0, 1.0)


def _to_numpy_2d(a: Any, what: str) -> np.ndarray:
    arr = a.detach().float().cpu().numpy() if isinstance(a, torch.Tensor) else np.asarray(a, dtype=np.float32)
    arr = np.asarray(arr, dtype=np.float32)
    while arr.ndim > 2 and arr.shape[0] == 1:
        arr = arr[0]
    if arr.ndim != 2:
        raise ValueError(f"{what} must be 2-D (H, W), got shape {arr.shape}")
    return arr


def overlay_cam(image_2d: Any, cam: Any, alpha: float = 0.4, colormap: str = "jet") -> np.ndarray:
    """Blend a CAM, coloured by a matplotlib colormap, over a grey image.

    ``rgb = (1 - alpha) * grey + alpha * colormap(cam)``, computed in [0, 1] and rounded to ``uint8``.

    Args:
        image_2d: grey image ``(H, W)`` in [0, 1] (values outside are clipped; a leading axis of 1 is dropped).
        cam: map ``(H, W)`` in [0, 1] (clipped), the same size as the image.
        alpha: weight of the coloured map, in [0, 1]. Defaults to 0.4.
        colormap: a matplotlib colormap name. Defaults to ``"jet"``.

    Returns:
        ``uint8`` RGB array ``(H, W, 3)``.

    Raises:
        ValueError: for non-2-D or differently sized inputs, ``alpha`` outside [0, 1], an unknown colormap.
    """
    import matplotlib

    img = np.clip(np.nan_to_num(_to_numpy_2d(image_2d, "image_2d")), 0.0, 1.0)
    c = np.clip(np.nan_to_num(_to_numpy_2d(cam, "cam")), 0.0, 1.0)
    if img.shape != c.shape:
        raise ValueError(f"image {img.shape} and cam {c.shape} differ in size")
    if not 0.0 <= float(alpha) <= 1.0:
        raise ValueError(f"alpha must be in [0, 1], got {alpha}")
    try:
        cmap = matplotlib.colormaps[colormap]
    except KeyError as err:
        raise ValueError(f"unknown matplotlib colormap {colormap!r} (e.g. 'jet', 'inferno', 'turbo')") from err
    coloured = cmap(c)[..., :3]
    rgb = (1.0 - float(alpha)) * img[..., None] + float(alpha) * coloured
    return np.clip(np.round(rgb * 255.0), 0, 255).astype(np.uint8)


def save_overlay(
    path: str | os.PathLike,
    image: Any,
    cam: Any,
    title: Optional[str] = None,
    alpha: float = 0.4,
    colormap: str = "jet",
    panel_inches: float = 3.0,
    dpi: int = 100,
) -> Path:
    """Write a PNG: the grey image on the left, the CAM overlay (:func:`overlay_cam`) on the right.

    Drawn with matplotlib's ``Figure`` and Agg canvas (no pyplot, no global backend change).

    Args:
        path: output file (``.png``); its folder is created.
        image: grey image ``(H, W)`` in [0, 1].
        cam: map ``(H, W)`` in [0, 1].
        title: caption above both panels, e.g. ``"CXR0001_1: opacity (p = 0.93)"``. Defaults to None.
        alpha: overlay weight. Defaults to 0.4.
        colormap: matplotlib colormap. Defaults to ``"jet"``.
        panel_inches: width of each panel in inches. Defaults to 3.0.
        dpi: resolution. Defaults to 100.

    Returns:
        the path written.

    Raises:
        ValueError: as :func:`overlay_cam`.
    """
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    img = np.clip(_to_numpy_2d(image, "image"), 0.0, 1.0)
    rgb = overlay_cam(img, cam, alpha=alpha, colormap=colormap)
    h, w = img.shape
    panel_h = float(panel_inches) * h / max(w, 1)
    fig = Figure(figsize=(2 * float(panel_inches), panel_h + (0.45 if title else 0.25)), dpi=int(dpi))
    FigureCanvasAgg(fig)
    axes = fig.subplots(1, 2)
    axes[0].imshow(img, cmap="gray", vmin=0.0, vmax=1.0, interpolation="nearest")
    axes[0].set_title("image", fontsize=9)
    axes[1].imshow(rgb, interpolation="nearest")
    axes[1].set_title("CAM overlay", fontsize=9)
    return _save_panels(fig, axes, path, title, fontsize=10)


def _save_panels(fig, axes, path: str | os.PathLike, title: Any = None, fontsize: int = 10) -> Path:
    """Hide the axes, add the title, lay out and write the figure as PNG (folders created)."""
    for ax in axes:
        ax.set_axis_off()
    if title:
        fig.suptitle(str(title), fontsize=fontsize)
    fig.tight_layout()
    out = Path(path)
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, format="png")
    return out
