"""prostate-cad export: a run's detections and zones as DICOM SEG, DICOM SR and Slicer .seg.nrrd,
or (--picai) as a PI-CAI detection map with its case-level likelihood."""

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
    parser.add_argument("--picai", action="store_true",
                        help="instead, write the PI-CAI detection map <case>_detection_map.nii.gz and "
                             "<case>_likelihood.json (case-level likelihood = the map's maximum)")
    parser.add_argument("--picai-suffix", choices=(".nii.gz", ".mha"), default=".nii.gz",
                        help="PI-CAI detection map file type (default .nii.gz)")
    parser.add_argument("--picai-criterion", type=int, choices=(1, 2, 3), default=2,
                        help="PI-CAI: detections with predicted GGG >= this are candidates (default 2, csPCa)")


@writes_output(keep_other_files=True, names=EXPORT_NAMES)
def run(args) -> int:
    from ..export import export_results
    from ..progress import ConsoleProgress, note
    from ._numbers import number

    number(args.min_score, "--min-score", 0, 1)
    if args.picai:
        return _run_picai(args)
    formats = [name for name, on in (("dicom-seg", args.dicom_seg), ("dicom-sr", args.dicom_sr),
                                     ("seg-nrrd", args.seg_nrrd)) if on]
    result = export_results(args.path, args.out, detections=args.detections, zones=args.zones, formats=formats,
                            case_id=args.case_id, min_score=args.min_score, progress=ConsoleProgress())
    for message in result.messages:
        note(message)
    lesions = sum(1 for s in result.segments if s.lesion is not None)
    zones = len(result.segments) - lesions
    for name, path in result.files.items():
        print(f"{name}: {path} ({lesions} lesions, {zones} zones) of {result.case_id}")
    return 0


def _run_picai(args) -> int:
    from ..errors import ParameterError
    from ..export.picai_maps import write_picai_maps
    from ..progress import ConsoleProgress

    if args.detections is None:
        raise ParameterError("--picai needs --detections (the detections.json of a detect run).")
    if args.zones or args.dicom_seg or args.dicom_sr or args.seg_nrrd or args.min_score:
        raise ParameterError("--picai writes the detection map only; leave out --zones, --dicom-seg, --dicom-sr, "
                             "--seg-nrrd and --min-score.")
    result = write_picai_maps(args.path, args.detections, args.out, case_id=args.case_id,
                              criterion=args.picai_criterion, suffix=args.picai_suffix, progress=ConsoleProgress())
    dmap = result.detection_map
    print(f"detection map: {result.files['detection map']} ({len(dmap.candidates)} candidates) of {result.case_id}")
    print(f"case likelihood: {dmap.likelihood:.6f} ({result.files['likelihood']})")
    return 0
