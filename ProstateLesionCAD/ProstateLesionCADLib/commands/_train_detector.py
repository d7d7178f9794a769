"""`prostate-cad train detector`: arguments and run (light imports at module level: the CLI
builds its parser from here). A sub-verb of `train`, not a verb of its own."""

from __future__ import annotations

from pathlib import Path

from ._output_args import add_overwrite_argument, writes_output
from ._training_args import add_workers_and_resume


def add_arguments(parser) -> None:
    parser.add_argument("--data", required=True, help="folder of pre-processed cases (one sub-folder per case id)")
    parser.add_argument("--ground-truth", required=True, help="ground-truth JSON with lesion masks and GGG")
    parser.add_argument("--split", required=True, help="split file (prostate-cad-split/1); created when absent")
    parser.add_argument("--out", required=True, help="model package folder to write")
    add_overwrite_argument(parser)
    parser.add_argument("--config", default=None, help="JSON {network: {...}, training: {...}, channels: [...], "
                        "crop_size: [x,y,z], spacing: [x,y,z], name, version, intended_use}")
    parser.add_argument("--unlabeled", default="", help="comma-separated case ids without GGG (seg + boxes only)")
    parser.add_argument("--folds", default=None, help="comma-separated folds to train (default: all)")
    parser.add_argument("--device", default="auto", help="auto | cpu | cuda")
    add_workers_and_resume(parser, "its configuration matches")


def _config(path) -> dict:
    """The `--config` JSON object ({} without the option)."""
    from ..errors import ParameterError
    from ..formats import load_json_object

    return load_json_object(Path(path), ParameterError, "training config") if path else {}


def _folds(text):
    from ..errors import ParameterError

    if not text:
        return None
    try:
        return [int(f) for f in text.split(",")]
    except ValueError:
        raise ParameterError(f"--folds must be comma-separated fold numbers, got {text!r}.") from None


@writes_output()
def run(args) -> int:
    from ..detection.retina_unet.train_detector import train_detector
    from ..progress import ConsoleProgress

    train_detector(args.data, args.ground_truth, args.split, args.out, config=_config(args.config),
                   unlabeled=[c for c in args.unlabeled.split(",") if c], folds=_folds(args.folds),
                   device=args.device, progress=ConsoleProgress(), workers=args.workers, resume=args.resume)
    return 0
