"""Argument handling of `prostate-cad detect` (kept out of commands/ so the verb file stays tiny)."""

from __future__ import annotations

from ..image_files import read_image_file
from ..study.loading import load_case
from ..models.package import find_model
from ..progress import ConsoleProgress, sub_progress
from ..detection.retina_unet.detect import detect_case


def _registration(preset: str):
    def register(case, progress):
        from ..registration.register import register_case
        return register_case(case, preset=preset, progress=progress).transform
    return register


def _zonal_segmentation(backend: str):
    """CNN-1 (or the pretrained gland network) + CNN-2 from ProstateLesionCADLib.zones."""
    def segment(case, progress):
        import SimpleITK as sitk
        from ..zones.segment import segment_zones

        result = segment_zones(case.t2, backend=backend, case_id=case.case_id, progress=progress)
        for flag in result.report["qc"]["flags"] + result.report["warnings"]:
            print(f"note: zones: {flag}")
        return sitk.Cast(result.zones > 0, sitk.sitkUInt8), result.zones
    return segment


def run_detect(args) -> int:
    from ..detection.retina_unet.inference import expand_drop

    progress = ConsoleProgress()
    drop = [d for d in args.drop.split(",") if d.strip()]
    expand_drop(drop)  # reject e.g. --drop T2 before any work
    pkg = find_model(args.model, task="detector")
    case = load_case(args.path, progress=sub_progress(progress, 0.0, 0.1))
    zones = read_image_file(args.zones, "zones image", label=True) if args.zones else None
    prostate = read_image_file(args.prostate, "prostate image", label=True) if args.prostate else None
    transform = None
    if args.transform:
        from ..registration.register import read_transform
        transform = read_transform(args.transform, case.t2)
    report = detect_case(case, pkg, args.out, drop=drop, tta=args.tta,
                         device=args.device, prostate=prostate, zones=zones, transform=transform,
                         register=None if args.no_register else _registration(getattr(args, "register_preset", "paper")),
                         segment_zones=_zonal_segmentation(getattr(args, "zones_backend", "taps")),
                         progress=sub_progress(progress, 0.1, 1.0))
    for message in report.messages:
        print(f"note: {message}")
    print(f"{len(report.detections.detections)} detections ({pkg.name} {pkg.version}) written to {args.out}")
    return 0
