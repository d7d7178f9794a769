"""Developer tool: retrain the bundled zones demo model with its recipe (demo/zones_model.py).

Not a `prostate-cad` verb (cli.DEVELOPER_TOOLS); run it as
`python -m ProstateLesionCADLib.commands.train_demo_zones --out DIR [--cases N --steps N --appearance default|realistic|mixed]`.
The defaults reproduce the shipped `zones-demo-cascade` package.
"""

from __future__ import annotations

import sys

from ._output_args import add_overwrite_argument, writes_output

HELP = "Train the bundled zones demo model (zonal cascade on synthetic phantoms) into a model package folder."


def add_arguments(parser) -> None:
    from ..demo.zones_model import DEMO_APPEARANCE, DEMO_CASES, DEMO_RECIPE, DEMO_TRAIN_SEED

    parser.add_argument("--out", required=True, metavar="DIR", help="folder of the model package to write")
    add_overwrite_argument(parser)
    parser.add_argument("--cases", type=int, default=DEMO_CASES,
                        help=f"phantoms to train and validate on (default {DEMO_CASES})")
    parser.add_argument("--steps", type=int, default=DEMO_RECIPE["steps"],
                        help=f"training iterations (default {DEMO_RECIPE['steps']})")
    parser.add_argument("--seed", type=int, default=DEMO_TRAIN_SEED,
                        help=f"phantom-set seed (default {DEMO_TRAIN_SEED}, the shipped model's)")
    parser.add_argument("--appearance", choices=("default", "realistic", "mixed"), default=DEMO_APPEARANCE,
                        help="T2 appearance of the training phantoms: default, realistic (phantoms/t2_appearance.py) "
                             "or mixed (--cases of each, different anatomies)")


@writes_output()
def run(args) -> int:
    from ..demo.zones_model import train_demo_cascade
    from ..progress import ConsoleProgress
    from ._train_zones import print_result

    result = train_demo_cascade(args.out, n_cases=args.cases, seed=args.seed, steps=args.steps,
                                appearance=args.appearance, progress=ConsoleProgress())
    print_result(result)
    return 0


if __name__ == "__main__":
    from ..cli import run_tool

    sys.exit(run_tool(sys.modules[__name__]))
