# Copyright (c) medfuse contributors
# Licensed under the Apache License, Version 2.0
"""Thin script for ``medfuse demo-data``: same options, same exit status (see ``--help``)."""

import os
import sys

try:
    from medfuse.commands.demo_data import main
except ImportError:  # running from a checkout without installing medfuse
    sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    from medfuse.commands.demo_data import main

__all__ = ["main"]

if __name__ == "__main__":
    sys.exit(main())
