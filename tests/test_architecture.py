# Copyright (c) medfuse contributors
# Licensed under the Apache License, Version 2.0
"""The package layering of ``docs/architecture.md``, enforced.

Every module of ``medfuse`` is parsed with :mod:`ast` (imports inside functions, ``from . import x`` and
relative imports resolved to absolute names included) and checked against :data:`LAYER_RULES` and the
private-name rule: no module imports a ``_private`` name (module or attribute) from another top-level
medfuse unit (``medfuse.X`` vs ``medfuse.Y``; ``medfuse/cli.py``, ``medfuse/demo.py`` and
``medfuse/errors.py`` are units of their own). A failure lists each offence as ``file:line -> module``.

Also checked: ``medfuse --help`` (and ``medfuse <command> --help``) import neither torch nor MONAI.
"""

from __future__ import annotations

import ast
import subprocess
import sys
import textwrap
from pathlib import Path
from typing import NamedTuple

REPO_ROOT = Path(__file__).resolve().parents[1]
PACKAGE_DIR = REPO_ROOT / "medfuse"


class LayerRule(NamedTuple):
    """Modules under ``importer`` may not import anything under ``forbidden``, except what is under ``allowed``."""

    importer: str
    forbidden: tuple[str, ...]
    allowed: tuple[str, ...] = ()


#: The layering table of docs/architecture.md ("Layers"). Names match a module and everything below it.
LAYER_RULES: tuple[LayerRule, ...] = (
    LayerRule("medfuse.networks", ("medfuse",), allowed=("medfuse.networks", "medfuse.errors", "medfuse.utils")),
    LayerRule("medfuse.transforms", ("medfuse.networks",)),
    LayerRule("medfuse.data", ("medfuse.networks", "medfuse.evaluation", "medfuse.workflows")),
    LayerRule("medfuse.dicom", ("medfuse.networks", "medfuse.evaluation", "medfuse.workflows")),
    LayerRule("medfuse.visualize", ("medfuse.workflows", "medfuse.zoo", "medfuse.commands", "medfuse.evaluation")),
    LayerRule("medfuse.evaluation", ("medfuse.workflows", "medfuse.zoo", "medfuse.commands")),
)

#: Modules that ``medfuse --help`` and ``medfuse <command> --help`` (every command of ``medfuse.cli.COMMANDS``) must
#: not import.
HEAVY_MODULES = ("torch", "monai")


class Import(NamedTuple):
    """One imported name: ``module`` is absolute (``from a import b`` gives ``a.b``), ``line`` is 1-based."""

    path: str
    line: int
    module: str


def _under(name: str, prefix: str) -> bool:
    return name == prefix or name.startswith(prefix + ".")


def _is_private(part: str) -> bool:
    return part.startswith("_") and not part.startswith("__")


def _unit(name: str) -> str:
    """The top-level medfuse unit of a dotted name: ``medfuse.workflows.cam`` -> ``medfuse.workflows``."""
    return ".".join(name.split(".")[:2])


def module_name(path: Path, package_dir: Path = PACKAGE_DIR) -> str:
    """The dotted name of a module file under ``package_dir`` (``.../medfuse/a/__init__.py`` -> ``medfuse.a``)."""
    rel = path.relative_to(package_dir.parent).with_suffix("")
    parts = list(rel.parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def imports_of(source: str, module: str, path: str = "<string>", is_package: bool = False) -> list[Import]:
    """Every import in ``source`` (at any depth), with relative imports resolved against ``module``.

    ``from a import b, c`` yields ``a.b`` and ``a.c`` (``b`` may be a submodule or an attribute; both are
    what the importer depends on); ``import a.b`` yields ``a.b``.
    """
    tree = ast.parse(source, filename=path)
    package = module if is_package else module.rpartition(".")[0]
    found: list[Import] = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found.extend(Import(path, node.lineno, alias.name) for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                parts = package.split(".")
                if node.level - 1 > len(parts) - 1:
                    raise ValueError(f"{path}:{node.lineno}: relative import beyond the top package, level {node.level}.")
                base = ".".join(parts[: len(parts) - (node.level - 1)])
                base = f"{base}.{node.module}" if node.module else base
            else:
                base = node.module or ""
            for alias in node.names:
                found.append(Import(path, node.lineno, base if alias.name == "*" else f"{base}.{alias.name}"))
    return sorted(found, key=lambda i: i.line)


def violations(
    source: str, module: str, path: str = "<string>", is_package: bool = False, rules=LAYER_RULES
) -> list[str]:
    """The offences of one module's source, each as ``path:line -> imported module (reason)``."""
    out = []
    for imp in imports_of(source, module, path, is_package):
        if not _under(imp.module, "medfuse"):
            continue
        for rule in rules:
            if not _under(module, rule.importer):
                continue
            forbidden = any(_under(imp.module, f) for f in rule.forbidden)
            if forbidden and not any(_under(imp.module, a) for a in rule.allowed):
                out.append(f"{imp.path}:{imp.line} -> {imp.module} ({rule.importer} may not import it)")
        private = any(_is_private(p) for p in imp.module.split(".")[1:])
        if private and _unit(imp.module) != _unit(module):
            out.append(f"{imp.path}:{imp.line} -> {imp.module} (private name of another package)")
    return out


def package_violations(package_dir: Path = PACKAGE_DIR, rules=LAYER_RULES) -> list[str]:
    """The offences of every module under ``package_dir``."""
    out = []
    for path in sorted(package_dir.rglob("*.py")):
        rel = path.relative_to(package_dir.parent).as_posix()
        source = path.read_text(encoding="utf-8")
        out.extend(violations(source, module_name(path, package_dir), rel, path.name == "__init__.py", rules))
    return out


def test_package_follows_the_layering():
    found = package_violations()
    assert not found, "layering violations (see docs/architecture.md, 'Layers'):\n" + "\n".join(found)


PLANTED = textwrap.dedent(
    """
    import os
    from medfuse.utils import atomic_write_json
    from ..errors import ConfigError


    def late():
        from medfuse.workflows.cam import _cam_inputs
        from ..visualize import cam
        import medfuse.data.manifest
        from . import _local_helper
        from .blocks import _check_spatial_dims
    """
)


def test_planted_violations_are_caught():
    module = "medfuse.networks.planted"
    found = violations(PLANTED, module, "medfuse/networks/planted.py")
    assert found == [
        "medfuse/networks/planted.py:8 -> medfuse.workflows.cam._cam_inputs (medfuse.networks may not import it)",
        "medfuse/networks/planted.py:8 -> medfuse.workflows.cam._cam_inputs (private name of another package)",
        "medfuse/networks/planted.py:9 -> medfuse.visualize.cam (medfuse.networks may not import it)",
        "medfuse/networks/planted.py:10 -> medfuse.data.manifest (medfuse.networks may not import it)",
    ]
    # the same checker on a planted module file fails the package walk
    assert violations("from medfuse.networks import DualCrossAttentionNet\n", "medfuse.transforms.x") == [
        "<string>:1 -> medfuse.networks.DualCrossAttentionNet (medfuse.transforms may not import it)"
    ]
    assert violations("from ...workflows import cam\n", "medfuse.evaluation.sub.x") == [
        "<string>:1 -> medfuse.workflows.cam (medfuse.evaluation may not import it)"
    ]
    assert violations("from .commands._common import x\n", "medfuse.cli") == [
        "<string>:1 -> medfuse.commands._common.x (private name of another package)"
    ]
    assert violations("from ._common import x\n", "medfuse.commands", is_package=True) == []


def test_planted_module_fails_the_package_walk(tmp_path):
    pkg = tmp_path / "medfuse"
    (pkg / "data").mkdir(parents=True)
    (pkg / "__init__.py").write_text("")
    (pkg / "data" / "__init__.py").write_text("from .bad import x\n")
    (pkg / "data" / "bad.py").write_text("def f():\n    from medfuse.evaluation.plots import _style\n")
    assert package_violations(pkg) == [
        "medfuse/data/bad.py:2 -> medfuse.evaluation.plots._style (medfuse.data may not import it)",
        "medfuse/data/bad.py:2 -> medfuse.evaluation.plots._style (private name of another package)",
    ]


def _modules_after(code: str) -> set[str]:
    probe = textwrap.dedent(
        f"""
        import sys
        try:
            {code}
        except SystemExit:
            pass
        print("HEAVY:" + ",".join(m for m in {HEAVY_MODULES!r} if m in sys.modules))
        """
    )
    res = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, cwd=REPO_ROOT, timeout=120)
    assert res.returncode == 0, res.stderr
    last = [line for line in res.stdout.splitlines() if line.startswith("HEAVY:")][-1]
    return {m for m in last[len("HEAVY:"):].split(",") if m}


def test_help_imports_neither_torch_nor_monai():
    assert _modules_after("from medfuse.cli import main; main(['--help'])") == set()
    as_module = "import runpy; sys.argv = ['medfuse', '--help']; runpy.run_module('medfuse', run_name='__main__')"
    assert _modules_after(as_module) == set()  # python -m medfuse --help


def test_command_help_imports_neither_torch_nor_monai():
    from medfuse.cli import COMMANDS

    for name in COMMANDS:
        assert _modules_after(f"from medfuse.cli import main; main([{name!r}, '--help'])") == set(), name
