"""Voxel-level ROC of Gleason score prediction at sampled detection points (Cao et al. 2019,
Sec. II-E4).

"We group the multi-class classification into four binary classification tasks: GS>=7 vs
GS<7, GS>=4+3 vs GS<=3+4, GS>=8 vs GS<8 and GS>=9 vs GS<9. A voxel-level ROC is assessed
for each task. Specifically, to mimic biopsy setting, twelve detection voxels were sampled
for each case by finding the localized points." Here the sampled voxels of a case are its
`n_points` highest-scored detections (the localised points). Each is labelled by the ground
truth at its centre: the GGG of the lesion whose mask voxel contains it (or, without a mask,
of the lesion whose centre lies within `radius_mm`), 0 outside every lesion (non-lesion).
Its score for task "GGG>=k" is P(GGG>=k) = the sum of its class_scores for classes >= k
(the cumulative ordinal output of FocalNet); without class_scores, its score when its
predicted GGG >= k, else 0.

Task mapping to our GGG classes (GGG1 = GS 3+3, GGG2 = 3+4, GGG3 = 4+3 or higher):
GS>=7 -> GGG>=2, GS>=4+3 -> GGG>=3. GS>=8 and GS>=9 cannot be told apart from GS 4+3 in our
ground truth (GGG3 means "3 or higher"), so those two tasks are reported as undefined with
that reason. Two populations are reported: all sampled points (non-lesion points are
negatives), and the points inside lesions only (classification without detection errors).
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any, Optional, Sequence

import numpy as np
import SimpleITK as sitk

from ..formats import Detection, DetectionCase, GroundTruthCase
from ..ggg_palette import criterion_name
from .roc import auc_note, roc_auc, roc_curve

N_POINTS = 12
TASKS = (("GS>=7", 2), ("GS>=4+3", 3), ("GS>=8", None), ("GS>=9", None))
UNDEFINED_NOTE = "not computable: the ground truth's GGG3 ('3 or higher') does not separate GS 4+3, 8 and >= 9."


def sampled_points(detections: Sequence[Detection], n_points: int = N_POINTS) -> list[Detection]:
    """The case's n highest-scored detections (file order breaks ties)."""
    order = sorted(range(len(detections)), key=lambda i: (-detections[i].score, i))
    return [detections[i] for i in order[:n_points]]


def point_ggg(det: Detection, truth: GroundTruthCase, mask: Optional[sitk.Image], mask_array: Optional[np.ndarray],
              radius_mm: float = 5.0) -> Optional[int]:
    """GGG of the lesion at the detection centre; None outside every lesion (non-lesion)."""
    if mask is not None and mask_array is not None:
        idx = mask.TransformPhysicalPointToIndex(tuple(map(float, det.center_lps)))
        if all(0 <= i < n for i, n in zip(idx, mask.GetSize())):
            label = int(mask_array[idx[2], idx[1], idx[0]])
            for lesion in truth.lesions:
                if lesion.label is not None and lesion.label == label and label > 0:
                    return lesion.ggg
        if any(lesion.label is not None for lesion in truth.lesions):
            return None
    near = [l for l in truth.lesions if math.dist(l.center_lps, det.center_lps) <= radius_mm]
    return max((l.ggg for l in near), default=None)


def task_score(det: Detection, k: int) -> float:
    if det.class_scores:
        return float(sum(v for c, v in det.class_scores.items() if c.isdigit() and int(c) >= k))
    return float(det.score) if det.ggg >= k else 0.0


def voxel_roc(cases: Sequence[tuple[GroundTruthCase, Optional[DetectionCase], Optional[sitk.Image]]],
              n_points: int = N_POINTS, radius_mm: float = 5.0) -> dict[str, Any]:
    """The four tasks over (truth, detections, lesion mask or None) triples."""
    points: list[tuple[Optional[int], Detection]] = []
    for truth, dcase, mask in cases:
        array = sitk.GetArrayViewFromImage(mask) if mask is not None else None
        for det in sampled_points(dcase.detections if dcase else [], n_points):
            points.append((point_ggg(det, truth, mask, array, radius_mm), det))
    result: dict[str, Any] = {"n_points_per_case": n_points, "n_cases": len(cases), "n_points": len(points),
                              "n_points_in_lesions": sum(g is not None for g, _ in points), "tasks": {}}
    for name, k in TASKS:
        if k is None:
            result["tasks"][name] = {"criterion": None, "note": UNDEFINED_NOTE}
            continue
        entry: dict[str, Any] = {"criterion": criterion_name(k)}
        for population, chosen in (("all_points", points), ("lesion_points", [p for p in points if p[0] is not None])):
            labels = [g is not None and g >= k for g, _ in chosen]
            scores = [task_score(d, k) for _, d in chosen]
            n_pos = int(sum(labels))
            block: dict[str, Any] = {"n": len(labels), "n_positive": n_pos, "auc": roc_auc(scores, labels) if labels else None}
            note = auc_note(n_pos, len(labels) - n_pos)
            if note:
                block["note"] = note
            if block["auc"] is not None:
                fpr, tpr, _ = roc_curve(scores, labels)
                block["curve"] = {"fpr": [round(float(v), 5) for v in fpr], "tpr": [round(float(v), 5) for v in tpr]}
            entry[population] = block
        result["tasks"][name] = entry
    return result


def markdown(result: dict[str, Any]) -> str:
    lines = [f"## Voxel-level ROC of Gleason score (FocalNet, {result['n_points_per_case']} sampled points per case)", "",
             f"{result['n_points']} sampled points in {result['n_cases']} cases, "
             f"{result['n_points_in_lesions']} of them inside lesions.", "",
             "| Task | AUC, all points (n, positives) | AUC, lesion points (n, positives) |", "|---|---|---|"]
    for name, entry in result["tasks"].items():
        if entry.get("criterion") is None:
            lines.append(f"| {name} | {entry['note']} | |")
            continue
        cells = []
        for population in ("all_points", "lesion_points"):
            b = entry[population]
            auc = "undefined" if b["auc"] is None else f"{b['auc']:.3f}"
            cells.append(f"{auc} ({b['n']}, {b['n_positive']})")
        lines.append(f"| {name} ({entry['criterion']}) | {cells[0]} | {cells[1]} |")
    return "\n".join(lines) + "\n"


def plot(result: dict[str, Any], path: Path) -> None:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(5, 5), dpi=100)
    ax.plot([0, 1], [0, 1], color="0.7", lw=1, ls="--")
    drawn = 0
    for name, entry in result["tasks"].items():
        block = entry.get("all_points") or {}
        if block.get("curve"):
            ax.plot(block["curve"]["fpr"], block["curve"]["tpr"], lw=2, label=f"{name}: AUC {block['auc']:.3f}")
            drawn += 1
    if not drawn:
        ax.text(0.5, 0.5, "no task with both classes among the sampled points", ha="center", va="center", fontsize=9)
    ax.set_xlabel("1 - specificity")
    ax.set_ylabel("sensitivity")
    ax.set_title(f"Voxel-level ROC, {result['n_points_per_case']} points per case")
    if drawn:
        ax.legend(loc="lower right", fontsize=8)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)


def evaluate_files(pairs: Sequence[tuple[GroundTruthCase, Optional[DetectionCase]]], n_points: int = N_POINTS,
                   radius_mm: float = 5.0) -> dict[str, Any]:
    """`voxel_roc` for paired cases, reading each case's lesion mask when the ground truth names one."""
    from ..errors import ParameterError
    from ..image_files import read_image_file
    if n_points < 1:
        raise ParameterError(f"--voxel-roc-points must be at least 1, got {n_points}.")
    cases = [(truth, dcase, read_image_file(truth.lesion_mask, "lesion mask", label=True) if truth.lesion_mask else None)
             for truth, dcase in pairs]
    return voxel_roc(cases, n_points, radius_mm)


def write_outputs(result: dict[str, Any], out_dir: Path) -> None:
    """voxel_roc.png and a section appended to report.md (metrics.json holds the numbers)."""
    plot(result, Path(out_dir) / "voxel_roc.png")
    report = Path(out_dir) / "report.md"
    previous = report.read_text(encoding="utf-8") if report.is_file() else ""
    report.write_text(previous + "\n" + markdown(result), encoding="utf-8")
