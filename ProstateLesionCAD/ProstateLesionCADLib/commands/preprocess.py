"""prostate-cad preprocess: the main paper's pre-processing of one case (preprocessing/preprocess.py)."""

from __future__ import annotations

from ._output_args import add_overwrite_argument, writes_output

HELP = ("Resample a case to the detector's 11-channel 160x160x24 input at 0.5x0.5x3 mm "
        "(NRRD per channel, channels.npy, preprocessed.json).")


def add_arguments(parser) -> None:
    parser.add_argument("path", help="a case: DICOM folder (any depth) or a case JSON / folder of role images")
    parser.add_argument("--out", required=True, help="output folder")
    add_overwrite_argument(parser)
    parser.add_argument("--prostate", default=None, help="prostate mask (NRRD/NIfTI/MHA) to centre the crop on")
    parser.add_argument("--zones", default=None, help="zonal mask (1 = CG, 2 = PZ) for the CG/PZ channels")
    parser.add_argument("--ktrans", default=None, help="Ktrans map file (ProstateX ships it apart from the DICOM)")
    parser.add_argument("--center", default=None, metavar="X,Y,Z",
                        help="crop centre in LPS mm instead of the prostate centroid")
    parser.add_argument("--normalise-over", choices=("t2", "crop"), default="t2",
                        help="voxels for the 1st/99th percentiles: whole T2-grid volume (default, as the "
                             "authors' code) or the crop")


def _read_mask(path: str, what: str):
    import os

    import SimpleITK as sitk

    from ..errors import CaseError

    if not os.path.isfile(path):
        raise CaseError(f"The {what} mask {path} does not exist.")
    try:
        image = sitk.ReadImage(path)
    except RuntimeError as exc:
        raise CaseError(f"The {what} mask {path} cannot be read as an image ({str(exc).strip().splitlines()[-1]}).") from exc
    if what == "zonal" and image.GetNumberOfComponentsPerPixel() == 1:
        from ..image_files import check_labels

        check_labels(image, path, "zonal mask", 2)  # 1 = CG, 2 = PZ; named with its file
    return image


@writes_output()
def run(args) -> int:
    from ..study.loading import load_case
    from ..output_files import staged_output_dir
    from ..preprocessing.preprocess import preprocess, save_preprocessed
    from ..progress import ConsoleProgress, sub_progress
    from ..study.validation import check_point_inside
    from ._numbers import point

    progress = ConsoleProgress()
    center = point(args.center, "--center")
    prostate = _read_mask(args.prostate, "prostate") if args.prostate else None
    zones = _read_mask(args.zones, "zonal") if args.zones else None
    progress(0.0, f"loading {args.path}")
    case = load_case(args.path, ktrans=args.ktrans)
    check_point_inside(center, case.t2, "The --center point", args.path)
    progress(0.2, f"loaded {case.case_id}: {', '.join(case.roles_present())}")
    prep = preprocess(case, prostate, zones, center_lps=center, normalise_over=args.normalise_over,
                      progress=sub_progress(progress, 0.2, 0.9))
    with staged_output_dir(args.out) as stage:
        written = save_preprocessed(prep, stage)
    progress(1.0, f"wrote {len(written)} files to {args.out}")
    for name in prep.channels:
        print(f"{name:<9} {prep.sources.get(name, 'missing')}")
    return 0
