"""The FocalNet path of `prostate-cad detect`."""

from __future__ import annotations


def run_detect(args) -> int:
    """`prostate-cad detect` for a FocalNet package (T2 + ADC; no zones needed)."""
    from ..image_files import read_image_file
    from ..study.loading import load_case
    from ..models.package import find_model
    from ..progress import ConsoleProgress, sub_progress
    from ..detection.focalnet.inference import detect_case

    progress = ConsoleProgress()
    pkg = find_model(args.model, task="focalnet")
    case = load_case(args.path, progress=sub_progress(progress, 0.0, 0.1))
    prostate = read_image_file(args.prostate, "prostate image", label=True) if args.prostate else None
    if prostate is None and getattr(args, "zones", None):  # the gland = every zone (1 CG, 2 PZ)
        prostate = read_image_file(args.zones, "zones image", label=True) > 0
    transform = None
    if args.transform:
        from ..registration.register import read_transform
        transform = read_transform(args.transform, case.t2)
    dcase = detect_case(case, pkg, args.out, prostate=prostate, transform=transform, device=args.device,
                        progress=sub_progress(progress, 0.1, 1.0))
    print(f"{len(dcase.detections)} detections ({pkg.name} {pkg.version}) written to {args.out}")
    return 0
