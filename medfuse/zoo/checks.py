# Copyright (c) medfuse contributors
# Licensed under the Apache License, Version 2.0
"""The model zoo's checks of a bundle folder, one function each.

Each check raises :class:`ZooCheckError` (a :class:`medfuse.errors.MedfuseError`: the command
line prints it as one line) naming the check, the file and the fix. :func:`medfuse.zoo.export_bundle`
runs them in this order and stops at the first failure:

1. :func:`check_required_files`: ``LICENSE``, ``configs/metadata.json``, ``configs/inference.*``,
   ``docs/README.md``;
2. :func:`check_json_format`: every ``configs/*.json`` parses and is indented by 4 spaces per level;
3. :func:`check_metadata_schema`: ``metadata.json`` against the MONAI metadata JSON schema (offline);
4. :func:`check_version`: ``X.Y.Z``, present in the changelog, the newest changelog entry, and newer
   than the last version of the bundle in the zoo;
5. :func:`check_config_paths`: no absolute or personal paths in the configs;
6. :func:`check_workflow_properties`: MONAI's ``ConfigWorkflow.check_properties()`` for the ``train``
   and ``infer`` workflows;
7. :func:`check_net_in_out`: ``monai.bundle.verify_net_in_out`` against ``network_data_format``.

TorchScript export and its round trip are checked by :mod:`medfuse.zoo.export`.
"""

from __future__ import annotations

import ast
import json
import os
import re
from pathlib import Path
from typing import Any, Iterable, Mapping, Sequence

from medfuse.errors import MedfuseError

__all__ = [
    "ZooCheckError",
    "SCHEMA_NAME",
    "REQUIRED_FILES",
    "parse_version",
    "default_schema_path",
    "check_required_files",
    "check_json_format",
    "check_pretty_json",
    "pretty_json",
    "json_indent_problem",
    "check_metadata_schema",
    "check_version",
    "check_config_paths",
    "find_absolute_paths",
    "check_workflow_properties",
    "check_net_in_out",
    "is_non_commercial",
]

SCHEMA_NAME = "meta_schema_20240725.json"
#: files every bundle must have (``configs/inference.*`` may be .json or .yaml)
REQUIRED_FILES = ("LICENSE", "configs/metadata.json", "configs/inference.*", "docs/README.md")
_VERSION = re.compile(r"^(\d+)\.(\d+)\.(\d+)$")


class ZooCheckError(MedfuseError, ValueError):
    """A bundle fails one of the model zoo's checks. ``check`` names the check."""

    def __init__(self, check: str, message: str):
        self.check = check
        super().__init__(f"zoo check '{check}' failed: {message}")


def parse_version(text: str, where: str = "version") -> tuple[int, int, int]:
    """``"1.2.3"`` -> ``(1, 2, 3)``; the zoo uses semantic versions ``X.Y.Z``.

    Raises:
        ZooCheckError: when ``text`` is not ``X.Y.Z`` with non-negative integers.
    """
    m = _VERSION.match(str(text).strip())
    if not m:
        raise ZooCheckError("version", f"{where} '{text}' is not a semantic version X.Y.Z (for example 0.1.0)")
    return int(m.group(1)), int(m.group(2)), int(m.group(3))


#: the schema shipped with medfuse (``medfuse/zoo/schema/``, package data; see its README.md)
SHIPPED_SCHEMA = Path(__file__).resolve().parent / "schema" / SCHEMA_NAME


def default_schema_path() -> Path | None:
    """The offline MONAI metadata schema, when there is one.

    The copy shipped in the package (:data:`SHIPPED_SCHEMA`); else, for an install without it,
    ``monai_schema/meta_schema_20240725.json`` in the shared data folder (``$MEDFUSE_SHARED_DATA``,
    or ``shared/data`` beside the checkout), then in ``../shared/data`` from the working directory.
    """
    from medfuse.utils.paths import shared_data_dir

    if SHIPPED_SCHEMA.is_file():
        return SHIPPED_SCHEMA
    roots = [shared_data_dir(), Path.cwd().parent / "shared" / "data"]
    for root in roots:
        if root is not None and (root / "monai_schema" / SCHEMA_NAME).is_file():
            return root / "monai_schema" / SCHEMA_NAME
    return None


def check_required_files(bundle_dir: str | os.PathLike) -> None:
    """The files the zoo requires in every bundle.

    Raises:
        ZooCheckError: naming the first missing file.
    """
    root = Path(bundle_dir)
    if not root.is_dir():
        raise ZooCheckError("required files", f"{root} is not a folder; give the bundle folder (the one holding configs/)")
    fixes = {
        "LICENSE": "add the licence of the bundle's code and configs (medfuse bundles use Apache-2.0)",
        "configs/metadata.json": "add the bundle's metadata (see bundles/cxr_dual_cross_attention/configs/metadata.json)",
        "configs/inference.*": "add configs/inference.json (the zoo runs inference from it)",
        "docs/README.md": "add the model card (sections Overview, Data, Training, Performance, Commands, License)",
    }
    for rel in REQUIRED_FILES:
        if "*" in rel:
            found = [p for p in root.glob(rel) if p.is_file() and p.suffix in (".json", ".yaml", ".yml")]
        else:
            found = [root / rel] if (root / rel).is_file() else []
        if not found:
            raise ZooCheckError("required files", f"{root / rel} is missing: {fixes[rel]}")


def json_indent_problem(text: str) -> str | None:
    """The first line of JSON ``text`` not indented by 4 spaces per nesting level, or ``None``.

    Short arrays or objects on one line (``"keys": ["image"]``) are fine; what is checked is
    that each line starts with ``4 * depth`` spaces (no tabs), where ``depth`` is the number
    of brackets open at the start of the line (one less for a line that starts by closing one).
    """
    depth = 0
    in_string = escaped = False
    for number, line in enumerate(text.splitlines(), 1):
        stripped = line.lstrip(" \t")
        if not in_string and "\t" in line[: len(line) - len(stripped)]:
            return f"line {number} is indented with a tab"
        if stripped and not in_string:
            indent = len(line) - len(stripped)
            expected = 4 * (depth - 1 if stripped[0] in "]}" else depth)
            if indent != expected:
                return f"line {number} is indented by {indent} spaces, expected {expected}"
        for ch in line:
            if in_string:
                if escaped:
                    escaped = False
                elif ch == "\\":
                    escaped = True
                elif ch == '"':
                    in_string = False
            elif ch == '"':
                in_string = True
            elif ch in "[{":
                depth += 1
            elif ch in "]}":
                depth -= 1
    return None


def check_json_format(bundle_dir: str | os.PathLike) -> None:
    """Every ``configs/*.json`` (and ``large_files.json``) parses and uses 4-space indentation.

    Raises:
        ZooCheckError: naming the file, the line and the fix.
    """
    root = Path(bundle_dir)
    files = sorted((root / "configs").glob("*.json")) + sorted(root.glob("large_files*.json"))
    for path in files:
        text = path.read_text(encoding="utf-8")
        try:
            json.loads(text)
        except json.JSONDecodeError as e:
            raise ZooCheckError("json format", f"{path}: not valid JSON ({e.msg} at line {e.lineno}); fix the syntax") from e
        problem = json_indent_problem(text)
        if problem:
            raise ZooCheckError(
                "json format",
                f"{path}: {problem}; the zoo wants 4-space indentation: reformat it, for example with "
                f"python -m json.tool --indent 4 --no-ensure-ascii {path.name} > tmp.json && mv tmp.json {path.name}",
            )


def pretty_json(obj: Any) -> str:
    """``obj`` as the MONAI model zoo's pre-commit hook ``pretty-format-json --autofix --no-sort-keys --indent=4``
    writes it: ``json.dumps`` with 4-space indentation, keys in their order, non-ASCII escaped, a final newline.

    (The hook itself, from the pre-commit-hooks package, is not a dependency: it is this one ``json.dumps`` call.)
    """
    return json.dumps(obj, indent=4, ensure_ascii=True, separators=(",", ": ")) + "\n"


def check_pretty_json(folder: str | os.PathLike, skip: Sequence[str] = ("models",)) -> int:
    """Every ``*.json`` under ``folder`` (but the top-level folders in ``skip``) is in :func:`pretty_json` form.

    Returns:
        the number of files checked.

    Raises:
        ZooCheckError: naming the first file the zoo's pre-commit would rewrite, and its first differing line.
    """
    root = Path(folder)
    count = 0
    for path in sorted(root.rglob("*.json")):
        if path.relative_to(root).parts[0] in skip:
            continue
        text = path.read_text(encoding="utf-8")
        try:
            want = pretty_json(json.loads(text))
        except json.JSONDecodeError as e:
            raise ZooCheckError("json format", f"{path}: not valid JSON ({e.msg} at line {e.lineno}); fix the syntax") from e
        if text != want:
            have_lines, want_lines = text.splitlines(), want.splitlines()
            line = next((i for i, (a, b) in enumerate(zip(have_lines, want_lines), 1) if a != b),
                        min(len(have_lines), len(want_lines)) + 1)
            raise ZooCheckError(
                "json format",
                f"{path}: line {line} differs from the zoo's pretty-format-json form (4-space indent, one list item per "
                "line, keys unsorted, ASCII); rewrite it with json.dumps(obj, indent=4) plus a final newline",
            )
        count += 1
    return count


def check_metadata_schema(meta_file: str | os.PathLike, schema_file: str | os.PathLike | None = None) -> Path:
    """Validate ``metadata.json`` against the MONAI bundle metadata schema, offline.

    Args:
        meta_file: the bundle's ``configs/metadata.json``.
        schema_file: the schema JSON; default: ``monai_schema/meta_schema_20240725.json`` in the
            shared data folder (:func:`default_schema_path`).

    Returns:
        the schema file used.

    Raises:
        ZooCheckError: when no schema file is found, or naming the first failing field.
    """
    from jsonschema import validators
    from jsonschema.exceptions import best_match

    schema_path = Path(schema_file) if schema_file else default_schema_path()
    if schema_path is None or not schema_path.is_file():
        raise ZooCheckError(
            "metadata schema",
            f"no metadata schema file{f' at {schema_path}' if schema_path else ''}: pass --schema PATH to {SCHEMA_NAME} "
            "(download it from the URL in the metadata's 'schema' field) or set MEDFUSE_SHARED_DATA to a folder "
            f"holding monai_schema/{SCHEMA_NAME}",
        )
    with open(schema_path, encoding="utf-8") as f:
        schema = json.load(f)
    with open(meta_file, encoding="utf-8") as f:
        metadata = json.load(f)
    validator = validators.validator_for(schema)(schema)
    error = best_match(validator.iter_errors(metadata))
    if error is not None:
        where = "/".join(str(p) for p in error.absolute_path) or "(top level)"
        raise ZooCheckError(
            "metadata schema",
            f"{meta_file}: {where}: {error.message} (schema {schema_path.name}); fix the field in configs/metadata.json",
        )
    return schema_path


def check_version(
    metadata: Mapping[str, Any], meta_file: str | os.PathLike, last_exported: str | None = None, zoo_file: str = ""
) -> str:
    """The metadata's version: ``X.Y.Z``, in the changelog, its newest entry, newer than ``last_exported``.

    Returns:
        the version.

    Raises:
        ZooCheckError: naming the problem and the option that fixes it.
    """
    version = str(metadata.get("version", ""))
    current = parse_version(version, f"{meta_file}: version")
    changelog = metadata.get("changelog") or {}
    if version not in changelog:
        raise ZooCheckError(
            "version",
            f"{meta_file}: version {version} is not in the changelog (entries: {', '.join(changelog) or 'none'}); "
            f"add \"{version}\": \"what changed\" to the changelog or pass --changelog TEXT",
        )
    for other in changelog:
        if parse_version(other, f"{meta_file}: changelog entry") > current:
            raise ZooCheckError(
                "version",
                f"{meta_file}: the changelog has {other}, newer than version {version}; set the version to the newest entry",
            )
    if last_exported:
        if parse_version(last_exported, "last exported version") >= current:
            major, minor, patch = parse_version(last_exported)
            raise ZooCheckError(
                "version",
                f"version {version} is not newer than {last_exported}, the last version exported to {zoo_file}; "
                f"pass --version {major}.{minor}.{patch + 1} --changelog \"what changed\"",
            )
    return version


# absolute POSIX paths, Windows drive or UNC paths, home-relative paths (~/...; ~user/...)
_ABS = re.compile(r"^(/[^/\s]|[A-Za-z]:[\\/]|\\\\[^\\]|~[\w.-]*([/\\]|$))")


def _string_literals(expression: str) -> list[str]:
    """Python string literals inside a config ``$`` expression (its ``@`` references made names first)."""
    code = re.sub(r"@([\w#]+)", lambda m: "_ref_" + m.group(1).replace("#", "_"), expression[1:])
    try:
        tree = ast.parse(code, mode="eval")
    except SyntaxError:  # not Python after all: look at its quoted parts
        return [a or b for a, b in re.findall(r"'([^']*)'|\"([^\"]*)\"", code)]
    # the right operand of "+" continues a path built on the left ("@run_dir + '/model.pt'"): not a path start
    suffixes = {id(n.right) for n in ast.walk(tree) if isinstance(n, ast.BinOp) and isinstance(n.op, ast.Add)}
    return [n.value for n in ast.walk(tree)
            if isinstance(n, ast.Constant) and isinstance(n.value, str) and id(n) not in suffixes]


def _walk_strings(obj: Any, key: str = "") -> Iterable[tuple[str, str]]:
    if isinstance(obj, Mapping):
        for k, v in obj.items():
            yield from _walk_strings(v, f"{key}#{k}" if key else str(k))
    elif isinstance(obj, (list, tuple)):
        for i, v in enumerate(obj):
            yield from _walk_strings(v, f"{key}#{i}")
    elif isinstance(obj, str):
        yield key, obj


def find_absolute_paths(config: Any, home: str | None = None) -> list[tuple[str, str]]:
    """``(config id, value)`` of every absolute or personal path in a parsed config.

    Plain strings and the string literals inside ``$`` expressions are looked at; URLs are not
    paths. Absolute: POSIX ``/...``, Windows ``C:\\...`` or ``\\\\server\\...``; personal: ``~/...``,
    ``~user/...``, or anything starting with the current user's home folder ``home``.
    """
    home = os.path.expanduser("~") if home is None else home
    found = []
    for key, value in _walk_strings(config):
        candidates = _string_literals(value) if value.startswith("$") else [value]
        for text in candidates:
            text = text.strip()
            if not text or "://" in text:
                continue
            if _ABS.match(text) or (home and len(home) > 1 and text.startswith(home)):
                found.append((key, text))
    return found


def check_config_paths(bundle_dir: str | os.PathLike) -> None:
    """No absolute or personal paths in ``configs/*.json`` (they would not exist on another machine).

    Raises:
        ZooCheckError: naming the file, the config id and the path.
    """
    root = Path(bundle_dir)
    for path in sorted((root / "configs").glob("*.json")):
        with open(path, encoding="utf-8") as f:
            config = json.load(f)
        found = find_absolute_paths(config)
        if found:
            key, text = found[0]
            more = f" (and {len(found) - 1} more)" if len(found) > 1 else ""
            raise ZooCheckError(
                "paths",
                f"{path}: '{key}' holds the absolute or personal path '{text}'{more}; use a path relative to the "
                "working directory or to @bundle_root, or leave it for the user to pass on the command line",
            )


def _config_files(bundle_dir: Path, workflow: str) -> list[str]:
    configs = bundle_dir / "configs"
    name = "train" if workflow == "train" else "inference"
    for ext in (".json", ".yaml", ".yml"):
        if (configs / f"{name}{ext}").is_file():
            return [str(configs / f"{name}{ext}")]
    return []


def check_workflow_properties(
    bundle_dir: str | os.PathLike,
    overrides: Mapping[str, Any] | None = None,
    build: bool = True,
    workflows: Sequence[str] = ("train", "infer"),
) -> dict[str, str]:
    """MONAI's ``ConfigWorkflow.check_properties()`` for the train and inference workflows.

    The configs' ``initialize`` expressions are not run (they would create run folders); the
    workflow is parsed and every required property is built (``build=True``: needs the
    ``overrides`` to name real data, for example ``dataset_dir`` or ``manifest``), or only
    looked up by its config id (``build=False``, when no data is at hand).

    Returns:
        ``{workflow: "built" | "present" | "no config"}``.

    Raises:
        ZooCheckError: naming the workflow, the config file and the missing or failing properties.
    """
    from monai.bundle import ConfigWorkflow
    from monai.bundle.properties import BundleProperty, BundlePropertyConfig

    root = Path(bundle_dir)
    done = {}
    for workflow in workflows:
        files = _config_files(root, workflow)
        if not files:
            if workflow == "train":
                done[workflow] = "no config"  # the zoo accepts inference-only bundles
                continue
            raise ZooCheckError("workflow properties", f"{root / 'configs'}: no inference config")
        wf = ConfigWorkflow(
            config_file=files, meta_file=str(root / "configs" / "metadata.json"),
            logging_file=False, workflow_type=workflow,  # leave the caller's logging as it is
            init_id="_medfuse_export_skips_initialize_", **dict(overrides or {}),
        )
        if build:
            wf.initialize()
            try:
                missing = wf.check_properties() or []
            except Exception as e:  # building a property failed: report it as the check's failure
                raise ZooCheckError(
                    "workflow properties",
                    f"{files[0]}: building the {workflow} workflow's properties failed: {type(e).__name__}: "
                    f"{str(e).splitlines()[0] if str(e) else ''}",
                ) from e
        else:
            missing = [
                n for n, p in (wf.properties or {}).items()
                if p.get(BundleProperty.REQUIRED, False) and p[BundlePropertyConfig.ID] not in wf.parser
            ]
        if missing:
            raise ZooCheckError(
                "workflow properties",
                f"{files[0]}: the {workflow} workflow lacks the required properties {missing}; add the config ids "
                "that MONAI's bundle properties expect (monai.bundle.properties)",
            )
        done[workflow] = "built" if build else "present"
    return done


def check_net_in_out(bundle_dir: str | os.PathLike, overrides: Mapping[str, Any] | None = None, net_id: str = "network_def") -> None:
    """``monai.bundle.verify_net_in_out`` on the inference config: a random input of the metadata's
    shape gives an output with the metadata's channels and dtype.

    Raises:
        ZooCheckError: with MONAI's message.
    """
    from monai.bundle import verify_net_in_out

    root = Path(bundle_dir)
    files = _config_files(root, "infer")
    try:
        verify_net_in_out(
            net_id=net_id, meta_file=str(root / "configs" / "metadata.json"), config_file=files, device="cpu",
            **dict(overrides or {}),
        )
    except Exception as e:
        raise ZooCheckError(
            "network input/output",
            f"{files[0]}: '{net_id}' does not match network_data_format in configs/metadata.json: "
            f"{type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''}",
        ) from e


_NC = re.compile(r"(\bNC\b|-NC-|-NC\b|non[- ]?commercial|research use only|not for commercial)", re.IGNORECASE)


def is_non_commercial(licence: str) -> bool:
    """True when a licence text names non-commercial terms (``CC BY-NC-SA 4.0``, "non-commercial" ...)."""
    return bool(_NC.search(str(licence or "")))
