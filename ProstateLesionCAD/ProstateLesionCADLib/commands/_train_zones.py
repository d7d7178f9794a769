"""`prostate-cad train zones`: arguments and run for the zonal cascade (ProstateLesionCADLib.zones.training).

A sub-verb of `train` (commands/train.py), not a verb of its own: hence the underscore."""

from __future__ import annotations

from ._output_args import add_overwrite_argument, writes_output
from ._training_args import add_workers_and_resume


def add_arguments(parser) -> None:
    parser.add_argument("--images", nargs="+", required=True, metavar="FILE", help="T2 volumes (NRRD/NIfTI/MHA)")
    parser.add_argument("--labels", nargs="+", required=True, metavar="FILE",
                        help="zone label maps on the same grids, in the same order (1 = CG, 2 = PZ)")
    parser.add_argument("--out", required=True, metavar="PACKAGE", help="folder of the model package to write")
    add_overwrite_argument(parser)
    parser.add_argument("--name", default="zones-cascade", help="model name in model.json")
    parser.add_argument("--steps", type=int, default=600, help="training iterations (default 600)")
    parser.add_argument("--batch", type=int, default=8, help="2.5D slices per iteration (default 8)")
    parser.add_argument("--patch", type=int, default=64, help="training patch size in working-grid pixels (1 mm)")
    parser.add_argument("--lr", type=float, default=3e-3, help="peak learning rate (one-cycle schedule)")
    parser.add_argument("--val-fraction", type=float, default=0.2, help="share of cases held out for validation")
    parser.add_argument("--val-every", type=int, default=100, help="validate every N iterations")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--threads", type=int, default=None, help="CPU threads for torch")
    add_workers_and_resume(parser, "images and settings match")


@writes_output()
def run(args) -> int:
    from ..zones.training import train_zones

    from ..progress import ConsoleProgress

    result = train_zones(args.images, args.labels, args.out, steps=args.steps, batch=args.batch, patch=args.patch,
                         lr=args.lr, val_fraction=args.val_fraction, val_every=args.val_every, seed=args.seed,
                         name=args.name, threads=args.threads, progress=ConsoleProgress(), workers=args.workers,
                         resume=args.resume)
    print_result(result)
    return 0


def print_result(result) -> None:
    """One line: where the package went and its best validation Dice per structure."""
    d = result.validation_dice
    print(f"model package {result.package_dir}: validation Dice prostate {d['prostate']:.3f}, "
          f"CG {d['cg']:.3f}, PZ {d['pz']:.3f} (best step {result.best_step}/{result.steps})")
