# Copyright (c) medfuse contributors
# Licensed under the Apache License, Version 2.0
"""An offline re-implementation of the MONAI model zoo's checks of a new bundle, to run on ``medfuse export`` output.

What Project-MONAI/model-zoo runs on a pull request that adds ``models/<name>``, and what stands for it here:

* pre-commit (``.pre-commit-config.yaml``): ``pretty-format-json --autofix --no-sort-keys --indent=4``,
  trailing-whitespace, end-of-file-fixer, mixed-line-ending, check-yaml, check-added-large-files
  (``--maxkb=1024``), check-docstring-first, check-executables-have-shebangs -> :func:`precommit_problems`
  (our own checks of the same rules; the hooks package is not a dependency);
* ``ci/prepare_schema.py`` downloads the metadata's schema to ``eval/schema.json`` -> the schema shipped
  with medfuse is copied there (no network);
* ``ci/verify_bundle.py -m full`` -> :func:`verify_full`: large files fetched from ``large_files.yml``
  (hashes checked by MONAI's ``download_large_files``), files over 25 MB only there, the necessary and
  preferred files, version and changelog (and not already in ``model_info.json``), ``verify_metadata``,
  ``verify_net_in_out`` and ``ckpt_export`` with the CONTRIBUTING command lines run from inside the bundle
  folder, ``torch.jit.load`` of the exported and the shipped TorchScript;
* ``ci/unit_tests/test_<bundle>.py`` (ConfigWorkflow train, evaluate = ``[train, evaluate]`` as a train
  workflow, infer; initialize / check_properties / run / finalize) -> :func:`run_unit_tests`.

Every command runs in a fresh Python process in which medfuse is NOT importable from an install or the
checkout (:func:`no_medfuse_env`): the bundle must bring its own code, as it must on the zoo's CI, which
installs only the metadata's ``name==version`` pins (``ci/get_bundle_requirements.py``).
"""

from __future__ import annotations

import ast
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

from medfuse.zoo.checks import SHIPPED_SCHEMA, check_pretty_json

#: the CONTRIBUTING.md command lines, run from inside the bundle folder
VERIFY_NET_IN_OUT = ("python -m monai.bundle verify_net_in_out --net_id network_def --meta_file configs/metadata.json "
                     "--config_file configs/inference.json")
CKPT_EXPORT = ("python -m monai.bundle ckpt_export --net_id network_def --filepath models/model.ts --ckpt_file "
               "models/model.pt --meta_file configs/metadata.json --config_file configs/inference.json")
ZOO_FILE_LIMIT = 25 * 1024 * 1024  # CONTRIBUTING: "no larger than 25MB"; bigger files go to large_files.yml
PRECOMMIT_MAX_KB = 1024  # check-added-large-files --maxkb=1024

_HIDE_INSTALLED_MEDFUSE = """\
# written by tests/zoo/zoo_ci.py: this interpreter must not find an installed (or editable) medfuse
import sys
sys.meta_path[:] = [f for f in sys.meta_path if "editable" not in repr(f).lower()]
sys.path[:] = [p for p in sys.path if not __import__("os").path.isfile(__import__("os").path.join(p, "medfuse", "__init__.py"))
               or "/scripts" in p.replace("\\\\", "/")]
"""


def no_medfuse_env(tmp: Path) -> dict:
    """An environment whose Python finds no medfuse but a bundle's ``scripts/medfuse`` (one thread, no PYTHONPATH)."""
    site = tmp / "no_medfuse_site"
    site.mkdir(parents=True, exist_ok=True)
    (site / "sitecustomize.py").write_text(_HIDE_INSTALLED_MEDFUSE)
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "PYTHONSAFEPATH")}
    env.update(PYTHONPATH=str(site), OMP_NUM_THREADS="1")
    return env


def zoo_layout(zoo_folder: Path, dest: Path) -> Path:
    """A folder laid out like the zoo's repository: ``models/<name>`` (the exported folder, no weights),
    ``models/model_info.json`` (without this bundle). Returns the bundle folder."""
    models = dest / "models"
    target = models / zoo_folder.name
    shutil.copytree(zoo_folder, target)
    (models / "model_info.json").write_text("{}\n")
    return target


def precommit_problems(bundle: Path) -> list[str]:
    """What the zoo's pre-commit hooks would rewrite or refuse in the files of ``bundle`` (the pull request's files)."""
    import yaml

    problems = []
    try:
        check_pretty_json(bundle, skip=())
    except ValueError as e:
        problems.append(str(e))
    for path in sorted(p for p in bundle.rglob("*") if p.is_file()):
        rel = path.relative_to(bundle).as_posix()
        size = path.stat().st_size
        if size > PRECOMMIT_MAX_KB * 1024:
            problems.append(f"{rel}: {size} bytes, over check-added-large-files' {PRECOMMIT_MAX_KB} KB")
        if os.access(path, os.X_OK) and not path.read_bytes().startswith(b"#!"):
            problems.append(f"{rel}: executable without a shebang")
        if path.suffix in (".pt", ".ts", ".png", ".jpg", ".zip", ".onnx", ".pt2"):
            continue
        data = path.read_bytes()
        text = data.decode("utf-8")
        if b"\r" in data:
            problems.append(f"{rel}: CR line endings (mixed-line-ending)")
        if text and not text.endswith("\n") or text.endswith("\n\n"):
            problems.append(f"{rel}: does not end with exactly one newline (end-of-file-fixer)")
        bad = [i for i, line in enumerate(text.split("\n"), 1) if line != line.rstrip()]
        if bad:
            problems.append(f"{rel}: trailing whitespace on line {bad[0]} (trailing-whitespace)")
        if path.suffix in (".yml", ".yaml"):
            try:
                yaml.safe_load(text)
            except yaml.YAMLError as e:
                problems.append(f"{rel}: not valid YAML ({e})")
        if path.suffix == ".py":
            # check-docstring-first: a module-level string statement anywhere but first is code before the
            # docstring, or a second docstring
            body = ast.parse(text).body
            late = [node.lineno for node in body[1:]
                    if isinstance(node, ast.Expr) and isinstance(node.value, ast.Constant) and isinstance(node.value.value, str)]
            if late:
                problems.append(f"{rel}: a module-level string on line {late[0]} after code (check-docstring-first)")
    return problems


def _run(cmd: list[str] | str, cwd: Path, env: dict, timeout: int = 600) -> str:
    args = cmd.split() if isinstance(cmd, str) else cmd
    if args[0] == "python":
        args = [sys.executable, *args[1:]]
    proc = subprocess.run(args, cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout)
    if proc.returncode != 0:
        raise AssertionError(f"{' '.join(map(str, args))} (in {cwd}) failed:\n{proc.stdout[-2000:]}\n{proc.stderr[-4000:]}")
    return proc.stdout


def verify_full(bundle: Path, env: dict) -> list[str]:
    """``ci/verify_bundle.py -m full`` on ``models/<name>`` = ``bundle``, offline. Returns the checks that passed."""
    import torch  # noqa: F401  (the zoo script imports torch first too)
    from monai.bundle import download_large_files, verify_metadata

    name, models = bundle.name, bundle.parent
    done = []
    large = [p for p in ("large_files.yml", "large_files.yaml", "large_files.json") if (bundle / p).is_file()]
    assert large, f"{bundle}: no large_files.yml"
    # checks hash_val / hash_type; no large_file_name: MONAI 1.6.1's download_large_files fails when it is given
    download_large_files(bundle_path=str(bundle))
    done.append("large files downloaded, hashes checked")
    for rel in ("configs/metadata.json", "LICENSE", "models/model.pt"):
        assert (bundle / rel).is_file(), f"necessary file {rel} is not existing"
    assert any((bundle / "configs" / f"inference.{s}").is_file() for s in ("json", "yaml", "yml")), "no inference config"
    done.append("necessary and preferred files")
    meta = json.loads((bundle / "configs" / "metadata.json").read_text())
    assert "version" in meta and "changelog" in meta
    assert meta["version"] in meta["changelog"], f"version {meta['version']} is not in the changelog"
    assert f"{name}_v{meta['version']}" not in json.loads((models / "model_info.json").read_text())
    done.append("version in changelog, new to model_info.json")
    # ci/prepare_schema.py puts the metadata's schema at eval/schema.json; the shipped copy stands in for the download
    assert meta["schema"].rsplit("/", 1)[-1] == SHIPPED_SCHEMA.name, meta["schema"]
    (bundle / "eval").mkdir(exist_ok=True)
    shutil.copy(SHIPPED_SCHEMA, bundle / "eval" / "schema.json")
    verify_metadata(meta_file=str(bundle / "configs" / "metadata.json"), filepath=str(bundle / "eval" / "schema.json"))
    shutil.rmtree(bundle / "eval")
    done.append("verify_metadata (schema " + SHIPPED_SCHEMA.name + ")")
    _run(VERIFY_NET_IN_OUT, bundle, env)
    done.append(VERIFY_NET_IN_OUT)
    shipped = bundle / "models" / "model.ts"
    kept = shipped.with_name("shipped_model.ts")
    os.replace(shipped, kept)  # ckpt_export writes models/model.ts; keep the release's to load it too
    _run(CKPT_EXPORT, bundle, env)
    done.append(CKPT_EXPORT)
    loaded = _run(["python", "-c", "import sys, torch\nfor f in sys.argv[1:]:\n    torch.jit.load(f)\nprint('loaded', len(sys.argv) - 1)",
                   "models/model.ts", "models/shipped_model.ts"], bundle, env)
    assert "loaded 2" in loaded, loaded
    os.replace(kept, shipped)
    done.append("torch.jit.load of the exported and the shipped TorchScript")
    return done


_UNIT_TESTS = r"""
import json, os, sys
bundle_root, overrides, infer_overrides = sys.argv[1], json.loads(sys.argv[2]), json.loads(sys.argv[3])
sys.path = [bundle_root] + sys.path  # as the zoo's unit tests of bundles with scripts/ do
from monai.bundle import ConfigWorkflow

def check_workflow(workflow):
    workflow.initialize()
    missing = workflow.check_properties()
    assert not missing, f"check properties for workflow failed: {missing}"
    workflow.run()
    workflow.finalize()

configs = os.path.join(bundle_root, "configs")
common = dict(logging_file=os.path.join(configs, "logging.conf"), meta_file=os.path.join(configs, "metadata.json"))
done = []
if os.path.isfile(os.path.join(configs, "train.json")):
    check_workflow(ConfigWorkflow(workflow_type="train", config_file=os.path.join(configs, "train.json"), **common,
                                  bundle_root=bundle_root, **overrides))
    done.append("train")
    if os.path.isfile(os.path.join(configs, "evaluate.json")):
        files = [os.path.join(configs, "train.json"), os.path.join(configs, "evaluate.json")]
        check_workflow(ConfigWorkflow(workflow_type="train", config_file=files, **common, bundle_root=bundle_root, **overrides))
        done.append("evaluate")
check_workflow(ConfigWorkflow(workflow_type="infer", config_file=os.path.join(configs, "inference.json"), **common,
                              bundle_root=bundle_root, **infer_overrides))
done.append("infer")
import medfuse
print(json.dumps({"done": done, "medfuse": os.path.abspath(medfuse.__file__)}))
"""


def run_unit_tests(bundle: Path, overrides: dict, infer_overrides: dict, env: dict, cwd: Path) -> dict:
    """The zoo's ConfigWorkflow unit-test pattern (train, evaluate, infer) in a fresh process, cwd = the zoo root.

    Returns ``{"done": [...], "medfuse": path of the medfuse that ran}``.
    """
    out = _run(["python", "-c", _UNIT_TESTS, str(bundle), json.dumps(overrides), json.dumps(infer_overrides)], cwd, env)
    return json.loads([ln for ln in out.splitlines() if ln.startswith("{")][-1])
