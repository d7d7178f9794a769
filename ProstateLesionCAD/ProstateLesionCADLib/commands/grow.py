"""prostate-cad grow: lesion masks grown from seed points (main paper, "Automated lesion growing")."""

from __future__ import annotations

from ._output_args import add_overwrite_argument, writes_output

# what it adds to --out (lesions.annotation_files and grow.json): a case folder's other files stay
ANNOTATION_NAMES = ("lesions.nrrd", "ground-truth.json", "grow.json")

HELP = "Grow lesion masks from seed points (ground-truth JSON or CSV x,y,z,ggg[,id] in LPS mm)."


def add_arguments(parser) -> None:
    parser.add_argument("path", help="case: DICOM folder, case folder or case.json")
    parser.add_argument("--seeds", required=True, help="ground-truth JSON or CSV with x,y,z,ggg[,id] (LPS mm)")
    parser.add_argument("--out", required=True, help="output folder (lesions.nrrd, ground-truth.json, grow.json)")
    add_overwrite_argument(parser, help="replace lesions.nrrd, ground-truth.json and grow.json if --out holds them "
                                        "(default: refuse); its other files always stay")
    parser.add_argument("--case-id", default=None, help="which case of a multi-case seed JSON")
    parser.add_argument("--prostate", default=None, help="prostate mask (or zones label map) on any grid: "
                                                         "clips leaks out of the gland")
    parser.add_argument("--zones", default=None, help="zones label map on the T2 grid (1 = CG, 2 = PZ): a lesion "
                                                      "stays in its seed's zone, as the Slicer panel grows it; "
                                                      "also the gland mask when --prostate is not given")
    parser.add_argument("--transform", default=None, help="registration transform (ITK .h5/.tfm) applied to "
                                                          "the high-b DWI (and ADC with --method released) before growing (Ktrans stays as "
                                                          "acquired, as in the paper)")
    parser.add_argument("--method", default=None, choices=("paper", "released"),
                        help="growing rule: paper (seed vs ring thresholds on T2, high-b DWI, Ktrans, "
                             "2-of-3 vote) or released (the authors' released code: mean ± f·sigma of a 3x5x5 "
                             "seed box on T2, high-b DWI, ADC, Ktrans from the seed and the registration-shifted "
                             "seed, 3-of-8 vote); default: paper (it scores better on held-out phantoms; README)")
    parser.add_argument("--max-volume-cc", type=float, default=10.0, help="clip a lesion larger than this (cm3)")
    parser.add_argument("--format", default="nrrd", choices=("nrrd", "nii.gz", "mha"), dest="image_format",
                        help="file format of the lesion label map (default nrrd); ground-truth.json names the file")


@writes_output(keep_other_files=True, names=ANNOTATION_NAMES)
def run(args) -> int:
    from pathlib import Path

    import SimpleITK as sitk

    from ..study.loading import load_case
    from ..errors import CaseError
    from ..image_files import read_image_file, same_grid, with_format
    from ..lesions.annotation_files import LABELS_FILE, write_annotation
    from ..lesions.grow_methods import DEFAULT_GROW_METHOD, grow_method
    from ..lesions.growing import GrowParams, grow_lesions
    from ..progress import ConsoleProgress, sub_progress
    from ..lesions.seeds import read_seeds

    from ._numbers import number

    progress = ConsoleProgress()
    params = GrowParams(max_volume_cc=number(args.max_volume_cc, "--max-volume-cc", 0))
    method = args.method or DEFAULT_GROW_METHOD
    params.validate()
    seeds = read_seeds(args.seeds, args.case_id)
    progress(0.0, "loading case")
    case = load_case(args.path, progress=sub_progress(progress, 0.0, 0.3))
    transform = None
    if args.transform:
        try:
            transform = sitk.ReadTransform(args.transform)
        except RuntimeError:
            raise CaseError(f"{args.transform}: not a readable ITK transform file.") from None
    prostate = None
    if args.prostate:
        try:
            prostate = sitk.ReadImage(args.prostate) > 0
        except RuntimeError:
            raise CaseError(f"{args.prostate}: not a readable image file.") from None
    elif case.prostate is not None:
        prostate = case.prostate
    zones = None
    if args.zones:
        zones = read_image_file(args.zones, "zones label map", label=True, max_label=2)
        if not same_grid(zones, case.t2):
            raise CaseError(f"{args.zones}: the zones label map is not on the T2 image grid.")
        if prostate is None:
            prostate = zones > 0
    sequences_of, grow_one = grow_method(method, transform)
    labels, reports = grow_lesions(case.t2, seeds, sequences_of(case, transform), prostate, params,
                                   sub_progress(progress, 0.3, 0.95), zones=zones, grow_one=grow_one)
    write_annotation(args.out, case.case_id, labels, [r.seed for r in reports],
                     label_of={r.seed.id: r.label for r in reports},
                     extra_json={"grow.json": {"case_id": case.case_id, "method": method, "lesions": [r.summary() for r in reports]}},
                     image_format=args.image_format)
    for r in reports:
        flags = ", ".join(r.flags) or "none"
        voted = "/".join(v.sequence for v in r.votes if v.status == "voted") or "none"
        print(f"lesion {r.seed.id}: GGG{r.seed.ggg} {r.volume_cc:.2f} cm3, sequences {voted}, flags {flags}")
    progress(1.0, f"wrote {Path(args.out) / with_format(LABELS_FILE, args.image_format)}")
    return 0
