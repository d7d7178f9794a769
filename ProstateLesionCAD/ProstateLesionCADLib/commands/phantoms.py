"""prostate-cad phantoms: write synthetic mpMRI studies with known truth (NRRD or DICOM)."""

from __future__ import annotations

from ._output_args import add_overwrite_argument, writes_output

HELP = "Write N synthetic mpMRI phantoms (one folder per case) and one ground-truth JSON for all."


def add_arguments(parser) -> None:
    parser.add_argument("--n", type=int, default=10, help="number of cases (default 10)")
    parser.add_argument("--seed", type=int, default=0, help="seed of the set; same seed, same cases")
    parser.add_argument("--out", required=True, help="output folder (one sub-folder per case + ground-truth.json)")
    add_overwrite_argument(parser)
    parser.add_argument("--format", choices=("nrrd", "dicom", "picai"), default="nrrd",
                        help="nrrd: one file per role + case.json; dicom: Siemens-like DICOM series; picai: a PI-CAI "
                             "archive (images/<patient>/*.mha, marksheet, csPCa delineations; no DCE/Ktrans)")
    parser.add_argument("--deformation-mm", type=float, default=0.0,
                        help="largest displacement of a known smooth DWI/ADC deformation (default 0 = none)")
    parser.add_argument("--single-modality-fraction", type=float, default=0.0,
                        help="share of lesions visible only on T2 or only on ADC/DWI (default 0)")
    parser.add_argument("--size", type=int, default=128, help="T2 matrix size in-plane (default 128)")
    parser.add_argument("--slices", type=int, default=24, help="number of slices (default 24)")
    parser.add_argument("--spacing-xy", type=float, default=None, metavar="MM",
                        help="T2 in-plane voxel size in mm (default 0.625; 1.25 with --size 64 keeps the field of view)")
    parser.add_argument("--oblique-deg", type=float, default=0.0,
                        help="tilt of the axial slices about the left-right axis (default 0)")
    parser.add_argument("--appearance", choices=("default", "realistic"), default="default",
                        help="T2 appearance: default, or realistic (BPH nodules, capsule, levator ani, fat septa, "
                             "coil bias, more noise; phantoms/t2_appearance.py). Same anatomy and truth either way")
    parser.add_argument("--no-dce", action="store_true", help="leave out the DCE time series")
    parser.add_argument("--no-ktrans", action="store_true", help="leave out the Ktrans map")
    parser.add_argument("--dwi-layout", choices=("single_series", "per_b"), default="single_series",
                        help="DICOM: all b-values interleaved in one series (default) or one series per b-value")
    parser.add_argument("--dce-layout", choices=("per_time_point", "single_series"), default="per_time_point",
                        help="DICOM: one series per DCE time point (default, like ProstateX) or one series")
    parser.add_argument("--b-value-tag", choices=("both", "standard", "siemens"), default="both",
                        help="DICOM: write b-values in (0018,9087), Siemens (0019,100C) or both (default)")


def _spacing(args) -> dict:
    from ..errors import ParameterError

    if args.spacing_xy is None:
        return {}
    if not 0.1 <= args.spacing_xy <= 5.0:
        raise ParameterError(f"--spacing-xy must lie between 0.1 and 5 mm, got {args.spacing_xy}.")
    return {"spacing": (args.spacing_xy, args.spacing_xy, 3.0)}


@writes_output()
def run(args) -> int:
    from ..phantoms.generate import make_phantom_set
    from ..progress import ConsoleProgress
    from ._numbers import number

    number(args.n, "--n", 1, 10000)
    number(args.seed, "--seed", 0, 2 ** 32 - 1)
    number(args.deformation_mm, "--deformation-mm", 0, 50)
    number(args.single_modality_fraction, "--single-modality-fraction", 0, 1)
    number(args.size, "--size", 32, 1024)
    number(args.slices, "--slices", 8, 256)
    number(args.oblique_deg, "--oblique-deg", -90, 90)

    if args.format == "picai":
        from ..phantoms.picai_writer import make_picai_phantom_set

        out = make_picai_phantom_set(args.n, args.seed, args.out, progress=ConsoleProgress(),
                                     deformation_mm=args.deformation_mm,
                                     single_modality_fraction=args.single_modality_fraction,
                                     size_xy=args.size, n_slices=args.slices, oblique_deg=args.oblique_deg,
                                     appearance=args.appearance, **_spacing(args))
        print(f"{args.n} phantoms written to {out} as a PI-CAI archive (ground truth: its marksheet and delineations)")
        return 0
    out = make_phantom_set(args.n, args.seed, args.out, fmt=args.format, progress=ConsoleProgress(),
                           deformation_mm=args.deformation_mm,
                           single_modality_fraction=args.single_modality_fraction,
                           size_xy=args.size, n_slices=args.slices,
                           oblique_deg=args.oblique_deg, with_dce=not args.no_dce, with_ktrans=not args.no_ktrans,
                           appearance=args.appearance,
                           **_spacing(args),
                           **({"dwi_layout": args.dwi_layout, "dce_layout": args.dce_layout,
                               "b_value_tag": args.b_value_tag} if args.format == "dicom" else {}))
    print(f"{args.n} phantoms written to {out} (ground truth: {out / 'ground-truth.json'})")
    return 0
