# Copyright (c) medfuse contributors
# Licensed under the Apache License, Version 2.0
"""Write a trained run's settings into an exported bundle's configs.

A medfuse bundle's evaluation and inference configs read the network settings of a run from
the ``config.json`` beside its checkpoint (``$medfuse.workflows.run_setting(dir, 'key', default)``)
and the class names from its ``run_info.json``. An exported bundle ships ``models/model.pt``
without those files, so the export writes the trained values into the configs instead:

* the literal value of each such key in ``train.json`` becomes the trained value;
* the ``default`` argument of each ``run_setting(..., 'key', default)`` call becomes the trained
  value (a run folder given with ``--run_name`` still wins over it);
* every ``resolve_classes(...)`` call gets ``expected=<trained classes>``, so a manifest with
  other classes is refused instead of being read with the wrong labels.

Expressions are rewritten with :mod:`ast`, never by text substitution.
"""

from __future__ import annotations

import ast
import copy
import re
from typing import Any, Iterable, Mapping

__all__ = ["run_setting_keys", "bake_config", "is_literal"]

_REF = re.compile(r"@([A-Za-z_][\w#]*)")
_RUN_SETTING = "medfuse.workflows.run_setting"
_RESOLVE_CLASSES = "medfuse.workflows.resolve_classes"


def is_literal(value: Any) -> bool:
    """True for JSON values that Python literals can spell (numbers, strings, bools, None, lists, dicts)."""
    if value is None or isinstance(value, (bool, int, float, str)):
        return True
    if isinstance(value, (list, tuple)):
        return all(is_literal(v) for v in value)
    if isinstance(value, dict):
        return all(isinstance(k, str) and is_literal(v) for k, v in value.items())
    return False


def _parse(expression: str) -> tuple[ast.Expression, dict[str, str]] | None:
    refs: dict[str, str] = {}

    def swap(m: re.Match) -> str:
        name = f"_medfuse_ref_{len(refs)}_"
        refs[name] = m.group(0)
        return name

    try:
        return ast.parse(_REF.sub(swap, expression[1:]), mode="eval"), refs
    except SyntaxError:
        return None


def _unparse(tree: ast.Expression, refs: Mapping[str, str]) -> str:
    text = ast.unparse(tree)
    for name, ref in refs.items():
        text = text.replace(name, ref)
    return "$" + text


def _calls(tree: ast.AST, name: str) -> Iterable[ast.Call]:
    for node in ast.walk(tree):
        if isinstance(node, ast.Call) and ast.unparse(node.func) == name:
            yield node


def _walk_expressions(obj: Any) -> Iterable[str]:
    if isinstance(obj, Mapping):
        for v in obj.values():
            yield from _walk_expressions(v)
    elif isinstance(obj, list):
        for v in obj:
            yield from _walk_expressions(v)
    elif isinstance(obj, str) and obj.startswith("$"):
        yield obj


def run_setting_keys(configs: Iterable[Mapping[str, Any]]) -> list[str]:
    """The keys read with ``medfuse.workflows.run_setting(..., 'key', ...)`` anywhere in ``configs``."""
    keys: list[str] = []
    for config in configs:
        for expression in _walk_expressions(config):
            if _RUN_SETTING not in expression:
                continue
            parsed = _parse(expression)
            if parsed is None:
                continue
            for call in _calls(parsed[0], _RUN_SETTING):
                key = call.args[1] if len(call.args) > 1 else next((k.value for k in call.keywords if k.arg == "key"), None)
                if isinstance(key, ast.Constant) and isinstance(key.value, str) and key.value not in keys:
                    keys.append(key.value)
    return keys


def _rewrite(expression: str, settings: Mapping[str, Any], classes: list | None) -> str:
    if _RUN_SETTING not in expression and _RESOLVE_CLASSES not in expression:
        return expression
    parsed = _parse(expression)
    if parsed is None:
        return expression
    tree, refs = parsed
    changed = False
    for call in _calls(tree, _RUN_SETTING):
        key = call.args[1] if len(call.args) > 1 else None
        if not (isinstance(key, ast.Constant) and key.value in settings):
            continue
        value = ast.parse(repr(settings[key.value]), mode="eval").body
        if len(call.args) > 2:
            call.args[2] = value
        else:
            call.keywords = [k for k in call.keywords if k.arg != "default"] + [ast.keyword(arg="default", value=value)]
        changed = True
    if classes is not None:
        for call in _calls(tree, _RESOLVE_CLASSES):
            value = ast.parse(repr(list(classes)), mode="eval").body
            call.keywords = [k for k in call.keywords if k.arg != "expected"] + [ast.keyword(arg="expected", value=value)]
            changed = True
    return _unparse(tree, refs) if changed else expression


def _rewrite_all(obj: Any, settings: Mapping[str, Any], classes: list | None) -> Any:
    if isinstance(obj, dict):
        return {k: _rewrite_all(v, settings, classes) for k, v in obj.items()}
    if isinstance(obj, list):
        return [_rewrite_all(v, settings, classes) for v in obj]
    if isinstance(obj, str) and obj.startswith("$"):
        return _rewrite(obj, settings, classes)
    return obj


def bake_config(config: Mapping[str, Any], settings: Mapping[str, Any], classes: list | None = None) -> dict:
    """A copy of a raw bundle config with the trained ``settings`` and ``classes`` written in.

    Args:
        config: the raw config (as read from JSON, ``$`` expressions unevaluated).
        settings: trained values by key (only JSON literals; see :func:`is_literal`).
        classes: the class names the weights were trained on, or ``None`` to leave classes alone.

    Returns:
        the new config; top-level literal values of ``settings`` keys are replaced, and the
        expressions described in the module docstring rewritten.
    """
    out = copy.deepcopy(dict(config))
    for key, value in settings.items():
        if key in out and not (isinstance(out[key], str) and out[key].startswith("$")):
            out[key] = copy.deepcopy(value)
    return _rewrite_all(out, settings, classes)
