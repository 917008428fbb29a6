# Copyright (c) medfuse contributors
# Licensed under the Apache License, Version 2.0
"""``python -m medfuse``: the same as the ``medfuse`` console script."""

import sys

from medfuse.cli import main

if __name__ == "__main__":
    sys.exit(main())
