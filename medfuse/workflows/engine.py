# Copyright (c) medfuse contributors
# Licensed under the Apache License, Version 2.0
"""Engine settings shared by the bundles: device, AMP, threads, determinism, and the speed keys.

Mixed precision is bf16 autocast on CUDA and off (fp32) on a CPU: the configs pass
``amp=medfuse.workflows.use_amp(device)`` and ``amp_kwargs=medfuse.workflows.amp_kwargs(device)``
to MONAI's ``SupervisedTrainer`` / ``SupervisedEvaluator``, which hand ``amp_kwargs`` to
``torch.autocast("cuda", **amp_kwargs)`` (MONAI 1.6.1, ``monai/engines/trainer.py`` and
``evaluator.py``).

Speed keys (declared once in the classification base ``bundles/cxr_dual_cross_attention/configs/train.json``)
are applied by :func:`speed_setup`, the one place that reads them; what it applied, and what it ignored and
why (CUDA-only keys on a CPU), goes to ``run_info.json`` under ``"speed"``. The training dataset and loader
come from :func:`make_dataset` / :func:`make_dataloader` (``cache``, ``dataloader``, ``track_meta``).
"""

from __future__ import annotations

import math
import os
import warnings
from typing import Any, Sequence

import torch
from monai.data import CacheDataset

from medfuse.errors import DataError, input_cause

__all__ = [
    "flag",
    "get_device",
    "use_amp",
    "amp_kwargs",
    "set_num_threads",
    "setup_run",
    "available_cores",
    "default_workers",
    "default_threads",
    "LR_SCALING_MODES",
    "DATALOADER_KINDS",
    "CACHE_MODES",
    "scaled_learning_rate",
    "speed_setup",
    "make_dataset",
    "make_dataloader",
]

LR_SCALING_MODES = ("none", "linear", "sqrt")
DATALOADER_KINDS = ("torch", "thread")
CACHE_MODES = ("none", "memory", "disk")


def get_device(device: str | torch.device | None = "") -> torch.device:
    """``device`` as a ``torch.device``; empty or ``None`` picks ``cuda`` when available, else ``cpu``."""
    if isinstance(device, torch.device):
        return device
    if not device:
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(device)


_TRUE = {"true", "yes", "on", "1"}
_FALSE = {"false", "no", "off", "0", "none", ""}
#: the words :func:`flag` reads as true or false (a command-line override of a flag arrives as such a string)
FLAG_WORDS = frozenset(_TRUE | _FALSE)


def flag(value, name: str = "value") -> bool:
    """A config switch as a bool, strict about strings.

    ``python -m monai.bundle run --save_cam false`` passes the *string* ``'false'`` (the command
    line parser only knows ``True``/``False``), which plain truthiness would read as on. This
    accepts bools, 0/1 and the usual words in any case, and refuses anything else.

    Raises:
        ValueError: for a value that is not a recognisable switch; the message names ``name``.
    """
    if isinstance(value, bool):
        return value
    if isinstance(value, (int, float)) and value in (0, 1):
        return bool(value)
    if value is None:
        return False
    if isinstance(value, str) and value.strip().lower() in _TRUE | _FALSE:
        return value.strip().lower() in _TRUE
    raise ValueError(f"{name} must be true or false, got {value!r}")


#: config keys of the classification base that not every bundle supports: (what it is, its "off" value, where it is)
_OPTIONAL_FEATURES = {
    "tta": ("test-time augmentation", "0", "only the classifiers' MCDropoutInferer has it (a segmentation or a box "
            "would need each view mapped back)"),
    "shift_augment": ("acquisition-shift augmentation", "false", "only the chest X-ray / OCT presets and the "
                      "multi-output U-Net's transforms have it"),
}


def refuse_option(value, key: str, bundle_name: str) -> None:
    """Stop a bundle that lacks an optional feature of the classification base config (``tta``, ``shift_augment``)
    when ``value`` asks for it, rather than ignore it.

    Raises:
        ValueError: when ``value`` is not off (0 / false); the message names the bundle, the key and the fix.
    """
    what, off, where = _OPTIONAL_FEATURES[key]
    if isinstance(value, bool) or value is None:
        requested = bool(value)
    elif isinstance(value, (int, float)):
        requested = value != 0
    else:
        requested = str(value).strip().lower() not in _FALSE
    if not requested:
        return
    raise ValueError(f"{bundle_name} has no {what} ({key}={value!r}): {where}; run with --{key} {off}")


def use_amp(device: str | torch.device | None = None, enabled: bool = True) -> bool:
    """True when autocast should run: ``enabled`` (a :func:`flag`) and the device is a CUDA device."""
    return flag(enabled, "amp") and get_device(device).type == "cuda"


def amp_kwargs(device: str | torch.device | None = None, dtype: str = "bfloat16") -> dict:
    """Keyword arguments for ``torch.autocast``: ``{"dtype": torch.bfloat16}`` by default.

    ``device`` is accepted so configs read the same for both helpers; the dtype does not depend
    on it (autocast only runs on CUDA, see :func:`use_amp`).
    """
    return {"dtype": getattr(torch, dtype)}


def set_num_threads(num_threads: int | None = 0) -> int:
    """Set torch's intra-op threads; 0 or ``None`` means all cores. Returns the number set."""
    n = int(num_threads or 0)
    if n <= 0:
        n = available_cores()
    torch.set_num_threads(n)
    return n


def setup_run(seed: int | None = 0, num_threads: int | None = 0) -> int:
    """Threads from ``num_threads`` and determinism from ``seed`` (``None`` or negative: not seeded).

    Called first in every bundle's ``initialize``: installs :func:`medfuse.errors.install_error_hook` (a bundle run
    stopped by an input error ends with one line naming the file and the fix), then, under ``python -m monai.bundle
    run``, refuses unknown override keys and values of the wrong type
    (:func:`medfuse.workflows.bundle.check_command_line_overrides`).

    Returns the number of threads set.
    """
    from monai.utils import set_determinism

    from medfuse.errors import install_error_hook
    from medfuse.workflows.bundle import check_command_line_overrides

    install_error_hook()
    check_command_line_overrides()  # first thing of every bundle run: typos in overrides stop it here
    n = set_num_threads(num_threads)
    if seed is not None and int(seed) >= 0:
        set_determinism(seed=int(seed))
    return n


# ----------------------------------------------------------------------------------------------------------
# CPU-sane defaults: data-loader workers and intra-op threads that do not oversubscribe the cores


def available_cores() -> int:
    """Cores this process may run on (``os.sched_getaffinity`` where there is one, else ``os.cpu_count()``)."""
    if hasattr(os, "sched_getaffinity"):
        return max(1, len(os.sched_getaffinity(0)))
    return max(1, os.cpu_count() or 1)


def default_workers(cores: int | None = None, most: int = 4) -> int:
    """Data-loader worker processes: ``min(most, cores - 1)`` (one core left to the training process), >= 0."""
    cores = available_cores() if cores is None else int(cores)
    return max(0, min(int(most), cores - 1))


def default_threads(num_workers: int = 0, cores: int | None = None) -> int:
    """Intra-op threads of the training process so that it and its workers do not oversubscribe the cores.

    ``min(cores - num_workers, cores // num_workers)``, at least 1: the workers (one thread each, as torch's
    ``DataLoader`` sets them) and the training threads fit the cores together, and ``workers x threads <= cores``.
    With no workers, all cores. On main, 4 workers and 2 threads on a 2-core machine trained several times slower
    than 1 worker and 1 thread (issue 19; ``benchmarks/cpu_defaults.py`` measures it).
    """
    cores = available_cores() if cores is None else int(cores)
    workers = max(0, int(num_workers or 0))
    if workers == 0:
        return cores
    return max(1, min(cores - workers, cores // workers))


# ----------------------------------------------------------------------------------------------------------
# speed keys


def _choice(value: Any, name: str, choices: Sequence[str]) -> str:
    text = str(value).strip().lower()
    if text not in choices:
        raise ValueError(f"{name} must be one of {', '.join(repr(c) for c in choices)}, got {value!r}")
    return text


def _auto_flag(value: Any, name: str) -> bool | None:
    """``"auto"`` as None, anything else a strict :func:`flag`."""
    if isinstance(value, str) and value.strip().lower() == "auto":
        return None
    return flag(value, name)


def _world_size() -> int:
    import torch.distributed as dist

    return dist.get_world_size() if dist.is_available() and dist.is_initialized() else 1


def scaled_learning_rate(learning_rate: float, lr_scaling: str = "none", world_size: int | None = None) -> float:
    """``learning_rate`` scaled for data-parallel training over ``world_size`` processes.

    ``"none"``: unchanged; ``"linear"``: times ``world_size`` (the global batch grows with it; Goyal et al.,
    arXiv 1706.02677); ``"sqrt"``: times ``sqrt(world_size)``. ``world_size`` defaults to the initialised process
    group's size (1 outside one).
    """
    mode = _choice(lr_scaling, "lr_scaling", LR_SCALING_MODES)
    world = _world_size() if world_size is None else int(world_size)
    if world < 1:
        raise ValueError(f"world_size must be >= 1, got {world_size!r}")
    factor = {"none": 1.0, "linear": float(world), "sqrt": math.sqrt(world)}[mode]
    return float(learning_rate) * factor


def speed_setup(
    network: torch.nn.Module,
    device: str | torch.device | None,
    channels_last: Any = True,
    compile: Any = False,
    deterministic: Any = False,
    cudnn_benchmark: Any = "auto",
    fused_optimizer: Any = "auto",
    accumulation_steps: int = 1,
    track_meta: Any = False,
    dataloader: str = "torch",
    cache: str = "none",
    sync_bn: Any = False,
    lr_scaling: str = "none",
    learning_rate: float | None = None,
    concurrent_branches: Any = False,
) -> dict:
    """Apply the speed keys to ``network`` (before it is wrapped in DDP or compiled) and to torch's global flags.

    Call it once per run after :func:`setup_run` (whose ``set_determinism`` switches cuDNN to deterministic
    mode, which ``deterministic`` / ``cudnn_benchmark`` then decide) and after the process group is started.

    Args:
        network: the bare network (``@network_def``); changed in place.
        device: the training device; CUDA-only keys are left alone on any other device and listed in
            ``"ignored"`` with the reason.
        channels_last: CUDA: ``network.to(memory_format=torch.channels_last)`` (NHWC convolutions under bf16).
        compile: ``torch.compile`` through MONAI ``SupervisedTrainer(compile=...)`` (returned, not applied here).
        deterministic: True: ``torch.use_deterministic_algorithms(True)`` and cuDNN deterministic; False: both off.
        cudnn_benchmark: CUDA: ``"auto"`` is on unless ``deterministic``.
        fused_optimizer: ``"auto"``: ``AdamW(fused=True)`` on CUDA, torch's default (None) elsewhere.
        accumulation_steps: MONAI ``SupervisedTrainer(accumulation_steps=...)`` (returned, checked >= 1).
        track_meta: False: training batches are made without MONAI metadata (:func:`make_dataset`).
        dataloader: ``"torch"`` (``monai.data.DataLoader``) or ``"thread"`` (``monai.data.ThreadDataLoader``).
        cache: ``"none"``, ``"memory"`` (``CacheDataset``) or ``"disk"`` (``PersistentDataset``) of the
            deterministic transforms (:func:`make_dataset`).
        sync_bn: CUDA: ``torch.nn.SyncBatchNorm.convert_sync_batchnorm``; on a CPU a warning and BatchNorm kept
            (SyncBatchNorm has no CPU kernel).
        lr_scaling: ``"none"``, ``"linear"`` or ``"sqrt"`` in the world size (:func:`scaled_learning_rate`).
        learning_rate: the configured rate; the effective one is returned as ``"learning_rate"``.
        concurrent_branches: CUDA: run a two-branch network's backbones on two CUDA streams (a network with a
            ``concurrent_branches`` attribute, e.g. ``DualCrossAttentionNet``).

    Returns:
        what was applied, JSON-ready: every key above with its effective value (``fused_optimizer`` as the
        ``fused`` argument to give ``AdamW``: True, False or None), ``world_size``, ``base_learning_rate``,
        ``num_threads``, ``device`` and ``ignored`` (key -> reason).

    Raises:
        ValueError: a value that is not one of the documented choices (the message names the key).
    """
    dev = get_device(device)
    cuda = dev.type == "cuda"
    ignored: dict[str, str] = {}
    not_cuda = f"CUDA only; device is {dev.type}"

    def cuda_only(name: str, wanted: bool | None) -> bool:
        if wanted and not cuda:
            ignored[name] = not_cuda
            return False
        return bool(wanted)

    steps = int(accumulation_steps)
    if isinstance(accumulation_steps, bool) or steps < 1 or steps != accumulation_steps:
        raise ValueError(f"accumulation_steps must be an integer >= 1, got {accumulation_steps!r}")
    out: dict[str, Any] = {
        "device": str(dev),
        "dataloader": _choice(dataloader, "dataloader", DATALOADER_KINDS),
        "cache": _choice(cache, "cache", CACHE_MODES),
        "track_meta": flag(track_meta, "track_meta"),
        "accumulation_steps": steps,
        "compile": flag(compile, "compile"),
    }

    det = flag(deterministic, "deterministic")
    torch.use_deterministic_algorithms(det)
    if cuda and det:
        # cuBLAS needs a fixed workspace for deterministic results (torch's reproducibility notes)
        os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
    out["deterministic"] = det

    bench = _auto_flag(cudnn_benchmark, "cudnn_benchmark")
    bench = (not det) if bench is None else bench
    if cuda:
        torch.backends.cudnn.deterministic = det
        torch.backends.cudnn.benchmark = bool(bench)
    else:
        ignored["cudnn_benchmark"] = not_cuda
    out["cudnn_benchmark"] = bool(bench) if cuda else False

    fused = _auto_flag(fused_optimizer, "fused_optimizer")
    if fused is None:
        fused = True if cuda else None
        if not cuda:
            ignored["fused_optimizer"] = f"'auto' fuses on CUDA only; device is {dev.type}"
    out["fused_optimizer"] = fused

    out["channels_last"] = cuda_only("channels_last", flag(channels_last, "channels_last"))
    if out["channels_last"]:
        network.to(memory_format=torch.channels_last)

    want_sync = flag(sync_bn, "sync_bn")
    out["sync_bn"] = False
    if want_sync and not cuda:
        warnings.warn("sync_bn=true needs CUDA (SyncBatchNorm has no CPU kernel): keeping BatchNorm", stacklevel=2)
        ignored["sync_bn"] = not_cuda + ": BatchNorm kept"
    elif want_sync:
        converted = torch.nn.SyncBatchNorm.convert_sync_batchnorm(network)
        if converted is not network:
            raise ValueError("sync_bn: the network itself is a BatchNorm layer; wrap it in a module first")
        out["sync_bn"] = True

    concurrent = flag(concurrent_branches, "concurrent_branches")
    if concurrent and not hasattr(network, "concurrent_branches"):
        ignored["concurrent_branches"] = f"{type(network).__name__} has no two branches to run concurrently"
        concurrent = False
    out["concurrent_branches"] = cuda_only("concurrent_branches", concurrent)
    if hasattr(network, "concurrent_branches"):
        network.concurrent_branches = out["concurrent_branches"]

    world = _world_size()
    out["world_size"] = world
    out["lr_scaling"] = _choice(lr_scaling, "lr_scaling", LR_SCALING_MODES)
    out["base_learning_rate"] = None if learning_rate is None else float(learning_rate)
    out["learning_rate"] = None if learning_rate is None else scaled_learning_rate(learning_rate, lr_scaling, world)
    out["num_threads"] = torch.get_num_threads()
    out["ignored"] = ignored
    return out


# ----------------------------------------------------------------------------------------------------------
# training data: cache and loader kinds


class _WithoutMeta(torch.utils.data.Dataset):
    """``dataset[i]`` computed with ``monai.data.set_track_meta(False)``: plain tensors, no metadata copies.

    A wrapper rather than a global ``set_track_meta(False)``: validation and post-processing in the same process
    (inversion, writers) keep their metadata. The flag is restored after each item.
    """

    def __init__(self, dataset: Any) -> None:
        self.dataset = dataset

    def __len__(self) -> int:
        return len(self.dataset)

    def __getitem__(self, index: Any) -> Any:
        from monai.data import get_track_meta, set_track_meta

        before = get_track_meta()
        set_track_meta(False)
        try:
            return self.dataset[index]
        finally:
            set_track_meta(before)


def make_dataset(
    data: Sequence,
    transform: Any,
    cache: str = "none",
    cache_rate: float = 1.0,
    cache_dir: str | os.PathLike | None = None,
    num_workers: int = 0,
    track_meta: Any = True,
) -> Any:
    """The dataset of one split, by the ``cache`` key.

    ``"none"``: ``monai.data.Dataset`` (every transform every epoch); ``"memory"``: ``CacheDataset`` holding
    ``cache_rate`` of the items after the deterministic transforms (up to the first random one); ``"disk"``:
    ``PersistentDataset`` writing the same into ``cache_dir`` (kept across runs, keyed by a hash of the item and
    transforms). ``cache_rate`` only counts for ``"memory"`` (a ``CacheDataset`` with ``cache_rate`` 0, the old
    default, is ``"none"``). ``track_meta`` False computes items without MONAI metadata (see ``_WithoutMeta``).

    Raises:
        ValueError: an unknown ``cache``, ``cache_rate`` outside [0, 1], or ``"disk"`` without ``cache_dir``.
    """
    from monai.data import CacheDataset, Dataset, PersistentDataset

    mode = _choice(cache, "cache", CACHE_MODES)
    if mode == "memory":
        rate = float(cache_rate)
        if not 0.0 <= rate <= 1.0:
            raise ValueError(f"cache_rate must be in [0, 1], got {cache_rate!r}")
        ds = _InputErrorCacheDataset(data=data, transform=transform, cache_rate=rate, num_workers=int(num_workers),
                                     progress=False)
    elif mode == "disk":
        if not cache_dir:
            raise ValueError("cache='disk' needs cache_dir (a folder for the cached items)")
        meta = flag(track_meta, "track_meta")
        # MetaTensors cannot be read back with torch.load(weights_only=True): MONAI would call every file corrupt and
        # recompute it each epoch. The files are this dataset's own cache, trusted as much as cache_dir is.
        ds = PersistentDataset(data=data, transform=transform, cache_dir=cache_dir, track_meta=meta, weights_only=not meta)
    else:
        ds = Dataset(data=data, transform=transform)
    return ds if flag(track_meta, "track_meta") else _WithoutMeta(ds)


class _CachedInputError:
    """The cache entry of an item whose file failed to load while the cache was filled (the error, kept)."""

    def __init__(self, error: BaseException) -> None:
        self.error = error


class _InputErrorCacheDataset(CacheDataset):
    """``monai.data.CacheDataset`` whose cache fill does not stop on an unreadable file: the item's input error
    (a :class:`~medfuse.errors.DataError` from a loader) is kept in its cache slot and raised when the item is read,
    where :class:`~medfuse.workflows.SkipBadImages` records and skips it, or stops naming the file, by
    ``on_bad_image``, as for an uncached dataset. Any other error stops the fill as before."""

    def _load_cache_item(self, idx: int):
        try:
            return super()._load_cache_item(idx)
        except Exception as err:
            if input_cause(err, DataError) is None:
                raise
            return _CachedInputError(err)

    def _transform(self, index: int):
        if not self.hash_as_key and self._cache is not None and index % len(self) < self.cache_num:
            slot = index % len(self)
            if self._cache[slot] is None:  # a runtime cache fills here, so a failure is seen before the transforms
                self._cache[slot] = self._load_cache_item(slot)
            if isinstance(self._cache[slot], _CachedInputError):
                raise self._cache[slot].error
        return super()._transform(index)


def make_dataloader(dataset: Any, kind: str = "torch", **kwargs: Any) -> Any:
    """``monai.data.DataLoader`` (``kind="torch"``) or ``monai.data.ThreadDataLoader`` (``"thread"``: batches
    are prepared by a background thread while the step runs; ``num_workers`` still adds worker processes).

    Raises:
        ValueError: an unknown ``kind``.
    """
    from monai.data import DataLoader, ThreadDataLoader

    mode = _choice(kind, "dataloader", DATALOADER_KINDS)
    return (ThreadDataLoader if mode == "thread" else DataLoader)(dataset, **kwargs)
