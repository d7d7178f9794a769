"""prostate-cad zones: prostate, central gland and peripheral zone of a study's T2."""

from __future__ import annotations

from ._output_args import add_overwrite_argument, writes_output

from ..zones import BACKENDS, DEMO_MODEL
from ._zones_args import add_pz_arguments, pz_options

HELP = ("Segment the prostate zones of a study's T2 (DICOM folder, case folder/.json, or a T2 image file): "
        "writes DIR/zones.nrrd (1 = CG, 2 = PZ) and DIR/zones.json.")


def add_arguments(parser) -> None:
    parser.add_argument("path", help="DICOM folder, folder with case.json, case .json, or a T2 image file (NRRD/NIfTI/MHA)")
    parser.add_argument("--out", required=True, metavar="DIR", help="output folder (zones.nrrd, zones.json)")
    add_overwrite_argument(parser)
    parser.add_argument("--backend", choices=BACKENDS, default="taps",
                        help="prostate from the pretrained TAPS network (default) or from the cascade's CNN-1")
    parser.add_argument("--model", default=DEMO_MODEL, metavar="NAME|PATH",
                        help="zones model package (name of an installed one, or its folder) for the cascade")
    add_pz_arguments(parser)
    parser.add_argument("--png", action="store_true", help="also write zones.png with the zone contours")
    parser.add_argument("--format", default="nrrd", choices=("nrrd", "nii.gz", "mha"), dest="image_format",
                        help="file format of the label map (default nrrd); zones.json names the file")


@writes_output()
def run(args) -> int:
    from pathlib import Path

    from ..image_files import is_image_file, read_image_file
    from ..output_files import staged_output_dir
    from ..progress import ConsoleProgress, note, sub_progress
    from ..zones.segment import contour_png, segment_zones, write_outputs

    progress = ConsoleProgress()
    shell, band = pz_options(args)
    path = Path(args.path)
    if path.is_file() and is_image_file(path):
        from ..study.validation import check_image

        t2 = read_image_file(path, "T2 image")
        check_image(t2, "T2", path)
        case_id = path.name.split(".")[0]
    else:
        from ..study.loading import load_case

        case = load_case(path, progress=sub_progress(progress, 0.0, 0.1))
        t2, case_id = case.t2, case.case_id
    result = segment_zones(t2, backend=args.backend, model=args.model, case_id=case_id,
                           progress=sub_progress(progress, 0.1, 0.98), pz_shell_mm=shell,
                           pz_anterior_band=band)
    with staged_output_dir(args.out) as stage:
        written = write_outputs(result, stage, args.image_format)
        if args.png:
            contour_png(t2, result.zones, stage / "zones.png", f"{case_id} zones ({args.backend})")
    report = result.report
    vol = report["volumes_cm3"]
    print(f"zones of {case_id}: prostate {vol['prostate']:.1f} cm³, central gland {vol['central_gland']:.1f} cm³, "
          f"peripheral zone {vol['peripheral_zone']:.1f} cm³ -> {Path(args.out) / written['zones'].name}")
    for flag in report["qc"]["flags"]:
        print(f"QC: {flag}")
    for warning in report["warnings"]:
        note(warning)
    progress(1.0, "zones done")
    return 0

