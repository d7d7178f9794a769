"""prostate-cad register: multi-start ADC/DWI → T2 registration of one study (registration/)."""

from __future__ import annotations

from ._output_args import add_overwrite_argument, writes_output

HELP = ("Register ADC and DWI to T2 (multi-start BSpline, never worse than none) and write transform.h5, "
        "the registered ADC/DWI and registration.json.")


def add_arguments(parser) -> None:
    parser.add_argument("path", help="DICOM folder, folder holding case.json, or a case .json file")
    parser.add_argument("--out", required=True, help="output folder")
    add_overwrite_argument(parser)
    parser.add_argument("--preset", default="paper", choices=["paper", "fast", "released"],
                        help="paper: 50 starts on a 1 mm grid, half with the metric over the zones + 10 mm (default); "
                             "fast: the same with 8 starts (the Slicer panel's); "
                             "released: the authors' released code (50 runs differing in random sampling)")
    parser.add_argument("--starts", type=int, default=None, help="number of starts (overrides the preset)")
    parser.add_argument("--seed", type=int, default=0, help="random seed of the start initialisations")
    parser.add_argument("--workers", type=int, default=None, help="processes (default: available cores)")
    parser.add_argument("--zones", default=None, metavar="FILE",
                        help="zonal mask (1 = CG, 2 = PZ) to score CG and PZ separately (else the case's own, "
                             "else a central region)")
    parser.add_argument("--transform", default=None, metavar="FILE",
                        help="use this ITK transform (T2 -> ADC/DWI, e.g. corrected in Slicer) instead of registering")


@writes_output()
def run(args) -> int:
    from ..image_files import read_image_file
    from ..study.loading import load_case
    from ..errors import CaseError
    from ..output_files import staged_output_dir
    from ..progress import ConsoleProgress, sub_progress
    from ..registration.register import read_transform, register_case, score_case_transform
    from ..registration.outputs import write_registration_outputs

    from ._numbers import number

    number(args.starts, "--starts", 1, 1000)
    number(args.seed, "--seed", 0, 2 ** 32 - 1)
    number(args.workers, "--workers", 1, 1024)
    progress = ConsoleProgress()
    case = load_case(args.path, progress=sub_progress(progress, 0.0, 0.1))
    if args.zones:
        case.zones = read_image_file(args.zones, "zonal mask image", label=True, max_label=2)
    if case.adc is None and not case.all_dwi():
        raise CaseError(f"{args.path}: the study has neither ADC nor DWI images, so there is nothing to register.")
    if args.transform:
        transform = read_transform(args.transform, reference=case.t2)
        result = score_case_transform(case, transform, args.preset)
    else:
        result = register_case(case, args.preset, args.starts, args.seed, args.workers,
                               sub_progress(progress, 0.1, 0.9))
    with staged_output_dir(args.out) as stage:
        write_registration_outputs(case, result, stage)
    progress(1.0, f"registration written to {args.out}")
    print(result.summary())
    return 0
