"""Sub-verbs of a verb (`models list`, `train zones`, ...).

A verb with sub-verbs lists them in a SUBVERBS table of SubVerb entries whose
`add_arguments(parser)` and `run(args) -> int` are functions of commands/; `add_subverbs`
builds one sub-parser per entry, in table order, and `run_subverb` runs the chosen one.
Not a verb itself (underscore), so cli.VERBS does not name it.
"""

from __future__ import annotations

from typing import Callable, NamedTuple, Sequence


class SubVerb(NamedTuple):
    name: str
    help: str
    add_arguments: Callable[[object], None]
    run: Callable[[object], int]


def add_subverbs(parser, table: Sequence[SubVerb]) -> None:
    sub = parser.add_subparsers(dest="subverb", metavar="<sub-verb>")
    sub.required = True
    for entry in table:
        p = sub.add_parser(entry.name, help=entry.help, description=entry.help)
        entry.add_arguments(p)
        p.set_defaults(_subverb_run=entry.run)


def run_subverb(args) -> int:
    return args._subverb_run(args)
