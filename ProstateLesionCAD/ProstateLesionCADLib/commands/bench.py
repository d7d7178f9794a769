"""prostate-cad bench: measure speed and memory of every area; write a Markdown report."""

from __future__ import annotations

from ._output_args import add_overwrite_argument, writes_output

HELP = "Measure speed and peak memory of each stage on the sample; write bench-output/REPORT.md."


def add_arguments(parser) -> None:
    parser.add_argument("--out", default="bench-output", help="folder for the report and figures")
    add_overwrite_argument(parser)
    parser.add_argument("--only", default=None, help="comma-separated benchmark names to run")


@writes_output()
def run(args) -> int:
    from ..demo.benchmarks._report import run_benchmarks
    from ..progress import ConsoleProgress

    run_benchmarks(args.out, args.only.split(",") if args.only else None, ConsoleProgress())
    return 0
