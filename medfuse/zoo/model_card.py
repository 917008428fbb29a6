# Copyright (c) medfuse contributors
# Licensed under the Apache License, Version 2.0
"""The exported bundle's ``docs/README.md`` in the MONAI model zoo's template, and ``docs/data_license.txt``.

The zoo's ``docs/readme_template.md`` asks for these sections, in this order: Authors, Tags,
Model Description, Data (with Preprocessing), Performance, Additional Usage Steps, System
Configuration, Limitations, Citation Info, References. :func:`write_model_card` fills them from
the exported metadata and from the sections of the bundle's own README that describe the model
(Overview, Input, Output, Preprocessing, Training, References, License; the sections that run
commands from the medfuse checkout are not copied). Every command it writes runs from inside
the bundle folder (``cd <name>``), as the zoo's CONTRIBUTING writes them.
"""

from __future__ import annotations

import platform
import re
from pathlib import Path
from typing import Any, Mapping, Sequence

from medfuse.utils.io import atomic_write_text

__all__ = ["DATA_LICENSE_FILE", "readme_sections", "requirement_pins", "write_data_license", "write_model_card"]

DATA_LICENSE_FILE = "docs/data_license.txt"
#: sections of a medfuse bundle README copied into the model card (as h4 parts of the template's sections)
_DESCRIBE = ("Overview", "Input", "Output", "Training", "Bad input")


def readme_sections(text: str) -> tuple[str, dict[str, str]]:
    """``(preamble, {title: body})`` of a Markdown file split at its ``## `` headings (code blocks respected)."""
    preamble: list[str] = []
    sections: dict[str, list[str]] = {}
    current = preamble
    fenced = False
    for line in text.splitlines():
        if line.startswith("```"):
            fenced = not fenced
        if not fenced and line.startswith("## "):
            current = sections.setdefault(line[3:].strip(), [])
            continue
        current.append(line)
    body = [ln for ln in preamble if not ln.startswith("# ")]
    return "\n".join(body).strip(), {k: "\n".join(v).strip() for k, v in sections.items()}


def requirement_pins(meta: Mapping[str, Any]) -> list[str]:
    """``name==version`` for what the metadata pins, as the zoo's ``ci/get_bundle_requirements.py`` reads it."""
    pins = [f"{pkg}=={meta[key]}" for key, pkg in (("monai_version", "monai"), ("pytorch_version", "torch"),
                                                   ("numpy_version", "numpy")) if meta.get(key)]
    for key in ("optional_packages_version", "required_packages_version"):
        pins += [f"{name}=={version}" for name, version in (meta.get(key) or {}).items()]
    return pins


def write_data_license(stage: Path, meta: Mapping[str, Any], non_commercial: bool) -> Path:
    """``docs/data_license.txt``: the licence and source of the training data of these weights."""
    lines = [
        f"Training data of {meta.get('name', stage.name)} v{meta.get('version', '')}",
        "",
        f"Licence: {meta.get('data_license', '')}",
        "",
        f"Source: {meta.get('data_source', '')}",
        "",
    ]
    if non_commercial:
        lines += ["The weights inherit the data's non-commercial terms: they must not be used commercially.", ""]
    lines.append("The bundle's code and configs are under the licence in LICENSE; the data keeps its own terms.")
    path = stage / DATA_LICENSE_FILE
    path.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_text(path, "\n".join(lines) + "\n")
    return path


def _tags(name: str, meta: Mapping[str, Any]) -> str:
    fmt = meta.get("network_data_format") or {}
    image = (fmt.get("inputs") or {}).get("image") or {}
    outputs = list((fmt.get("outputs") or {}).values())
    tags = []
    words = name.lower().split("_")
    if any(o.get("format") == "classes" for o in outputs):
        tags.append("Classification")
    if "segmentation" in words or any(o.get("format") == "segmentation" for o in outputs):
        tags.append("Segmentation")
    if "detection" in words:
        tags.append("Detection")
    tags += [t for t in (image.get("modality"), "Chest X-ray" if "cxr" in words else "", "OCT" if "oct" in words else "")
             if t]
    return ", ".join(dict.fromkeys(tags + ["MONAI bundle", "medfuse"]))


def _in_bundle_folder(text: str, name: str) -> str:
    """``text`` with ``cd <name>`` first in every bash block that does not start with a ``cd``: each block copied
    from the repository's README runs as it is from the folder the bundle was unpacked into."""
    def fix(match: re.Match) -> str:
        body = match.group(1)
        first = next((ln for ln in body.splitlines() if ln.strip() and not ln.lstrip().startswith("#")), "")
        return match.group(0) if first.startswith("cd ") else f"```bash\ncd {name}\n{body}```"

    return re.sub(r"```bash\n(.*?)```", fix, text, flags=re.S)


def _usage(name: str, meta: Mapping[str, Any], configs: Sequence[str], has_train: bool) -> list[str]:
    pins = " ".join(f'"{p}"' for p in requirement_pins(meta))
    lines = [
        "Every command runs from inside the bundle folder. The bundle's code (a copy of medfuse "
        f"{(meta.get('medfuse_code') or {}).get('version', '')}) is in `scripts/medfuse`; the configs import `scripts` "
        "first, which puts that copy on the Python path, so medfuse itself need not be installed.",
        "",
        "```bash",
        f"cd {name}",
        f"pip install {pins}",
        "# the weights, when this folder came from the zoo without them (large_files.yml lists URL and SHA-256)",
        "python -m monai.bundle download_large_files --bundle_path .",
        "# inference on a folder of images",
        "python -m monai.bundle run --config_file configs/inference.json --input_dir <image folder> --output_dir results",
        "# the zoo's checks",
        "python -m monai.bundle verify_net_in_out --net_id network_def --meta_file configs/metadata.json "
        "--config_file configs/inference.json",
        "python -m monai.bundle ckpt_export --net_id network_def --filepath models/model.ts --ckpt_file models/model.pt "
        "--meta_file configs/metadata.json --config_file configs/inference.json",
    ]
    if has_train:
        lines += [
            "# training and evaluation on a medfuse manifest (a MONAI datalist with training/validation/test splits)",
            "python -m monai.bundle run --config_file configs/train.json --manifest <manifest.json> --dataset_dir <data>",
        ]
        if "evaluate.json" in configs:
            lines.append("python -m monai.bundle run --config_file \"['configs/train.json','configs/evaluate.json']\" "
                         "--manifest <manifest.json> --dataset_dir <data> --run_name <run>")
    lines += ["```"]
    return lines


def write_model_card(
    stage: Path, source_readme: Path, meta: Mapping[str, Any], *, non_commercial: bool, run_info: Mapping[str, Any],
    torch_version: str, monai_version: str,
) -> Path:
    """Write ``<stage>/docs/README.md`` in the zoo's template (see the module docstring) and return its path."""
    name = stage.name
    text = source_readme.read_text(encoding="utf-8") if source_readme.is_file() else ""
    preamble, sections = readme_sections(text)
    configs = sorted(p.name for p in (stage / "configs").glob("*.json"))
    out = [f"# {meta.get('name', name)}", ""]
    out += ["### **Authors**", str(meta.get("authors", "")), ""]
    out += ["### **Tags**", _tags(name, meta), ""]
    out += ["## **Model Description**", str(meta.get("description", "")), ""]
    for title in _DESCRIBE:
        if sections.get(title):
            out += ["" if title == "Overview" else f"#### **{title}**", _in_bundle_folder(sections[title], name), ""]
    out += ["## **Data**", str(meta.get("data_source", "")), "",
            f"Licence of the training data: {meta.get('data_license', '')} (also in `{DATA_LICENSE_FILE}`).", ""]
    if sections.get("Preprocessing"):
        out += ["#### **Preprocessing**", sections["Preprocessing"], ""]
    metrics = meta.get("eval_metrics") or {}
    out += ["## **Performance**"]
    out += [f"- {k}: {v}" for k, v in metrics.items()] or ["No evaluation of these weights is recorded in the metadata."]
    out += ["", "The measurements of the training recipe (other weights) are in the medfuse repository, "
            f"`bundles/{name}/docs/README.md`, section Performance.", ""]
    out += ["## **Additional Usage Steps**", *_usage(name, meta, configs, "train.json" in configs), ""]
    device = run_info.get("device") or "not recorded"
    out += [
        "## **System Configuration**",
        f"Exported and checked on {platform.system()} {platform.machine()} with Python {platform.python_version()}, "
        f"PyTorch {torch_version} and MONAI {monai_version}. The training run of these weights ran on: {device}. "
        "Training and inference run on a CPU (slowly) or on one CUDA GPU; `configs/multi_gpu_train.json`, when present, "
        "trains on several GPUs with torchrun.",
        "",
        "## **Limitations**",
        preamble or str(meta.get("intended_use", "")),
        "",
        str(meta.get("intended_use", "")) if preamble else "",
    ]
    if non_commercial:
        out += ["", "**Non-commercial: the training data's licence forbids commercial use of these weights.**"]
    out += ["", "## **Citation Info**", "If you use this bundle, cite the works it builds on:", ""]
    out += [f"{i}. {ref}" for i, ref in enumerate(meta.get("references") or [], 1)] or ["(none listed)"]
    if sections.get("References"):
        out += ["", "## **References**", sections["References"]]
    if sections.get("License"):
        out += ["", "## **License**", sections["License"]]
    path = stage / "docs" / "README.md"
    path.parent.mkdir(parents=True, exist_ok=True)
    body = re.sub(r"\n{3,}", "\n\n", "\n".join(out)).strip()
    atomic_write_text(path, "\n".join(line.rstrip() for line in body.splitlines()) + "\n")
    return path
