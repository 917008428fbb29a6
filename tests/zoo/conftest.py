# Copyright (c) medfuse contributors
# Licensed under the Apache License, Version 2.0
"""Fixtures of the zoo tests: demo data, every bundle trained small once per session, the schema."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest


REPO = Path(__file__).resolve().parents[2]
BUNDLES = REPO / "bundles"


def zoo_bundles() -> list[str]:
    """Every folder under bundles/ with a configs/metadata.json (new bundles are picked up by themselves)."""
    return sorted(p.name for p in BUNDLES.iterdir() if (p / "configs" / "metadata.json").is_file())


@pytest.fixture(scope="session")
def schema():
    """The offline MONAI metadata schema shipped with medfuse (``medfuse/zoo/schema``)."""
    from medfuse.zoo.checks import SHIPPED_SCHEMA

    assert SHIPPED_SCHEMA.is_file(), f"{SHIPPED_SCHEMA} is missing from the package"
    return SHIPPED_SCHEMA


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


@pytest.fixture(scope="session")
def exported(trained_run, schema, tmp_path_factory):
    """``exported(bundle) -> (ExportResult, run folder)``: the tiny run of ``bundle`` exported once per session into a
    zoo folder of its own (demo data licence and source given)."""
    from medfuse.zoo import export_bundle

    cache: dict = {}

    def export(bundle: str):
        if bundle not in cache:
            run_dir = trained_run(bundle)
            zoo = tmp_path_factory.mktemp(f"zoo_{bundle}")
            res = export_bundle(BUNDLES / bundle, zoo, weights=run_dir / "model.pt", schema=schema,
                                data_source="medfuse synthetic demo data", data_license="Apache-2.0 (synthetic)",
                                log=lambda m: None)
            cache[bundle] = (res, run_dir)
        return cache[bundle]

    return export
