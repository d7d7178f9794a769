"""Write a trained FocalNet as a model package (ARCHITECTURE.md: model.json + weights with sha256)."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Optional, Sequence

from ...formats import DetectionSet, GroundTruthSet
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


def write_package(out_dir: str | Path, model: FocalNet, card: dict[str, Any]) -> ModelPackage:
    """Stage weights + model.json, then move them into out_dir (nothing half-written)."""
    with staged_output_dir(out_dir) as stage:
        save_weights(model, stage / WEIGHTS_FILE)
        write_model_card(stage, card, [WEIGHTS_FILE])
    from ...models.package import load_model_package
    return load_model_package(out_dir)


def validation_thresholds(detections: DetectionSet, truth: GroundTruthSet, computed_on: str,
                          criteria: Sequence[int] = (1, 2, 3)) -> dict[str, Any]:
    """Working points (lesion level) of the evaluation package on validation cases."""
    from ...evaluation import evaluate, thresholds_block
    result = evaluate(detections, truth, criteria=list(criteria), bootstrap=0, with_dice=False)
    return thresholds_block(result, computed_on=computed_on)


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
    dets = [detections_from_output(predict_stack(model, c.stack, device), c.stack,
                                   prostate_margin_mm=prostate_margin_mm) for c in held]
    thresholds = validation_thresholds(DetectionSet(dets), GroundTruthSet([c.truth for c in held]), computed_on)
    card = model_card(model, info, name=name, version="1", size=size, training_data=training_data,
                      intended_use=intended_use, thresholds=thresholds, prostate_margin_mm=prostate_margin_mm,
                      extra=extra)
    package = write_package(out_dir, model, card)
    progress(1.0, f"FocalNet written to {out_dir}")
    return package, info
