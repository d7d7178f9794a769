"""Loss study on phantoms (Cao et al. 2019, Sec. III-D, Fig. 8): CE vs FL vs FL+MFL when some
lesions are visible in only one of T2 / ADC (`make_phantom(single_modality_fraction=...)`).

Every variant trains on the same phantoms with the same seed and settings except the loss,
and is evaluated on the same held-out phantoms through the evaluation package's FROC
(criterion GGG>=1, hit within 5 mm and in the same slice, lesion masks). Besides the FROC,
the sensitivity at 1 false positive per patient is split by lesion visibility (both,
T2 only, ADC only) — the lesions MFL is meant to help with.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Optional, Sequence

import numpy as np

from ...evaluation.froc import FP_RATES, HitRule, case_hits, froc_from_hits
from ...formats import DetectionCase
from ...progress import ProgressCallback, silent, sub_progress
from .inference import detections_from_output, predict_stack
from .phantom_data import PhantomCase, phantom_cases
from .training import TrainSettings, train

PAPER_RULE = HitRule(distance_mm=5.0, same_slice=True)


def evaluate_phantoms(model, cases: Sequence[PhantomCase], k: int = 1, rule: HitRule = PAPER_RULE,
                      threshold: float = 0.02, prostate_margin_mm: Optional[float] = None
                      ) -> tuple[dict[str, Any], list[DetectionCase]]:
    """FROC of a model on prepared phantoms, plus per-visibility sensitivity at 0.5/1/2 FP per patient."""
    dets = [detections_from_output(predict_stack(model, c.stack, "cpu"), c.stack, threshold=threshold,
                                   prostate_margin_mm=prostate_margin_mm) for c in cases]
    per_case = [case_hits(c.truth, d.detections, c.lesion_mask, k, rule) for c, d in zip(cases, dets)]
    result = froc_from_hits(per_case, rule)
    result["sensitivity_by_visibility"] = _by_visibility(cases, per_case, result)
    return result, dets


def _by_visibility(cases: Sequence[PhantomCase], per_case, result: dict[str, Any]) -> dict[str, Any]:
    """Sensitivity of each visibility group at the thresholds where the FROC reaches each FP rate."""
    out: dict[str, Any] = {}
    for rate in FP_RATES:
        ok = [p for p in result.get("points", []) if p["fp_per_patient"] <= rate + 1e-12 and p["threshold"] is not None]
        threshold = min((p["threshold"] for p in ok), default=np.inf)
        found: dict[str, list[bool]] = {}
        for c, hits in zip(cases, per_case):
            lesions = [l for l in c.truth.lesions if l.ggg >= 1]
            detected = {j for s, h in zip(hits.scores, hits.hits) if s > threshold - 1e-4 for j in h}
            for j, lesion in enumerate(lesions):
                found.setdefault(c.visibility.get(lesion.id, "both"), []).append(j in detected)
        out[f"{rate:g}"] = {v: {"n": len(f), "sensitivity": float(np.mean(f)) if f else None} for v, f in found.items()}
    return out


def loss_study(n_train: int = 24, n_test: int = 12, steps: int = 300, single_modality_fraction: float = 0.5,
               seed: int = 0, size: int = 64, settings: Optional[TrainSettings] = None,
               losses: Sequence[str] = ("ce", "fl", "fl+mfl"), prostate_margin_mm: Optional[float] = None,
               progress: Optional[ProgressCallback] = None) -> dict[str, Any]:
    """Train one model per loss on the same phantoms; FROC on the same held-out phantoms."""
    progress = progress or silent
    base = settings or TrainSettings()
    train_cases = phantom_cases(range(7000 + seed * 1000, 7000 + seed * 1000 + n_train), size,
                                single_modality_fraction=single_modality_fraction, progress=sub_progress(progress, 0, 0.1))
    test_cases = phantom_cases(range(7500 + seed * 1000, 7500 + seed * 1000 + n_test), size,
                               single_modality_fraction=single_modality_fraction, progress=sub_progress(progress, 0.1, 0.2))
    out: dict[str, Any] = {"n_train": n_train, "n_test": n_test, "steps": steps, "prostate_margin_mm": prostate_margin_mm,
                           "single_modality_fraction": single_modality_fraction, "variants": {}}
    for i, loss in enumerate(losses):
        s = TrainSettings(**{**base.__dict__, "loss": loss, "steps": steps, "seed": seed})
        span = (0.2 + 0.8 * i / len(losses), 0.2 + 0.8 * (i + 1) / len(losses))
        model, info = train([c.stack for c in train_cases], s, "cpu", sub_progress(progress, *span))
        result, _ = evaluate_phantoms(model, test_cases, prostate_margin_mm=prostate_margin_mm)
        out["variants"][loss] = {"froc": result, "seconds": info["seconds"], "lambda": info["lambda"]}
    return out


def plot_froc(study: dict[str, Any], path: Path) -> None:
    """Fig. 8 style: sensitivity vs false positives per patient (log x) for each loss."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(5.5, 4.2), dpi=100)
    for loss, v in study["variants"].items():
        pts = [p for p in v["froc"].get("points", []) if p["fp_per_patient"] > 0]
        if pts:
            ax.step([p["fp_per_patient"] for p in pts], [p["sensitivity"] for p in pts], where="post", lw=2,
                    label=f"{loss.upper()}: {v['froc']['sensitivity_at_fp']['1']:.2f} at 1 FP")
    ax.set_xscale("log")
    ax.set_xlim(0.05, 20)
    ax.set_ylim(0, 1.02)
    ax.set_xlabel("false positives per patient")
    ax.set_ylabel("sensitivity (GGG>=1 lesions)")
    ax.set_title(f"FocalNet losses, phantoms ({study['single_modality_fraction']:g} single-modality lesions)")
    ax.grid(alpha=0.3)
    ax.legend(loc="lower right", fontsize=8)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)


def markdown(study: dict[str, Any]) -> str:
    lines = [f"Phantoms: {study['n_train']} training, {study['n_test']} held-out; {study['steps']} steps; "
             f"single-modality fraction {study['single_modality_fraction']:g}.", "",
             "| Loss | sens @0.5 FP | @1 FP | @2 FP | @1 FP: both / T2 only / ADC only | train s |", "|---|---|---|---|---|---|"]
    for loss, v in study["variants"].items():
        f = v["froc"]
        s = f["sensitivity_at_fp"]
        vis = f["sensitivity_by_visibility"]["1"]
        groups = " / ".join(f"{vis[g]['sensitivity']:.2f} (n={vis[g]['n']})" if g in vis and vis[g]["sensitivity"] is not None
                            else "-" for g in ("both", "t2_only", "adc_only"))
        lines.append(f"| {loss.upper()} | {s['0.5']:.2f} | {s['1']:.2f} | {s['2']:.2f} | {groups} | {v['seconds']:.0f} |")
    return "\n".join(lines) + "\n"
