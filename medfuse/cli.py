# Copyright (c) medfuse contributors
# Licensed under the Apache License, Version 2.0
"""The ``medfuse`` console entry point.

``medfuse <command> [options]`` dispatches to ``medfuse.commands.<module>.main(argv)``.
Every command module defines ``HELP`` (one line), ``build_parser(prog)`` and
``main(argv=None) -> int``, so each can be tested as ``main([...])`` and the scripts in
``tools/`` call the same functions. Input problems (:class:`medfuse.errors.MedfuseError`)
print one line naming the file and the fix and exit with status 1; argument errors exit 2.
"""

from __future__ import annotations

import argparse
import importlib
import sys
from typing import Callable, Sequence

from medfuse import __version__

__all__ = ["COMMANDS", "main", "run_command"]

#: command name -> module under ``medfuse.commands``
COMMANDS: dict[str, str] = {
    "demo-data": "demo_data",
    "folder2manifest": "folder2manifest",
    "pairs2manifest": "pairs2manifest",
    "nifti2manifest": "nifti2manifest",
    "medmnist2manifest": "medmnist2manifest",
    "dicom2manifest": "dicom2manifest",
    "vindr2manifest": "vindr2manifest", "coco2manifest": "coco2manifest",
    "validate": "validate",
    "summary": "summary",
    "predict": "predict",
    "evaluate": "evaluate",
    "ood-fit": "ood_fit",
    "cv": "cv",
    "ensemble": "ensemble",
    "export": "export",
    "zoo": "zoo",
}


def _module(name: str):
    return importlib.import_module(f"medfuse.commands.{COMMANDS[name]}")


def run_command(prog: str, body: Callable[[argparse.Namespace], int], parser: argparse.ArgumentParser, argv) -> int:
    """Parse ``argv`` with ``parser`` and run ``body``; input errors become one line and status 1."""
    from medfuse.errors import MedfuseError

    args = parser.parse_args(argv)
    try:
        return int(body(args) or 0)
    except MedfuseError as e:
        print(f"{prog}: error: {e}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print(f"{prog}: interrupted", file=sys.stderr)
        return 130


def _top_parser() -> argparse.ArgumentParser:
    lines = []
    for name in COMMANDS:
        try:
            help_line = _module(name).HELP
        except Exception as e:  # a broken command must not hide the others
            help_line = f"(unavailable: {e})"
        lines.append(f"  {name:<20}{help_line}")
    parser = argparse.ArgumentParser(
        prog="medfuse",
        description="medfuse: MONAI-based chest X-ray and OCT pipeline.",
        epilog="commands:\n" + "\n".join(lines) + "\n\nRun 'medfuse <command> --help' for a command's options.",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--version", action="version", version=f"medfuse {__version__}")
    parser.add_argument("command", nargs="?", help="one of the commands below")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``medfuse`` console script."""
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or argv[0] in ("-h", "--help"):
        _top_parser().print_help()
        return 0 if argv else 2
    if argv[0] == "--version":
        print(f"medfuse {__version__}")
        return 0
    name, rest = argv[0], argv[1:]
    if name not in COMMANDS:
        import difflib

        close = difflib.get_close_matches(name, COMMANDS, n=1)
        hint = f"; did you mean '{close[0]}'?" if close else ""
        print(f"medfuse: error: unknown command '{name}'{hint} Run 'medfuse --help' for the list.", file=sys.stderr)
        return 2
    return _module(name).main(rest)


if __name__ == "__main__":
    sys.exit(main())
