# Copyright (c) medfuse contributors
# Licensed under the Apache License, Version 2.0
"""Helpers for code that runs under ``torch.distributed`` or with wrapped networks.

torch is imported inside the functions, so importing :mod:`medfuse.utils` stays light (``medfuse --help``).
"""

from __future__ import annotations

from typing import Any

__all__ = ["is_main_process", "unwrap_module"]


def is_main_process() -> bool:
    """True unless this is a non-zero rank of an initialised ``torch.distributed`` job."""
    import torch.distributed as dist

    return not (dist.is_available() and dist.is_initialized()) or dist.get_rank() == 0


def unwrap_module(network: Any) -> Any:
    """The network inside ``torch.nn.DataParallel`` / ``DistributedDataParallel`` wrappers (nested ones too).

    Anything else, including a plain module that happens to have a ``module`` attribute, is returned as it is.

    Examples::

        >>> net = torch.nn.Linear(2, 2)
        >>> unwrap_module(torch.nn.DataParallel(net)) is net
        True
    """
    import torch

    while isinstance(network, (torch.nn.DataParallel, torch.nn.parallel.DistributedDataParallel)):
        network = network.module
    return network
