"""prostate-cad train <sub-verb>: train a model. Each sub-verb lives in its area's module as
`add_<sub>_arguments(parser)` and `run_<sub>(args) -> int`; add one line to SUBVERBS."""

from __future__ import annotations

from ._subverbs import add_subverbs, run_subverb

HELP = "Train a model: detector (Retina U-Net), zones (zonal cascade) or focalnet."

# sub-verb -> (library module, help)
SUBVERBS = {
    "detector": ("commands._train_detector", "Train the Retina U-Net detector with k-fold cross-validation."),
    "zones": ("commands._train_zones", "Train the zonal cascade (CNN-1 prostate, CNN-2 central gland) on T2 + label maps."),
    "focalnet": ("commands._train_focalnet", "Train FocalNet (Cao et al. 2019) on T2 + ADC slices, on cases or phantoms."),
}


def add_arguments(parser) -> None:
    add_subverbs(parser, SUBVERBS)


def run(args) -> int:
    return run_subverb(args)
