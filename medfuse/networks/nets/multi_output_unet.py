# Copyright (c) medfuse contributors
# Licensed under the Apache License, Version 2.0
"""Multi-output U-Net: one network segments the lungs and classifies the image."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Optional, Tuple, Union

import torch
import torch.nn as nn
from monai.networks.nets import BasicUNet, FlexibleUNet

__all__ = ["MultiOutputUNet", "MultiOutputUnet", "MULTI_OUTPUT_MODES", "MULTI_OUTPUT_BACKBONES", "CLS_SOURCES"]

#: Values of ``MultiOutputUNet(output=...)``.
MULTI_OUTPUT_MODES = ("both", "seg", "cls")
#: Values of ``MultiOutputUNet(backbone=...)``: MONAI's ``BasicUNet``, or ``FlexibleUNet`` with any of its encoders.
MULTI_OUTPUT_BACKBONES = ("basicunet", "flexibleunet")
#: Values of ``MultiOutputUNet(cls_from=...)``: the features the classification head pools.
CLS_SOURCES = ("bottleneck", "bottleneck+decoder")


class MultiOutputUNet(nn.Module):
    """Multi-output U-Net: Schraut et al., "U-Net-enhanced class activation maps for explainable chest X-ray
    diagnosis with a multi-output network", Discover Artificial Intelligence, 2023 (method 4 of the design notes).

    A MONAI U-Net (``BasicUNet``, or ``FlexibleUNet`` on one of its encoders) segments the image; a
    classification head on the bottleneck (the deepest encoder map, optionally concatenated with the pooled
    last decoder map) classifies it. ``forward`` returns ``(seg_logits, class_logits)``:
    ``seg_logits`` is ``(B, out_channels, *spatial)`` (background included), ``class_logits`` is
    ``(B, num_classes)``. ``output="seg"`` or ``"cls"`` makes ``forward`` return one tensor (for TorchScript
    export and ``monai.bundle.verify_net_in_out``, which feed one tensor and expect one out); ``"cls"`` skips the
    decoder unless the head reads decoder features, ``"seg"`` skips the head.

    Stable submodule names (public API; Grad-CAM targets, see :attr:`cam_layer`):

    * ``unet``: the MONAI network. For ``basicunet``: ``unet.conv_0``, ``unet.down_1`` ... ``unet.down_4``
      (``unet.down_4`` is the bottleneck, stride 16), ``unet.upcat_4`` ... ``unet.upcat_1``,
      ``unet.final_conv``. For ``flexibleunet``: ``unet.encoder`` (its deepest stage is the bottleneck,
      stride 32), ``unet.decoder``, ``unet.segmentation_head``.
    * ``cls_head``: ``pool`` (global average), ``dropout``, ``fc``.

    :attr:`cam_layer` names the bottleneck: ``"unet.down_4"`` or ``"unet.encoder"`` (the Grad-CAM layer attribute
    every medfuse network sets; see "Contracts" in ``docs/architecture.md``). ``cam_target_layer`` is a
    read-and-write alias of it, kept for code written against older medfuse.

    Choices the paper leaves open, as made here: the head pools the bottleneck (global average) and applies
    dropout and one linear layer, so the bottleneck is the natural Grad-CAM layer (coarse but specific);
    the decoder-feature option adds the pooled last decoder map (full resolution, finer but less
    class-specific); the segmentation and the classification share the whole encoder.

    Args:
        spatial_dims: 2 or 3 (``flexibleunet``: 2 or 3 as its encoder allows). Defaults to 2.
        in_channels: input channels. Defaults to 1.
        out_channels: segmentation classes including the background (2 for lungs vs. background). Defaults to 2.
        num_classes: diagnosis classes (>= 1). Defaults to 2.
        backbone: ``"basicunet"`` or ``"flexibleunet"``. Defaults to ``"basicunet"``.
        features: ``BasicUNet`` widths, six ints (encoder levels 0-4, last decoder level). Defaults to
            ``(32, 32, 64, 128, 256, 32)``.
        encoder: ``FlexibleUNet`` encoder name (e.g. ``"efficientnet-b0"``, ``"resnet18"``). Defaults to
            ``"efficientnet-b0"``.
        pretrained: ``FlexibleUNet`` encoder weights (downloaded by MONAI; needs a network). Defaults to False.
        decoder_channels: ``FlexibleUNet`` decoder widths. Defaults to ``(256, 128, 64, 32, 16)``.
        act, norm, bias, dropout, upsample: passed to the MONAI network (``dropout`` is its internal dropout).
            Defaults: ``("LeakyReLU", {"negative_slope": 0.1, "inplace": True})``, ``("instance", {"affine": True})``,
            True, 0.0, ``"deconv"`` (``BasicUNet``; ``FlexibleUNet`` uses its own defaults for ``act``/``norm``
            when ``None`` is given).
        cls_from: ``"bottleneck"`` or ``"bottleneck+decoder"``. Defaults to ``"bottleneck"``.
        cls_dropout: dropout before the linear classifier. Defaults to 0.2.
        output: ``"both"`` (the tuple), ``"seg"`` or ``"cls"``. Defaults to ``"both"``.

    Raises:
        ValueError: an unknown ``backbone`` / ``output`` / ``cls_from``, bad ``features``, non-positive sizes.

    Examples::

        >>> net = MultiOutputUNet(spatial_dims=2, in_channels=1, out_channels=2, num_classes=2)
        >>> seg, cls = net(torch.rand(2, 1, 128, 128))   # (2, 2, 128, 128), (2, 2)
        >>> seg_only = MultiOutputUNet(output="seg")      # one tensor out, for export
        >>> fused = MultiOutputUNet(backbone="flexibleunet", encoder="resnet18", cls_from="bottleneck+decoder")
    """

    __constants__ = ["output", "cls_from", "_basic", "_use_decoder_feats"]
    __jit_unused_properties__ = ["cam_target_layer"]

    def __init__(
        self,
        spatial_dims: int = 2,
        in_channels: int = 1,
        out_channels: int = 2,
        num_classes: int = 2,
        backbone: str = "basicunet",
        features: Sequence[int] = (32, 32, 64, 128, 256, 32),
        encoder: str = "efficientnet-b0",
        pretrained: bool = False,
        decoder_channels: Sequence[int] = (256, 128, 64, 32, 16),
        act: Optional[Union[str, tuple]] = ("LeakyReLU", {"negative_slope": 0.1, "inplace": True}),
        norm: Optional[Union[str, tuple]] = ("instance", {"affine": True}),
        bias: bool = True,
        dropout: float = 0.0,
        upsample: str = "deconv",
        cls_from: str = "bottleneck",
        cls_dropout: float = 0.2,
        output: str = "both",
    ) -> None:
        super().__init__()
        backbone = str(backbone).lower()
        if backbone not in MULTI_OUTPUT_BACKBONES:
            raise ValueError(f"backbone must be one of {list(MULTI_OUTPUT_BACKBONES)}, got {backbone!r}")
        if output not in MULTI_OUTPUT_MODES:
            raise ValueError(f"output must be one of {list(MULTI_OUTPUT_MODES)}, got {output!r}")
        if cls_from not in CLS_SOURCES:
            raise ValueError(f"cls_from must be one of {list(CLS_SOURCES)}, got {cls_from!r}")
        for name, v in (("in_channels", in_channels), ("out_channels", out_channels), ("num_classes", num_classes)):
            if isinstance(v, bool) or not isinstance(v, int) or v < 1:
                raise ValueError(f"{name} must be a positive int, got {v!r}")
        if out_channels < 2:
            raise ValueError(f"out_channels counts the background too and must be >= 2, got {out_channels}")
        if spatial_dims not in (2, 3):
            raise ValueError(f"spatial_dims must be 2 or 3, got {spatial_dims!r}")
        if not 0.0 <= float(cls_dropout) < 1.0:
            raise ValueError(f"cls_dropout must be in [0, 1), got {cls_dropout!r}")
        self.spatial_dims = int(spatial_dims)
        self.in_channels = int(in_channels)
        self.out_channels = int(out_channels)
        self.num_classes = int(num_classes)
        self.backbone = backbone
        self.output = str(output)
        self.cls_from = str(cls_from)

        if backbone == "basicunet":
            features = tuple(int(f) for f in features)
            if len(features) != 6 or min(features) < 1:
                raise ValueError(f"features must be six positive ints for BasicUNet, got {features}")
            self.unet = BasicUNet(
                spatial_dims=spatial_dims, in_channels=in_channels, out_channels=out_channels, features=features,
                act=act, norm=norm, bias=bias, dropout=dropout, upsample=upsample,
            )
            bottleneck_ch, decoder_ch = features[4], features[5]
            self.cam_layer = "unet.down_4"
            self.reduction = 16
        else:
            kwargs = {} if act is None else {"act": act}
            if norm is not None:
                kwargs["norm"] = norm
            self.unet = FlexibleUNet(
                in_channels=in_channels, out_channels=out_channels, backbone=encoder, pretrained=bool(pretrained),
                decoder_channels=tuple(decoder_channels), spatial_dims=spatial_dims, dropout=dropout,
                upsample=upsample, **kwargs,
            )
            with torch.no_grad():
                probe = torch.zeros(1, in_channels, *([64] * spatial_dims))
                bottleneck_ch = int(self.unet.encoder(probe)[-1].shape[1])
            decoder_ch = int(decoder_channels[-1])
            self.cam_layer = "unet.encoder"
            self.reduction = 32
        self.num_features = bottleneck_ch + (decoder_ch if self.cls_from == "bottleneck+decoder" else 0)
        pool = nn.AdaptiveAvgPool2d(1) if spatial_dims == 2 else nn.AdaptiveAvgPool3d(1)
        self.cls_head = nn.ModuleDict(
            {"pool": pool, "dropout": nn.Dropout(float(cls_dropout)), "fc": nn.Linear(self.num_features, num_classes)}
        )
        # plain attributes TorchScript can read without branching on strings in forward
        self._basic = backbone == "basicunet"
        self._use_decoder_feats = self.cls_from == "bottleneck+decoder"

    # ------------------------------------------------------------------------------------------------------
    def _encode_basic(self, x: torch.Tensor) -> Tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor,
                                                      torch.Tensor]:
        x0 = self.unet.conv_0(x)
        x1 = self.unet.down_1(x0)
        x2 = self.unet.down_2(x1)
        x3 = self.unet.down_3(x2)
        x4 = self.unet.down_4(x3)
        return x0, x1, x2, x3, x4

    def _decode_basic(self, x0: torch.Tensor, x1: torch.Tensor, x2: torch.Tensor, x3: torch.Tensor,
                      x4: torch.Tensor) -> torch.Tensor:
        u4 = self.unet.upcat_4(x4, x3)
        u3 = self.unet.upcat_3(u4, x2)
        u2 = self.unet.upcat_2(u3, x1)
        return self.unet.upcat_1(u2, x0)

    def _classify(self, bottleneck: torch.Tensor, decoder: Optional[torch.Tensor]) -> torch.Tensor:
        feats = torch.flatten(self.cls_head["pool"](bottleneck), 1)
        if decoder is not None:
            feats = torch.cat([feats, torch.flatten(self.cls_head["pool"](decoder), 1)], dim=1)
        return self.cls_head["fc"](self.cls_head["dropout"](feats))

    def forward_all(self, x: torch.Tensor) -> Tuple[torch.Tensor, torch.Tensor]:
        """``(seg_logits, class_logits)`` whatever :attr:`output` is.

        Args:
            x: ``(B, in_channels, *spatial)``; for ``basicunet`` each spatial size should be a multiple of 16
                (MONAI pads odd sizes in its up-sampling blocks), for ``flexibleunet`` of 32.

        Returns:
            ``(B, out_channels, *spatial)`` segmentation logits and ``(B, num_classes)`` class logits.
        """
        if self._basic:
            x0, x1, x2, x3, x4 = self._encode_basic(x)
            dec = self._decode_basic(x0, x1, x2, x3, x4)
            seg = self.unet.final_conv(dec)
            bottleneck = x4
        else:
            feats = self.unet.encoder(x)
            dec = self.unet.decoder(feats, self.unet.skip_connect)
            seg = self.unet.segmentation_head(dec)
            bottleneck = feats[-1]
        cls = self._classify(bottleneck, dec if self._use_decoder_feats else None)
        return seg, cls

    def forward_seg(self, x: torch.Tensor) -> torch.Tensor:
        """Segmentation logits ``(B, out_channels, *spatial)`` only (the head does not run)."""
        if self._basic:
            x0, x1, x2, x3, x4 = self._encode_basic(x)
            return self.unet.final_conv(self._decode_basic(x0, x1, x2, x3, x4))
        feats = self.unet.encoder(x)
        return self.unet.segmentation_head(self.unet.decoder(feats, self.unet.skip_connect))

    def forward_cls(self, x: torch.Tensor) -> torch.Tensor:
        """Class logits ``(B, num_classes)`` only (the decoder runs only when the head reads it)."""
        if self._use_decoder_feats:
            return self.forward_all(x)[1]
        if self._basic:
            return self._classify(self._encode_basic(x)[4], None)
        return self._classify(self.unet.encoder(x)[-1], None)

    def forward(self, x: torch.Tensor) -> Union[torch.Tensor, Tuple[torch.Tensor, torch.Tensor]]:
        """Forward pass; what it returns depends on :attr:`output`.

        Args:
            x: ``(B, in_channels, *spatial)``.

        Returns:
            ``output="both"``: ``(seg_logits, class_logits)``; ``"seg"``: ``seg_logits``; ``"cls"``:
            ``class_logits``.
        """
        if self.output == "seg":
            return self.forward_seg(x)
        if self.output == "cls":
            return self.forward_cls(x)
        return self.forward_all(x)

    @property
    def cam_target_layer(self) -> str:
        """Legacy alias of :attr:`cam_layer`."""
        return self.cam_layer

    @cam_target_layer.setter
    def cam_target_layer(self, name: str) -> None:
        self.cam_layer = name

    def set_output(self, output: str) -> "MultiOutputUNet":
        """Choose what :meth:`forward` returns (``"both"``, ``"seg"``, ``"cls"``); returns the network itself.

        Bundle configs keep ``network_def`` in the single-tensor ``"seg"`` mode that exporters and
        ``verify_net_in_out`` need, and train ``network_def.set_output("both")``; the weights are the same.

        Raises:
            ValueError: an unknown mode.
        """
        if output not in MULTI_OUTPUT_MODES:
            raise ValueError(f"output must be one of {list(MULTI_OUTPUT_MODES)}, got {output!r}")
        self.output = str(output)
        return self

    def get_classifier(self) -> nn.Module:
        """The final linear layer of the classification head."""
        return self.cls_head["fc"]


MultiOutputUnet = MultiOutputUNet
