"""prostate-cad models <sub-verb>: manage model packages.

Each sub-verb lives in the library module that implements it, as
`add_<sub>_arguments(parser)` and `run_<sub>(args) -> int`; add one line to SUBVERBS.
"""

from __future__ import annotations

from ._subverbs import add_subverbs, run_subverb

HELP = "Manage model packages: list, install from a file or URL, import-mdt, fetch-published."

# sub-verb -> (library module, help)
SUBVERBS = {
    "list": ("models.catalog", "List installed model packages and catalogued ones that can be installed."),
    "install": ("models.catalog", "Install a model package from a folder, .zip/.tar.gz, URL or catalogue name."),
    "import-mdt": ("detection.retina_unet.published", "Convert a folder of Medical Detection Toolkit Retina U-Net checkpoints into a model package."),
    "fetch-published": ("detection.retina_unet.published", "Download the authors' 25 published checkpoints, verify their git blob ids, import them."),
}


def add_arguments(parser) -> None:
    add_subverbs(parser, SUBVERBS)


def run(args) -> int:
    return run_subverb(args)
