"""Developer tool behind `make bench-gpu` (bench/gpu.sh): every stage on a CUDA device,
written to <out>/REPORT-gpu.md (demo/benchmarks/_gpu.py).

Not a `prostate-cad` verb; run it as
`python -m ProstateLesionCADLib.commands.bench_gpu --out DIR [--device cuda|cpu] [--only PARTS]`.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Optional, Sequence

HELP = ("Every stage on a CUDA device (test vectors, the 25-member ensemble, the pipeline on the sample "
        "and a phantom); writes REPORT-gpu.md into --out.")


def add_arguments(parser) -> None:
    from ..demo.benchmarks._gpu import PARTS

    parser.add_argument("--out", type=Path, default=Path("bench-output"), help="folder for REPORT-gpu.md")
    parser.add_argument("--device", default="cuda", help="cuda, cuda:N, or cpu to check the report's code")
    parser.add_argument("--only", default=",".join(PARTS), help=f"comma-separated parts: {', '.join(PARTS)}")
    parser.add_argument("--members", type=int, default=25, help="members of the paper-size ensemble")


def run(args) -> int:
    from ..demo.benchmarks._gpu import run_gpu_bench

    report = run_gpu_bench(args.out, args.device, [p.strip() for p in args.only.split(",") if p.strip()],
                           args.members)
    print(report.read_text(encoding="utf-8"), end="")
    print(f"written to {report}")
    return 0


def main(argv: Optional[Sequence[str]] = None) -> int:
    """Parse argv and run, with the verbs' error handling (exit status 2 on bad input)."""
    from ..cli import run_tool

    return run_tool(sys.modules[__name__], argv)


if __name__ == "__main__":
    sys.exit(main())
