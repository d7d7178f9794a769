"""`prostate-cad train detector`: data loading, cross-validation, model package.

Inputs: a folder of pre-processed cases (`preprocessing.save_preprocessed`, one
sub-folder per case id), a ground-truth JSON (lesion masks + GGG per lesion) and a fixed
split file (created on first use). Output: a detector model package whose members are
the best `save_n_models` epochs of every fold, with working-point thresholds computed on
the validation folds (each case predicted by the fold that did not train on it).
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path
from typing import Any, Callable, Optional, Sequence

import numpy as np
import SimpleITK as sitk
import torch

from ...errors import CaseError, ParameterError
from ...formats import GroundTruthCase, read_ground_truth
from ...models.package import ModelPackage, load_model_package, write_model_card
from ...output_files import staged_output_dir
from ...progress import silent, sub_progress
from .inference import regrid
from .network import make_config
from .training import (FoldResult, TrainingCase, fold_started, read_or_make_split, train_fold, training_settings)

DEFAULT_CHANNELS = ["T2", "DWI_LOW", "DWI_HIGH", "ADC", "KTRANS", "DCE_T10", "DCE_T20", "DCE_T30",
                    "PROSTATE", "CG", "PZ"]
DEFAULT_CROP_SIZE = [160, 160, 24]  # x, y, z voxels (main paper)
DEFAULT_SPACING = [0.5, 0.5, 3.0]  # mm
CLASS_NAMES = ["background", "GGG0", "GGG1", "GGG2", "GGG3+"]


def training_case(prep, lesion_mask: Optional[sitk.Image], gt_case: Optional[GroundTruthCase],
                  channels: Sequence[str], crop_size: Sequence[int], spacing: Sequence[float],
                  classify: bool = True) -> TrainingCase:
    """A pre-processed case + its lesion mask (any grid, label = lesion label) on the model grid."""
    prep = regrid(prep, crop_size, spacing)
    image = prep.to_mdt(channels)
    labels = np.zeros(image.shape[1:], np.int16)
    ggg: dict[int, Optional[int]] = {}
    if lesion_mask is not None:
        from ...preprocessing.crop_geometry import resample
        on_crop = sitk.GetArrayFromImage(resample(sitk.Cast(lesion_mask, sitk.sitkUInt16), prep.geometry.crop,
                                                  "nearest"))
        labels = np.ascontiguousarray(np.transpose(on_crop, (1, 2, 0))).astype(np.int16)  # (Y, X, Z)
    if gt_case is not None:
        for lesion in gt_case.lesions:
            ggg[int(lesion.label if lesion.label is not None else lesion.id)] = None if not classify else lesion.ggg
    for label in np.unique(labels):
        if label > 0 and int(label) not in ggg:
            ggg[int(label)] = None
    return TrainingCase(prep.case_id, image.astype(np.float32), labels, ggg, classify, prep.geometry, gt_case)


def load_training_cases(data_dir: str | Path, ground_truth: str | Path, channels: Sequence[str],
                        crop_size: Sequence[int], spacing: Sequence[float], unlabeled: Sequence[str] = (),
                        progress=None) -> list[TrainingCase]:
    from ...preprocessing.preprocess import load_preprocessed

    progress = progress or silent
    gt = read_ground_truth(ground_truth)
    data_dir = Path(data_dir)
    cases = []
    for i, gt_case in enumerate(gt.cases):
        folder = data_dir / gt_case.case_id
        if not folder.is_dir():
            raise CaseError(f"{folder}: no pre-processed case for {gt_case.case_id} of {ground_truth}.")
        progress(i / len(gt.cases), f"loading {gt_case.case_id}")
        mask = sitk.ReadImage(str(gt_case.lesion_mask)) if gt_case.lesion_mask else None
        if mask is None and gt_case.lesions:
            raise CaseError(f"{ground_truth}: case {gt_case.case_id} has lesions but no lesion_mask to train on.")
        cases.append(training_case(load_preprocessed(folder), mask, gt_case, channels, crop_size, spacing,
                                   classify=gt_case.case_id not in set(unlabeled)))
    return cases


def predicted_lesions(detector, cases: Sequence[TrainingCase], progress=None) -> list[tuple[TrainingCase, Any]]:
    """Each case with its detections by `detector` on the case's own crop (input to `lesion_thresholds`)."""
    from .inference import to_detection_case

    progress = progress or silent
    predictions = []
    for i, case in enumerate(cases):
        progress(i / len(cases), f"case {i + 1}/{len(cases)}")
        predictions.append((case, to_detection_case(detector.predict(case.image), case.geometry, case.case_id)))
    return predictions


def lesion_thresholds(val_predictions: list[tuple[TrainingCase, Any]], computed_on: str) -> tuple[dict, dict]:
    """Working points per criterion GGG>=k from validation predictions (evaluation helper)."""
    from ...evaluation.thresholds import lesion_working_points

    return lesion_working_points([(case.gt_case, dcase) for case, dcase in val_predictions
                                  if case.gt_case is not None], computed_on)


def cross_validate(cases: Sequence[TrainingCase], split: dict[str, Any], out: str | Path, config: dict[str, Any],
                   channels: Sequence[str], settings: dict[str, Any], card: dict[str, Any],
                   folds: Optional[Sequence[int]] = None, device: str = "auto",
                   progress: Optional[Callable[[float, str], None]] = None, workers: int = 0,
                   resume: bool = False, overwrite: Optional[bool] = None) -> Optional[ModelPackage]:
    """Train the folds and write the model package at `out` (rank 0 only). The folds' work
    folder `.<out>.training` beside `out` keeps finished folds and the checkpoint of an
    interrupted one, which later calls reuse and continue; `resume=True` refuses to start
    when it holds nothing of this configuration. `workers`: processes making the augmented
    batches (0: this process). An existing package at `out` (e.g. of fewer folds) is replaced
    only with `overwrite` (unset: as the command's --overwrite says)."""
    from ...device import resolve_device
    from .inference import RetinaUNetDetector
    from .training import _dist

    progress = progress or silent
    rank, world = _dist()
    dev = torch.device(resolve_device(device).torch_name)
    if world > 1 and dev.type == "cuda":
        dev = torch.device(f"cuda:{int(os.environ.get('LOCAL_RANK', 0))}")
    by_id = {c.case_id: c for c in cases}
    n_folds = len(split["folds"])
    folds = list(range(n_folds)) if folds is None else list(folds)
    bad = [f for f in folds if not 0 <= f < n_folds]
    if bad:
        raise ParameterError(f"--folds {bad}: the split has folds 0..{n_folds - 1}.")
    unlabeled = [by_id[c] for c in split.get("unlabeled", []) if c in by_id]
    out = Path(out)
    work = out.parent / f".{out.name}.training"
    fold_cases = {f: ([by_id[c] for g, ids in enumerate(split["folds"]) if g != f for c in ids] + unlabeled,
                      [by_id[c] for c in split["folds"][f]]) for f in folds}
    if resume and not any(fold_started(f, *fold_cases[f], config, channels, settings, work) for f in folds):
        raise ParameterError(f"--resume: {work} holds no interrupted or finished training of this configuration "
                             "(data, split, network and training settings) to continue.")
    work.mkdir(parents=True, exist_ok=True)
    results: list[FoldResult] = []
    for i, f in enumerate(folds):
        train, val = fold_cases[f]
        results.append(train_fold(f, train, val, config, channels, settings, work, dev,
                                  sub_progress(progress, 0.9 * i / len(folds), 0.9 * (i + 1) / len(folds)),
                                  workers=workers))
    if rank != 0:
        return None
    members, files = [], []
    with staged_output_dir(out, overwrite) as stage:
        (stage / "members").mkdir()
        for res in results:
            for r, (epoch, score) in enumerate(res.ranking):
                rel = f"members/fold{res.fold}_rank{r}_epoch{epoch}.pt"
                shutil.copyfile(res.member_files[epoch], stage / rel)
                files.append(rel)
                members.append({"file": rel, "fold": res.fold, "epoch": epoch, "rank": r, "val_mAP": score})
            shutil.copyfile(work / f"fold_{res.fold}" / "training.png", stage / f"training_fold{res.fold}.png")
            shutil.copyfile(work / f"fold_{res.fold}" / "history.json", stage / f"history_fold{res.fold}.json")
        the_card = dict(card)
        the_card.update({"task": "detector", "architecture": {"name": "retina_unet", "config": config},
                         "channels": list(channels), "class_names": CLASS_NAMES,
                         "training": {**settings, "folds_trained": folds, "split": split}})
        ens = dict(the_card.get("ensemble") or {})
        ens.update({"members": members, "test_time_augmentation": False, "wbc_iou": config["wcs_iou"]})
        ens.setdefault("wbc_fold_pooling", "per_member")
        ens.setdefault("segmentation_mode", "argmax_vote")
        the_card["ensemble"] = ens
        the_card["channel_drop"] = {"trained_with": settings["channel_drop_p"] > 0,
                                    "probability": settings["channel_drop_p"],
                                    "channels": [c for c in channels if c not in ("T2", "PROSTATE", "CG", "PZ")]}
        write_model_card(stage, the_card, files)
        # thresholds on the validation folds: each case predicted by the members of the fold that left it out
        val_predictions = []
        full = load_model_package(stage, verify=False)
        for res in results:
            fold_card = dict(full.card)
            fold_card["ensemble"] = dict(ens, members=[m for m in members if m["fold"] == res.fold])
            detector = RetinaUNetDetector(ModelPackage(stage, fold_card), device)
            val_predictions += predicted_lesions(detector, [by_id[cid] for cid in split["folds"][res.fold]])
        computed_on = f"validation folds {folds} ({len(val_predictions)} cases), lesion level"
        thresholds, validation = lesion_thresholds(val_predictions, computed_on)
        the_card["thresholds"] = thresholds
        the_card["validation"] = validation
        write_model_card(stage, the_card, files)
    if set(folds) == set(range(n_folds)):  # else keep the finished folds for a later call to reuse
        shutil.rmtree(work, ignore_errors=True)
    progress(1.0, f"model package written to {out}")
    return load_model_package(out)


def train_detector(data_dir: str | Path, ground_truth: str | Path, split_file: str | Path, out: str | Path,
                   config: Optional[dict[str, Any]] = None, unlabeled: Sequence[str] = (),
                   folds: Optional[Sequence[int]] = None, device: str = "auto",
                   progress: Optional[Callable[[float, str], None]] = None, workers: int | str = 0,
                   resume: bool = False) -> Optional[ModelPackage]:
    """`prostate-cad train detector`: load the pre-processed cases of `data_dir`, read the split
    (made on first use) and cross-validate into the package `out`.

    `config` holds {network: {...}, training: {...}, channels, crop_size [x, y, z], spacing,
    name, version, intended_use}; each part defaults to the main paper's. `workers` ("auto" or a
    count) and `resume` as in `cross_validate`. Under torchrun
    (WORLD_SIZE > 1) the processes join one group for the run; only rank 0 returns the package.
    """
    from ...models.training_runs import resolve_workers

    config = config or {}
    progress = progress or silent
    workers = resolve_workers(workers)
    settings = training_settings(config.get("training"))
    network = make_config(**config.get("network", {}))
    channels = config.get("channels", DEFAULT_CHANNELS)
    crop_size = config.get("crop_size", DEFAULT_CROP_SIZE)
    spacing = config.get("spacing", DEFAULT_SPACING)
    network["n_channels"] = len(channels)
    network["patch_size"] = [crop_size[1], crop_size[0], crop_size[2]]  # the network's y, x, z
    if torch.distributed.is_available() and int(os.environ.get("WORLD_SIZE", "1")) > 1:
        torch.distributed.init_process_group("nccl" if torch.cuda.is_available() else "gloo")
    cases = load_training_cases(data_dir, ground_truth, channels, crop_size, spacing, unlabeled,
                                sub_progress(progress, 0, 0.05))
    split = read_or_make_split(Path(split_file), [c.case_id for c in cases], settings["n_folds"], settings["seed"],
                               list(unlabeled))
    card = {"name": config.get("name", Path(out).name), "version": config.get("version", "1"),
            "intended_use": config.get("intended_use", "Research only; not a medical device."),
            "crop_size": crop_size, "spacing": spacing,
            "training_data": f"{len(cases)} cases from {data_dir} ({ground_truth})"}
    package = cross_validate(cases, split, out, network, channels, settings, card, folds, device,
                             sub_progress(progress, 0.05, 1.0), workers=workers, resume=resume)
    if torch.distributed.is_available() and torch.distributed.is_initialized():
        torch.distributed.destroy_process_group()
    return package
