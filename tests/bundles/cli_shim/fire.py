# Copyright (c) medfuse contributors
# Licensed under the Apache License, Version 2.0
"""Stand-in for the ``fire`` package, used only by the bundle command-line tests when ``fire``
is not installed (``python -m monai.bundle`` imports it to parse its command line).

It handles what ``monai.bundle`` needs: ``<command> --key value`` and ``--key=value`` pairs,
values read as Python literals when they parse as such (``1``, ``False``, ``"['a','b']"``)
and kept as strings otherwise, then ``command(**pairs)`` from the caller's namespace. The
real ``fire`` is used whenever it is importable.
"""

import ast
import inspect
import sys

__all__ = ["Fire"]


def _value(text):
    try:
        return ast.literal_eval(text)
    except (ValueError, SyntaxError):
        return text


def Fire(component=None):  # noqa: N802 (fire's name)
    namespace = inspect.currentframe().f_back.f_globals if component is None else vars(component)
    argv = sys.argv[1:]
    if not argv:
        raise SystemExit("usage: python -m monai.bundle <command> --key value ...")
    command, rest, kwargs, i = argv[0], argv[1:], {}, 0
    while i < len(rest):
        key = rest[i]
        if not key.startswith("--"):
            raise SystemExit(f"expected --key, got {key!r}")
        key = key[2:]
        if "=" in key:
            key, text = key.split("=", 1)
        else:
            i += 1
            text = rest[i]
        kwargs[key] = _value(text)
        i += 1
    return namespace[command](**kwargs)
