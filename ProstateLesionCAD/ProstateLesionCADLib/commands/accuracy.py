"""Developer tool behind `make accuracy`: lesion-level AUC of a detector on held-out phantoms
(demo/accuracy.py).

Not a `prostate-cad` verb; run it as
`python -m ProstateLesionCADLib.commands.accuracy --out DIR [--phantoms N --first-seed S]`.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Optional, Sequence

from ._output_args import add_overwrite_argument, writes_output

HELP = ("Lesion-level AUC (GGG>=1, >=2, >=3, bootstrap CIs) of a detector on held-out demo phantoms; "
        "writes detections.json, ground-truth.json and evaluation/ into --out.")


def add_arguments(parser) -> None:
    from ..demo.accuracy import FIRST_SEED

    parser.add_argument("--model", default=None, help="detector package name or folder (default: the demo model)")
    parser.add_argument("--out", type=Path, required=True)
    add_overwrite_argument(parser)
    parser.add_argument("--phantoms", type=int, default=96)
    parser.add_argument("--bootstrap", type=int, default=1000)
    parser.add_argument("--first-seed", type=int, default=FIRST_SEED,
                        help="seed of the first held-out phantom (another set: 30000 was the demo model's confirmation)")


@writes_output()
def run(args) -> int:
    from ..demo.accuracy import measure
    from ..demo.detector_model import DEMO_NAME
    from ..evaluation.report import markdown_report
    from ..progress import ConsoleProgress

    metrics = measure(args.model or DEMO_NAME, args.out, args.phantoms, args.bootstrap, ConsoleProgress(), args.first_seed)
    print(markdown_report(metrics), end="")
    held = metrics["heldout_phantoms"]
    if held["skipped_seeds"]:
        print(f"{len(held['skipped_seeds'])} of {held['scored'] + len(held['skipped_seeds'])} held-out phantoms "
              f"skipped: their lesions do not fit in the gland (seeds "
              f"{', '.join(map(str, held['skipped_seeds']))})")
    for key in ("GGG>=1", "GGG>=2", "GGG>=3"):
        lesion = metrics[key]["lesion"]
        ci = lesion.get("auc_ci") or {}
        bounds = f" (95% CI {ci['low']:.3f}-{ci['high']:.3f})" if "low" in ci else ""
        auc = "undefined (needs positive and negative lesions)" if lesion["auc"] is None else f"{lesion['auc']:.3f}"
        print(f"{key}: lesion AUC {auc}{bounds} on {lesion['n']} lesions, {lesion['n_positive']} positive")
    return 0


def main(argv: Optional[Sequence[str]] = None) -> int:
    """Parse argv and run, with the verbs' error handling (exit status 2 on bad input)."""
    from ..cli import run_tool

    return run_tool(sys.modules[__name__], argv)


if __name__ == "__main__":
    sys.exit(main())
