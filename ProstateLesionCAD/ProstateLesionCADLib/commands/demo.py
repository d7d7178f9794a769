"""prostate-cad demo: the pipeline on the embedded ProstateX-0000 sample (see demo/run.py)."""

from __future__ import annotations

from ._output_args import add_overwrite_argument, writes_output

HELP = ("Run the whole pipeline on the embedded sample: zones, registration, pre-processed channels (NRRD + "
        "montage), lesion detection with the demo model; write a summary.")


def add_arguments(parser) -> None:
    parser.add_argument("--out", default="demo-output", help="output folder (default: demo-output)")
    add_overwrite_argument(parser)
    parser.add_argument("--case", default=None,
                        help="another case (DICOM folder or case JSON/folder) instead of the embedded sample")
    parser.add_argument("--dicom", default=None, metavar="DIR",
                        help="the DICOM study the case came from (a DICOM --case is its own): adds dicom/ with a "
                             "DICOM SEG and SR of the detections and zones and the SEG drawn over the T2 "
                             "(the embedded sample's study: Testing/data/prostatex/ProstateX-0000 in a checkout)")
    parser.add_argument("--registration-starts", type=int, default=None,
                        help="number of registration starts (default: the fast preset's 8)")


@writes_output()
def run(args) -> int:
    from pathlib import Path

    from ..demo.run import run_demo
    from ..errors import ParameterError
    from ..progress import ConsoleProgress

    if args.registration_starts is not None and args.registration_starts < 1:
        raise ParameterError(f"--registration-starts must be at least 1, got {args.registration_starts}.")
    if args.dicom is not None and not Path(args.dicom).is_dir():
        raise ParameterError(f"--dicom {args.dicom}: no such folder (give the case's DICOM study folder).")
    state = run_demo(args.out, args.case, progress=ConsoleProgress(),
                     options={"registration_starts": args.registration_starts, "dicom": args.dicom})
    print(f"demo outputs in {state.out}:")
    for path in state.outputs + ["SUMMARY.txt"]:
        print(f"  {path}")
    return 0
