"""Shared dispatch for verbs with sub-verbs (`models`, `train`, ...).

A table maps each sub-verb to (library module relative to ProstateLesionCADLib, help); the
module provides `add_<sub>_arguments(parser)` and `run_<sub>(args) -> int` (dashes become
underscores). Not a verb itself: cli.py skips modules starting with "_".
"""

from __future__ import annotations

import importlib


def add_subverbs(parser, table: dict[str, tuple[str, str]]) -> None:
    sub = parser.add_subparsers(dest="subverb", metavar="<sub-verb>")
    sub.required = True
    for name, (module_name, help_text) in table.items():
        module = importlib.import_module(f"..{module_name}", __package__)
        func = name.replace("-", "_")
        p = sub.add_parser(name, help=help_text, description=help_text)
        getattr(module, f"add_{func}_arguments")(p)
        p.set_defaults(_subverb_run=getattr(module, f"run_{func}"))


def run_subverb(args) -> int:
    return args._subverb_run(args)
