"""One detector package from several trained ones: the ensemble of every run's members.

Ensembling is what the paper does across folds and epochs; independent training runs of the
same network ensemble the same way. Thresholds and validation AUCs are recomputed with the merged
ensemble on calibration cases, which must be cases none of the runs trained on: each run's own
validation folds were training cases of the other runs.
"""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any, Optional, Sequence

from ...errors import ParameterError
from ...models.package import ModelPackage, load_model_package, write_model_card
from ...output_files import staged_output_dir
from ...progress import silent
from .training import TrainingCase

# what must agree for members to be averaged into one ensemble
SAME = ("task", "channels", "class_names", "crop_size", "spacing", "architecture")


def merge_detectors(packages: Sequence[ModelPackage], out: str | Path, calibration: Sequence[TrainingCase],
                    computed_on: str, card: Optional[dict[str, Any]] = None, device: str = "auto",
                    progress=None) -> ModelPackage:
    """Write at `out` a package whose members are all members of `packages` (run i's files under
    members/run<i>_...), with the first package's card updated by `card` and thresholds from the
    merged ensemble's predictions on `calibration`."""
    from .inference import RetinaUNetDetector
    from .train_detector import lesion_thresholds, predicted_lesions

    progress = progress or silent
    if len(packages) < 2:
        raise ParameterError("merging needs at least two detector packages.")
    first = packages[0].card
    for pkg in packages[1:]:
        differ = [k for k in SAME if pkg.card.get(k) != first.get(k)]
        if differ:
            raise ParameterError(f"{pkg.root} cannot join {packages[0].root}: its {', '.join(differ)} differ.")
    pooled = [str(p.root) for p in packages if (p.card.get("ensemble") or {}).get("wbc_fold_pooling") == "mdt"]
    if pooled:  # the toolkit's pooling groups members by fold index, which runs share without sharing folds
        raise ParameterError(f"{', '.join(pooled)}: only packages with per-member box clustering can be merged.")
    if not any(c.gt_case is not None for c in calibration):
        raise ParameterError("the calibration cases have no ground truth to compute thresholds from.")
    merged = {k: v for k, v in first.items() if k not in ("files", "thresholds", "validation")}
    merged.update(card or {})
    merged["training"] = {"merged_runs": [{"name": p.name, "version": p.version, "training": p.card.get("training"),
                                           "validation": p.card.get("validation")} for p in packages]}
    members, files = [], []
    with staged_output_dir(Path(out)) as stage:
        (stage / "members").mkdir()
        for run, pkg in enumerate(packages):
            for m in pkg.card["ensemble"]["members"]:
                rel = f"members/run{run}_{Path(m['file']).name}"
                shutil.copyfile(pkg.root / m["file"], stage / rel)
                members.append(dict(m, file=rel, run=run))
                files.append(rel)
            for record in sorted(pkg.root.glob("training_fold*.png")) + sorted(pkg.root.glob("history_fold*.json")):
                shutil.copyfile(record, stage / f"run{run}_{record.name}")  # each run's loss/AP curves
        merged["ensemble"] = dict(first["ensemble"], members=members)
        package = write_model_card(stage, merged, files)
        detector = RetinaUNetDetector(ModelPackage(stage, package.card), device)
        predictions = predicted_lesions(detector, calibration, progress)
        merged["thresholds"], merged["validation"] = lesion_thresholds(predictions, computed_on)
        write_model_card(stage, merged, files)
    progress(1.0, f"merged package written to {out}")
    return load_model_package(out)
