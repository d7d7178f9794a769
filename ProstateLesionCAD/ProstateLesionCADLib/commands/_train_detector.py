"""`prostate-cad train detector`: arguments and run (light imports at module level: the CLI
builds its parser from here). A sub-verb of `train`, not a verb of its own."""

from __future__ import annotations

import json
import os
from pathlib import Path


def add_arguments(parser) -> None:
    parser.add_argument("--data", required=True, help="folder of pre-processed cases (one sub-folder per case id)")
    parser.add_argument("--ground-truth", required=True, help="ground-truth JSON with lesion masks and GGG")
    parser.add_argument("--split", required=True, help="split file (prostate-cad-split/1); created when absent")
    parser.add_argument("--out", required=True, help="model package folder to write")
    parser.add_argument("--config", default=None, help="JSON {network: {...}, training: {...}, channels: [...], "
                        "crop_size: [x,y,z], spacing: [x,y,z], name, version, intended_use}")
    parser.add_argument("--unlabeled", default="", help="comma-separated case ids without GGG (seg + boxes only)")
    parser.add_argument("--folds", default=None, help="comma-separated folds to train (default: all)")
    parser.add_argument("--device", default="auto", help="auto | cpu | cuda")


def _config(path) -> dict:
    """The `--config` JSON object ({} without the option)."""
    from ..errors import ParameterError

    if not path:
        return {}
    try:
        config = json.loads(Path(path).read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError) as exc:
        raise ParameterError(f"--config {path}: cannot read the training config JSON ({exc}).") from None
    if not isinstance(config, dict):
        raise ParameterError(f"--config {path}: the training config must be a JSON object.")
    return config


def _folds(text):
    from ..errors import ParameterError

    if not text:
        return None
    try:
        return [int(f) for f in text.split(",")]
    except ValueError:
        raise ParameterError(f"--folds must be comma-separated fold numbers, got {text!r}.") from None


def run(args) -> int:
    import torch

    from ..progress import ConsoleProgress, sub_progress
    from ..detection.retina_unet.network import make_config
    from ..detection.retina_unet.train_detector import DEFAULT_CHANNELS, cross_validate, load_training_cases
    from ..detection.retina_unet.training import read_or_make_split, training_settings

    cfg_file = _config(args.config)
    folds = _folds(args.folds)
    settings = training_settings(cfg_file.get("training"))
    network = make_config(**cfg_file.get("network", {}))
    channels = cfg_file.get("channels", DEFAULT_CHANNELS)
    network["n_channels"] = len(channels)
    crop_size = cfg_file.get("crop_size", [160, 160, 24])
    spacing = cfg_file.get("spacing", [0.5, 0.5, 3.0])
    network["patch_size"] = [crop_size[1], crop_size[0], crop_size[2]]
    unlabeled = [c for c in args.unlabeled.split(",") if c]
    if torch.distributed.is_available() and int(os.environ.get("WORLD_SIZE", "1")) > 1:
        torch.distributed.init_process_group("nccl" if torch.cuda.is_available() else "gloo")
    progress = ConsoleProgress()
    cases = load_training_cases(args.data, args.ground_truth, channels, crop_size, spacing, unlabeled,
                                sub_progress(progress, 0, 0.05))
    split = read_or_make_split(Path(args.split), [c.case_id for c in cases], settings["n_folds"], settings["seed"],
                               unlabeled)
    card = {"name": cfg_file.get("name", Path(args.out).name), "version": cfg_file.get("version", "1"),
            "intended_use": cfg_file.get("intended_use", "Research only; not a medical device."),
            "crop_size": crop_size, "spacing": spacing,
            "training_data": f"{len(cases)} cases from {args.data} ({args.ground_truth})"}
    cross_validate(cases, split, args.out, network, channels, settings, card, folds, args.device,
                   sub_progress(progress, 0.05, 1.0))
    if torch.distributed.is_available() and torch.distributed.is_initialized():
        torch.distributed.destroy_process_group()
    return 0
