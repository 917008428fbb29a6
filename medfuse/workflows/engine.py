# Copyright (c) medfuse contributors
# Licensed under the Apache License, Version 2.0
"""Engine settings shared by the bundles: device, AMP, threads, determinism.

Mixed precision is bf16 autocast on CUDA and off (fp32) on a CPU: the configs pass
``amp=medfuse.workflows.use_amp(device)`` and ``amp_kwargs=medfuse.workflows.amp_kwargs(device)``
to MONAI's ``SupervisedTrainer`` / ``SupervisedEvaluator``, which hand ``amp_kwargs`` to
``torch.autocast("cuda", **amp_kwargs)`` (MONAI 1.6.1, ``monai/engines/trainer.py`` and
``evaluator.py``).
"""

from __future__ import annotations

import os

import torch

__all__ = ["flag", "get_device", "use_amp", "amp_kwargs", "set_num_threads", "setup_run"]


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
        n = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
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
