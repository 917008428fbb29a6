# Copyright (c) medfuse contributors
# Licensed under the Apache License, Version 2.0
"""Build hook: ship ``bundles/`` inside the package as ``medfuse/bundles`` (everything else is in setup.cfg).

An installed medfuse (a wheel, not the checkout) then finds its bundles by name
(``medfuse.workflows.bundle.bundle_dir``), so ``medfuse export <name>`` and ``run_bundle(<name>)`` work
without a checkout. Editable installs read ``bundles/`` in the checkout and copy nothing.
"""

import shutil
from pathlib import Path

from setuptools import setup
from setuptools.command.build_py import build_py

_SKIP = ("runs", "models", "eval", "__pycache__", "*.pyc", ".ipynb_checkpoints")


class BuildPyWithBundles(build_py):
    """``build_py`` that also copies ``bundles/`` (configs, docs, LICENSE; no run outputs or weights)."""

    def run(self):
        super().run()
        src = Path(__file__).resolve().parent / "bundles"
        if src.is_dir() and not getattr(self, "editable_mode", False):
            shutil.copytree(src, Path(self.build_lib) / "medfuse" / "bundles", ignore=shutil.ignore_patterns(*_SKIP),
                            dirs_exist_ok=True)


setup(cmdclass={"build_py": BuildPyWithBundles})
