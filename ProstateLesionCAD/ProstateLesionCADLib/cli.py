"""`prostate-cad <verb>`: the command line.

VERBS names every verb and the module in `commands/` that implements it. A verb module
defines HELP (one line), `add_arguments(parser)` and `run(args) -> int`; it only parses
arguments and calls the library, importing the heavy parts inside `run` so that `--help`
stays instant. A new verb is a new module in `commands/` plus one line in VERBS.
User errors (CadError) print one sentence and exit with status 2; no traceback.
"""

from __future__ import annotations

import argparse
import sys
from types import ModuleType
from typing import Optional, Sequence

from . import __version__
from .commands import (bench, demo, detect, evaluate, grow, load, models, phantoms, preprocess, register, train,
                       zones)
from .errors import CadError

VERBS: dict[str, ModuleType] = {
    "bench": bench,
    "demo": demo,
    "detect": detect,
    "evaluate": evaluate,
    "grow": grow,
    "load": load,
    "models": models,
    "phantoms": phantoms,
    "preprocess": preprocess,
    "register": register,
    "train": train,
    "zones": zones,
}


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="prostate-cad", description="Prostate lesion CAD on multiparametric MRI.")
    parser.add_argument("--version", action="version", version=f"prostate-cad {__version__}")
    sub = parser.add_subparsers(dest="verb", metavar="<verb>")
    sub.required = True
    for verb, module in VERBS.items():
        p = sub.add_parser(verb, help=module.HELP, description=module.HELP)
        module.add_arguments(p)
        p.set_defaults(_run=module.run)
    return parser


def main(argv: Optional[Sequence[str]] = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return int(args._run(args) or 0)
    except CadError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("error: interrupted.", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
