# Copyright (c) medfuse contributors
# Licensed under the Apache License, Version 2.0
"""Subcommands of the ``medfuse`` console script, one module each (see ``medfuse.cli``)."""
