"""prostate-cad detect: run a detector package (Retina U-Net or FocalNet) on a case through `pipeline`,
or on several cases through `batch` (each into <out>/<case name>/, resumable, a table at the end)."""

from __future__ import annotations

import sys
import time

from ._output_args import add_overwrite_argument, writes_output
from ._zones_args import add_pz_arguments, pz_options

HELP = ("Detect lesions in a case (or several: folders of studies, list files) with a detector model; "
        "writes detections.json and lesion-probability.nrrd.")


def add_arguments(parser) -> None:
    parser.add_argument("path",
                        help="case: DICOM folder, folder with case.json, or a case JSON file; several cases: "
                             "a folder of studies (each subfolder a case) or a list file (one case path per line)")
    parser.add_argument("more_paths", nargs="*", metavar="PATH", help="more cases (paths as above)")
    parser.add_argument("--model", required=True, help="detector model package: installed name or folder")
    parser.add_argument("--out", required=True,
                        help="output folder (several cases: one subfolder per case; finished ones are skipped)")
    add_overwrite_argument(parser, "replace earlier results: one case: the output folder's contents; several "
                           "cases: run every case again, finished ones too (default: refuse / skip them)")
    parser.add_argument("--drop", default="", help="comma-separated sequences to blank, e.g. KTRANS,DCE (ablation)")
    parser.add_argument("--tta", action="store_true", help="mirror test-time augmentation (y, x, both)")
    parser.add_argument("--device", default="auto", help="auto | cpu | cuda")
    parser.add_argument("--zones", default=None, help="zonal label map (1 = CG, 2 = PZ) on any grid")
    parser.add_argument("--prostate", default=None, help="prostate mask on any grid")
    parser.add_argument("--transform", default=None, help="ADC->T2 transform file (skips automatic registration)")
    parser.add_argument("--no-register", action="store_true", help="use ADC/DWI as they are (no registration)")
    # checked against registration's one list of presets (pipeline.check_options, before any work);
    # no argparse choices here, as that list lives beside numpy/SimpleITK and --help must stay light
    parser.add_argument("--register-preset", default="paper", metavar="PRESET",
                        help="automatic registration, as `register --preset`: paper = 50 starts "
                             "(under a minute on 2 cores with zones), "
                             "fast = 8 starts, released = the authors' released code")
    parser.add_argument("--zones-backend", default="taps", choices=("taps", "cascade"),
                        help="automatic zonal segmentation when --zones is not given (see prostate-cad zones)")
    add_pz_arguments(parser, "automatic zonal segmentation (without --zones), as `zones`: ")
    parser.add_argument("--format", default="nrrd", choices=("nrrd", "nii.gz", "mha"), dest="image_format",
                        help="file format of the probability map (default nrrd); detections.json names the file")
    parser.add_argument("--all", action="store_true", dest="all_candidates",
                        help="FocalNet: write every local maximum (candidate), not only those at or above the "
                             "package's working point")
    parser.add_argument("--json", action="store_true",
                        help="print the per-case summary (case, status, detections, seconds, error) as JSON")


def run(args) -> int:
    from ..batch import is_single_case

    paths = [args.path, *args.more_paths]
    if is_single_case(paths):
        return _run_one(args, args.path)
    return _run_batch(args, paths)


@writes_output()
def _run_one(args, path) -> int:
    from ..image_files import read_image_file
    from ..pipeline import check_options, detector_package, run_pipeline
    from ..progress import ConsoleProgress, detail, note, sub_progress
    from ..registration.register import read_transform
    from ..study.loading import load_case

    progress = ConsoleProgress()
    drop = [d for d in args.drop.split(",") if d.strip()]
    register_preset = None if args.no_register else args.register_preset
    pkg = detector_package(args.model)
    check_options(pkg, drop, register_preset, args.zones_backend)  # e.g. --drop T2, before any work
    pz_shell_mm, pz_anterior_band = pz_options(args)
    start = time.perf_counter()
    case = load_case(path, progress=sub_progress(progress, 0.0, 0.1))
    zones = read_image_file(args.zones, "zones image", label=True, max_label=2) if args.zones else None
    prostate = read_image_file(args.prostate, "prostate image", label=True) if args.prostate else None
    transform = read_transform(args.transform, case.t2) if args.transform else None
    result = run_pipeline(case, pkg, args.out, zones=zones, prostate=prostate, transform=transform,
                          register_preset=register_preset, zones_backend=args.zones_backend, drop=drop,
                          tta=args.tta, device=args.device, progress=sub_progress(progress, 0.1, 1.0),
                          image_format=args.image_format, all_candidates=args.all_candidates,
                          pz_shell_mm=pz_shell_mm, pz_anterior_band=pz_anterior_band)
    for message in result.messages:
        note(message)
    for stage, seconds in result.timings.items():
        detail(f"{stage}: {seconds:.1f} s")
    if args.json:
        from ..batch import DONE, BatchReport, CaseOutcome

        outcome = CaseOutcome(case.case_id, DONE, len(result.detections.detections), time.perf_counter() - start,
                              out_dir=str(args.out), notes=list(result.messages))
        _print_json(BatchReport([outcome], {"name": pkg.name, "version": pkg.version}))
    else:
        print(f"{len(result.detections.detections)} detections ({pkg.name} {pkg.version}) written to {args.out}")
    return 0


def _run_batch(args, paths) -> int:
    from ..batch import detect_cases, discover_cases
    from ..errors import ParameterError
    from ..output_files import output_claim
    from ..pipeline import check_options, detector_package
    from ..progress import ConsoleProgress, detail, note

    per_case = [f"--{name}" for name in ("zones", "prostate", "transform") if getattr(args, name)]
    if per_case:
        raise ParameterError(f"{', '.join(per_case)} name one case's files: give them with one case only.")
    drop = [d for d in args.drop.split(",") if d.strip()]
    register_preset = None if args.no_register else args.register_preset
    pkg = detector_package(args.model)
    check_options(pkg, drop, register_preset, args.zones_backend)
    pz_shell_mm, pz_anterior_band = pz_options(args)
    cases = discover_cases(paths)
    detail(f"{len(cases)} cases: " + ", ".join(c.name for c in cases))

    def ended(outcome) -> None:
        for message in outcome.notes:
            note(f"{outcome.case}: {message}")

    # the batch adds case folders to --out (a stopped batch resumes there), so its other files stay
    with output_claim(args.out, args.overwrite, keep_other_files=True):
        report = detect_cases(cases, pkg, args.out, register_preset=register_preset,
                              zones_backend=args.zones_backend, drop=drop, tta=args.tta, device=args.device,
                              image_format=args.image_format, overwrite=args.overwrite,
                              all_candidates=args.all_candidates, pz_shell_mm=pz_shell_mm,
                              pz_anterior_band=pz_anterior_band,
                              progress=ConsoleProgress(), on_case=ended)
    if args.json:
        _print_json(report)
    else:
        print(report.table(), end="")
    if report.failed:
        print(f"error: {len(report.failed)} of {len(report.outcomes)} cases failed (see the table).", file=sys.stderr)
        return 2
    return 0


def _print_json(report) -> None:
    import json

    print(json.dumps(report.as_dict(), indent=1))
