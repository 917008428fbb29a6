# Copyright (c) medfuse contributors
# Licensed under the Apache License, Version 2.0
"""Thin script for ``medfuse vindr2manifest``: same options, same exit status (see ``--help``)."""

import sys

from _bootstrap import command_main

main = command_main("vindr2manifest")

__all__ = ["main"]

if __name__ == "__main__":
    sys.exit(main())
