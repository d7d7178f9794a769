"""Read lesion seed points: a ground-truth JSON (ARCHITECTURE.md) or a CSV `x,y,z,ggg[,id]` in LPS mm."""

from __future__ import annotations

import csv
import math
from pathlib import Path
from typing import Optional

from ..errors import FormatError
from ..formats import read_ground_truth
from .growing import Seed


def read_seeds(path: str | Path, case_id: Optional[str] = None) -> list[Seed]:
    """Seeds of one case. A ground-truth JSON with several cases needs `case_id`."""
    path = Path(path)
    if not path.is_file():
        raise FormatError(f"{path}: seed file not found.")
    if path.suffix.lower() == ".json":
        cases = read_ground_truth(path).cases
        if case_id is not None:
            cases = [c for c in cases if c.case_id == case_id]
            if not cases:
                raise FormatError(f"{path}: no case {case_id!r} in the seed file.")
        if len(cases) != 1:
            raise FormatError(f"{path}: holds {len(cases)} cases; say which one to grow (case id).")
        # an annotation written by grow/Export keeps the point it was grown from as seed_lps
        return [Seed(l.id, l.seed_lps or l.center_lps, l.ggg) for l in cases[0].lesions]
    return _read_csv(path)


def _read_csv(path: Path) -> list[Seed]:
    try:
        with open(path, newline="", encoding="utf-8") as handle:
            rows = [r for r in csv.reader(handle) if r and any(cell.strip() for cell in r)]
    except UnicodeDecodeError:
        raise FormatError(f"{path}: not UTF-8 text, so not a seed CSV.") from None
    if not rows:
        raise FormatError(f"{path}: the seed CSV is empty.")
    header = [c.strip().lower() for c in rows[0]]
    if header[:4] != ["x", "y", "z", "ggg"]:
        raise FormatError(f"{path}: the seed CSV must start with the header x,y,z,ggg[,id], got {','.join(rows[0])}.")
    seeds, ids = [], set()
    for n, row in enumerate(rows[1:], start=2):
        try:
            x, y, z = (float(row[i]) for i in range(3))
            ggg_value = float(row[3])
            sid = int(row[4]) if len(row) > 4 and row[4].strip() else n - 1
        except (ValueError, IndexError):
            raise FormatError(f"{path} line {n}: expected numbers x,y,z,ggg[,id], got {','.join(row)}.") from None
        if not all(math.isfinite(v) for v in (x, y, z)):
            raise FormatError(f"{path} line {n}: the seed position must be finite numbers (LPS mm).")
        if not math.isfinite(ggg_value) or ggg_value != int(ggg_value) or not 0 <= ggg_value <= 5:
            raise FormatError(f"{path} line {n}: ggg must be an integer 0..3 (4 and 5 count as 3), got {row[3]}.")
        if sid in ids:
            raise FormatError(f"{path} line {n}: seed id {sid} is used twice.")
        ids.add(sid)
        seeds.append(Seed(sid, (x, y, z), min(int(ggg_value), 3)))
    if not seeds:
        raise FormatError(f"{path}: the seed CSV has a header but no seeds.")
    return seeds
