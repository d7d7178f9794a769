"""`prostate-cad <verb>`: the command line.

Each verb lives in `commands/<verb>.py` and defines HELP (one line), `add_arguments(parser)`
and `run(args) -> int`. Verbs are discovered, so a capability adds its command without
touching this file. Heavy imports happen inside `run`, keeping `--help` instant.
User errors (CadError) print one sentence and exit with status 2; no traceback.
"""

from __future__ import annotations

import argparse
import importlib
import pkgutil
import sys
from typing import Optional, Sequence

from . import __version__, commands
from .errors import CadError


def _verbs() -> dict[str, object]:
    found = {}
    for info in sorted(pkgutil.iter_modules(commands.__path__), key=lambda m: m.name):
        if info.name.startswith("_"):
            continue
        module = importlib.import_module(f"{commands.__name__}.{info.name}")
        found[getattr(module, "VERB", info.name.replace("_", "-"))] = module
    return found


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="prostate-cad", description="Prostate lesion CAD on multiparametric MRI.")
    parser.add_argument("--version", action="version", version=f"prostate-cad {__version__}")
    sub = parser.add_subparsers(dest="verb", metavar="<verb>")
    sub.required = True
    for verb, module in _verbs().items():
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
