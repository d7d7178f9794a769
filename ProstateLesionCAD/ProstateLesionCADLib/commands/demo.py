"""prostate-cad demo: the pipeline on the embedded ProstateX-0000 sample (see demo.py)."""

from __future__ import annotations

HELP = "Run the pipeline on the embedded sample case; write channels (NRRD), a montage PNG and a summary."


def add_arguments(parser) -> None:
    parser.add_argument("--out", default="demo-output", help="output folder (default: demo-output)")
    parser.add_argument("--case", default=None,
                        help="another case (DICOM folder or case JSON/folder) instead of the embedded sample")


def run(args) -> int:
    from ..demo import run_demo
    from ..progress import ConsoleProgress

    state = run_demo(args.out, args.case, progress=ConsoleProgress())
    print(f"demo outputs in {state.out}:")
    for path in state.outputs + ["SUMMARY.txt"]:
        print(f"  {path}")
    return 0
