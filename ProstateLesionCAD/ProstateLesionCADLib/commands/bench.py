"""prostate-cad bench: measure speed and memory of every area; write a Markdown report."""

from __future__ import annotations

import importlib
from pathlib import Path

HELP = "Measure speed and peak memory of each stage on the sample; write bench-output/REPORT.md."


def add_arguments(parser) -> None:
    parser.add_argument("--out", default="bench-output", help="folder for the report and figures")
    parser.add_argument("--only", default=None, help="comma-separated benchmark names to run")


def run(args) -> int:
    from ..demo import benchmarks
    from ..progress import ConsoleProgress, sub_progress

    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    names = list(benchmarks.BENCHMARKS)
    if args.only:
        wanted = set(args.only.split(","))
        names = [n for n in names if n in wanted]
    progress = ConsoleProgress()
    sections = ["# ProstateLesionCAD benchmark report\n"]
    for i, name in enumerate(names):
        module = importlib.import_module(f"{benchmarks.__name__}.{name}")
        area_out = out / name
        area_out.mkdir(parents=True, exist_ok=True)
        section = module.run(area_out, sub_progress(progress, i / len(names), (i + 1) / len(names)))
        sections.append(f"## {module.TITLE}\n\n{section.strip()}\n")
        print(f"--- {module.TITLE}\n{section.strip()}\n", flush=True)
    (out / "REPORT.md").write_text("\n".join(sections), encoding="utf-8")
    progress(1.0, f"report written to {out / 'REPORT.md'}")
    return 0
