# Copyright (c) medfuse contributors
# Licensed under the Apache License, Version 2.0
"""Fixtures of the zoo tests: demo data, every bundle trained small once per session, the schema."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from tests.conftest import require

REPO = Path(__file__).resolve().parents[2]
BUNDLES = REPO / "bundles"


def zoo_bundles() -> list[str]:
    """Every folder under bundles/ with a configs/metadata.json (new bundles are picked up by themselves)."""
    return sorted(p.name for p in BUNDLES.iterdir() if (p / "configs" / "metadata.json").is_file())


@pytest.fixture(scope="session")
def schema(shared_data):
    """The offline MONAI metadata schema (the test skips when the shared data is absent)."""
    return require(shared_data / "monai_schema" / "meta_schema_20240725.json")


@pytest.fixture(scope="session")
def zoo_demo_data(demo_data, tmp_path_factory):
    """``{"cxr": manifest, "oct": manifest, ..., "cxr_detection": manifest}``: the session's tiny demo data
    (``tests/conftest.py``) and a tiny detection demo in a folder of its own."""
    from medfuse.data.demo.detection import make_demo_detection

    return {**demo_data, "cxr_detection": make_demo_detection(tmp_path_factory.mktemp("zoo_det"), 24, image_size=64)}


@pytest.fixture(scope="session")
def trained_run(zoo_demo_data, tmp_path_factory):
    """``trained_run(bundle) -> run folder``: one epoch of the bundle's own train.json on the demo data, cached."""
    from tests.bundles.helpers import run_workflow
    from tests.tiny import PER_BUNDLE, tiny_overrides

    cache: dict[str, Path] = {}

    def train(bundle: str) -> Path:
        if bundle not in cache:
            from medfuse.workflows.bundle import compose_layers, config_layers

            cfg = BUNDLES / bundle / "configs" / "train.json"
            config = compose_layers(config_layers(BUNDLES / bundle, "train.json"))  # a layered bundle's keys too
            data_dir = Path(next(iter(zoo_demo_data.values()))).parent
            extra = {"dataset_dir": str(data_dir)}
            demo_manifest = PER_BUNDLE.get(bundle, {}).get("demo_manifest")
            if demo_manifest:
                extra["manifest"] = str(zoo_demo_data[demo_manifest])
            out = tmp_path_factory.mktemp(f"runs_{bundle}")
            run_workflow(cfg, "train", run_name="tiny", output_dir=str(out), **extra, **tiny_overrides(bundle, config))
            cache[bundle] = out / "tiny"
            assert (cache[bundle] / "model.pt").is_file(), f"{bundle}: training wrote no model.pt in {cache[bundle]}"
        return cache[bundle]

    return train


def copy_bundle(bundle: str, dst: Path) -> Path:
    """A copy of bundles/<bundle> to break one thing in."""
    target = dst / bundle
    shutil.copytree(BUNDLES / bundle, target)
    return target
