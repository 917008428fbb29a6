# Copyright (c) medfuse contributors
# Licensed under the Apache License, Version 2.0
"""2D CNN backbones by name (MONAI EfficientNet / ResNet feature extractors), their tap levels, and ImageNet
weight loading with key mapping from the common public checkpoint layouts.

Backbones are MONAI modules, always built with ``pretrained=False`` (MONAI's defaults would download
EfficientNet weights and silently leave a 1-channel stem untrained, and its ResNet weights are 3D MedicalNet
only); weights are loaded here, strictly:

* ResNet (``resnet10`` ... ``resnet152``): torchvision and timm ``resnet*`` checkpoints. Both use the same key
  names as MONAI's ``ResNet`` (``conv1``, ``bn1``, ``layerN.i.convK`` / ``bnK``, ``layerN.0.downsample.{0,1}``,
  ``fc``). MONAI's own ``resnet18``/``resnet34`` use parameter-free "A" shortcuts (MedicalNet layout), which no
  ImageNet checkpoint has, so :class:`ImageNetResNetFeatures` builds every depth with projection ("B")
  shortcuts without bias, exactly like torchvision; ``resnet10/50/101/152`` are unchanged from MONAI.
* EfficientNet (``efficientnet-b0`` ... ``efficientnet-b7``): the lukemelas ``efficientnet_pytorch`` layout that
  MONAI downloads (flat ``_blocks.<i>``), MONAI's own nested layout (``_blocks.<stage>.<i>``), timm
  (``conv_stem``, ``blocks.<stage>.<j>.conv_dw`` ...) and torchvision (``features.<k>.<j>.block.<m>``). MONAI's
  EfficientNet uses TensorFlow "same" padding and BatchNorm eps 1e-3: lukemelas and timm ``tf_efficientnet_*``
  weights match it exactly; timm's non-``tf_`` and torchvision weights were trained with symmetric padding
  and load with a warning (good initialisation, slightly different features).

The first convolution is adapted to ``in_channels=1`` by summing the RGB kernels, which equals feeding the grey
image replicated into R, G and B (normalise grey input with the channel-averaged ImageNet statistics, about
mean 0.449 and std 0.226). A checkpoint that does not cover the model exactly (missing or unexpected keys,
shape mismatches; classifier heads excepted) raises :class:`PretrainedWeightsError` naming a few offending keys.
"""

from __future__ import annotations

import os
import re
import socket
import threading
import urllib.error
import warnings
from collections.abc import Iterable, Mapping, Sequence
from typing import NamedTuple
from urllib.parse import urlparse

import torch
import torch.nn as nn
from monai.networks.nets import EfficientNetBNFeatures, ResNetFeatures
from monai.networks.nets.efficientnet import url_map as _EFFICIENTNET_URLS
from monai.networks.nets.resnet import ResNet, get_inplanes, resnet_params
from monai.utils import optional_import

from medfuse.errors import DataError, MedfuseError

__all__ = [
    "EFFICIENTNET_NAMES",
    "RESNET_NAMES",
    "SUPPORTED_BACKBONES",
    "TAP_STRIDES",
    "ImageNetResNetFeatures",
    "PretrainedWeightsError",
    "TapInfo",
    "backbone_family",
    "backbone_taps",
    "build_backbone",
    "convert_from_monai_layout",
    "detect_layout",
    "download_imagenet_weights",
    "load_pretrained_weights",
    "monai_key_map",
    "read_state_dict",
    "truncate_backbone",
]

EFFICIENTNET_NAMES = tuple(f"efficientnet-b{i}" for i in range(8))
RESNET_NAMES = ("resnet10", "resnet18", "resnet34", "resnet50", "resnet101", "resnet152")
SUPPORTED_BACKBONES = EFFICIENTNET_NAMES + RESNET_NAMES

#: strides that can be tapped, and the index of that level in the list returned by MONAI's
#: ``EfficientNetBNFeatures`` / ``ResNetFeatures`` forward (both return strides 2, 4, 8, 16, 32).
TAP_STRIDES = (4, 8, 16, 32)
_FEATURE_INDEX = {2: 0, 4: 1, 8: 2, 16: 3, 32: 4}
#: EfficientNet stage (index into ``_blocks``) whose output is the level of a given stride
_EFFICIENTNET_STAGE = {2: 0, 4: 1, 8: 2, 16: 4, 32: 6}
#: ResNet stage whose output is the level of a given stride
_RESNET_STAGE = {4: "layer1", 8: "layer2", 16: "layer3", 32: "layer4"}

#: torchvision ImageNet-1k (V1) ResNet weights; the hash prefix in the file name is checked on download
_RESNET_URLS = {
    "resnet18": "https://download.pytorch.org/models/resnet18-f37072fd.pth",
    "resnet34": "https://download.pytorch.org/models/resnet34-b627a593.pth",
    "resnet50": "https://download.pytorch.org/models/resnet50-0676ba61.pth",
    "resnet101": "https://download.pytorch.org/models/resnet101-63fe2227.pth",
    "resnet152": "https://download.pytorch.org/models/resnet152-394f9c45.pth",
}

_FIRST_CONV = {"efficientnet": "_conv_stem.weight", "resnet": "conv1.weight"}
_LAYOUTS = {"efficientnet": ("monai", "lukemelas", "timm", "torchvision"), "resnet": ("torchvision",)}


class PretrainedWeightsError(MedfuseError, RuntimeError):
    """ImageNet weights cannot be obtained (offline download) or do not fit the backbone."""


class TapInfo(NamedTuple):
    """One tappable feature level of a backbone.

    Attributes:
        stride: downsampling factor relative to the input.
        channels: number of channels of the level.
        feature_index: index of the level in the list returned by the backbone's ``forward``.
        module: name of the submodule (relative to the backbone) whose output is the level.
    """

    stride: int
    channels: int
    feature_index: int
    module: str


class ImageNetResNetFeatures(ResNetFeatures):
    """MONAI :class:`~monai.networks.nets.ResNetFeatures` (2D, stride-2 stem) with ImageNet-style shortcuts.

    Identical to ``ResNetFeatures(model_name, pretrained=False, ...)`` except that every depth uses
    projection shortcuts (1x1 conv + BN, no bias) as torchvision does; MONAI gives ``resnet18``/``resnet34``
    parameter-free "A" shortcuts, which no ImageNet checkpoint has. ``forward`` is MONAI's and returns the
    stem (stride 2) and ``layer1`` ... ``layer4`` (strides 4 ... 32) outputs.

    Args:
        model_name: one of ``resnet10``, ``resnet18``, ``resnet34``, ``resnet50``, ``resnet101``, ``resnet152``.
        spatial_dims: number of spatial dimensions. Defaults to 2.
        in_channels: number of input channels. Defaults to 3.

    Raises:
        ValueError: when ``model_name`` is not supported.
    """

    def __init__(self, model_name: str, spatial_dims: int = 2, in_channels: int = 3) -> None:
        if model_name not in RESNET_NAMES:
            raise ValueError(f"model_name must be one of {', '.join(RESNET_NAMES)}, got {model_name!r}.")
        block, layers, _shortcut, _bias, _datasets23 = resnet_params[model_name]
        # deliberately skip ResNetFeatures.__init__ (MedicalNet shortcut types, pretrained default True)
        ResNet.__init__(
            self,
            block=block,
            layers=layers,
            block_inplanes=get_inplanes(),
            spatial_dims=spatial_dims,
            n_input_channels=in_channels,
            conv1_t_stride=2,
            shortcut_type="B",
            feed_forward=False,
            bias_downsample=False,
        )


def backbone_family(name: str) -> str:
    """``"efficientnet"`` or ``"resnet"`` for a supported backbone name.

    Raises:
        ValueError: when ``name`` is not one of :data:`SUPPORTED_BACKBONES`.
    """
    if name in EFFICIENTNET_NAMES:
        return "efficientnet"
    if name in RESNET_NAMES:
        return "resnet"
    raise ValueError(f"unknown backbone {name!r}: expected one of {', '.join(SUPPORTED_BACKBONES)}.")


def backbone_taps(backbone: nn.Module, name: str) -> dict[int, TapInfo]:
    """The tappable levels (stride -> :class:`TapInfo`) of a backbone built by :func:`build_backbone`.

    Channels are read from the modules (not a table), so they are exact for every width. Levels removed by
    :func:`truncate_backbone` are left out.
    """
    family = backbone_family(name)
    taps: dict[int, TapInfo] = {}
    if family == "efficientnet":
        stages = backbone._blocks  # type: ignore[union-attr]
        for stride, stage in _EFFICIENTNET_STAGE.items():
            if stride not in TAP_STRIDES or stage >= len(stages):
                continue
            channels = stages[stage][-1]._project_conv.out_channels
            taps[stride] = TapInfo(stride, int(channels), _FEATURE_INDEX[stride], f"_blocks.{stage}")
    else:
        for stride, layer_name in _RESNET_STAGE.items():
            layer = getattr(backbone, layer_name)
            if not isinstance(layer, nn.Sequential):  # removed by truncate_backbone
                continue
            last = layer[-1]
            norm = last.bn3 if hasattr(last, "bn3") else last.bn2
            taps[stride] = TapInfo(stride, int(norm.num_features), _FEATURE_INDEX[stride], layer_name)
    return taps


def truncate_backbone(backbone: nn.Module, name: str, max_stride: int) -> nn.Module:
    """Remove (in place) the stages deeper than ``max_stride`` and the unused classification head.

    The removed parts would otherwise cost compute and leave parameters without gradients (which breaks
    ``DistributedDataParallel`` without ``find_unused_parameters``). MONAI's ``forward`` still works: removed
    EfficientNet stages shorten the returned list, removed ResNet layers become ``nn.Identity``.
    """
    if max_stride not in TAP_STRIDES:
        raise ValueError(f"max_stride must be one of {TAP_STRIDES}, got {max_stride}.")
    family = backbone_family(name)
    if family == "efficientnet":
        backbone._blocks = backbone._blocks[: _EFFICIENTNET_STAGE[max_stride] + 1]
        # the head is not used by EfficientNetBNFeatures.forward
        for attr in ("_conv_head", "_conv_head_padding", "_bn1", "_avg_pooling", "_dropout", "_fc"):
            setattr(backbone, attr, nn.Identity())
    else:
        for stride, layer_name in _RESNET_STAGE.items():
            if stride > max_stride:
                setattr(backbone, layer_name, nn.Identity())
    return backbone


def build_backbone(
    name: str,
    in_channels: int = 3,
    spatial_dims: int = 2,
    max_stride: int = 32,
    weights: str | os.PathLike | Mapping[str, torch.Tensor] | None = None,
    pretrained: bool = False,
    progress: bool = True,
    timeout: float = 10.0,
) -> nn.Module:
    """Build a MONAI feature extractor by name (always ``pretrained=False`` in MONAI), truncate it after
    ``max_stride`` (:func:`truncate_backbone`), and load ImageNet weights if asked
    (:func:`load_pretrained_weights`; a full checkpoint is expected, the removed stages' keys are discarded).

    Args:
        name: one of :data:`SUPPORTED_BACKBONES`.
        in_channels: input channels (1 or 3 for ImageNet weights). Defaults to 3.
        spatial_dims: only 2 is supported. Defaults to 2.
        max_stride: deepest level kept (see :func:`truncate_backbone`). Defaults to 32.
        weights: a checkpoint path or state dict (any layout of the module docstring). Defaults to None.
        pretrained: when ``weights`` is None, download ImageNet weights (EfficientNet: MONAI's lukemelas
            URLs; ResNet: torchvision's). Defaults to False.
        progress: show the download progress bar. Defaults to True.
        timeout: seconds to wait for the network before giving up. Defaults to 10.

    Raises:
        ValueError: for an unknown name or unsupported ``spatial_dims``.
        PretrainedWeightsError: when weights cannot be downloaded or do not fit.
        DataError: when the ``weights`` file does not exist.
    """
    family = backbone_family(name)
    if spatial_dims != 2:
        raise ValueError(f"only 2D backbones are supported, got spatial_dims={spatial_dims}.")
    if family == "efficientnet":
        # pretrained=False always: MONAI's loader downloads and silently skips a 1-channel stem
        net: nn.Module = EfficientNetBNFeatures(name, pretrained=False, spatial_dims=2, in_channels=in_channels)
    else:
        net = ImageNetResNetFeatures(name, spatial_dims=2, in_channels=in_channels)
    if weights is None and pretrained:
        weights = download_imagenet_weights(name, progress=progress, timeout=timeout)
    full_keys = list(net.state_dict())
    truncate_backbone(net, name, max_stride)
    if weights is not None:
        # keys of the removed stages are recognised (and discarded), anything unknown is an error
        load_pretrained_weights(net, name, weights, reference_keys=full_keys)
    return net


# ----------------------------------------------------------------------------------------------------------
# checkpoint reading and downloading


def read_state_dict(source: str | os.PathLike | Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Read a checkpoint (``.pth``/``.pt``/``.bin`` through ``torch.load(weights_only=True)``, or ``.safetensors``)
    and unwrap the usual containers (``state_dict``, ``model``, ``module.`` prefixes).

    Raises:
        DataError: when the file does not exist.
        PretrainedWeightsError: when it cannot be read or holds no tensors.
    """
    if isinstance(source, Mapping):
        state: Mapping = source
        where = "the given state dict"
    else:
        path = os.fspath(source)
        where = path
        if not os.path.isfile(path):
            raise DataError(f"pretrained weights file not found: {path} (give the path of a .pth/.safetensors file)")
        try:
            if path.endswith(".safetensors"):
                load_file, has_st = optional_import("safetensors.torch", name="load_file")
                if not has_st:
                    raise PretrainedWeightsError(
                        f"{path}: reading .safetensors needs the 'safetensors' package; convert it to .pth instead"
                    )
                state = load_file(path, device="cpu")
            else:
                state = torch.load(path, map_location="cpu", weights_only=True)
        except PretrainedWeightsError:
            raise
        except Exception as e:  # unpickling errors have many types
            raise PretrainedWeightsError(f"cannot read pretrained weights {path}: {type(e).__name__}: {e}") from e
    # unwrap training checkpoints
    for container in ("state_dict", "model", "model_state_dict", "network"):
        inner = state.get(container) if isinstance(state, Mapping) else None
        if isinstance(inner, Mapping) and any(torch.is_tensor(v) for v in inner.values()):
            state = inner
            break
    if not isinstance(state, Mapping) or not any(torch.is_tensor(v) for v in state.values()):
        raise PretrainedWeightsError(f"{where} holds no state dict (a mapping of parameter names to tensors)")
    out = {str(k): v for k, v in state.items() if torch.is_tensor(v)}
    for prefix in ("module.", "_orig_mod."):
        if out and all(k.startswith(prefix) for k in out):
            out = {k[len(prefix) :]: v for k, v in out.items()}
    return out


def _hub_cache_path(url: str) -> str:
    return os.path.join(torch.hub.get_dir(), "checkpoints", os.path.basename(urlparse(url).path))


def _probe_host(host: str, timeout: float) -> None:
    """Raise OSError unless a TCP connection to ``host:443`` opens within ``timeout`` seconds.

    Runs in a daemon thread because name resolution ignores socket timeouts and can block far longer.
    """
    outcome: dict[str, BaseException | bool] = {}

    def connect() -> None:
        try:
            socket.create_connection((host, 443), timeout=timeout).close()
            outcome["ok"] = True
        except OSError as e:
            outcome["error"] = e

    thread = threading.Thread(target=connect, name=f"probe-{host}", daemon=True)
    thread.start()
    thread.join(timeout)
    if outcome.get("ok") is True:
        return
    error = outcome.get("error")
    raise error if isinstance(error, OSError) else socket.timeout(f"no answer within {timeout:g} s")


def download_imagenet_weights(name: str, progress: bool = True, timeout: float = 10.0) -> dict[str, torch.Tensor]:
    """ImageNet weights for a backbone from the torch hub cache, or downloaded into it.

    EfficientNet weights come from MONAI's URLs (lukemelas ``efficientnet_pytorch`` releases), ResNet weights
    from torchvision's. The cache (``$TORCH_HOME/hub/checkpoints``) is used without touching the network.
    Otherwise the host is probed with a ``timeout``-second connection first, so an offline machine fails in
    seconds instead of hanging.

    Raises:
        PretrainedWeightsError: when no URL exists for ``name`` or the download fails; the message says how to
            pass a local file instead.
    """
    family = backbone_family(name)
    url = (_EFFICIENTNET_URLS if family == "efficientnet" else _RESNET_URLS).get(name)
    how = (
        f"download it on a machine with internet access and pass the local file, e.g. "
        f"pretrained_weights={{'{family}': '/path/to/{os.path.basename(url) if url else name + '.pth'}'}}, "
        f"or copy it to {os.path.join(torch.hub.get_dir(), 'checkpoints')}, or use pretrained=False"
    )
    if url is None:
        raise PretrainedWeightsError(f"no ImageNet weights can be downloaded for {name}; {how}")
    cached = _hub_cache_path(url)
    if not os.path.isfile(cached):
        host = urlparse(url).hostname or ""
        try:
            _probe_host(host, timeout)
        except OSError as e:  # gaierror, timeout, refused: all OSError
            raise PretrainedWeightsError(
                f"cannot download ImageNet weights for {name} from {url} (no connection to {host}: {e}); {how}"
            ) from e
    previous = socket.getdefaulttimeout()
    socket.setdefaulttimeout(timeout)  # urllib inside torch.hub has no timeout of its own
    try:
        state = torch.hub.load_state_dict_from_url(
            url, map_location="cpu", progress=progress, check_hash=family == "resnet", weights_only=True
        )
    except (urllib.error.URLError, OSError, RuntimeError) as e:
        raise PretrainedWeightsError(f"cannot download ImageNet weights for {name} from {url} ({e}); {how}") from e
    finally:
        socket.setdefaulttimeout(previous)
    return read_state_dict(state)


# ----------------------------------------------------------------------------------------------------------
# key layouts

_NESTED_BLOCK = re.compile(r"^_blocks\.(\d+)\.(\d+)\.(.+)$")
# MONAI MBConv submodule -> (timm name without expansion, timm name with expansion)
_TIMM_BLOCK = {
    "_expand_conv": (None, "conv_pw"),
    "_bn0": (None, "bn1"),
    "_depthwise_conv": ("conv_dw", "conv_dw"),
    "_bn1": ("bn1", "bn2"),
    "_se_reduce": ("se.conv_reduce", "se.conv_reduce"),
    "_se_expand": ("se.conv_expand", "se.conv_expand"),
    "_project_conv": ("conv_pw", "conv_pwl"),
    "_bn2": ("bn2", "bn3"),
}
# MONAI MBConv submodule -> (torchvision name without expansion, with expansion), relative to ``.block``
_TORCHVISION_BLOCK = {
    "_expand_conv": (None, "0.0"),
    "_bn0": (None, "0.1"),
    "_depthwise_conv": ("0.0", "1.0"),
    "_bn1": ("0.1", "1.1"),
    "_se_reduce": ("1.fc1", "2.fc1"),
    "_se_expand": ("1.fc2", "2.fc2"),
    "_project_conv": ("2.0", "3.0"),
    "_bn2": ("2.1", "3.1"),
}
_EFFICIENTNET_TOP = {
    # MONAI prefix: (lukemelas, timm, torchvision with {head} = number of stages + 1)
    "_conv_stem.": ("_conv_stem.", "conv_stem.", "features.0.0."),
    "_bn0.": ("_bn0.", "bn1.", "features.0.1."),
    "_conv_head.": ("_conv_head.", "conv_head.", "features.{head}.0."),
    "_bn1.": ("_bn1.", "bn2.", "features.{head}.1."),
    "_fc.": ("_fc.", "classifier.", "classifier.1."),
}


def detect_layout(state_dict: Mapping[str, torch.Tensor], family: str) -> str:
    """Name the key layout of a checkpoint: EfficientNet ``monai`` / ``lukemelas`` / ``timm`` / ``torchvision``,
    ResNet ``torchvision`` (timm and MONAI use the same names).

    Raises:
        PretrainedWeightsError: when the layout is not recognised.
    """
    keys = set(state_dict)
    if family == "efficientnet":
        if "_conv_stem.weight" in keys:
            return "monai" if any(_NESTED_BLOCK.match(k) for k in keys) else "lukemelas"
        if "conv_stem.weight" in keys:
            return "timm"
        if "features.0.0.weight" in keys:
            return "torchvision"
        expected = "'_conv_stem.weight' (lukemelas/MONAI), 'conv_stem.weight' (timm) or 'features.0.0.weight'"
    elif family == "resnet":
        if "conv1.weight" in keys and "layer1.0.conv1.weight" in keys:
            return "torchvision"
        expected = "'conv1.weight' and 'layer1.0.conv1.weight' (torchvision/timm/MONAI ResNet)"
    else:
        raise ValueError(f"family must be 'efficientnet' or 'resnet', got {family!r}.")
    sample = sorted(keys)[:5]
    raise PretrainedWeightsError(
        f"unrecognised {family} checkpoint layout: expected keys like {expected}, found e.g. {sample}"
    )


def monai_key_map(monai_keys: Iterable[str], family: str, layout: str) -> dict[str, str]:
    """Map each MONAI state-dict key of a backbone to its name in another checkpoint layout.

    Works on key names alone (the nested ``_blocks.<stage>.<i>`` names carry the block structure), so the same
    map renames a MONAI state dict to a foreign layout (:func:`convert_from_monai_layout`) and, inverted, a
    foreign checkpoint to MONAI names (:func:`load_pretrained_weights`).

    Raises:
        ValueError: for an unknown family or layout.
    """
    keys = list(monai_keys)
    if family not in _LAYOUTS or layout not in _LAYOUTS[family]:
        raise ValueError(f"layout must be one of {_LAYOUTS.get(family, ())} for family {family!r}, got {layout!r}.")
    if family == "resnet" or layout == "monai":
        return {k: k for k in keys}
    # block structure from the nested MONAI names
    stage_members: dict[int, set[int]] = {}
    expanded: set[tuple[int, int]] = set()
    for k in keys:
        m = _NESTED_BLOCK.match(k)
        if m:
            s, i = int(m.group(1)), int(m.group(2))
            stage_members.setdefault(s, set()).add(i)
            if m.group(3).startswith("_expand_conv."):
                expanded.add((s, i))
    first_in_stage = {s: min(members) for s, members in stage_members.items()}
    head = len(stage_members) + 1
    col = {"lukemelas": 0, "timm": 1, "torchvision": 2}[layout]
    out: dict[str, str] = {}
    for k in keys:
        m = _NESTED_BLOCK.match(k)
        if m is None:
            for prefix, names in _EFFICIENTNET_TOP.items():
                if k.startswith(prefix):
                    out[k] = names[col].format(head=head) + k[len(prefix) :]
                    break
            else:
                out[k] = k
            continue
        s, i, rest = int(m.group(1)), int(m.group(2)), m.group(3)
        if layout == "lukemelas":
            out[k] = f"_blocks.{i}.{rest}"
            continue
        sub, _, tail = rest.partition(".")
        table = _TIMM_BLOCK if layout == "timm" else _TORCHVISION_BLOCK
        if sub not in table:
            raise ValueError(f"unexpected EfficientNet block key {k!r}")
        name = table[sub][1 if (s, i) in expanded else 0]
        j = i - first_in_stage[s]
        if layout == "timm":
            out[k] = f"blocks.{s}.{j}.{name}.{tail}"
        else:
            out[k] = f"features.{s + 1}.{j}.block.{name}.{tail}"
    return out


def convert_from_monai_layout(
    state_dict: Mapping[str, torch.Tensor], family: str, layout: str
) -> dict[str, torch.Tensor]:
    """Rename a MONAI backbone state dict to another layout (e.g. to share weights, or to test the mapping)."""
    key_map = monai_key_map(state_dict.keys(), family, layout)
    return {key_map[k]: v for k, v in state_dict.items()}


def _adapt_first_conv(weight: torch.Tensor, in_channels: int, key: str, where: str) -> torch.Tensor:
    if weight.ndim < 2 or weight.shape[1] == in_channels:
        return weight
    if in_channels == 1:
        # grey image replicated into RGB: conv(sum_c w_c, g) == sum_c conv(w_c, g)
        return weight.sum(dim=1, keepdim=True)
    raise PretrainedWeightsError(
        f"{where}: {key} has {weight.shape[1]} input channels; the model has {in_channels} "
        f"(only 3 -> 1 is adapted, by summing over RGB)"
    )


def _few(items: Sequence[str], n: int = 5) -> str:
    shown = ", ".join(items[:n])
    return f"{shown}, ... ({len(items)} in all)" if len(items) > n else shown


def _is_head_key(key: str, family: str) -> bool:
    """Classification-head keys (unused by the feature extractors): optional when loading."""
    if family == "efficientnet":
        return key.startswith(("_fc.", "_conv_head.", "_bn1."))  # top-level _bn1 (block keys start with _blocks.)
    return key.startswith("fc.")


def load_pretrained_weights(
    backbone: nn.Module,
    name: str,
    source: str | os.PathLike | Mapping[str, torch.Tensor],
    layout: str | None = None,
    reference_keys: Iterable[str] | None = None,
) -> str:
    """Load ImageNet weights into a backbone built by :func:`build_backbone`, strictly.

    The checkpoint layout is detected (or given), keys are renamed to MONAI's, the first convolution is summed
    over RGB for ``in_channels=1``. Every parameter and buffer of ``backbone`` must be provided with the right
    shape (missing ``num_batches_tracked`` buffers excepted). Checkpoint keys of the classification head
    (EfficientNet ``_conv_head``/``_bn1``/``_fc`` and their timm/torchvision names, ResNet ``fc``) and of stages
    listed in ``reference_keys`` but removed from ``backbone`` by :func:`truncate_backbone` are discarded; any
    other key is unexpected.

    Args:
        backbone: the MONAI feature extractor.
        name: its backbone name.
        source: checkpoint path or state dict.
        layout: key layout; detected when None. Defaults to None.
        reference_keys: MONAI state-dict keys of the untruncated backbone; defaults to ``backbone``'s keys.

    Returns:
        the layout name.

    Raises:
        PretrainedWeightsError: on missing/unexpected keys or shape mismatches, listing a few of them.
        DataError: when a path is given and the file does not exist.
    """
    family = backbone_family(name)
    where = "the given state dict" if isinstance(source, Mapping) else os.fspath(source)
    state = read_state_dict(source)
    layout = layout or detect_layout(state, family)
    target = backbone.state_dict()
    reference = list(target) if reference_keys is None else list(reference_keys)
    key_map = monai_key_map(reference, family, layout)
    foreign_to_monai = {v: k for k, v in key_map.items()}
    discard = {k for k in reference if _is_head_key(k, family) or k not in target}
    head_foreign = ("fc.",) if family == "resnet" else ()
    first_conv = _FIRST_CONV[family]
    in_channels = target[first_conv].shape[1]

    new_state = dict(target)
    loaded: set[str] = set()
    unexpected: list[str] = []
    mismatched: list[str] = []
    for fk, value in state.items():
        mk = foreign_to_monai.get(fk)
        if mk is None:
            if not (head_foreign and fk.startswith(head_foreign)):
                unexpected.append(fk)
            continue
        if mk in discard:
            continue
        if mk == first_conv:
            value = _adapt_first_conv(value, in_channels, fk, where)
        if tuple(value.shape) != tuple(target[mk].shape):
            mismatched.append(f"{fk}: checkpoint {tuple(value.shape)} vs model {tuple(target[mk].shape)}")
            continue
        new_state[mk] = value.to(dtype=target[mk].dtype)
        loaded.add(mk)
    missing = [
        key_map.get(k, k)
        for k in target
        if k not in loaded and k not in discard and not k.endswith("num_batches_tracked")
    ]
    if missing or unexpected or mismatched:
        parts = []
        if missing:
            parts.append(f"{len(missing)} missing key(s): {_few(missing)}")
        if unexpected:
            parts.append(f"{len(unexpected)} unexpected key(s): {_few(sorted(unexpected))}")
        if mismatched:
            parts.append(f"{len(mismatched)} shape mismatch(es): {_few(mismatched, 3)}")
        raise PretrainedWeightsError(
            f"cannot load {where} into {name} (detected {layout} layout): " + "; ".join(parts)
            + f". Is it a checkpoint of a different model? {name} needs a complete {family} ImageNet state dict."
        )
    if family == "efficientnet" and layout in ("timm", "torchvision"):
        warnings.warn(
            f"{where}: {layout} EfficientNet weights loaded into MONAI's EfficientNet, which uses TensorFlow 'same' "
            f"padding{' and BatchNorm eps 1e-3' if layout == 'torchvision' else ''}; unless these are timm "
            f"'tf_efficientnet' weights, features differ slightly from the original model (fine-tune).",
            stacklevel=2,
        )
    backbone.load_state_dict(new_state, strict=True)
    return layout
