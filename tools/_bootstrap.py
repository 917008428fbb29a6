# Copyright (c) medfuse contributors
# Licensed under the Apache License, Version 2.0
"""Shared start of the ``tools/`` scripts: the ``main`` of a ``medfuse.commands`` module.

The installed medfuse is used; in a checkout where medfuse is not installed, the checkout
(the folder above ``tools/``) is put on ``sys.path`` first. When medfuse still cannot be
imported the script stops with a message saying how to install it.
"""

import importlib
import os
import sys

__all__ = ["command_main"]


def command_main(module: str):
    """``medfuse.commands.<module>.main``, e.g. ``command_main("folder2manifest")``."""
    name = f"medfuse.commands.{module}"
    try:
        return importlib.import_module(name).main
    except ImportError:  # running from a checkout without installing medfuse
        sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    try:
        return importlib.import_module(name).main
    except ImportError as e:
        sys.exit(f"cannot import {name} ({e}): install medfuse first (make install, or pip install -e .)")
