# Copyright (c) medfuse contributors
# Licensed under the Apache License, Version 2.0
"""Every exported bundle passes the MONAI model zoo's full CI, offline, without medfuse installed.

Each bundle is trained tiny and exported (``exported`` fixture, shared with test_export.py), its zoo
folder copied into a folder laid out like Project-MONAI/model-zoo, then checked by
``tests/zoo/zoo_ci.py`` in fresh processes: pre-commit rules, ``ci/verify_bundle.py -m full``, the
CONTRIBUTING commands from inside the bundle folder, and the ConfigWorkflow unit-test pattern.
One bundle runs in the default suite (72 s with its tiny training and export, on the shared 2-core dev machine);
the others (70 to 250 s each there) are ``slow``.
"""

from __future__ import annotations

import json
import re
import zipfile
from pathlib import Path

import pytest
import yaml

from tests.zoo.conftest import BUNDLES, zoo_bundles
from tests.zoo.zoo_ci import (
    CKPT_EXPORT,
    PRECOMMIT_MAX_KB,
    VERIFY_NET_IN_OUT,
    ZOO_FILE_LIMIT,
    no_medfuse_env,
    precommit_problems,
    run_unit_tests,
    verify_full,
    zoo_layout,
)

DEFAULT_SUITE = "cxr_dual_cross_attention"
#: the zoo's docs/readme_template.md sections, in order
TEMPLATE = ["Authors", "Tags", "Model Description", "Data", "Performance", "Additional Usage Steps",
            "System Configuration", "Limitations", "Citation Info", "References"]


def _overrides(bundle: str, config: dict, data: dict, out: Path, infer: bool) -> dict:
    """Tiny settings (tests/tiny.py) the exported config has, the demo data, and where to write."""
    from tests.tiny import PER_BUNDLE, tiny_overrides

    data_dir = Path(next(iter(data.values()))).parent
    extra = {"dataset_dir": str(data_dir), "output_dir": str(out)}
    demo = PER_BUNDLE.get(bundle, {}).get("demo_manifest")
    if demo:
        extra["manifest"] = str(data[demo])
    if infer:  # the exported inference config carries the trained network settings: only run-size keys
        small = {k: v for k, v in {"num_workers": 0, "num_threads": 1, "batch_size": 4, "mc_samples": 3,
                                   "progress": False}.items() if k in config}
        return {**small, **extra}
    return {**tiny_overrides(bundle, config), **extra, "run_name": "zoo"}


def _check_readme(folder: Path, name: str) -> None:
    text = (folder / "docs" / "README.md").read_text()
    headings = [re.sub(r"[*#]", "", h).strip() for h in re.findall(r"(?m)^#{2,3} \*\*.+\*\*$", text)]
    assert [h for h in headings if h in TEMPLATE] == TEMPLATE, headings
    assert (folder / "docs" / "data_license.txt").read_text().startswith("Training data of ")
    blocks = re.findall(r"```bash\n(.*?)```", text, flags=re.S)
    commands = [ln for b in blocks for ln in b.splitlines() if ln and not ln.startswith("#")]
    assert commands[0] == f"cd {name}" and VERIFY_NET_IN_OUT in commands and CKPT_EXPORT in commands
    # every command runs from inside the bundle folder: no path into a medfuse checkout
    assert not [c for c in commands if "bundles/" in c or "../" in c], commands


def _check_large_files(res, folder: Path) -> None:
    """Files over 25 MB only through large_files.yml; every release file missing from the zoo folder listed there."""
    listed = {e["path"]: e for e in yaml.safe_load((folder / "large_files.yml").read_text())["large_files"]}
    assert all(e["hash_type"] == "sha256" and len(e["hash_val"]) == 64 for e in listed.values())
    for path in folder.rglob("*"):
        assert not path.is_file() or path.stat().st_size <= min(ZOO_FILE_LIMIT, PRECOMMIT_MAX_KB * 1024), path
    with zipfile.ZipFile(res.release) as zf:
        in_release = {i.filename.split("/", 1)[1] for i in zf.infolist() if not i.is_dir()}
    not_in_zoo = {p for p in in_release if not (folder / p).is_file()}
    assert not_in_zoo == set(listed), (not_in_zoo, set(listed))


@pytest.mark.parametrize(
    "bundle", [b if b == DEFAULT_SUITE else pytest.param(b, marks=pytest.mark.slow) for b in zoo_bundles()]
)
def test_export_passes_the_zoo_full_ci(bundle, exported, zoo_demo_data, tmp_path):
    res, _ = exported(bundle)
    folder = zoo_layout(res.bundle_dir, tmp_path / "model-zoo")
    assert precommit_problems(folder) == []
    _check_readme(folder, bundle)
    _check_large_files(res, folder)
    # requirements: what the zoo's ci/get_bundle_requirements.py would pip install (no medfuse: it is not on an index)
    meta = json.loads((folder / "configs" / "metadata.json").read_text())
    assert "medfuse" not in meta["required_packages_version"] and meta["medfuse_code"]["path"] == "scripts/medfuse"
    assert {"pydicom", "pytorch-ignite", "scipy"} <= set(meta["required_packages_version"])

    env = no_medfuse_env(tmp_path)
    done = verify_full(folder, env)
    assert done[-1] == "torch.jit.load of the exported and the shipped TorchScript" and VERIFY_NET_IN_OUT in done

    configs = {n: json.loads((folder / "configs" / n).read_text()) for n in ("train.json", "inference.json")}
    train = _overrides(bundle, configs["train.json"], zoo_demo_data, tmp_path / "runs", infer=False)
    infer = _overrides(bundle, configs["inference.json"], zoo_demo_data, tmp_path / "infer_runs", infer=True)
    result = run_unit_tests(folder, train, infer, env, cwd=folder.parent.parent)
    expected = ["train", "evaluate", "infer"] if (BUNDLES / bundle / "configs" / "evaluate.json").is_file() or \
        (folder / "configs" / "evaluate.json").is_file() else ["train", "infer"]
    assert result["done"] == expected
    # the code that ran is the bundle's own copy, not an installed medfuse or the checkout
    assert Path(result["medfuse"]).is_relative_to(folder / "scripts" / "medfuse"), result["medfuse"]
    # inference without --run_name found no trained run and used the shipped models/model.pt
    info = json.loads(next((tmp_path / "infer_runs").rglob("run_info.json")).read_text())
    assert Path(info["checkpoint"]).resolve() == (folder / "models" / "model.pt").resolve()
