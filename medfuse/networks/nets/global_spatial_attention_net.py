# Copyright (c) medfuse contributors
# Licensed under the Apache License, Version 2.0
"""A 2D classifier (MONAI network or medfuse DCAT) with one global spatial attention map (method 5)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any, List, Optional, Tuple, Union

import numpy as np
import torch
import torch.nn as nn
from monai.networks.nets import SEResNet50, DenseNet, DenseNet121, ResNet, SENet, resnet18, resnet34, resnet50

from medfuse.networks.blocks.global_spatial_attention import GlobalSpatialAttention
from medfuse.networks.nets.dual_cross_attention import DualCrossAttentionNet

__all__ = ["GlobalSpatialAttentionNet", "GSANet", "GSA_NETWORKS"]

#: Network names accepted by :class:`GlobalSpatialAttentionNet`.
GSA_NETWORKS = ("densenet121", "resnet18", "resnet34", "resnet50", "seresnet50", "dual_cross_attention")

_RESNETS = {"resnet18": resnet18, "resnet34": resnet34, "resnet50": resnet50}
_CHILD = "gsa"  # name of the block's second registration, on the stage it gates (see GlobalSpatialAttentionNet)


def _build(name: str, in_channels: int, num_classes: int, net_kwargs: Mapping[str, Any]) -> nn.Module:
    if name == "densenet121":
        own = {"spatial_dims": 2, "in_channels": in_channels, "out_channels": num_classes}
    elif name in _RESNETS:
        own = {"spatial_dims": 2, "n_input_channels": in_channels, "num_classes": num_classes}
    elif name == "seresnet50":
        own = {"spatial_dims": 2, "in_channels": in_channels, "num_classes": num_classes}
    else:  # dual_cross_attention
        own = {"in_channels": in_channels, "num_classes": num_classes}
    clash = sorted(set(own) & set(net_kwargs))
    if clash:
        raise ValueError(
            f"net_kwargs must not set {clash} for net={name!r}: use the wrapper's in_channels / num_classes."
        )
    kwargs = {**own, **net_kwargs}
    if name == "densenet121":
        return DenseNet121(**kwargs)
    if name in _RESNETS:
        return _RESNETS[name](**{"conv1_t_stride": 2, **kwargs})
    if name == "seresnet50":
        return SEResNet50(**kwargs)
    return DualCrossAttentionNet(**kwargs)


def _stages_and_cam_layer(net: nn.Module) -> tuple[tuple[str, ...], Optional[str]]:
    """Stage names (relative to ``net``) and the Grad-CAM layer name, by network family."""
    names = {name for name, _ in net.named_modules()}
    own_cam = getattr(net, "cam_layer", None)
    own_cam = own_cam if isinstance(own_cam, str) and own_cam in names else None
    if isinstance(net, DenseNet):
        stages = tuple(f"features.denseblock{i}" for i in range(1, 5) if f"features.denseblock{i}" in names)
        # not features.norm5: the in-place ReLU after it breaks Grad-CAM's backward hooks there
        return stages, own_cam or "features.denseblock4"
    if isinstance(net, ResNet):
        return tuple(f"layer{i}" for i in range(1, 5)), own_cam or "layer4"
    if isinstance(net, SENet):
        return tuple(f"layer{i}" for i in range(5)), own_cam or "layer4"
    if isinstance(net, DualCrossAttentionNet):
        stages = tuple(info["module"] for info in net.feature_info if info.get("branch") in ("a", "b"))
        return stages, own_cam or "refine"
    info = getattr(net, "feature_info", None)
    if isinstance(info, Sequence) and info and all(isinstance(i, Mapping) and "module" in i for i in info):
        stages = tuple(str(i["module"]) for i in info if str(i["module"]) in names)
    else:
        stages = tuple(name for name, _ in net.named_children())
    return stages, own_cam


def _attach(stage: nn.Module, at: str, block: nn.Module) -> str:
    """Make ``stage`` multiply its output by ``block``'s map; returns how (``"sequential"`` or ``"hook"``)."""
    if hasattr(stage, _CHILD):
        raise ValueError(f"at={at!r}: the module {type(stage).__name__} already has an attribute {_CHILD!r}.")
    if isinstance(stage, nn.Sequential) and type(stage).forward is nn.Sequential.forward:
        how = "sequential"  # the Sequential runs the block as its last layer: no hook, traces and scripts anywhere
    elif isinstance(stage, (nn.Sequential, nn.ModuleList, nn.ModuleDict)):
        raise ValueError(
            f"at={at!r} names a container ({type(stage).__name__}) that is not a plain nn.Sequential: the block "
            f"cannot be applied to its output safely; choose another stage."
        )
    else:
        how = "hook"
        stage.register_forward_hook(_attend_output)
    stage.add_module(_CHILD, block)
    stage.register_state_dict_post_hook(_hide_block_state)
    stage.register_load_state_dict_pre_hook(_keep_block_state)
    return how


def _attend_output(module: nn.Module, inputs: Tuple[torch.Tensor], output: torch.Tensor) -> torch.Tensor:
    """Forward hook: the hooked module's output times the global map (the block is ``module.gsa``)."""
    if not isinstance(output, torch.Tensor):
        raise ValueError("global spatial attention needs a (B, C, H, W) tensor output at the stage it is applied to.")
    return module.gsa(output)


def _hide_block_state(module: nn.Module, state_dict: Any, prefix: str, local_metadata: Any) -> None:
    """State-dict post-hook of the gated stage: its ``gsa.*`` entries duplicate the wrapper's ``gsa.*``."""
    for key in [k for k in state_dict if k.startswith(prefix + _CHILD + ".")]:
        del state_dict[key]
    metadata = getattr(state_dict, "_metadata", None)
    if metadata is not None:
        metadata.pop(prefix + _CHILD, None)


def _keep_block_state(
    module: nn.Module, state_dict: Any, prefix: str, local_metadata: Any, strict: bool, missing_keys: Any,
    unexpected_keys: Any, error_msgs: Any,
) -> None:
    """Load pre-hook of the gated stage: absent ``gsa.*`` entries keep the block's current values (the
    wrapper-level ``gsa.*`` entries, loaded too, are the ones that count)."""
    for name, tensor in module.gsa.state_dict().items():
        state_dict.setdefault(prefix + _CHILD + "." + name, tensor)


class GlobalSpatialAttentionNet(nn.Module):
    """Global spatial attention classifier: Xu et al., "Global Spatial Attention for Medical Image
    Classification", arXiv 2007.15897, 2020 (one learned spatial map shared by all images, trained with the CNN).

    Wraps a 2D classifier ``net`` and a :class:`~medfuse.networks.blocks.GlobalSpatialAttention` block ``gsa``:
    the shared map ``M`` multiplies the image (``at="input"``) or the output of a stage of ``net`` (``at`` names
    the submodule, e.g. ``"layer2"``, ``"features.denseblock2"``, ``"branch_b.layer2"``); the paper plugs the
    map into GoogLeNet, VGG, ResNet and DenseNet alike. Train with
    :class:`~medfuse.networks.losses.GlobalSpatialAttentionLoss` (task loss + the map's regularisation).

    Stable submodule names (public API): ``gsa`` (the block) and ``net`` (the classifier with its own names
    kept, so ``net.*`` state-dict keys are exactly the plain network's and its checkpoints load into ``net``).
    :attr:`cam_layer` names the Grad-CAM target: ``net.layer4`` (ResNets, SEResNet50),
    ``net.features.denseblock4`` (DenseNet121; not ``features.norm5``, where the in-place ReLU after it breaks
    Grad-CAM's backward hooks), ``net.refine`` (DCAT), or ``net.<cam_layer>`` of a given network that has one.

    At a stage, the block is registered a second time, as a child ``gsa`` of the stage (the same object, so
    ``model.net.<at>.gsa is model.gsa``). A plain ``nn.Sequential`` stage (every stage of the named networks)
    then runs it as its last layer; any other module gets a forward hook, set here, that returns
    ``module.gsa(output)`` (TorchScript scripts a hook that reads ``module.gsa``, not one that closes over the
    block). State-dict hooks hide the duplicate, so the eager state dict holds the block once, under ``gsa.*``,
    and the same keys whatever ``at`` is; a scripted model, which does not keep those hooks, also lists
    ``net.<at>.gsa.*`` (the same tensors; such a state dict still loads into the eager model). A ``nn.Sequential``
    stage gains one item (``len(model.net.<at>)`` grows by 1, its last item is the block). The model scripts
    and traces at the input and at the stages of the named networks; with a hook, tracing fails when a module
    above the stage has ``@torch.jit.export`` methods (TorchScript then compiles the hook without the stage's
    ``forward``), scripting works.

    Args:
        net: an ``nn.Module`` classifier of 2D images, or a name: ``"densenet121"`` (MONAI ``DenseNet121``),
            ``"resnet18"``, ``"resnet34"``, ``"resnet50"`` (MONAI ResNets with ``conv1_t_stride=2``, the usual
            ImageNet layout), ``"seresnet50"`` (MONAI ``SEResNet50``), ``"dual_cross_attention"`` (medfuse
            :class:`~medfuse.networks.nets.DualCrossAttentionNet`). Defaults to ``"resnet18"``.
        in_channels: image channels, for a named ``net``. Defaults to 1.
        num_classes: outputs, for a named ``net``. Defaults to 2.
        at: ``"input"``, or the name of a submodule of ``net`` with a ``(B, C, H, W)`` output. Defaults to
            ``"input"``.
        map_size: ``(h, w)`` of the learned map. Defaults to ``(16, 16)``.
        mode: ``"logit_map"`` or ``"image_basis"`` (see the block). Defaults to ``"logit_map"``.
        basis: ``(K, h, w)`` basis for ``"image_basis"``. Defaults to None.
        init_logit: initial logit; the default 3.0 starts the map at about 0.95 (near identity). Defaults to 3.0.
        net_kwargs: more keyword arguments for a named ``net``'s constructor (e.g. ``backbones``, ``hidden_size``
            for DCAT, ``dropout_prob`` for DenseNet121). Defaults to None.

    Attributes:
        stages: typical values of ``at`` for this ``net`` (DenseNet121 ``features.denseblock1..4``, ResNets
            ``layer1..4``, SEResNet50 ``layer0..4``, DCAT the tapped stages of both branches).
        cam_layer: Grad-CAM layer name (None for a given network of unknown family without ``cam_layer``).
        applied_by: ``"input"``, ``"sequential"`` (last layer of the ``net.<at>`` Sequential) or ``"hook"``
            (forward hook on ``net.<at>``).

    Raises:
        ValueError: an unknown network name (the message lists the valid names), ``net`` neither a name nor a
            module, ``net_kwargs`` with a given module or clashing with ``in_channels`` / ``num_classes``, bad
            ``in_channels`` or ``num_classes``, ``at`` not ``"input"`` nor a submodule of ``net`` (the message
            lists the stages), and the block's own argument errors.

    Examples::

        >>> model = GlobalSpatialAttentionNet("resnet18", in_channels=1, num_classes=2)
        >>> model(torch.randn(2, 1, 224, 224)).shape
        torch.Size([2, 2])
        >>> model.get_map((224, 224)).shape  # the learned map, shared by all images
        torch.Size([1, 1, 224, 224])
        # on a DenseNet's second dense block, with the paper's per-pixel classifier over training intensities
        >>> basis = GlobalSpatialAttention.basis_from_images(train_images, k=16)
        >>> model = GSANet("densenet121", at="features.denseblock2", mode="image_basis", basis=basis)
        >>> cam = monai.visualize.GradCAM(model, target_layers=model.cam_layer)
    """

    def __init__(
        self,
        net: Union[str, nn.Module] = "resnet18",
        in_channels: int = 1,
        num_classes: int = 2,
        at: str = "input",
        map_size: Union[Sequence[int], int] = (16, 16),
        mode: str = "logit_map",
        basis: Optional[Union[torch.Tensor, np.ndarray]] = None,
        init_logit: float = 3.0,
        net_kwargs: Optional[Mapping[str, Any]] = None,
    ) -> None:
        super().__init__()
        if not isinstance(net, (str, nn.Module)):
            raise ValueError(f"net must be a network name or an nn.Module, got {type(net).__name__}.")
        if isinstance(net, str) and net not in GSA_NETWORKS:
            raise ValueError(f"unknown net {net!r}: expected one of {', '.join(GSA_NETWORKS)}, or an nn.Module.")
        for arg, value in (("in_channels", in_channels), ("num_classes", num_classes)):
            if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 1:
                raise ValueError(f"{arg} must be a positive integer, got {value!r}.")
        if net_kwargs is not None and not isinstance(net_kwargs, Mapping):
            raise ValueError(f"net_kwargs must be a mapping or None, got {type(net_kwargs).__name__}.")
        if isinstance(net, nn.Module) and net_kwargs:
            raise ValueError(
                f"net_kwargs only applies to a network given by name; got {dict(net_kwargs)!r} with a module."
            )
        if not isinstance(at, str) or not at:
            raise ValueError(f"at must be 'input' or the name of a submodule of net, got {at!r}.")

        self.net_name = net if isinstance(net, str) else type(net).__name__
        # the block first: named_parameters() and the state dict then name its tensors gsa.*
        self.gsa = GlobalSpatialAttention(
            spatial_dims=2, map_size=map_size, mode=mode, basis=basis, init_logit=init_logit
        )
        if isinstance(net, str):
            net = _build(net, int(in_channels), int(num_classes), dict(net_kwargs or {}))
        self.net = net
        self.in_channels = int(in_channels)
        self.num_classes = int(num_classes)
        self.at = at
        self.at_input = at == "input"
        self.stages, cam = _stages_and_cam_layer(self.net)
        self.cam_layer = None if cam is None else f"net.{cam}"
        self.applied_by = "input"
        if not self.at_input:
            modules = dict(self.net.named_modules())
            if at not in modules or at == "":
                raise ValueError(
                    f"at={at!r} is neither 'input' nor a submodule of {self.net_name}: use 'input' or a stage, "
                    f"one of {', '.join(self.stages)}."
                )
            self.applied_by = _attach(modules[at], at, self.gsa)

    def get_map(self, size: Optional[List[int]] = None) -> torch.Tensor:
        """The learned map, ``(1, 1, H, W)`` in [0, 1] (at ``map_size`` when ``size`` is None)."""
        return self.gsa.get_map(size)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """
        Args:
            x: ``(B, in_channels, H, W)``.

        Returns:
            ``net``'s output, logits ``(B, num_classes)`` for the named networks.
        """
        if self.at_input:
            x = self.gsa(x)
        return self.net(x)


GSANet = GlobalSpatialAttentionNet
