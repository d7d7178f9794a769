"""The output-folder option every writing verb shares: `--overwrite`, and `writes_output`, which
checks and locks the verb's output folder before its work starts (output_files.output_claim).

    def add_arguments(parser):
        parser.add_argument("--out", ...)
        add_overwrite_argument(parser)

    @writes_output()
    def run(args): ...
"""

from __future__ import annotations

import functools
from typing import Callable, Sequence

OVERWRITE_HELP = ("replace the output folder's contents if it is not empty (default: refuse, so that earlier "
                  "results and your own files are never replaced unasked)")


def add_overwrite_argument(parser, help: str = OVERWRITE_HELP) -> None:
    parser.add_argument("--overwrite", action="store_true", help=help)


def writes_output(option: str = "out", keep_other_files: bool = False, names: Sequence[str] = ()) -> Callable:
    """Decorate a verb's `run`: refuse a target that is a file, unwritable, not empty (without
    --overwrite) or being written by another process, then lock it while `run` works.
    `keep_other_files`: the verb adds `names` to a folder the user owns (its other files stay)."""

    def decorate(run: Callable) -> Callable:
        @functools.wraps(run)
        def checked_run(args, *more) -> int:
            out = getattr(args, option.replace("-", "_"), None)
            if out is None:
                return run(args, *more)
            from ..output_files import output_claim

            with output_claim(out, getattr(args, "overwrite", False), keep_other_files, names):
                return run(args, *more)

        return checked_run

    return decorate
