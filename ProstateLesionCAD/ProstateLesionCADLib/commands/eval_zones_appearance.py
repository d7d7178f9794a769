"""Developer tool: zones models on held-out phantoms of both T2 appearances and on real studies'
split QC (demo/zones_appearance_eval.py).

Not a `prostate-cad` verb (cli.DEVELOPER_TOOLS); run it as
`python -m ProstateLesionCADLib.commands.eval_zones_appearance --out DIR [--models M...] [--n N]
[--first-seed S] [--real T2...]`. Writes DIR/zones-appearance.json and prints it.
"""

from __future__ import annotations

import sys

from ._output_args import add_overwrite_argument, writes_output

HELP = ("Prostate / CG / PZ Dice of zones models on held-out default and realistic phantoms, and the split QC "
        "of the TAPS gland + their CNN-2 on ProstateX-0000 and other real T2 studies (DIR/zones-appearance.json).")


def add_arguments(parser) -> None:
    parser.add_argument("--out", required=True, metavar="DIR", help="folder for zones-appearance.json")
    add_overwrite_argument(parser)
    parser.add_argument("--models", nargs="+", default=None,
                        help="zones model packages, names or folders (default: the bundled demo cascade)")
    parser.add_argument("--n", type=int, default=8, help="held-out phantoms per appearance (default 8)")
    parser.add_argument("--first-seed", type=int, default=9901, help="held-out phantom-set seed (default 9901)")
    parser.add_argument("--real", nargs="*", default=[], metavar="T2",
                        help="more real T2 images or DICOM series folders (ProstateX-0000 is always measured)")


@writes_output()
def run(args) -> int:
    import json
    from pathlib import Path

    from ..demo.zones_appearance_eval import measure
    from ..zones import DEMO_MODEL
    from ._numbers import number

    number(args.n, "--n", 1, 1000)
    result = measure(args.models or [DEMO_MODEL], args.n, args.first_seed, tuple(args.real))
    from ..output_files import atomic_file

    text = json.dumps(result, indent=1, ensure_ascii=False)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    with atomic_file(out / "zones-appearance.json") as handle:
        handle.write(text)
    print(text)
    return 0


if __name__ == "__main__":
    from ..cli import run_tool

    sys.exit(run_tool(sys.modules[__name__]))
