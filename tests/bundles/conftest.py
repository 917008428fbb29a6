# Copyright (c) medfuse contributors
# Licensed under the Apache License, Version 2.0
"""Fixtures of the bundle tests: ``demo_data`` comes from ``tests/conftest.py`` (one session-wide set)."""
