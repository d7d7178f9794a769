"""prostate-cad export: a run's detections and zones as DICOM SEG, DICOM SR and Slicer .seg.nrrd."""

from __future__ import annotations

from ._output_args import add_overwrite_argument, writes_output

# what it adds to --out (export/): a run's folder keeps its other files
EXPORT_NAMES = ("segmentation.dcm", "measurement-report.dcm", "segmentation.seg.nrrd")

HELP = ("Write a run's lesions (detections.json) and zones as a DICOM SEG, a DICOM SR measurement report "
        "and a Slicer .seg.nrrd on the study's T2 grid.")


def add_arguments(parser) -> None:
    parser.add_argument("path", help="the case the run was made on: DICOM folder (needed for DICOM SEG/SR), "
                                     "folder with case.json, case .json, or a T2 image file")
    parser.add_argument("--detections", default=None, metavar="FILE", help="detections.json of a detect run")
    parser.add_argument("--zones", default=None, metavar="FILE", help="zones label map (1 = CG, 2 = PZ) on any grid")
    parser.add_argument("--out", required=True, metavar="DIR",
                        help="output folder (segmentation.dcm, measurement-report.dcm, segmentation.seg.nrrd)")
    add_overwrite_argument(parser, help="replace the SEG, SR and .seg.nrrd if --out holds them (default: refuse); "
                                        "its other files always stay")
    parser.add_argument("--dicom-seg", action="store_true", help="write the DICOM Segmentation")
    parser.add_argument("--dicom-sr", action="store_true",
                        help="write the DICOM SR measurement report (TID 1500; writes the SEG it refers to as well)")
    parser.add_argument("--seg-nrrd", action="store_true", help="write the 3D Slicer .seg.nrrd")
    parser.add_argument("--case-id", default=None, help="which case of the detections file (default: the study's)")
    parser.add_argument("--min-score", type=float, default=0.0,
                        help="leave out detections scoring below this (default 0: every detection)")


@writes_output(keep_other_files=True, names=EXPORT_NAMES)
def run(args) -> int:
    from ..export import export_results
    from ..progress import ConsoleProgress

    formats = [name for name, on in (("dicom-seg", args.dicom_seg), ("dicom-sr", args.dicom_sr),
                                     ("seg-nrrd", args.seg_nrrd)) if on]
    result = export_results(args.path, args.out, detections=args.detections, zones=args.zones, formats=formats,
                            case_id=args.case_id, min_score=args.min_score, progress=ConsoleProgress())
    for message in result.messages:
        print(f"note: {message}")
    lesions = sum(1 for s in result.segments if s.lesion is not None)
    zones = len(result.segments) - lesions
    for name, path in result.files.items():
        print(f"{name}: {path} ({lesions} lesions, {zones} zones) of {result.case_id}")
    return 0
