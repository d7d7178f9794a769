"""Write a trained FocalNet as a model package (ARCHITECTURE.md: model.json + weights with sha256)."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Optional, Sequence

import numpy as np

from ...errors import ParameterError
from ...formats import DetectionCase
from ...models.package import ModelPackage, write_model_card
from ...output_files import staged_output_dir
from ...progress import ProgressCallback, silent, sub_progress
from . import ordinal
from .inference import DEFAULT_MIN_DISTANCE_MM, DEFAULT_THRESHOLD, detections_from_output, predict_stack
from .network import FocalNet
from .phantom_data import PhantomCase
from .preprocessing import ADC_RANGE, FOV_MM, T2_UPPER_JITTER
from .training import WEIGHTS_FILE, TrainSettings, save_weights, train


def model_card(model: FocalNet, info: dict[str, Any], *, name: str, version: str, size: int, fov_mm: float = FOV_MM,
               training_data: str, intended_use: str, thresholds: Optional[dict] = None,
               prostate_margin_mm: Optional[float] = None, extra: Optional[dict] = None) -> dict[str, Any]:
    card: dict[str, Any] = {
        "name": name, "version": version, "task": "focalnet",
        "architecture": {"name": "FocalNet (Cao et al. 2019): DeepLab-style residual CNN, 5 sigmoid ordinal outputs",
                         **model.config.to_dict()},
        "channels": ["T2", "ADC"],
        "input": {"size": size, "fov_mm": fov_mm, "t2_window": "air .. bladder intensity",
                  "t2_upper_jitter": list(T2_UPPER_JITTER), "adc_range": list(ADC_RANGE)},
        "class_names": list(ordinal.CLASS_NAMES),
        "ggg_of_class": list(ordinal.CLASS_TO_GGG),
        "localisation": {"threshold": DEFAULT_THRESHOLD, "min_distance_mm": DEFAULT_MIN_DISTANCE_MM,
                         "prostate_margin_mm": prostate_margin_mm,
                         "rule": "2D local maxima of P(lesion) per slice"
                                 + ("" if prostate_margin_mm is None else
                                    f", within {prostate_margin_mm:g} mm of the prostate mask when the case has one")},
        "training": {k: v for k, v in info.items() if k != "history"},
        "training_data": training_data,
        "intended_use": intended_use,
        "licence": "Apache-2.0",
    }
    if thresholds:
        card["thresholds"] = thresholds
    card.update(extra or {})
    return card


def write_package(out_dir: str | Path, models: Sequence[FocalNet] | FocalNet, card: dict[str, Any],
                  overwrite: Optional[bool] = None) -> ModelPackage:
    """Stage the weights (one network, or one per fold as `ensemble.members`) + model.json, then
    move them into out_dir (nothing half-written)."""
    with staged_output_dir(out_dir, overwrite) as stage:
        if isinstance(models, FocalNet):
            save_weights(models, stage / WEIGHTS_FILE)
            files = [WEIGHTS_FILE]
        else:
            (stage / "members").mkdir()
            files = [m["file"] for m in card["ensemble"]["members"]]
            for model, name in zip(models, files):
                save_weights(model, stage / name)
        write_model_card(stage, card, files)
    from ...models.package import load_model_package
    return load_model_package(out_dir)


def held_out_detections(model: FocalNet | Sequence[FocalNet], cases: Sequence[PhantomCase], device: str,
                        prostate_margin_mm: Optional[float]) -> list[tuple[PhantomCase, DetectionCase]]:
    """Every local maximum (the localisation threshold, no working point) of each case."""
    return [(c, detections_from_output(predict_stack(model, c.stack, device), c.stack,
                                       prostate_margin_mm=prostate_margin_mm)) for c in cases]


def _validation(predictions: list[tuple[PhantomCase, DetectionCase]], computed_on: str) -> tuple[dict, dict]:
    """Working points (lesion level, evaluation.thresholds) and, for the card, the paper's FROC
    protocol on the same predictions (sensitivity at 1 FP per patient, FP at 80/90%)."""
    from ...evaluation.focalnet_protocol import focalnet_froc
    from ...evaluation.thresholds import lesion_working_points

    thresholds, validation = lesion_working_points([(c.truth, d) for c, d in predictions], computed_on)
    curves = focalnet_froc([(c.truth, d.detections, c.lesion_mask) for c, d in predictions])
    validation["froc_focalnet_protocol"] = {
        name: {"n_lesions": f["n_lesions"], "sensitivity_at_1_fp": f["sensitivity_at_fp"].get("1"),
               "fp_at_sensitivity": {k: f["fp_at_sensitivity"][k] for k in ("0.8", "0.9")}}
        for name, f in curves.items() if f["n_lesions"]}
    validation["computed_on"] = computed_on
    return thresholds, validation


def fold_spread(predictions: list[tuple[PhantomCase, DetectionCase]],
                folds: Sequence[Sequence[str]]) -> dict[str, dict[str, Any]]:
    """Per group of the paper's FROC protocol, the sensitivity at 1 FP per patient of each
    validation fold, with their mean and SD (n - 1), as the paper reports its folds (mean ± SD,
    Tables II-III); a fold without lesions of the group has None and stays out of both."""
    from ...evaluation.focalnet_protocol import focalnet_froc

    by_id = {c.truth.case_id: (c, d) for c, d in predictions}
    per_group: dict[str, list[Optional[float]]] = {}
    for ids in folds:
        curves = focalnet_froc([(by_id[i][0].truth, by_id[i][1].detections, by_id[i][0].lesion_mask) for i in ids])
        for name, curve in curves.items():
            per_group.setdefault(name, []).append(curve["sensitivity_at_fp"]["1"] if curve["n_lesions"] else None)
    out = {}
    for name, values in per_group.items():
        known = [v for v in values if v is not None]
        out[name] = {"sensitivity_at_1_fp_per_fold": values,
                     "mean": float(np.mean(known)) if known else None,
                     "sd": float(np.std(known, ddof=1)) if len(known) > 1 else None}
    return out


def train_package(out_dir: str | Path, cases: Sequence[PhantomCase], validation: Sequence[PhantomCase],
                  settings: TrainSettings, *, device: str, name: str, size: int, training_data: str,
                  computed_on: str, intended_use: str, prostate_margin_mm: Optional[float] = None,
                  extra: Optional[dict] = None, progress: Optional[ProgressCallback] = None
                  ) -> tuple[ModelPackage, dict[str, Any]]:
    """Train on `cases`, set the working points on `validation` (the training cases when empty)
    and write the package; returns it with the training info (`train`)."""
    progress = progress or silent
    settings.check()
    model, info = train([c.stack for c in cases], settings, device, sub_progress(progress, 0.0, 0.94))
    held = list(validation) or list(cases)
    thresholds, summary = _validation(held_out_detections(model, held, device, prostate_margin_mm), computed_on)
    card = model_card(model, info, name=name, version="1", size=size, training_data=training_data,
                      intended_use=intended_use, thresholds=thresholds, prostate_margin_mm=prostate_margin_mm,
                      extra={"validation": summary, **(extra or {})})
    package = write_package(out_dir, model, card)
    progress(1.0, f"FocalNet written to {out_dir}")
    return package, info


def cross_validate(out_dir: str | Path, cases: Sequence[PhantomCase], n_folds: int, settings: TrainSettings, *,
                   device: str, name: str, size: int, training_data: str, intended_use: str,
                   prostate_margin_mm: Optional[float] = None, extra: Optional[dict] = None,
                   progress: Optional[ProgressCallback] = None) -> tuple[ModelPackage, dict[str, Any]]:
    """`train focalnet --folds N`: Cao et al.'s k-fold cross-validation (Sec. II-E1, 5 folds).

    The cases are split as `train detector` splits them (`retina_unet.training.make_split`,
    seeded by settings.seed); each fold trains on the other folds and predicts its own cases,
    so every case is predicted once by a network that never saw it. The working points come
    from those out-of-fold predictions (`evaluation.thresholds.lesion_working_points`, as the
    Retina U-Net package's), and the package holds the N fold networks as `ensemble.members`
    (inference averages them), like the Retina U-Net package's fold members.
    """
    from ..retina_unet.training import make_split

    progress = progress or silent
    settings.check()
    by_id = {c.truth.case_id: c for c in cases}
    if len(by_id) != len(cases):
        raise ParameterError("--folds: two training cases share a case id; the folds need distinct ids.")
    if n_folds < 2:
        raise ParameterError(f"--folds must be at least 2, got {n_folds}.")
    split = make_split(list(by_id), n_folds, settings.seed)
    models, predictions, infos = [], [], []
    for f, held_ids in enumerate(split["folds"]):
        train_cases = [by_id[c] for g, ids in enumerate(split["folds"]) if g != f for c in ids]
        model, info = train([c.stack for c in train_cases], settings, device,
                            sub_progress(progress, 0.95 * f / n_folds, 0.95 * (f + 1) / n_folds))
        models.append(model)
        infos.append({k: v for k, v in info.items() if k not in ("history", "settings")})
        predictions += held_out_detections(model, [by_id[c] for c in held_ids], device, prostate_margin_mm)
    computed_on = f"out-of-fold predictions of {n_folds} folds ({len(predictions)} cases), lesion level"
    thresholds, summary = _validation(predictions, computed_on)
    summary["froc_focalnet_protocol_folds"] = fold_spread(predictions, split["folds"])
    members = [{"file": f"members/fold{f}.pt", "fold": f, "n_training_cases": len(cases) - len(ids)}
               for f, ids in enumerate(split["folds"])]
    info = {"seconds": round(sum(i["seconds"] for i in infos), 1), "settings": settings.to_dict(),
            "folds": infos, "n_folds": n_folds, "split": split}
    card = model_card(models[0], info, name=name, version="1", size=size, training_data=training_data,
                      intended_use=intended_use, thresholds=thresholds, prostate_margin_mm=prostate_margin_mm,
                      extra={"validation": summary,
                             "ensemble": {"members": members, "combination": "mean of the members' sigmoid outputs"},
                             **(extra or {})})
    package = write_package(out_dir, models, card)
    progress(1.0, f"FocalNet ({n_folds} folds) written to {out_dir}")
    return package, info
