"""prostate-cad detect: run a detector package (Retina U-Net or FocalNet) on a case through `pipeline`."""

from __future__ import annotations

from ._output_args import add_overwrite_argument, writes_output

HELP = "Detect lesions in a case with a detector model; writes detections.json and lesion-probability.nrrd."


def add_arguments(parser) -> None:
    parser.add_argument("path", help="case: DICOM folder, folder with case.json, or a case JSON file")
    parser.add_argument("--model", required=True, help="detector model package: installed name or folder")
    parser.add_argument("--out", required=True, help="output folder")
    add_overwrite_argument(parser)
    parser.add_argument("--drop", default="", help="comma-separated sequences to blank, e.g. KTRANS,DCE (ablation)")
    parser.add_argument("--tta", action="store_true", help="mirror test-time augmentation (y, x, both)")
    parser.add_argument("--device", default="auto", help="auto | cpu | cuda")
    parser.add_argument("--zones", default=None, help="zonal label map (1 = CG, 2 = PZ) on any grid")
    parser.add_argument("--prostate", default=None, help="prostate mask on any grid")
    parser.add_argument("--transform", default=None, help="ADC->T2 transform file (skips automatic registration)")
    parser.add_argument("--no-register", action="store_true", help="use ADC/DWI as they are (no registration)")
    parser.add_argument("--register-preset", default="paper", choices=("paper", "fast"),
                        help="automatic registration: paper = 50 starts (slow on a CPU), fast = 8 starts")
    parser.add_argument("--zones-backend", default="taps", choices=("taps", "cascade"),
                        help="automatic zonal segmentation when --zones is not given (see prostate-cad zones)")


@writes_output()
def run(args) -> int:
    from ..image_files import read_image_file
    from ..pipeline import check_options, detector_package, run_pipeline
    from ..progress import ConsoleProgress, sub_progress
    from ..registration.register import read_transform
    from ..study.loading import load_case

    progress = ConsoleProgress()
    drop = [d for d in args.drop.split(",") if d.strip()]
    register_preset = None if args.no_register else args.register_preset
    pkg = detector_package(args.model)
    check_options(pkg, drop, register_preset, args.zones_backend)  # e.g. --drop T2, before any work
    case = load_case(args.path, progress=sub_progress(progress, 0.0, 0.1))
    zones = read_image_file(args.zones, "zones image", label=True) if args.zones else None
    prostate = read_image_file(args.prostate, "prostate image", label=True) if args.prostate else None
    transform = read_transform(args.transform, case.t2) if args.transform else None
    result = run_pipeline(case, pkg, args.out, zones=zones, prostate=prostate, transform=transform,
                          register_preset=register_preset, zones_backend=args.zones_backend, drop=drop,
                          tta=args.tta, device=args.device, progress=sub_progress(progress, 0.1, 1.0))
    for message in result.messages:
        print(f"note: {message}")
    print(f"{len(result.detections.detections)} detections ({pkg.name} {pkg.version}) written to {args.out}")
    return 0
