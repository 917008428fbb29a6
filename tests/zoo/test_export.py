# Copyright (c) medfuse contributors
# Licensed under the Apache License, Version 2.0
"""``medfuse export`` end to end: every bundle trained small and exported, the failing checks one by
one, the local zoo (list / get), TorchScript without medfuse, and an unpacked release run with
``python -m monai.bundle run`` from outside the checkout with medfuse installed from a wheel.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest
import torch
import yaml

from medfuse.utils.io import sha256_file
from medfuse.zoo import ATOL, RTOL, ZooCheckError, export_bundle, get_bundle, list_bundles
from tests.zoo.conftest import REPO, copy_bundle, zoo_bundles

CXR = "cxr_dual_cross_attention"


def _clean_env() -> dict:
    """The environment of a user's shell: no PYTHONPATH pointing at the checkout, one thread."""
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    env["OMP_NUM_THREADS"] = "1"
    return env


def _jit_load_without_medfuse(ts_path: Path, meta: dict, cwd: Path) -> dict:
    """Load and run the TorchScript file in a fresh interpreter that never imports medfuse."""
    image = meta["network_data_format"]["inputs"]["image"]
    shape = [1, image["num_channels"], *image["spatial_shape"]]
    code = (
        "import json, sys, torch\n"
        f"m = torch.jit.load({str(ts_path)!r}, map_location='cpu').eval()\n"
        f"x = torch.rand({shape!r})\n"
        "with torch.no_grad():\n    y = m(x)\n"
        "extra = {'metadata.json': ''}\n"
        f"torch.jit.load({str(ts_path)!r}, _extra_files=extra)\n"
        "print(json.dumps({'shape': list(y.shape), 'finite': bool(torch.isfinite(y).all()),\n"
        "                  'medfuse': any(k.split('.')[0] == 'medfuse' for k in sys.modules),\n"
        "                  'meta_version': json.loads(extra['metadata.json'])['version']}))\n"
    )
    proc = subprocess.run([sys.executable, "-I", "-c", code], cwd=cwd, env=_clean_env(), capture_output=True, text=True,
                          timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return json.loads(proc.stdout.strip().splitlines()[-1])


@pytest.mark.parametrize("bundle", zoo_bundles())
def test_every_bundle_exports(bundle, exported, tmp_path):
    res, run_dir = exported(bundle)
    zoo = res.bundle_dir.parent
    key = f"{bundle}_v{res.version}"
    # the checks that ran, in order
    assert res.checks[0] == "required files" and "verify_net_in_out" in res.checks
    assert any(c.startswith("workflow properties: train built, infer built") for c in res.checks)
    assert res.checks[-2:] == ["TorchScript export (ckpt_export) and round trip", "pt2 export and round trip"]
    assert [c.fmt for c in res.formats] == ["torchscript", "pt2"]
    assert res.formats[1].max_abs_diff <= ATOL + RTOL and res.formats[1].fresh_process_max_abs_diff <= ATOL + RTOL
    assert res.round_trip_max_abs_diff <= ATOL + RTOL and res.subprocess_max_abs_diff <= ATOL + RTOL
    # zoo folder: the bundle without weights; large_files.yml lists them with SHA-256 and a working URL
    folder = zoo / bundle
    assert res.bundle_dir == folder and not list(folder.rglob("*.pt")) and not list(folder.rglob("*.ts"))
    for rel in ("LICENSE", "configs/metadata.json", "configs/inference.json", "docs/README.md"):
        assert (folder / rel).is_file(), rel
    large = yaml.safe_load((folder / "large_files.yml").read_text())["large_files"]
    # the weights, then any run file carried with them that is over the zoo's pre-commit limit (not kept in the folder)
    from medfuse.zoo.export import PRECOMMIT_MAX_BYTES

    big_run_files = [f"models/{n}" for n in ("calibration.json", "ood.json", "ensemble.json")
                     if (run_dir / n).is_file() and (run_dir / n).stat().st_size > PRECOMMIT_MAX_BYTES]
    assert [e["path"] for e in large] == ["models/model.pt", "models/model.ts", "models/model.pt2", *big_run_files]
    assert not any((folder / p).exists() for p in big_run_files)
    assert large[0]["hash_val"] == sha256_file(run_dir / "model.pt") and large[0]["hash_type"] == "sha256"
    # release archive: <name>/ with the weights and the TorchScript
    with zipfile.ZipFile(res.release) as zf:
        names = set(zf.namelist())
    assert {f"{bundle}/models/model.pt", f"{bundle}/models/model.ts", f"{bundle}/configs/metadata.json",
            f"{bundle}/LICENSE", f"{bundle}/large_files.yml"} <= names
    assert res.release == zoo / "releases" / f"{key}.zip"
    # the index
    info = json.loads((zoo / "model_info.json").read_text())
    entry = info[key]
    assert entry["checksum"] == sha256_file(res.release) and entry["source"] == f"releases/{key}.zip"
    assert entry["versions"]["monai"] and entry["versions"]["pytorch"] == torch.__version__
    assert entry["files"]["models/model.pt"] == sha256_file(run_dir / "model.pt")
    assert entry["data_license"] == "Apache-2.0 (synthetic)" and entry["non_commercial"] is False
    assert entry["classes"] == json.loads((run_dir / "run_info.json").read_text())["classes"]
    # exported metadata: the trained shape and classes, and a version the index agrees with
    meta = json.loads((folder / "configs" / "metadata.json").read_text())
    assert meta["version"] == res.version and meta["data_license"] == "Apache-2.0 (synthetic)"
    # TorchScript stands alone
    got = _jit_load_without_medfuse(zoo / "files" / key / "models" / "model.ts", meta, tmp_path)
    assert got["medfuse"] is False and got["finite"] and got["meta_version"] == res.version
    out_format = next(iter(meta["network_data_format"]["outputs"].values()))
    assert got["shape"][:2] == [1, out_format["num_channels"]]
    # monai's own large-file download restores the weights from the URLs in large_files.yml
    fetched = tmp_path / "fetched"
    shutil.copytree(folder, fetched)
    from monai.bundle import download_large_files

    download_large_files(bundle_path=str(fetched))
    assert sha256_file(fetched / "models" / "model.pt") == entry["files"]["models/model.pt"]


@pytest.fixture(scope="module")
def cxr_weights(trained_run, tmp_path_factory):
    """The tiny CXR run, copied; its train workflow wrote calibration.json beside model.pt.

    The temperature is set to a marker value (1.25) so the tests can follow the file into the zoo.
    """
    src = trained_run(CXR)
    run = tmp_path_factory.mktemp("cxr_run") / "tiny"
    shutil.copytree(src, run)
    calibration = json.loads((run / "calibration.json").read_text())
    calibration["temperature"] = 1.25
    (run / "calibration.json").write_text(json.dumps(calibration, indent=4))
    return run / "model.pt"


def _export_cli(*args) -> int:
    from medfuse.commands.export import main

    return main([str(a) for a in args])


def test_cli_export_zoo_list_get_and_run_outside_the_checkout(cxr_weights, schema, zoo_demo_data, tmp_path, capsys):
    zoo = tmp_path / "zoo"
    rc = _export_cli(REPO / "bundles" / CXR, "--out", zoo, "--weights", cxr_weights, "--schema", schema,
                     "--data-license", "CC BY-NC-SA 4.0", "--data-source", "synthetic phantoms")
    out, err = capsys.readouterr()
    assert rc == 0, err
    assert "exported cxr_dual_cross_attention v0.1.0" in out and f"calibration: {cxr_weights.parent / 'calibration.json'}" in out
    assert "warning: the training data's licence is non-commercial ('CC BY-NC-SA 4.0')" in err
    # a second version needs a changelog entry, and is listed beside the first
    rc = _export_cli(REPO / "bundles" / CXR, "--out", zoo, "--weights", cxr_weights, "--schema", schema,
                     "--version", "0.1.1", "--changelog", "re-exported for the test", "--data-license", "CC BY 4.0")
    assert rc == 0, capsys.readouterr().err
    capsys.readouterr()
    from medfuse.commands.zoo import main as zoo_main

    assert zoo_main(["list", "--zoo", str(zoo)]) == 0
    listed = capsys.readouterr().out
    assert "cxr_dual_cross_attention  latest 0.1.1  versions 0.1.0, 0.1.1" in listed
    assert list_bundles(zoo)[0]["data_license"] == "CC BY 4.0"
    # fetch the first version; checksums are verified, the calibration travels with the weights
    fetched = tmp_path / "fetched"
    assert zoo_main(["get", CXR, "--zoo", str(zoo), "--out", str(fetched), "--version", "0.1.0"]) == 0
    bundle = fetched / CXR
    n_files = sum(1 for p in bundle.rglob("*") if p.is_file())
    assert f"archive and {n_files} file checksums verified: every file" in capsys.readouterr().out
    assert json.loads((bundle / "models" / "calibration.json").read_text())["temperature"] == 1.25
    meta = json.loads((bundle / "configs" / "metadata.json").read_text())
    assert meta["version"] == "0.1.0" and meta["data_license"] == "CC BY-NC-SA 4.0"
    assert "Non-commercial" in (bundle / "docs" / "README.md").read_text()
    assert zoo_main(["get", CXR, "--zoo", str(zoo), "--out", str(fetched)]) == 1
    assert "exists already" in capsys.readouterr().err
    # monai.bundle.load with a local bundle_dir reads the fetched TorchScript
    from monai.bundle import load

    ts = load(CXR, bundle_dir=str(fetched), load_ts_module=True, device="cpu")
    ts_module = ts[0] if isinstance(ts, tuple) else ts
    assert ts_module(torch.rand(1, 1, 64, 64)).shape == (1, 2)

    # medfuse installed from a wheel (not the source folder), run from a folder outside the checkout
    src = tmp_path / "src"
    src.mkdir()
    for name in ("setup.cfg", "pyproject.toml", "README.md"):
        shutil.copy(REPO / name, src / name)
    shutil.copytree(REPO / "medfuse", src / "medfuse", ignore=shutil.ignore_patterns("__pycache__"))
    wheel_dir, site = tmp_path / "wheel", tmp_path / "site"
    proc = subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "--no-index", "-q",
                           "-w", str(wheel_dir), str(src)], capture_output=True, text=True, timeout=300)
    if proc.returncode != 0:
        pytest.skip(f"cannot build a medfuse wheel here: {proc.stderr.strip()[-300:]}")
    (wheel,) = wheel_dir.glob("medfuse-*.whl")
    with zipfile.ZipFile(wheel) as zf:
        zf.extractall(site)
    env = dict(_clean_env(), PYTHONPATH=str(site))
    work = tmp_path / "elsewhere"
    work.mkdir()
    where = subprocess.run([sys.executable, "-c", "import medfuse; print(medfuse.__file__)"], cwd=work, env=env,
                           capture_output=True, text=True, timeout=120)
    assert where.stdout.strip() == str(site / "medfuse" / "__init__.py"), where.stderr
    dicom_dir = Path(zoo_demo_data["cxr"]).parent / "cxr" / "dicom"
    cmd = [sys.executable, "-m", "monai.bundle", "run", "--config_file", str(bundle / "configs" / "inference.json"),
           "--input_dir", str(dicom_dir), "--output_dir", "results", "--run_name", "zoo", "--num_workers", "0",
           "--mc_samples", "3"]
    proc = subprocess.run(cmd, cwd=work, env=env, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    from medfuse.evaluation import read_predictions

    pred = read_predictions(work / "results" / "zoo" / "inference" / "predictions.csv")
    assert len(pred["images"]) == len(list(dicom_dir.glob("*.dcm"))) > 0
    assert pred["classes"] == ["normal", "opacity"]
    # the fetched bundle predicts what the training run predicts: same network settings, same weights
    from medfuse.workflows.bundle import run_bundle

    ref = run_bundle(CXR, "inference", output_dir=str(cxr_weights.parent.parent), run_name=cxr_weights.parent.name,
                     input_dir=str(dicom_dir), inference_dir=str(tmp_path / "ref"), num_workers=0, mc_samples=3,
                     logging=False)
    ref_pred = read_predictions(ref["predictions"])
    order = {Path(p).name: i for i, p in enumerate(ref_pred["images"])}
    idx = [order[Path(p).name] for p in pred["images"]]
    assert abs(pred["probs"] - ref_pred["probs"][idx]).max() < 1e-5
    info = json.loads((work / "results" / "zoo" / "inference" / "run_info.json").read_text())
    assert info["checkpoint"] == str(bundle / "models" / "model.pt")


def _expect_failure(bundle_dir, zoo, check: str, match: str, **kwargs):
    with pytest.raises(ZooCheckError) as e:
        export_bundle(bundle_dir, zoo, log=lambda m: None, **kwargs)
    assert e.value.check == check, str(e.value)
    import re

    assert re.search(match, str(e.value)), str(e.value)
    # nothing was written into the zoo
    assert not (Path(zoo) / "model_info.json").exists() and not (Path(zoo) / "releases").exists()
    assert [p.name for p in Path(zoo).iterdir() if not p.name.startswith(".")] == [] if Path(zoo).exists() else True
    return e.value


def test_failing_checks_one_by_one(cxr_weights, schema, tmp_path):
    kw = {"weights": cxr_weights, "schema": schema}
    zoo = tmp_path / "zoo"
    # missing LICENSE
    b = copy_bundle(CXR, tmp_path / "no_licence")
    (b / "LICENSE").unlink()
    _expect_failure(b, zoo, "required files", r"no_licence/cxr_dual_cross_attention/LICENSE is missing", **kw)
    # bad metadata
    b = copy_bundle(CXR, tmp_path / "bad_meta")
    meta = json.loads((b / "configs" / "metadata.json").read_text())
    meta["network_data_format"]["inputs"]["image"]["num_channels"] = "one"
    (b / "configs" / "metadata.json").write_text(json.dumps(meta, indent=4))
    _expect_failure(b, zoo, "metadata schema", r"num_channels: 'one' is not of type 'integer'", **kw)
    # version not in the changelog
    _expect_failure(REPO / "bundles" / CXR, zoo, "version", r"version 0\.2\.0 is not in the changelog", version="0.2.0", **kw)
    # absolute path in a config
    b = copy_bundle(CXR, tmp_path / "abs_path")
    cfg = json.loads((b / "configs" / "inference.json").read_text())
    cfg["dataset_dir"] = "/home/alice/cxr"
    (b / "configs" / "inference.json").write_text(json.dumps(cfg, indent=4))
    _expect_failure(b, zoo, "paths", r"inference\.json: 'dataset_dir' holds the absolute or personal path '/home/alice/cxr'", **kw)
    # JSON not indented by 4 spaces
    b = copy_bundle(CXR, tmp_path / "indent")
    (b / "configs" / "train.json").write_text(json.dumps(json.loads((b / "configs" / "train.json").read_text()), indent=2))
    _expect_failure(b, zoo, "json format", r"train\.json: line 2 is indented by 2 spaces, expected 4", **kw)
    # no data licence
    b = copy_bundle(CXR, tmp_path / "no_licence_field")
    meta = json.loads((b / "configs" / "metadata.json").read_text())
    del meta["data_license"]
    (b / "configs" / "metadata.json").write_text(json.dumps(meta, indent=4))
    _expect_failure(b, zoo, "data licence", r"pass --data-source and --data-license", **kw)
    # a network_data_format that the network does not produce
    b = copy_bundle(CXR, tmp_path / "io")
    meta = json.loads((b / "configs" / "metadata.json").read_text())
    meta["network_data_format"]["outputs"]["pred"]["format"] = "logits"  # classes no longer set from the run
    meta["network_data_format"]["outputs"]["pred"]["num_channels"] = 5
    (b / "configs" / "metadata.json").write_text(json.dumps(meta, indent=4))
    _expect_failure(b, zoo, "network input/output", r"output channel number `2` doesn't match: `5`", **kw)


def test_missing_weights_names_both_places(tmp_path, schema):
    from medfuse.errors import DataError

    with pytest.raises(DataError, match=r"--weights was not given and .*cxr_dual_cross_attention/models/model\.pt does not exist"):
        export_bundle(REPO / "bundles" / CXR, tmp_path / "zoo", schema=schema)
    with pytest.raises(DataError, match=r"weights file .*nothing\.pt does not exist.*models/model\.pt"):
        export_bundle(REPO / "bundles" / CXR, tmp_path / "zoo", schema=schema, weights=tmp_path / "nothing.pt")
    from medfuse.commands.export import main

    assert main([str(REPO / "bundles" / CXR), "--out", str(tmp_path / "zoo")]) == 1


def test_version_must_be_newer_than_last_export(cxr_weights, schema, tmp_path):
    zoo = tmp_path / "zoo"
    export_bundle(REPO / "bundles" / CXR, zoo, weights=cxr_weights, schema=schema, log=lambda m: None)
    before = (zoo / "model_info.json").read_text()
    with pytest.raises(ZooCheckError, match=r"version 0\.1\.0 is not newer than 0\.1\.0, the last version exported to .*"
                                            r"model_info\.json; pass --version 0\.1\.1"):
        export_bundle(REPO / "bundles" / CXR, zoo, weights=cxr_weights, schema=schema, log=lambda m: None)
    assert (zoo / "model_info.json").read_text() == before


def test_network_that_breaks_torchscript(schema, tmp_path):
    from tests.zoo.unscriptable import UnscriptableNet

    b = copy_bundle(CXR, tmp_path / "unscriptable")
    for name in ("train.json", "inference.json"):
        cfg = json.loads((b / "configs" / name).read_text())
        cfg["network_def"] = {"_target_": "tests.zoo.unscriptable.UnscriptableNet", "in_channels": "@in_channels",
                              "num_classes": "@num_classes"}
        (b / "configs" / name).write_text(json.dumps(cfg, indent=4))
    weights = tmp_path / "weights" / "model.pt"
    weights.parent.mkdir()
    torch.save(UnscriptableNet(1, 2).state_dict(), weights)
    err = _expect_failure(b, tmp_path / "zoo", "torchscript",
                          r"'network_def' cannot be exported with torch\.jit\.script .*NotSupportedError.*or pass --trace",
                          weights=weights, schema=schema)
    assert "inference.json" in str(err)
    # tracing records the operations of one forward pass: the same network exports with --trace
    res = export_bundle(b, tmp_path / "zoo", weights=weights, schema=schema, trace=True, log=lambda m: None)
    assert res.round_trip_max_abs_diff <= ATOL + RTOL
    assert json.loads((tmp_path / "zoo" / "model_info.json").read_text())[f"{CXR}_v0.1.0"]["round_trip"]["method"] == "trace"


def test_onnx_needs_the_extra(cxr_weights, schema, tmp_path):
    from monai.utils import optional_import

    if all(optional_import(m)[1] for m in ("onnx", "onnxruntime", "onnxscript")):
        pytest.skip("medfuse[onnx] is installed: test_onnx_round_trip runs instead")
    with pytest.raises(ZooCheckError, match=r"--format onnx needs .*pip install 'medfuse\[onnx\]'"):
        export_bundle(REPO / "bundles" / CXR, tmp_path / "zoo", weights=cxr_weights, schema=schema, formats="torchscript,onnx",
                      log=lambda m: None)
    assert not (tmp_path / "zoo" / "model_info.json").exists()


def test_onnx_round_trip(cxr_weights, schema, tmp_path):
    from monai.utils import optional_import

    missing = [m for m in ("onnx", "onnxruntime", "onnxscript") if not optional_import(m)[1]]
    if missing:
        pytest.skip(f"{', '.join(missing)} not installed (pip install 'medfuse[onnx]')")
    from medfuse.zoo.formats import ONNX_ATOL, ONNX_RTOL

    res = export_bundle(REPO / "bundles" / CXR, tmp_path / "zoo", weights=cxr_weights, schema=schema,
                        formats="torchscript,onnx", log=lambda m: None)
    (onnx,) = [c for c in res.formats if c.fmt == "onnx"]
    assert onnx.max_abs_diff <= ONNX_ATOL + ONNX_RTOL and onnx.fresh_process_max_abs_diff <= ONNX_ATOL + ONNX_RTOL
    with zipfile.ZipFile(res.release) as zf:
        assert f"{CXR}/models/model.onnx" in zf.namelist() and f"{CXR}/models/model.pt2" not in zf.namelist()


def test_format_option(cxr_weights, schema, tmp_path, capsys):
    from medfuse.commands.export import main
    from medfuse.zoo.formats import parse_formats

    assert parse_formats(None) == ("torchscript", "pt2") and parse_formats("onnx, torchscript") == ("torchscript", "onnx")
    with pytest.raises(ZooCheckError, match=r"unknown format \['tflite'\]; choose from torchscript, pt2, onnx"):
        parse_formats("torchscript,tflite")
    with pytest.raises(ZooCheckError, match=r"torchscript is required: the model zoo"):
        export_bundle(REPO / "bundles" / CXR, tmp_path / "zoo", weights=cxr_weights, schema=schema, formats="pt2")
    assert main([str(REPO / "bundles" / CXR), "--out", str(tmp_path / "zoo"), "--weights", str(cxr_weights),
                 "--format", "torchscript,pt2"]) == 0
    out = capsys.readouterr().out
    import re

    for fmt, path in (("torchscript", "models/model.ts"), ("pt2", "models/model.pt2")):
        m = re.search(rf"{fmt}: {path}, max \|difference\| (\S+) in this process, (\S+) in a fresh process without medfuse", out)
        assert m, out
        assert float(m.group(1)) <= ATOL + RTOL and float(m.group(2)) <= ATOL + RTOL


def test_get_refuses_a_replaced_archive(cxr_weights, schema, tmp_path):
    from medfuse.errors import DataError

    zoo = tmp_path / "zoo"
    template = "https://example.org/releases/{name}_v{version}/{file}"
    res = export_bundle(REPO / "bundles" / CXR, zoo, weights=cxr_weights, schema=schema, url_template=template,
                        log=lambda m: None)
    # --url-template: the URLs go into large_files.yml and the index; no local copies are kept
    large = yaml.safe_load((zoo / CXR / "large_files.yml").read_text())["large_files"]
    assert large[0]["url"] == f"https://example.org/releases/{CXR}_v0.1.0/model.pt"
    assert json.loads((zoo / "model_info.json").read_text())[f"{CXR}_v0.1.0"]["url"] == \
        f"https://example.org/releases/{CXR}_v0.1.0/{CXR}_v0.1.0.zip"
    assert not (zoo / "files").exists()
    with zipfile.ZipFile(res.release, "a") as zf:
        zf.writestr(f"{CXR}/extra.txt", "tampered")
    with pytest.raises(DataError, match=r"SHA-256 .* differs from .* the archive is corrupt or was replaced"):
        get_bundle(zoo, CXR, tmp_path / "out")


def test_without_a_schema_file(cxr_weights, tmp_path, monkeypatch):
    """No schema anywhere: a failed check by default; with require_schema=False the export goes on and says so."""
    import medfuse.zoo.checks as zoo_checks

    monkeypatch.setattr(zoo_checks, "default_schema_path", lambda: None)
    with pytest.raises(ZooCheckError, match="no metadata schema file"):
        export_bundle(REPO / "bundles" / CXR, tmp_path / "strict", weights=cxr_weights, log=lambda m: None)
    assert not (tmp_path / "strict" / "model_info.json").exists()
    res = export_bundle(REPO / "bundles" / CXR, tmp_path / "zoo", weights=cxr_weights, log=lambda m: None,
                        require_schema=False)
    assert "metadata schema: NOT checked (no schema file)" in res.checks
    assert not any(c.startswith("metadata schema (") for c in res.checks)
    assert any("NOT checked against the MONAI schema" in w for w in res.warnings)
    assert res.release.is_file() and res.round_trip_max_abs_diff <= 1e-4
