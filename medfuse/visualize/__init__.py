# Copyright (c) medfuse contributors
# Licensed under the Apache License, Version 2.0
"""Explanations of medfuse classifiers: class activation maps over ``monai.visualize``, masks and overlays.

* :func:`compute_cam`: batch-consistent Grad-CAM / Grad-CAM++ maps ``(B, 1, H, W)`` in [0, 1], optionally
  restricted to a mask;
* :func:`restrict_cam`, :func:`dilate_mask`: restriction of maps to a (dilated) mask;
* :func:`overlay_cam`, :func:`save_overlay`: coloured overlays as arrays or side-by-side PNG files;
* :func:`display_image`: a network input as the grey image under an overlay.
"""

from .cam import (
    CAM_METHODS,
    compute_cam,
    default_target_layer,
    dilate_mask,
    display_image,
    overlay_cam,
    restrict_cam,
    save_overlay,
)

__all__ = ["CAM_METHODS", "compute_cam", "default_target_layer", "dilate_mask", "display_image", "overlay_cam",
           "restrict_cam", "save_overlay"]
