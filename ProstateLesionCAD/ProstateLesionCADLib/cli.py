"""`prostate-cad <verb>`: the command line.

VERBS names every verb and the module in `commands/` that implements it. A verb module
defines HELP (one line), `add_arguments(parser)` and `run(args) -> int`; it only parses
arguments and calls the library, importing the heavy parts inside `run` so that `--help`
stays instant. A new verb is a new module in `commands/` plus one line in VERBS.

DEVELOPER_TOOLS names the modules of `commands/` that follow the same contract but are
not verbs: they rebuild or measure the bundled demo models and run as
`python -m ProstateLesionCADLib.commands.<tool>` through `run_tool`.
User errors (CadError) print one sentence and exit with status 2; no traceback.

Streams: results go to stdout, progress, notes and errors to stderr (progress.py); the
global -q / -v (before or after the verb) set how much of the latter is shown.
"""

from __future__ import annotations

import argparse
import sys
from types import ModuleType
from typing import Callable, Optional, Sequence

from . import __version__, cancellation
from .commands import (bench, demo, detect, evaluate, export, grow, load, models, phantoms, preprocess, register,
                       train, zones)
from .errors import CadError

VERBS: dict[str, ModuleType] = {
    "bench": bench,
    "demo": demo,
    "detect": detect,
    "evaluate": evaluate,
    "export": export,
    "grow": grow,
    "load": load,
    "models": models,
    "phantoms": phantoms,
    "preprocess": preprocess,
    "register": register,
    "train": train,
    "zones": zones,
}

# commands/<module> -> what it is for (not imported here: each imports this module to run)
DEVELOPER_TOOLS: dict[str, str] = {
    "accuracy": "`make accuracy`: the demo detector's lesion AUC on held-out phantoms (demo/accuracy.py)",
    "train_demo_zones": "retrain the bundled zones demo model (demo/zones_model.py)",
    "eval_zones_appearance": "zones models on default and realistic phantoms and real split QC (demo/zones_appearance_eval.py)",
    "bench_gpu": "`make bench-gpu`: every stage on a CUDA device, REPORT-gpu.md (demo/benchmarks/_gpu.py)",
    "seg_figure": "a DICOM SEG read back and drawn over its T2 images (demo/dicom_seg_figure.py)",
}


def _verbosity_options() -> argparse.ArgumentParser:
    """-q / -v, accepted before the verb and after it (unset values do not override)."""
    options = argparse.ArgumentParser(add_help=False, argument_default=argparse.SUPPRESS)
    group = options.add_mutually_exclusive_group()
    group.add_argument("-q", "--quiet", action="store_true", help="results and errors only (no progress, no notes)")
    group.add_argument("-v", "--verbose", action="store_true", help="progress lines, notes and more detail on stderr")
    return options


def _verbosity_of(args: argparse.Namespace) -> int:
    from .progress import NORMAL, QUIET, VERBOSE

    given = vars(args)
    return QUIET if given.get("quiet") else VERBOSE if given.get("verbose") else NORMAL


def build_parser() -> argparse.ArgumentParser:
    verbosity = _verbosity_options()
    parser = argparse.ArgumentParser(prog="prostate-cad", description="Prostate lesion CAD on multiparametric MRI.",
                                     parents=[verbosity])
    parser.add_argument("--version", action="version", version=f"prostate-cad {__version__}")
    sub = parser.add_subparsers(dest="verb", metavar="<verb>")
    sub.required = True
    for verb, module in VERBS.items():
        p = sub.add_parser(verb, help=module.HELP, description=module.HELP, parents=[verbosity])
        module.add_arguments(p)
        p.set_defaults(_run=module.run)
    return parser


def main(argv: Optional[Sequence[str]] = None) -> int:
    args = build_parser().parse_args(argv)
    status = _run(args._run, args)
    if argv is None and status > 128:  # the command line process was cancelled: clean-up done, end now
        cancellation.exit_now(status)
    return status


def run_tool(module: ModuleType, argv: Optional[Sequence[str]] = None) -> int:
    """Run a developer tool of DEVELOPER_TOOLS: its own parser, the verbs' error handling."""
    name = module.__spec__.name if module.__spec__ else module.__name__  # "__main__" under python -m
    parser = argparse.ArgumentParser(prog=f"python -m {name}", description=module.HELP,
                                     parents=[_verbosity_options()])
    module.add_arguments(parser)
    args = parser.parse_args(argv)
    return _run(module.run, args)


def _run(run: Callable[[argparse.Namespace], int], args: argparse.Namespace) -> int:
    from .progress import set_verbosity, verbosity

    before = verbosity()  # restored afterwards: in-process callers (tests, scripts) run several commands
    set_verbosity(_verbosity_of(args))
    try:
        with cancellation.handling_signals():  # SIGTERM/SIGINT: stop workers, remove staging folders and locks
            status = int(run(args) or 0)
            cancellation.raise_if_cancelled()
            return status
    except CadError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except cancellation.Cancelled as exc:
        print(f"error: {exc}.", file=sys.stderr)
        status = exc.exit_status
    except KeyboardInterrupt:
        print("error: interrupted.", file=sys.stderr)
        return 130
    except OSError as exc:  # disk full, read-only folder, file vanished: the system's reason and the path
        where = exc.filename if exc.filename is not None else "a file"
        print(f"error: {where}: {exc.strerror or exc}.", file=sys.stderr)
        return 2
    finally:
        set_verbosity(before)
    cancellation.end_helpers()  # outside the except block, so that the unwound frames are freed
    return status


if __name__ == "__main__":
    sys.exit(main())
