"""prostate-cad evaluate: lesion/patient ROC, working points, CIs, DSC and FROC of a detector
(and, with --picai, picai_eval's PI-CAI metrics beside them)."""

from __future__ import annotations

from ._output_args import add_overwrite_argument, writes_output

HELP = ("Evaluate detections against ground truth as in Pellicer-Valero et al. 2022 (Table 1): "
        "metrics.json, ROC plots, report.md; optional FocalNet-style FROC.")


def _criteria(text: str) -> list[int]:
    from ..errors import ParameterError
    try:
        values = [int(v) for v in text.split(",") if v.strip()]
    except ValueError:
        raise ParameterError(f"--criteria must be comma-separated integers among 1, 2, 3, got {text!r}.") from None
    return values


def add_arguments(parser) -> None:
    parser.add_argument("--detections", required=True,
                        help="detections JSON (prostate-cad-detections/1), or a folder of detect runs (*/detections.json)")
    parser.add_argument("--ground-truth", required=True,
                        help="ground-truth JSON (prostate-cad-ground-truth/1) or a PI-CAI archive folder (marksheet + delineations)")
    parser.add_argument("--out", required=True, help="output folder (metrics.json, scores.json, ROC PNGs, report.md)")
    add_overwrite_argument(parser)
    parser.add_argument("--criteria", default="1,2,3", help="significance criteria GGG>=k to evaluate (default 1,2,3)")
    parser.add_argument("--distance-mm", type=float, default=15.0, help="lesion matching radius in mm (default 15)")
    parser.add_argument("--k", type=float, default=2.0, dest="k_match",
                        help="weight of proximity in the matching score p + k(1 - d/15mm) (default 2)")
    parser.add_argument("--thresholds", default=None, metavar="FILE|MODEL",
                        help="also evaluate at given thresholds: a prostate-cad-thresholds/1 JSON file, "
                             "a model package folder or an installed model's name")
    parser.add_argument("--bootstrap", type=int, default=1000, help="bootstrap resamples over patients for 95%% CIs (0: none)")
    parser.add_argument("--seed", type=int, default=0, help="bootstrap seed (default 0)")
    parser.add_argument("--froc", action="store_true", help="also compute FROC (sensitivity vs false positives per patient)")
    parser.add_argument("--froc-protocol", choices=("default", "focalnet"), default="default",
                        help="focalnet: Cao et al. 2019's FROC (implies --froc): detections on annotated slices only, "
                             "hit within 5 mm of the ROI in the same slice whatever the predicted GGG, curves for "
                             "index, clinically significant, all lesions and each GS group, FP at 60-90%% sensitivity. "
                             "default: one curve per --criteria under the --froc-* options, plus the index lesion")
    parser.add_argument("--froc-hit-mm", type=float, default=None,
                        help="FROC hit distance in mm (default 5, FocalNet; fixed by --froc-protocol focalnet)")
    parser.add_argument("--froc-same-slice", action="store_true", help="FROC hits must lie in the lesion's slice (FocalNet)")
    parser.add_argument("--froc-slice-mm", type=float, default=3.0,
                        help="slice thickness for the same-slice test when no lesion mask is given (default 3)")
    parser.add_argument("--froc-all-detections", action="store_true",
                        help="FROC uses every detection whatever its predicted GGG (localisation only)")
    parser.add_argument("--froc-ignore-other-lesions", action="store_true",
                        help="FROC: a detection hitting only lesions below the criterion is neither TP nor FP")
    parser.add_argument("--no-dice", action="store_true", help="skip the DSC of probability maps vs lesion masks")
    parser.add_argument("--voxel-roc", action="store_true",
                        help="also the voxel-level ROC of GS>=7, >=4+3, >=8, >=9 at sampled detection points (FocalNet)")
    parser.add_argument("--voxel-roc-points", type=int, default=12, help="detection points sampled per case (default 12)")
    parser.add_argument("--compare-published", choices=("prostatex", "ivo"), default=None,
                        help="add the paper's Table 1 results of that test set to the report for comparison")
    parser.add_argument("--missing-cases", choices=("error", "empty", "skip"), default="error",
                        help="ground-truth cases without detections entry (and the reverse): stop with an error "
                             "(default), score them as without detections (empty), or leave them out (skip)")
    parser.add_argument("--picai", action="store_true",
                        help="also picai_eval's metrics for csPCa (GGG>=2): AUROC, AP, PI-CAI score, FROC")
    parser.add_argument("--picai-maps", default=None, metavar="DIR",
                        help="PI-CAI: folder of <case>_detection_map.nii.gz|.mha (prostate-cad export --picai); "
                             "default: built from the detections")
    parser.add_argument("--picai-min-overlap", type=float, default=0.1,
                        help="PI-CAI: overlap a candidate needs with a lesion to hit it (default 0.1)")
    parser.add_argument("--picai-overlap", choices=("IoU", "DSC"), default="IoU", help="PI-CAI: overlap measure (default IoU)")
    parser.add_argument("--json", action="store_true",
                        help="print the metrics as JSON (the content of metrics.json) instead of the report")


@writes_output()
def run(args) -> int:
    from ..evaluation.evaluate import evaluate
    from ..errors import ParameterError
    from ..evaluation.froc import HitRule
    from ..evaluation.report import markdown_report, write_report
    from ..evaluation.thresholds import load_given_thresholds
    from ..evaluation.detection_files import load_detections
    from ..evaluation.picai import load_ground_truth
    from ..output_files import staged_output_dir
    from ..progress import ConsoleProgress
    from ._numbers import number

    criteria = _criteria(args.criteria)
    paper_froc = args.froc_protocol == "focalnet"
    fixed = [name for name, given in (("--froc-hit-mm", args.froc_hit_mm is not None),
                                      ("--froc-all-detections", args.froc_all_detections),
                                      ("--froc-ignore-other-lesions", args.froc_ignore_other_lesions)) if given]
    if paper_froc and fixed:
        raise ParameterError(f"--froc-protocol focalnet fixes the hit rule (5 mm, same slice, every detection, "
                             f"hits on other groups ignored); drop {', '.join(fixed)}.")
    hit_mm = 5.0 if args.froc_hit_mm is None else args.froc_hit_mm
    for value, option, low in ((args.distance_mm, "--distance-mm", 0), (args.k_match, "--k", 0),
                               (args.bootstrap, "--bootstrap", 0), (args.seed, "--seed", 0),
                               (hit_mm, "--froc-hit-mm", 0), (args.froc_slice_mm, "--froc-slice-mm", 0),
                               (args.voxel_roc_points, "--voxel-roc-points", 1)):
        number(value, option, low)
    number(args.picai_min_overlap, "--picai-min-overlap", 0, 1)
    detections = load_detections(args.detections)
    ground_truth, delineations = load_ground_truth(args.ground_truth)
    given, source = (None, None)
    if args.thresholds:
        given, source = load_given_thresholds(args.thresholds)
    progress = ConsoleProgress()
    result = evaluate(detections, ground_truth, criteria=criteria, distance_mm=args.distance_mm, k_match=args.k_match,
                      given_thresholds=given, thresholds_source=source, bootstrap=args.bootstrap, seed=args.seed,
                      missing_cases=args.missing_cases, with_froc=args.froc or paper_froc,
                      froc_rule=HitRule(hit_mm, args.froc_same_slice, args.froc_slice_mm,
                                        args.froc_all_detections, args.froc_ignore_other_lesions),
                      froc_protocol=args.froc_protocol,
                      with_dice=not args.no_dice, progress=progress)
    voxel = None
    if args.voxel_roc:
        from ..evaluation import voxel_roc
        from ..evaluation.evaluate import pair_cases
        result["voxel_roc"] = voxel = voxel_roc.evaluate_files(pair_cases(detections, ground_truth, args.missing_cases)[0],
                                                               args.voxel_roc_points, hit_mm)
    if args.compare_published:
        from ..evaluation.published import published
        result["published_reference"] = published(args.compare_published)
    picai_text = ""
    if args.picai:
        from ..evaluation import picai
        from ..evaluation.evaluate import pair_cases

        result["picai"] = picai.picai_metrics(pair_cases(detections, ground_truth, args.missing_cases)[0],
                                              delineations=delineations, maps_dir=args.picai_maps,
                                              min_overlap=args.picai_min_overlap, overlap=args.picai_overlap,
                                              progress=progress)
        result["picai"]["agreement"] = picai.agreement(result, result["picai"])
        picai_text = picai.markdown(result["picai"])
    with staged_output_dir(args.out) as stage:
        write_report(result, stage)
        if voxel:
            voxel_roc.write_outputs(voxel, stage)
        if args.picai:
            picai.append_to_report(result["picai"], stage)
    if args.json:
        from pathlib import Path

        print((Path(args.out) / "metrics.json").read_text(encoding="utf-8"))
        return 0
    print(markdown_report(result) + (voxel_roc.markdown(voxel) if voxel else "") + picai_text, end="")
    print(f"Wrote {args.out}/metrics.json, report.md and ROC plots.")
    return 0
