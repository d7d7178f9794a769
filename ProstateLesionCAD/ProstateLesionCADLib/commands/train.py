"""prostate-cad train <sub-verb>: train a model. Each sub-verb lives in its area's module as
`add_<sub>_arguments(parser)` and `run_<sub>(args) -> int`; add one line to SUBVERBS."""

from __future__ import annotations

import importlib

HELP = "Train a model: detector (Retina U-Net)."

# sub-verb -> (library module, help)
SUBVERBS = {
    "detector": ("retina_unet.cli_train", "Train the Retina U-Net detector with k-fold cross-validation."),
    "zones": ("commands._train_zones", "Train the zonal cascade (CNN-1 prostate, CNN-2 central gland) on T2 + label maps."),
    "focalnet": ("focalnet.cli", "Train FocalNet (Cao et al. 2019) on T2 + ADC slices, on cases or phantoms."),
}


def add_arguments(parser) -> None:
    sub = parser.add_subparsers(dest="train_verb", metavar="<sub-verb>")
    sub.required = True
    for name, (module_name, help_text) in SUBVERBS.items():
        module = importlib.import_module(f"..{module_name}", __package__)
        func = name.replace("-", "_")
        p = sub.add_parser(name, help=help_text, description=help_text)
        getattr(module, f"add_{func}_arguments")(p)
        p.set_defaults(_train_run=getattr(module, f"run_{func}"))


def run(args) -> int:
    return args._train_run(args)
