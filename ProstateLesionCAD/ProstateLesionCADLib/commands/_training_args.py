"""The options every training verb shares: sample workers and resuming an interrupted run."""

from __future__ import annotations


def add_workers_and_resume(parser, what_must_match: str) -> None:
    """--workers and --resume; `what_must_match` says when a kept run is continued by itself."""
    parser.add_argument("--workers", default="auto",
                        help="processes that make the augmented batches (default auto: one per core but one, "
                             "at most 8; 0 = in the training process); the weights do not depend on it")
    parser.add_argument("--resume", action="store_true",
                        help="continue the interrupted training kept beside --out (this happens by itself when "
                             f"{what_must_match}; with --resume, exit 2 when there is nothing to continue)")
