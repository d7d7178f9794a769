"""prostate-cad train <sub-verb>: train a model. Each sub-verb is a module commands/_train_<sub>.py
with `add_arguments(parser)` and `run(args) -> int`, named in SUBVERBS."""

from __future__ import annotations

from . import _train_detector, _train_focalnet, _train_zones
from ._subverbs import SubVerb, add_subverbs, run_subverb

HELP = "Train a model: detector (Retina U-Net), zones (zonal cascade) or focalnet."

SUBVERBS = (
    SubVerb("detector", "Train the Retina U-Net detector with k-fold cross-validation.",
            _train_detector.add_arguments, _train_detector.run),
    SubVerb("zones", "Train the zonal cascade (CNN-1 prostate, CNN-2 central gland) on T2 + label maps.",
            _train_zones.add_arguments, _train_zones.run),
    SubVerb("focalnet", "Train FocalNet (Cao et al. 2019) on T2 + ADC slices, on cases or phantoms.",
            _train_focalnet.add_arguments, _train_focalnet.run),
)


def add_arguments(parser) -> None:
    add_subverbs(parser, SUBVERBS)


def run(args) -> int:
    return run_subverb(args)
