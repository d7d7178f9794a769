"""prostate-cad detect: run a Retina U-Net detector package on a case."""

from __future__ import annotations

HELP = "Detect lesions in a case with a detector model; writes detections.json and lesion-probability.nrrd."


def add_arguments(parser) -> None:
    parser.add_argument("path", help="case: DICOM folder, folder with case.json, or a case JSON file")
    parser.add_argument("--model", required=True, help="detector model package: installed name or folder")
    parser.add_argument("--out", required=True, help="output folder")
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


def run(args) -> int:
    from ..models.package import find_model
    if find_model(args.model, verify=False).task == "focalnet":  # FocalNet package: T2 + ADC, no zones
        from ._detect_focalnet import run_detect as run_focalnet
        return run_focalnet(args)
    from ._detect_retina_unet import run_detect
    return run_detect(args)
