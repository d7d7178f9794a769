"""Developer tool: draw a DICOM SEG, read back from its file, over the T2 images it refers to
(demo/dicom_seg_figure.py; the README's figure of the demo's SEG).

Not a `prostate-cad` verb (cli.DEVELOPER_TOOLS); run it as
`python -m ProstateLesionCADLib.commands.seg_figure SEG.dcm --t2 STUDY --out FIGURE.png`.
"""

from __future__ import annotations

import sys

HELP = "Draw a DICOM SEG file's segments over the T2 images it refers to (read back with highdicom and pydicom)."


def add_arguments(parser) -> None:
    parser.add_argument("seg", help="the DICOM Segmentation file (e.g. segmentation.dcm of `prostate-cad export`)")
    parser.add_argument("--t2", required=True, metavar="DIR",
                        help="folder holding the T2 images the SEG refers to (the DICOM study folder)")
    parser.add_argument("--out", required=True, metavar="PNG", help="figure to write")
    parser.add_argument("--panels", type=int, default=3, help="T2 images to show at most (default 3)")


def run(args) -> int:
    from pathlib import Path

    from ..demo.dicom_seg_figure import draw_seg_over_t2, read_seg_over_t2
    from ..errors import ParameterError

    if args.panels < 1:
        raise ParameterError(f"--panels must be at least 1, got {args.panels}.")
    if not Path(args.seg).is_file():
        raise ParameterError(f"{args.seg}: no such file.")
    overlay = read_seg_over_t2(args.seg, args.t2)
    shown = draw_seg_over_t2(overlay, args.out, f"{Path(args.seg).name} read back with highdicom over its T2 images",
                             args.panels)
    print(f"{args.out}: {len(shown)} T2 images, {len(overlay.segments)} segments of {overlay.series_description}")
    return 0


if __name__ == "__main__":
    from ..cli import run_tool

    sys.exit(run_tool(sys.modules[__name__]))
