# Copyright (c) medfuse contributors
# Licensed under the Apache License, Version 2.0
"""bundles/difm_segmentation: metadata, network I/O, train / evaluate / inference in data_mode 2d (lung phantoms)
and volume (cardiac phantom volumes, HD95 in mm, NIfTI on the input grid), nibabel's LAS test volume through
inference, the bad-input messages, TorchScript export.

Model-zoo unit-test style: ConfigWorkflow initialize / check_properties / run / finalize on tiny demo data (64 px,
a 4-16 channel DIFM, one epoch).
"""

from __future__ import annotations

import csv
import json
import os
import shutil
import warnings
from pathlib import Path

import numpy as np
import pytest
import torch
from monai.bundle import ConfigParser, ckpt_export, verify_metadata, verify_net_in_out

from medfuse.data.manifest import read_manifest
from medfuse.errors import DataError, ManifestError
from medfuse.workflows import slice_segmentation as ss
from tests.bundles.helpers import SCHEMA, configs, flat_config, layered, run_workflow, torchrun_multi_gpu
from tests.tiny import bundle_overrides

BUNDLE = "difm_segmentation"
CFG = configs(BUNDLE)
FEATURES = [4, 4, 8, 8, 16, 4]
ARCHITECTURE = ("image_size", "features", "kv_size", "data_mode", "architecture", "split_lungs")


def tiny_overrides(manifest, output_dir, **more) -> dict:
    return bundle_overrides(BUNDLE, manifest, output_dir, **{"learning_rate": 0.01, **more})


def without_architecture(overrides: dict) -> dict:
    return {k: v for k, v in overrides.items() if k not in ARCHITECTURE}


def _absolute(src: Path, m: dict) -> dict:
    for split in ("training", "validation", "test"):
        for it in m.get(split, []):
            for key in ("image", "mask"):
                if key in it:
                    it[key] = str((src.parent / it[key]).resolve())
    return m


@pytest.fixture(scope="session")
def volume_manifest(tmp_path_factory):
    """Eight cardiac phantom volumes (4 patients): 4 training, 2 validation, 2 test, by patient."""
    from medfuse.data.demo.volumes import make_demo_volumes

    src = make_demo_volumes(tmp_path_factory.mktemp("difm_vol"), 8, seed=0)
    m = _absolute(src, read_manifest(src, validate=False))
    last = m["training"][-1]["patient_id"]
    m["test"] = [it for it in m["training"] if it["patient_id"] == last]
    m["training"] = [it for it in m["training"] if it["patient_id"] != last]
    out = src.parent / "vol_split.json"
    out.write_text(json.dumps(m))
    return out


@pytest.fixture(scope="module")
def cxr_partial(demo_data, tmp_path_factory):
    """The demo lung manifest with the masks of two training items removed (they must be left out and counted)."""
    src = demo_data["cxr"]
    m = _absolute(src, read_manifest(src, validate=False))
    for it in m["training"][:2]:
        del it["mask"]
    out = tmp_path_factory.mktemp("difm_cxr") / "partial.json"
    out.write_text(json.dumps(m))
    return out


@pytest.fixture(scope="module")
def trained_2d(cxr_partial, tmp_path_factory):
    out = tmp_path_factory.mktemp("difm_2d_runs")
    tiny = tiny_overrides(cxr_partial, out)
    wf = run_workflow(CFG / "train.json", "train", run_name="tiny", **tiny)
    return {"run_dir": out / "tiny", "tiny": tiny, "workflow": wf}


@pytest.fixture(scope="module")
def trained_volume(volume_manifest, tmp_path_factory):
    out = tmp_path_factory.mktemp("difm_vol_runs")
    tiny = tiny_overrides(volume_manifest, out, data_mode="volume", slices_per_volume=2)
    run_workflow(CFG / "train.json", "train", run_name="tiny", **tiny)
    return {"run_dir": out / "tiny", "tiny": tiny}


def test_metadata(shared_data):
    verify_metadata(meta_file=str(CFG / "metadata.json"), filepath=str(shared_data / SCHEMA))


def test_net_in_out(demo_data):
    """network_def takes the original and the enhanced image (2 channels) and returns background + foreground."""
    verify_net_in_out(net_id="network_def", meta_file=str(CFG / "metadata.json"), config_file=layered(CFG / "train.json"),
                      device="cpu", manifest=str(demo_data["cxr"]), features=FEATURES, kv_size=4)


def test_train_2d_run_folder(trained_2d, cxr_partial):
    run = trained_2d["run_dir"]
    for name in ("model.pt", "config.json", "run_info.json", "log.csv"):
        assert (run / name).is_file(), name
    with open(run / "log.csv") as f:
        (row,) = list(csv.DictReader(f))
    assert {"train_loss", "val_dice", "val_iou"} <= set(row) and 0.0 < float(row["val_dice"]) <= 1.0
    info = json.loads((run / "run_info.json").read_text())
    n_train = len(read_manifest(cxr_partial, validate=False)["training"])
    assert info["seg_classes"] == ["background", "foreground"] and info["data_mode"] == "2d"
    assert info["classes"] == ["foreground"]  # the model's foreground classes (the manifest's are diagnoses)
    assert info["training_items_without_mask_left_out"] == 2 and info["training_items"] == n_train - 2
    assert info["in_channels"] == 2 and info["architecture"] == "difm"
    parser = trained_2d["workflow"].parser
    loss = parser.get_parsed_content("loss")
    assert (loss.ce_weight, loss.dice_weight, loss.boundary_weight) == (0.3, 0.7, 1.0) and loss.last["total"] > 0
    assert type(parser.get_parsed_content("network")).__name__ == "DIFMUNet"
    state = torch.load(run / "model.pt", map_location="cpu", weights_only=True)
    saved = ConfigParser()
    saved.read_config(str(run / "config.json"))
    saved.get_parsed_content("network_def").load_state_dict(state)


def test_evaluate_2d(trained_2d):
    run_workflow([CFG / "train.json", CFG / "evaluate.json"], "train", run_name="tiny",
                 **without_architecture(trained_2d["tiny"]))
    ev = trained_2d["run_dir"] / "eval"
    n_test = len(read_manifest(trained_2d["tiny"]["manifest"], validate=False)["test"])
    seg = json.loads((ev / "segmentation_metrics.json").read_text())
    assert seg["n_cases"] == n_test and 0 < seg["per_class"]["foreground"]["dice"]["mean"] <= 1
    with open(ev / "segmentation_per_case.csv") as f:
        assert len(list(csv.DictReader(f))) == n_test
    metrics = json.loads((ev / "metrics.json").read_text())
    assert metrics["segmentation"]["per_class"] == seg["per_class"]
    assert "<h2>Segmentation</h2>" in (ev / "index.html").read_text()


def test_inference_2d_masks(trained_2d, tmp_path):
    from PIL import Image

    run_workflow(CFG / "inference.json", "infer", run_name="tiny", **without_architecture(trained_2d["tiny"]),
                 inference_dir=str(tmp_path / "inf"))
    with open(tmp_path / "inf" / "masks.csv") as f:
        masks = list(csv.DictReader(f))
    assert masks
    for m in masks:
        png = np.asarray(Image.open(tmp_path / "inf" / m["mask"]))
        assert m["mask"].endswith("_mask.png") and png.shape == np.asarray(Image.open(m["image"])).shape[:2]
        assert set(np.unique(png)) <= {0, 255}


def test_volume_evaluate_in_mm(trained_volume, volume_manifest):
    run = trained_volume["run_dir"]
    with open(run / "log.csv") as f:
        (row,) = list(csv.DictReader(f))
    assert 0.0 <= float(row["val_dice"]) <= 1.0
    run_workflow([CFG / "train.json", CFG / "evaluate.json"], "train", run_name="tiny",
                 **without_architecture(trained_volume["tiny"]))
    seg = json.loads((run / "eval" / "segmentation_metrics.json").read_text())
    test = read_manifest(volume_manifest, validate=False)["test"]
    assert seg["n_cases"] == len(test) and seg["hd95_units"] == "mm" and set(seg["per_class"]) == {"RV", "MYO", "LV"}
    with open(run / "eval" / "segmentation_per_case.csv") as f:
        rows = list(csv.DictReader(f))
    assert [r["image"] for r in rows] == [it["image"] for it in test]
    for r, it in zip(rows, test):
        assert r["shape"] == "x".join(str(s) for s in it["shape"]) and r["spacing"] == "1.5x1.5x8"
        for c in ("RV", "MYO", "LV"):
            mm, vox = r[f"hd95_{c}"], r[f"hd95_voxels_{c}"]
            if mm and vox:  # every surface distance in mm lies between 1.5 and 8 times its voxel distance
                assert 1.5 * float(vox) - 1e-3 <= float(mm) <= 8.0 * float(vox) + 1e-3
    assert json.loads((run / "eval" / "metrics.json").read_text())["segmentation"]["per_class"] == seg["per_class"]


def _check_nifti_like(seg_path: Path, image_path: str) -> np.ndarray:
    import nibabel as nib

    src, seg = nib.load(image_path), nib.load(str(seg_path))
    assert seg.shape == src.shape[:3] and seg.get_data_dtype() == np.int16
    np.testing.assert_allclose(seg.affine, src.affine, atol=1e-4)
    return np.asarray(seg.dataobj)


def test_volume_inference_on_the_input_grid(trained_volume, volume_manifest, tmp_path):
    run_workflow(CFG / "inference.json", "infer", run_name="tiny", **without_architecture(trained_volume["tiny"]),
                 inference_dir=str(tmp_path / "inf"))
    with open(tmp_path / "inf" / "volumes.csv") as f:
        rows = list(csv.DictReader(f))
    test = read_manifest(volume_manifest, validate=False)["test"]
    assert [r["image"] for r in rows] == [it["image"] for it in test]
    for r in rows:
        assert r["seg"].endswith("_seg.nii.gz") and set(r) == {"image", "seg", "voxels_RV", "voxels_MYO", "voxels_LV"}
        data = _check_nifti_like(tmp_path / "inf" / r["seg"], r["image"])
        assert int(r["voxels_MYO"]) == int((data == 2).sum()) and data.min() >= 0 and data.max() <= 3


def test_nibabel_las_volume_keeps_shape_and_affine(trained_volume, tmp_path):
    """nibabel's own anatomical.nii (LAS, 2 mm, no labels) through volume inference from a folder."""
    import nibabel

    src = Path(os.path.dirname(nibabel.__file__)) / "tests" / "data" / "anatomical.nii"
    if not src.is_file():
        pytest.skip(f"{src} is not installed with nibabel")
    folder = tmp_path / "in"
    folder.mkdir()
    shutil.copy(src, folder / src.name)
    run_workflow(CFG / "inference.json", "infer", run_name="tiny", input_dir=str(folder),
                 inference_dir=str(tmp_path / "inf"), **without_architecture(trained_volume["tiny"]))
    _check_nifti_like(tmp_path / "inf" / "anatomical_seg.nii.gz", str(folder / src.name))


def test_split_lungs_unet2ch_with_clean_up(demo_data, tmp_path):
    """2d with split_lungs (3 classes), the two-channel U-Net baseline and keep_largest_component: PNG class maps."""
    from PIL import Image

    tiny = tiny_overrides(demo_data["cxr"], tmp_path, split_lungs=True, architecture="unet2ch",
                          keep_largest_component=True)
    run_workflow(CFG / "train.json", "train", run_name="lungs", **tiny)
    info = json.loads((tmp_path / "lungs" / "run_info.json").read_text())
    assert info["seg_classes"] == ["background", "right_lung", "left_lung"] and info["in_channels"] == 2
    run_workflow(CFG / "inference.json", "infer", run_name="lungs", inference_dir=str(tmp_path / "inf"),
                 **without_architecture(tiny))
    saved = ConfigParser()
    saved.read_config(str(tmp_path / "lungs" / "config.json"))
    assert saved.get_parsed_content("seg_keep_components") == 2
    assert type(saved.get_parsed_content("network_def")).__name__ == "BasicUNet"
    pngs = sorted((tmp_path / "inf").glob("*_mask.png"))
    assert pngs and all(set(np.unique(np.asarray(Image.open(p)))) <= {0, 1, 2} for p in pngs)


@pytest.mark.parametrize("output", ["2d"])
def test_ckpt_export_round_trip(trained_2d, tmp_path, output):
    run = trained_2d["run_dir"]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        ckpt_export(net_id="network_def", filepath=str(tmp_path / "model.ts"), ckpt_file=str(run / "model.pt"),
                    meta_file=str(CFG / "metadata.json"), config_file=flat_config(CFG / "train.json", tmp_path / "flat"),
                    manifest=trained_2d["tiny"]["manifest"], features=FEATURES, kv_size=4)
        scripted = torch.jit.load(str(tmp_path / "model.ts"))
    parser = ConfigParser()
    parser.read_config(str(run / "config.json"))
    net = parser.get_parsed_content("network_def")
    net.load_state_dict(torch.load(run / "model.pt", map_location="cpu", weights_only=True))
    x = torch.rand(2, 2, 64, 64)
    with torch.no_grad():
        torch.testing.assert_close(scripted(x), net.eval()(x), rtol=1e-4, atol=1e-5)


# ---------------------------------------------------------------------------------------------------------------
# architectures, lung split, bad input


@pytest.mark.parametrize("architecture,channels,name", [("difm", 2, "DIFMUNet"), ("unet", 1, "BasicUNet"),
                                                         ("unet2ch", 2, "BasicUNet")])
def test_architectures(architecture, channels, name):
    assert ss.network_in_channels(architecture) == channels
    net = ss.segmentation_network(architecture, channels, 4, features=FEATURES, kv_size=4)
    assert type(net).__name__ == name
    assert net(torch.rand(1, channels, 32, 32)).shape == (1, 4, 32, 32)
    with pytest.raises(ValueError, match="even"):
        ss.segmentation_network("difm", 3, 2, features=FEATURES)


def test_split_lungs_image_left_is_right_lung():
    from medfuse.transforms.segmentation_presets import split_lungs

    m = np.zeros((20, 30), np.uint8)
    m[2:18, 2:10] = 1  # image left, larger
    m[4:16, 18:26] = 1
    m[0, 29] = 1  # a speck: dropped
    out = split_lungs(m)
    assert set(np.unique(out)) == {0, 1, 2} and (out[2:18, 2:10] == 1).all() and (out[4:16, 18:26] == 2).all()
    assert out[0, 29] == 0


def _nifti(path: Path, shape, affine=None) -> str:
    import nibabel as nib

    nib.save(nib.Nifti1Image(np.zeros(shape, np.float32), np.eye(4) if affine is None else affine), str(path))
    return str(path)


def test_bad_input_is_one_line_naming_the_file_and_the_fix(demo_data, tmp_path):
    png = str(demo_data["cxr"].parent / "cxr" / "images" / sorted(os.listdir(demo_data["cxr"].parent / "cxr" / "images"))[0])
    vol = _nifti(tmp_path / "vol.nii.gz", (8, 8, 5))
    cases = [
        ({"image": png}, "volume", "data_mode to '2d'"),
        ({"image": _nifti(tmp_path / "flat.nii.gz", (8, 8, 1))}, "volume", "data_mode to '2d'"),
        ({"image": vol}, "2d", "data_mode to 'volume'"),
        ({"image": _nifti(tmp_path / "cine.nii.gz", (8, 8, 5, 3))}, "volume", "channels or frames"),
        ({"image": vol, "label": _nifti(tmp_path / "lab.nii.gz", (8, 8, 4))}, "volume", "label grid"),
        ({"image": vol, "label": _nifti(tmp_path / "lab2.nii.gz", (8, 8, 5), np.diag([2.0, 1, 1, 1]))}, "volume",
         "label affine"),
    ]
    for item, mode, fix in cases:
        with pytest.raises(DataError) as err:
            ss.check_item(item, mode)
        msg = str(err.value)
        assert "\n" not in msg and fix in msg and (item.get("label") or item["image"]) in msg, msg
    ss.check_item({"image": vol, "label": _nifti(tmp_path / "ok.nii.gz", (8, 8, 5))}, "volume")  # a good pair
    from PIL import Image

    Image.fromarray(np.zeros((10, 12), np.uint8)).save(tmp_path / "small_mask.png")
    with pytest.raises(DataError, match="label grid") as err:
        ss.check_item({"image": png, "label": str(tmp_path / "small_mask.png")}, "2d")
    assert str(tmp_path / "small_mask.png") in str(err.value) and "\n" not in str(err.value)


def test_manifest_tasks_and_items_without_mask(demo_data, cxr_partial, tmp_path):
    assert ss.items_without_mask(cxr_partial) == 2
    items = ss.slice_segmentation_items(cxr_partial, "training")
    assert len(items) == len(read_manifest(cxr_partial, validate=False)["training"]) - 2
    assert all(it["label"] == it["mask_path"] for it in items)
    assert len(ss.slice_inference_items(cxr_partial, split="training")) == len(items) + 2  # inference keeps them
    assert ss.segmentation_classes(cxr_partial) == ["background", "foreground"]
    assert ss.segmentation_classes(cxr_partial, split_lungs=True) == ["background", "right_lung", "left_lung"]
    m = read_manifest(demo_data["cxr"], validate=False)
    m["task"] = "classification"
    bad = tmp_path / "cls.json"
    bad.write_text(json.dumps(_absolute(demo_data["cxr"], m)))
    with pytest.raises(ManifestError, match="segmentation"):
        ss.slice_segmentation_items(bad, "training")


@pytest.mark.slow
def test_torchrun_multi_gpu_config_on_cpu(demo_data, tmp_path):
    """multi_gpu_train.json with two processes (gloo on CPU): one run folder, rank-0 files, world size recorded."""
    run = torchrun_multi_gpu(CFG, tiny_overrides(demo_data["cxr"], tmp_path / "runs"), tmp_path)
    info = json.loads((run / "run_info.json").read_text())
    assert info["world_size"] == 2 and info["workflow"] == "multi_gpu_train"
    assert (run / "model.pt").is_file()


def test_exported_volume_run_declares_its_segmentation_classes(trained_volume, tmp_path):
    """A run with more than two segmentation classes (the cardiac phantoms: background, LV, MYO, RV here) exports
    with metadata that says so: verify_net_in_out checks the network against it, and the exported labels name them."""
    from medfuse.zoo import export_bundle
    from medfuse.zoo.checks import SHIPPED_SCHEMA

    run = trained_volume["run_dir"]
    seg = json.loads((run / "run_info.json").read_text()).get("seg_classes") or ss.segmentation_classes(
        trained_volume["tiny"]["manifest"], False)
    assert len(seg) > 2
    res = export_bundle(CFG.parent, tmp_path / "zoo", weights=run / "model.pt", schema=SHIPPED_SCHEMA,
                        data_source="medfuse synthetic cardiac phantoms", data_license="Apache-2.0 (synthetic)",
                        formats="torchscript", log=lambda m: None)
    assert "verify_net_in_out" in res.checks
    fmt = json.loads((res.bundle_dir / "configs" / "metadata.json").read_text())["network_data_format"]
    assert fmt["outputs"]["pred"]["num_channels"] == len(seg)
    assert fmt["outputs"]["pred"]["channel_def"] == {str(i): c for i, c in enumerate(seg)}
    assert fmt["post_processed_outputs"]["pred"]["value_range"] == [0, len(seg) - 1]
