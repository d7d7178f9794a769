"""PI-CAI's metrics with picai_eval (Saha et al., PI-CAI challenge), beside the paper's evaluation.

`picai_metrics(pairs, ...)` hands picai_eval (`picai_eval.evaluate`, its own code) one detection
map and one label per case and returns what PI-CAI ranks by:

- AUROC: case level, on the case likelihood (the map's maximum) against csPCa present / absent;
- AP: lesion level, average precision of the candidates, a candidate being a hit when its
  overlap (IoU by default) with a ground-truth lesion is at least `min_overlap` (0.1), each
  lesion matched to at most one candidate (Hungarian matching); missed lesions enter with
  likelihood 0;
- score = (AUROC + AP) / 2, PI-CAI's ranking score;
- FROC: lesion sensitivity at a number of false positives per case, from the same hits.

Detection maps: read from a folder of `<case>_detection_map.nii.gz|.mha` files (written by
`prostate-cad export --picai`, or by any PI-CAI algorithm), or built from the detections and
their probability maps with `export.picai_maps.detection_map` on the label's grid.
Labels: a PI-CAI delineation (every non-zero voxel is csPCa) or, for a ground-truth JSON, the
voxels of the lesions whose GGG meets the criterion (their `label`, else their id, in the mask).
A case without a label file is all background when its `patient_ggg` is below the criterion; a
positive case without one cannot be given to picai_eval and is left out (listed).

Where the two evaluations mean the same thing they agree: the paper's patient-level AUC for
GGG>=2 and picai_eval's AUROC use the same case scores (highest GGG>=2 detection score = map
maximum) and the same labels whenever every positive case has its lesions delineated.
"""

from __future__ import annotations

import contextlib
import sys
from pathlib import Path
from typing import Any, Optional, Sequence

import numpy as np
import SimpleITK as sitk

from ..errors import CaseError, ParameterError
from ..formats import DetectionCase, GroundTruthCase
from ..ggg_palette import criterion_name, meets_criterion
from ..image_files import read_image_file, same_grid
from ..progress import ProgressCallback, silent
from .lesion_matching import patient_ggg

PICAI_FP_RATES = (0.125, 0.25, 0.5, 1.0, 2.0, 3.0)
OVERLAP_FUNCTIONS = ("IoU", "DSC")


def _map_file(folder: Path, case_id: str) -> Path:
    from ..export.picai_maps import MAP_SUFFIXES, map_file_name

    for suffix in MAP_SUFFIXES:
        if (folder / map_file_name(case_id, suffix)).is_file():
            return folder / map_file_name(case_id, suffix)
    raise CaseError(f"{folder}: no detection map of case {case_id!r} "
                    f"({map_file_name(case_id)}; write it with prostate-cad export --picai).")


def _label_array(gt: GroundTruthCase, criterion: int, delineation: bool) -> Optional[sitk.Image]:
    """The csPCa voxels of a case as a 0/1 image on its mask's grid (None without a mask)."""
    if gt.lesion_mask is None:
        return None
    mask = read_image_file(gt.lesion_mask, f"lesion mask of case {gt.case_id!r}", label=True)
    values = sitk.GetArrayFromImage(mask)
    if delineation:
        cspca = values > 0
    else:
        labels = [lesion.label if lesion.label is not None else lesion.id
                  for lesion in gt.lesions if meets_criterion(lesion.ggg, criterion)]
        cspca = np.isin(values, labels)
    image = sitk.GetImageFromArray(cspca.astype(np.uint8))
    image.CopyInformation(mask)
    return image


def _detection_map(gt: GroundTruthCase, det: Optional[DetectionCase], grid: Optional[sitk.Image],
                   maps_dir: Optional[Path], criterion: int) -> sitk.Image:
    if maps_dir is not None:
        image = read_image_file(_map_file(maps_dir, gt.case_id), f"detection map of case {gt.case_id!r}")
    else:
        from ..export.picai_maps import detection_map

        probability = None
        if det is not None and det.probability_map is not None:
            probability = read_image_file(det.probability_map, f"probability map of case {gt.case_id!r}")
        if grid is None:
            if probability is None:
                raise CaseError(f"Case {gt.case_id!r} has neither a lesion mask nor a probability map, so there "
                                f"is no T2 grid to draw its PI-CAI detection map on.")
            grid = probability
        image = detection_map(det or DetectionCase(gt.case_id), grid, probability, criterion).image
    if grid is not None and not same_grid(image, grid):
        raise CaseError(f"The detection map of case {gt.case_id!r} is not on the grid of its lesion mask "
                        f"{gt.lesion_mask}; PI-CAI compares them voxel by voxel.")
    return image


def picai_metrics(pairs: Sequence[tuple[GroundTruthCase, Optional[DetectionCase]]], criterion: int = 2,
                  delineations: bool = False, maps_dir: Optional[str | Path] = None, min_overlap: float = 0.1,
                  overlap: str = "IoU", fp_rates: Sequence[float] = PICAI_FP_RATES,
                  progress: Optional[ProgressCallback] = None) -> dict[str, Any]:
    """picai_eval's metrics of paired cases (`evaluate.pair_cases`) as a JSON-ready dict.

    `delineations`: the lesion masks are PI-CAI delineations (every non-zero voxel is csPCa);
    otherwise they are ground-truth JSON masks (lesion labels, GGG per lesion).
    """
    progress = progress or silent
    try:
        with contextlib.redirect_stdout(sys.stderr):  # picai_eval greets on import; stdout holds results only
            from picai_eval import evaluate as picai_evaluate
    except ImportError:
        raise ParameterError("--picai needs the picai_eval package: pip install picai_eval "
                             "(or prostate-lesion-cad[picai]).") from None
    if overlap not in OVERLAP_FUNCTIONS:
        raise ParameterError(f"--picai-overlap must be IoU or DSC, got {overlap!r}.")
    if not 0.0 < min_overlap <= 1.0:
        raise ParameterError(f"--picai-min-overlap must lie in (0, 1], got {min_overlap}.")
    folder = Path(maps_dir) if maps_dir is not None else None
    if folder is not None and not folder.is_dir():
        raise CaseError(f"{folder}: no such folder of PI-CAI detection maps.")
    y_det, y_true, ids, left_out = [], [], [], []
    for n, (gt, det) in enumerate(pairs):
        progress(n / max(len(pairs), 1), f"PI-CAI maps of {gt.case_id}")
        label = _label_array(gt, criterion, delineations)
        positive = meets_criterion(patient_ggg(gt), criterion)
        if label is None and positive:
            left_out.append(gt.case_id)
            continue
        image = _detection_map(gt, det, label, folder, criterion)
        truth = sitk.GetArrayFromImage(label) if label is not None else np.zeros(image.GetSize()[::-1], np.uint8)
        y_det.append(sitk.GetArrayFromImage(image).astype(np.float32))
        y_true.append(truth.astype(np.int32))
        ids.append(gt.case_id)
    if not ids:
        raise CaseError("No case can be given to picai_eval: every positive case lacks a lesion mask.")
    progress(0.9, "picai_eval")
    metrics = picai_evaluate(y_det=y_det, y_true=y_true, subject_list=ids, min_overlap=min_overlap,
                             overlap_func=overlap, num_parallel_calls=1)
    targets = [int(metrics.case_target[i]) for i in ids]
    n_pos = sum(targets)
    defined = 0 < n_pos < len(ids)
    auroc = float(metrics.auroc) if defined else None
    lesions = int(metrics.num_lesions)
    ap = float(metrics.AP) if lesions else None
    result: dict[str, Any] = {
        "criterion": criterion_name(criterion),
        "settings": {"min_overlap": min_overlap, "overlap": overlap, "case_likelihood": "max of the detection map",
                     "allow_unmatched_candidates_with_minimal_overlap": True,
                     "detection_maps": str(folder) if folder is not None else "built from the detections",
                     "labels": "PI-CAI delineations (non-zero = csPCa)" if delineations
                     else f"lesion masks, lesions with {criterion_name(criterion)}"},
        "n_cases": len(ids), "n_positive": n_pos, "n_lesions": lesions,
        "auroc": auroc, "ap": ap, "score": (auroc + ap) / 2 if auroc is not None and ap is not None else None,
        "froc": {f"{rate:g}": float(metrics.lesion_TPR_at_FPR(rate)) if lesions else None for rate in fp_rates},
        "left_out": left_out,
        "case_likelihood": {i: float(metrics.case_pred[i]) for i in ids},
        "case_target": dict(zip(ids, targets)),
    }
    if not defined:
        result["note"] = "AUROC undefined: the cases are all positive or all negative."
    progress(1.0, "picai_eval done")
    return result


def agreement(paper: dict[str, Any], picai: dict[str, Any]) -> dict[str, Any]:
    """The paper's patient-level AUC for the PI-CAI criterion beside picai_eval's AUROC."""
    level = paper.get(picai["criterion"], {}).get("patient", {})
    ours, theirs = level.get("auc"), picai["auroc"]
    return {"paper_patient_auc": ours, "picai_auroc": theirs,
            "difference": None if ours is None or theirs is None else abs(ours - theirs),
            "same_cases": not picai["left_out"]}


def _f(value: Optional[float]) -> str:
    return "–" if value is None else f"{value:.3f}"


def markdown(picai: dict[str, Any]) -> str:
    """The PI-CAI section of report.md."""
    s = picai["settings"]
    lines = ["", f"## PI-CAI metrics (picai_eval, {picai['criterion']})", "",
             f"{picai['n_cases']} cases ({picai['n_positive']} positive), {picai['n_lesions']} lesions; "
             f"hit = {s['overlap']} >= {s['min_overlap']:g}; case likelihood = {s['case_likelihood']}.", "",
             "| AUROC | AP | PI-CAI score |", "|---|---|---|",
             f"| {_f(picai['auroc'])} | {_f(picai['ap'])} | {_f(picai['score'])} |", "",
             "| FP per case | " + " | ".join(picai["froc"]) + " |",
             "|---|" + "---|" * len(picai["froc"]),
             "| sensitivity | " + " | ".join(_f(v) for v in picai["froc"].values()) + " |"]
    if "agreement" in picai:
        a = picai["agreement"]
        lines += ["", f"Paper patient-level AUC {_f(a['paper_patient_auc'])} vs picai_eval AUROC "
                      f"{_f(a['picai_auroc'])} (same case scores" + (")." if a["same_cases"] else
                                                                     "; some positive cases left out).")]
    if picai["left_out"]:
        lines += ["", "Left out of picai_eval (positive without a lesion mask): " + ", ".join(picai["left_out"])]
    if picai.get("note"):
        lines += ["", picai["note"]]
    return "\n".join(lines) + "\n"


def load_ground_truth(path: str | Path):
    """(GroundTruthSet, whether its masks are PI-CAI delineations) of a ground-truth JSON or a PI-CAI archive."""
    from ..formats import read_ground_truth
    from ..study.picai_archive import is_picai_archive, read_ground_truth as read_archive

    if is_picai_archive(path):
        return read_archive(path).ground_truth, True
    return read_ground_truth(path), False


def append_to_report(picai: dict[str, Any], out_dir: str | Path) -> None:
    """Add the PI-CAI section to report.md in `out_dir` (written by `report.write_report`)."""
    with open(Path(out_dir) / "report.md", "a", encoding="utf-8") as report:
        report.write(markdown(picai))
