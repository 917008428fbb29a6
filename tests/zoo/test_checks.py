# Copyright (c) medfuse contributors
# Licensed under the Apache License, Version 2.0
"""The zoo checks and the config baking one by one, on small inputs (no training)."""

from __future__ import annotations

import json

import pytest

from medfuse.zoo.checks import (
    ZooCheckError,
    check_config_paths,
    check_json_format,
    check_metadata_schema,
    check_required_files,
    check_version,
    find_absolute_paths,
    is_non_commercial,
    json_indent_problem,
    parse_version,
)
from medfuse.zoo.configs import bake_config, run_setting_keys
from medfuse.zoo.index import get_bundle, list_bundles, update_model_info
from tests.zoo.conftest import BUNDLES, copy_bundle, zoo_bundles


def test_bundles_are_discovered():
    names = zoo_bundles()
    assert {"cxr_dual_cross_attention", "oct_dual_cross_attention"} <= set(names)


@pytest.mark.parametrize("bundle", zoo_bundles())
def test_source_bundles_pass_the_static_checks(bundle, schema):
    root = BUNDLES / bundle
    check_required_files(root)
    check_json_format(root)
    check_metadata_schema(root / "configs" / "metadata.json", schema)
    check_config_paths(root)
    meta = json.loads((root / "configs" / "metadata.json").read_text())
    assert check_version(meta, "metadata.json") == meta["version"]
    assert meta["data_source"] and meta["data_license"]


def test_missing_files_named_one_by_one(tmp_path):
    for i, rel in enumerate(("LICENSE", "docs/README.md", "configs/inference.json", "configs/metadata.json")):
        (tmp_path / str(i)).mkdir()
        root = copy_bundle("cxr_dual_cross_attention", tmp_path / str(i))
        (root / rel).unlink()
        with pytest.raises(ZooCheckError, match="required files") as e:
            check_required_files(root)
        assert str(root / rel.replace("inference.json", "inference.*")) in str(e.value)


def test_json_indent():
    good = '{\n    "a": [1, 2],\n    "b": {\n        "c": "x"\n    },\n    "d": [\n        "e"\n    ]\n}\n'
    assert json_indent_problem(good) is None
    assert json_indent_problem(json.dumps(json.loads(good), indent=2)) == "line 2 is indented by 2 spaces, expected 4"
    assert "tab" in json_indent_problem('{\n\t"a": 1\n}')
    # brackets inside strings do not count
    assert json_indent_problem('{\n    "a": "[{",\n    "b": 1\n}') is None


def test_json_format_check_names_file_and_line(tmp_path):
    root = copy_bundle("cxr_dual_cross_attention", tmp_path)
    cfg = root / "configs" / "inference.json"
    cfg.write_text(json.dumps(json.loads(cfg.read_text()), indent=2))
    with pytest.raises(ZooCheckError, match=r"json format.*inference\.json: line 2 is indented by 2 spaces, expected 4"):
        check_json_format(root)
    cfg.write_text('{"a": 1,}')
    with pytest.raises(ZooCheckError, match=r"inference\.json: not valid JSON"):
        check_json_format(root)


def test_metadata_schema_names_the_field(tmp_path, schema):
    root = copy_bundle("cxr_dual_cross_attention", tmp_path)
    meta_file = root / "configs" / "metadata.json"
    meta = json.loads(meta_file.read_text())
    del meta["task"]
    meta_file.write_text(json.dumps(meta, indent=4))
    with pytest.raises(ZooCheckError, match="'task' is a required property"):
        check_metadata_schema(meta_file, schema)
    meta["task"] = "x"
    meta["network_data_format"]["inputs"]["image"]["num_channels"] = "one"
    meta_file.write_text(json.dumps(meta, indent=4))
    with pytest.raises(ZooCheckError, match="network_data_format/inputs/image/num_channels: 'one' is not of type 'integer'"):
        check_metadata_schema(meta_file, schema)
    with pytest.raises(ZooCheckError, match="pass --schema PATH"):
        check_metadata_schema(meta_file, tmp_path / "no_schema.json")


def test_version_checks():
    meta = {"version": "0.2.0", "changelog": {"0.2.0": "b", "0.1.0": "a"}}
    assert check_version(meta, "m.json", last_exported="0.1.9") == "0.2.0"
    with pytest.raises(ZooCheckError, match="version 0.3.0 is not in the changelog .*pass --changelog"):
        check_version({"version": "0.3.0", "changelog": {"0.2.0": "b"}}, "m.json")
    with pytest.raises(ZooCheckError, match="0.2.0 is not newer than 0.2.0.*--version 0.2.1"):
        check_version(meta, "m.json", last_exported="0.2.0", zoo_file="zoo/model_info.json")
    with pytest.raises(ZooCheckError, match="the changelog has 0.3.0, newer than version 0.2.0"):
        check_version({"version": "0.2.0", "changelog": {"0.3.0": "c", "0.2.0": "b"}}, "m.json")
    with pytest.raises(ZooCheckError, match="'v1' is not a semantic version"):
        parse_version("v1")
    assert parse_version("1.10.0") > parse_version("1.9.3")


def test_absolute_and_personal_paths():
    config = {
        "dataset_dir": "/data/cxr",
        "ok": "data/cxr",
        "url": "https://example.org/x.json",
        "expr": "$os.path.join('/home/alice/runs', @bundle_name)",
        "nested": [{"path": "C:\\Users\\bob\\x.dcm"}, "~/weights.pt", "images/home/x"],
        "ref": "$os.path.join(@dataset_dir, 'cxr_manifest.json')",
    }
    found = dict(find_absolute_paths(config, home="/root"))
    assert found == {
        "dataset_dir": "/data/cxr", "expr": "/home/alice/runs", "nested#0#path": "C:\\Users\\bob\\x.dcm",
        "nested#1": "~/weights.pt",
    }
    assert find_absolute_paths({"a": "runs/x", "b": "$@a + '/model.pt'"}, home="/root") == []


def test_config_paths_check_names_key(tmp_path):
    root = copy_bundle("cxr_dual_cross_attention", tmp_path)
    cfg = root / "configs" / "train.json"
    config = json.loads(cfg.read_text())
    config["dataset_dir"] = "/home/alice/data"
    cfg.write_text(json.dumps(config, indent=4))
    with pytest.raises(ZooCheckError, match=r"paths.*train\.json: 'dataset_dir' holds the absolute or personal path '/home/alice/data'"):
        check_config_paths(root)


def test_non_commercial_licences():
    assert is_non_commercial("CC BY-NC-SA 4.0") and is_non_commercial("CC-BY-NC-4.0")
    assert is_non_commercial("free for non-commercial research") and is_non_commercial("Research use only")
    assert not is_non_commercial("CC BY 4.0") and not is_non_commercial("Apache-2.0") and not is_non_commercial("")


def test_bake_config_writes_trained_values():
    config = {
        "image_size": 224,
        "backbones": ["efficientnet-b4", "resnet34"],
        "size_from_run": "$medfuse.workflows.run_setting(os.path.dirname(@ckpt_path), 'image_size', 224)",
        "classes": "$medfuse.workflows.resolve_classes(manifest='' if @input_dir else @manifest, checkpoint=@ckpt_path)",
        "other": "$@image_size * 2",
        "list": ["$medfuse.workflows.run_setting(@run_dir, 'backbones', ['a'])"],
    }
    assert run_setting_keys([config]) == ["image_size", "backbones"]
    baked = bake_config(config, {"image_size": 64, "backbones": ["efficientnet-b0", "resnet10"]}, ["normal", "opacity"])
    assert baked["image_size"] == 64 and baked["backbones"] == ["efficientnet-b0", "resnet10"]
    assert baked["size_from_run"] == "$medfuse.workflows.run_setting(os.path.dirname(@ckpt_path), 'image_size', 64)"
    assert baked["classes"].endswith("checkpoint=@ckpt_path, expected=['normal', 'opacity'])")
    assert baked["other"] == config["other"]
    assert baked["list"] == ["$medfuse.workflows.run_setting(@run_dir, 'backbones', ['efficientnet-b0', 'resnet10'])"]
    assert config["image_size"] == 224  # the input is not changed


def test_index_update_list_and_get_errors(tmp_path):
    zoo = tmp_path / "zoo"
    update_model_info(zoo, "a_v0.1.0", {"name": "a", "version": "0.1.0", "task": "t", "data_license": "CC BY 4.0"})
    update_model_info(zoo, "a_v0.10.0", {"name": "a", "version": "0.10.0", "task": "t2", "data_license": "CC BY-NC 4.0",
                                         "non_commercial": True})
    update_model_info(zoo, "a_v0.2.0", {"name": "a", "version": "0.2.0", "task": "t", "data_license": "x"})
    (row,) = list_bundles(zoo)
    assert row["versions"] == ["0.1.0", "0.2.0", "0.10.0"] and row["latest"] == "0.10.0"
    assert row["task"] == "t2" and row["non_commercial"] is True
    from medfuse.errors import DataError

    with pytest.raises(DataError, match="no bundle named 'b'; the zoo has a"):
        get_bundle(zoo, "b", tmp_path / "out")
    with pytest.raises(DataError, match="a has no version 9.9.9; it has 0.1.0, 0.2.0, 0.10.0"):
        get_bundle(zoo, "a", tmp_path / "out", version="9.9.9")
    with pytest.raises(DataError, match="release archive of a_v0.10.0 .* is missing"):
        get_bundle(zoo, "a", tmp_path / "out")


def test_commands_registered_and_tools_script():
    import subprocess
    import sys

    from medfuse.cli import COMMANDS, main

    assert COMMANDS["export"] == "export" and COMMANDS["zoo"] == "zoo"
    r = subprocess.run([sys.executable, str(BUNDLES.parent / "tools" / "export_bundle.py"), "--help"],
                       capture_output=True, text=True, timeout=120)
    assert r.returncode == 0 and "--url-template" in r.stdout and "--weights" in r.stdout
    with pytest.raises(SystemExit) as e:
        main(["zoo", "fetch", "x"])
    assert e.value.code == 2


def test_zoo_list_empty(tmp_path, capsys):
    from medfuse.commands.zoo import main

    assert main(["list", "--zoo", str(tmp_path)]) == 0
    assert "no bundles in" in capsys.readouterr().out
    (tmp_path / "model_info.json").write_text("{not json")
    assert main(["list", "--zoo", str(tmp_path)]) == 1
    assert "model_info.json: not valid JSON" in capsys.readouterr().err


def test_zoo_inside_the_bundle_is_refused(tmp_path):
    from medfuse.errors import DataError
    from medfuse.zoo import export_bundle

    root = copy_bundle("cxr_dual_cross_attention", tmp_path)
    with pytest.raises(DataError, match="is inside the bundle folder"):
        export_bundle(root, root / "zoo")
    assert not (root / "zoo").exists()


def test_bad_url_template_is_refused_before_anything_runs(tmp_path):
    from medfuse.errors import DataError
    from medfuse.zoo import export_bundle

    with pytest.raises(DataError, match=r"--url-template .*unknown or malformed placeholder .*'release'.*use \{name\}"):
        export_bundle(BUNDLES / "cxr_dual_cross_attention", tmp_path / "zoo", url_template="https://x/{release}/{file}")
    assert not (tmp_path / "zoo").exists()
