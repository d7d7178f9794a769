"""`prostate-cad train focalnet`: arguments and run (light imports at module level: the CLI
builds its parser from here)."""

from __future__ import annotations

import sys
from pathlib import Path

from ._output_args import add_overwrite_argument, writes_output

SYNTHETIC_USE = ("Demonstration and testing only: trained on synthetic phantoms (no patient data); "
                 "not for clinical use, not a medical device.")


def add_arguments(parser) -> None:
    src = parser.add_mutually_exclusive_group(required=True)
    src.add_argument("--phantoms", type=int, default=None, metavar="N", help="train on N generated phantoms")
    src.add_argument("--cases", default=None, help="folder with one case sub-folder per case id (DICOM or case.json)")
    parser.add_argument("--ground-truth", default=None, help="ground-truth JSON with lesion masks and GGG (with --cases)")
    parser.add_argument("--out", required=True, help="model package folder to write")
    add_overwrite_argument(parser)
    parser.add_argument("--loss", default="fl+mfl", choices=("ce", "fl", "fl+mfl"), help="training loss (default fl+mfl)")
    parser.add_argument("--steps", type=int, default=600, help="training steps (default 600)")
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--optimizer", default="adam", choices=("adam", "sgd"), help="sgd = the paper's (GPU) schedule")
    parser.add_argument("--lr", type=float, default=1e-3)
    parser.add_argument("--size", type=int, default=64, help="pixels across the 80 mm square (paper: 128)")
    parser.add_argument("--width", type=int, default=16, help="channels of the first residual stage")
    parser.add_argument("--blocks", default="1,1,1", help="residual blocks per stage, e.g. 3,4,23,3 (ResNet-101)")
    parser.add_argument("--mfl-warmup", type=float, default=0.25,
                        help="share of the steps trained with FL alone before MFL joins (0 = the paper's schedule)")
    parser.add_argument("--patch", type=int, default=32, help="training patch size in pixels (0 = whole slices)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--phantom-seed", type=int, default=5000, help="first phantom seed (with --phantoms)")
    parser.add_argument("--validation-phantoms", type=int, default=8,
                        help="held-out phantoms for the working-point thresholds (with --phantoms, without --folds)")
    parser.add_argument("--folds", type=int, default=None, metavar="K",
                        help="K-fold cross-validation as the paper (K = 5): one network per fold, the working points "
                             "from the out-of-fold predictions; the package holds the K networks (averaged)")
    parser.add_argument("--single-modality-fraction", type=float, default=0.0,
                        help="share of phantom lesions visible on only one of T2/ADC")
    parser.add_argument("--prostate-margin-mm", type=float, default=None,
                        help="keep only local maxima within this distance of the prostate mask (default: all)")
    parser.add_argument("--name", default=None, help="model name (default: the --out folder name)")
    parser.add_argument("--device", default="auto", help="auto | cpu | cuda")


def _settings(args):
    from ..errors import ParameterError
    from ..detection.focalnet.network import FocalNetConfig
    from ..detection.focalnet.training import TrainSettings
    try:
        blocks = tuple(int(b) for b in args.blocks.split(",") if b.strip())
    except ValueError:
        raise ParameterError(f"--blocks must be comma-separated integers, got {args.blocks!r}.") from None
    network = FocalNetConfig(width=args.width, blocks=blocks, aspp_channels=max(16, 2 * args.width))
    return TrainSettings(loss=args.loss, steps=args.steps, batch_size=args.batch_size, optimizer=args.optimizer,
                         lr=args.lr, patch=args.patch, seed=args.seed, mfl_warmup=args.mfl_warmup, network=network)


@writes_output()
def run(args) -> int:
    from ..detection.focalnet.package import cross_validate, train_package
    from ..detection.focalnet.phantom_data import phantom_cases, study_cases
    from ..errors import ParameterError
    from ..progress import ConsoleProgress, sub_progress
    from ._numbers import number

    progress = ConsoleProgress()
    settings = _settings(args)
    settings.check()
    if args.folds is not None:
        number(args.folds, "--folds", 2)
        if args.phantoms is not None and args.phantoms < args.folds:
            raise ParameterError(f"--folds {args.folds} needs at least {args.folds} phantoms, got --phantoms "
                                 f"{args.phantoms}.")
    validation = []
    if args.phantoms is not None:
        seeds = range(args.phantom_seed, args.phantom_seed + args.phantoms)
        cases = phantom_cases(seeds, args.size, single_modality_fraction=args.single_modality_fraction,
                              progress=sub_progress(progress, 0.0, 0.15))
        if args.folds is None:  # with folds the working points come from the out-of-fold predictions
            vseeds = range(seeds.stop, seeds.stop + args.validation_phantoms)
            validation = phantom_cases(vseeds, args.size, single_modality_fraction=args.single_modality_fraction)
            computed_on = f"{len(validation)} held-out phantoms (seeds {vseeds.start}..{vseeds.stop - 1})"
        data = (f"{args.phantoms} synthetic phantoms (seeds {seeds.start}..{seeds.stop - 1}, "
                f"single-modality fraction {args.single_modality_fraction:g})")
        use = SYNTHETIC_USE
    else:
        if not args.ground_truth:
            raise ParameterError("--cases needs --ground-truth (lesion masks and GGG).")
        cases = study_cases(args.cases, args.ground_truth, args.size, sub_progress(progress, 0.0, 0.15))
        data = f"{len(cases)} cases from {args.cases} ({args.ground_truth})"
        computed_on = "the training cases (no held-out set)"
        use = "Research only; not a medical device."
    common = dict(device=args.device, name=args.name or Path(args.out).name, size=args.size, training_data=data,
                  intended_use=use, prostate_margin_mm=args.prostate_margin_mm,
                  extra={"command": "prostate-cad train focalnet " + " ".join(sys.argv[3:])},
                  progress=sub_progress(progress, 0.15, 1.0))
    if args.folds is not None:
        pkg, info = cross_validate(args.out, cases, args.folds, settings, **common)
        print(f"Trained FocalNet, {args.folds} folds ({settings.loss}, {settings.steps} steps each, "
              f"{info['seconds']} s) -> {pkg.root}")
        return 0
    pkg, info = train_package(args.out, cases, validation, settings, computed_on=computed_on, **common)
    print(f"Trained FocalNet ({settings.loss}, {settings.steps} steps, {info['seconds']} s) -> {pkg.root}")
    return 0
