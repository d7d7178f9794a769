"""Run the benchmarks and put their sections together into REPORT.md."""

from __future__ import annotations

import importlib
from pathlib import Path
from typing import Optional, Sequence

from ...output_files import staged_output_dir
from ...progress import ProgressCallback, silent, sub_progress
from . import BENCHMARKS


def run_benchmarks(out_dir: str | Path, only: Optional[Sequence[str]] = None,
                   progress: Optional[ProgressCallback] = None, overwrite: Optional[bool] = None) -> Path:
    """Run BENCHMARKS (or the `only` ones, in BENCHMARKS order), each into out_dir/<name>/;
    print each section as it finishes and write out_dir/REPORT.md. Returns its path. The
    folder appears when every area is done (staged); an earlier report's folder is replaced
    only with `overwrite` (unset: as the command's --overwrite says)."""
    progress = progress or silent
    out = Path(out_dir)
    names = [n for n in BENCHMARKS if only is None or n in set(only)]
    sections = ["# ProstateLesionCAD benchmark report\n"]
    with staged_output_dir(out, overwrite) as stage:
        for i, name in enumerate(names):
            module = importlib.import_module(f"{__package__}.{name}")
            area_out = stage / name
            area_out.mkdir(parents=True, exist_ok=True)
            section = module.run(area_out, sub_progress(progress, i / len(names), (i + 1) / len(names)))
            sections.append(f"## {module.TITLE}\n\n{section.strip()}\n")
            print(f"--- {module.TITLE}\n{section.strip()}\n", flush=True)
        (stage / "REPORT.md").write_text("\n".join(sections), encoding="utf-8")
    report = out / "REPORT.md"
    progress(1.0, f"report written to {report}")
    return report
