"""Import the authors' Medical Detection Toolkit (MDT) checkpoints into our model package.

The published exp0 network (OscarPellicer/prostate_lesion_detection, MDT_ProstateX/experiments/exp0) is stored as 25
`params.pth` state_dicts under MDT's module names. `mdt_key(our_key)` maps every key of
our `RetinaUNet` to the MDT name; `convert_state_dict` checks that the two key sets and
all shapes agree exactly, so a checkpoint of another topology fails with a clear error.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any, Callable, Optional

import torch

from ...errors import ModelError
from ...models.package import ModelPackage, load_model_package, write_model_card
from ...output_files import staged_output_dir
from ...progress import silent
from .network import RetinaUNet, make_config

_STAGE_BLOCK = re.compile(r"^encoder\.stages\.(\d+)\.(\d+)\.(conv1|conv2|conv3|downsample)\.(conv|norm)\.(.+)$")


def mdt_key(key: str) -> str:
    """The MDT state_dict name of one of our keys (the toolkit's conv unit naming, MDT_ProstateX/models/backbone.py)."""
    m = re.match(r"^encoder\.c0\.(\d+)\.(conv|norm)\.(.+)$", key)
    if m:
        return f"Fpn.C0.{m[1]}.0.{0 if m[2] == 'conv' else 1}.{m[3]}"
    m = re.match(r"^encoder\.c1\.(conv|norm)\.(.+)$", key)
    if m:
        return f"Fpn.C1.0.{0 if m[1] == 'conv' else 1}.{m[2]}"
    m = _STAGE_BLOCK.match(key)
    if m:
        stage, block, unit, part, rest = int(m[1]), int(m[2]), m[3], m[4], m[5]
        index = block + 1 if stage == 0 else block  # C2 has the max-pool at index 0
        idx = 0 if part == "conv" else 1
        # conv1/conv2 are conv+BN+ReLU units (X.0.0 / X.0.1); conv3/downsample conv+BN (X.0 / X.1)
        inner = f"0.{idx}" if unit in ("conv1", "conv2") else f"{idx}"
        return f"Fpn.C{stage + 2}.{index}.{unit}.{inner}.{rest}"
    m = re.match(r"^decoder\.(lateral|smooth)\.(\d)\.(.+)$", key)
    if m:
        return f"Fpn.P{m[2]}_conv{1 if m[1] == 'lateral' else 2}.{m[3]}"
    m = re.match(r"^(classifier|box_regressor)\.(convs\.(\d)|final)\.(.+)$", key)
    if m:
        head = "Classifier" if m[1] == "classifier" else "BBRegressor"
        inner = f"conv_{int(m[3]) + 1}.0" if m[3] is not None else "conv_final"
        return f"{head}.{inner}.{m[4]}"
    m = re.match(r"^seg_head\.(.+)$", key)
    if m:
        return f"final_conv.{m[1]}"
    raise KeyError(f"no MDT name for parameter {key!r}")


def convert_state_dict(mdt_state: dict[str, torch.Tensor], net: RetinaUNet, source: str = "checkpoint"
                       ) -> dict[str, torch.Tensor]:
    """Rename an MDT state_dict to our keys; every key and shape must match the network."""
    ours = net.state_dict()
    mapping = {mdt_key(k): k for k in ours}
    missing = [k for k in mapping if k not in mdt_state]
    extra = [k for k in mdt_state if k not in mapping]
    if missing or extra:
        detail = (f"{len(missing)} expected keys missing (first: {missing[0]})" if missing
                  else f"{len(extra)} unexpected keys (first: {extra[0]})")
        raise ModelError(f"{source}: not a Retina U-Net checkpoint of this configuration: {detail}.")
    converted = {}
    for mk, ok in mapping.items():
        tensor = mdt_state[mk]
        if tuple(tensor.shape) != tuple(ours[ok].shape):
            raise ModelError(f"{source}: parameter {mk} has shape {tuple(tensor.shape)}, "
                             f"expected {tuple(ours[ok].shape)}.")
        converted[ok] = tensor.detach().to("cpu").clone()
    return converted


def read_checkpoint(path: Path) -> dict[str, torch.Tensor]:
    """torch.load a params.pth on CPU (weights only); a damaged file gives a ModelError."""
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # torch raises many types for truncated/corrupt archives
        raise ModelError(f"{path}: cannot be read as a PyTorch checkpoint ({type(exc).__name__}); "
                         f"the file is corrupt or incomplete.") from None
    if isinstance(state, dict) and "state_dict" in state and isinstance(state["state_dict"], dict):
        state = state["state_dict"]
    if not isinstance(state, dict):
        raise ModelError(f"{path}: does not contain a state_dict.")
    return state


# The published model card. Every number on it says where it comes from: a file of the authors' repository
# (OscarPellicer/prostate_lesion_detection, commit 51bd300), its README, the saved outputs of its result notebook, or
# the paper (Pellicer-Valero et al., Sci. Rep. 12, 2975 (2022)); what neither publishes is listed as not published.
PUBLISHED_PACKAGE_NAME = "pellicer-valero-2022-prostatex"
PUBLISHED_CHANNELS = ["T2", "DWI_LOW", "DWI_HIGH", "ADC", "KTRANS", "PROSTATE", "CG", "PZ"]
PUBLISHED_CLASS_NAMES = ["background", "GGG0", "GGG1", "GGG2", "GGG3+"]
PAPER = "Pellicer-Valero et al., Sci. Rep. 12, 2975 (2022)"
REPOSITORY = "OscarPellicer/prostate_lesion_detection"
EXP0 = "MDT_ProstateX/experiments/exp0"
RESULT_NOTEBOOK = "MDT_ProstateX/Result analysis.ipynb"

# What the released exp0 was trained on: ProstateX only. The paper's own model (its Table 1) also used 191 IVO
# cases; the released one is "an identical model trained only on the ProstateX data" (paper, Discussion).
PUBLISHED_TRAINING_DATA = (
    "ProstateX only (no IVO data): 159 ProstateX training cases with GGG in 5-fold cross-validation, plus the 140 "
    "ProstateX challenge cases (no GGG; they train segmentation and box regression, not the classifier); 45 "
    "ProstateX cases held out for testing. Sources: " + EXP0 + "/data_loader.py (ss_v2 lists: train_val 159, "
    "train_fix 140, test 45) and configs.py (use_prostatex_test); authors' README (\"adapted to only use ProstateX "
    "data\"); " + PAPER + ", Discussion (\"an identical model trained only on the ProstateX data (which has been "
    "made publicly available alongside this paper)\"). The paper's Table 1 describes its ProstateX + IVO model, "
    "not this one.")

# Working points of the released model, on the fold-pooled WBC scores of the toolkit (wbc_fold_pooling "mdt").
PUBLISHED_THRESHOLDS = {
    "GGG>=2": {
        "max_sensitivity": 0.028,
        "balanced": 0.09,
        "level": "lesion",
        "wbc_fold_pooling": "mdt",
        "computed_on": "ProstateX test set (45 patients, 69 lesions), chosen a posteriori by the authors",
        "sources": {
            "max_sensitivity": "authors' README, caption of the model output figure: \"the lesion-wise maximum "
                               "sensitivity setting (t=0.028)\"; the same value as " + PAPER + ", Table 1 "
                               "(ProstateX GGG>=2 lesion level, which is the ProstateX + IVO model)",
            "balanced": RESULT_NOTEBOOK + ", saved output of the lesion-level cell for exp0 (GGG >= 2, N=69): "
                        "t=0.09, sensitivity 0.923, specificity 0.839, printed to two decimals",
        },
    },
}

PUBLISHED_RESULTS = {
    "ProstateX test set, lesion level, GGG>=2": {
        "n": 69, "auc": 0.890, "source": RESULT_NOTEBOOK + " (saved output, exp0 ensemble)"},
    "ProstateX test set, patient level, GGG>=2": {
        "n": 45, "auc": 0.814, "source": RESULT_NOTEBOOK + " (saved output, exp0 ensemble)"},
    "ProstateX challenge (online), lesion level": {
        "auc": 0.87, "source": "authors' README; " + PAPER + ", Abstract and Discussion"},
}

NOT_PUBLISHED = [
    "working points of this model for GGG>=1 and GGG>=3, and at patient level for GGG>=2 beyond the notebook's "
    "printed values",
    "the exact balanced threshold (the notebook prints two decimals)",
    "working points computed a priori on training data for this model (the paper's Supplementary Table 2 is for "
    "the ProstateX + IVO model)",
    "the balanced GGG>=2 threshold 0.108 and every other Table 1 figure belong to the paper's ProstateX + IVO "
    "model, not to this one (evaluation/published.py transcribes them)",
]


def published_card(members: list[dict[str, Any]]) -> dict[str, Any]:
    cfg = make_config()
    return {
        "name": PUBLISHED_PACKAGE_NAME,
        "version": "51bd300",
        "task": "detector",
        "architecture": {"name": "retina_unet", "config": cfg},
        "channels": PUBLISHED_CHANNELS,
        "spacing": [0.5, 0.5, 3.0],
        "crop_size": [160, 160, 24],
        "axis_order": "yxz",
        "class_names": PUBLISHED_CLASS_NAMES,
        "preprocessing": {
            "normalisation": "per channel over the whole T2-grid volume before cropping: subtract the minimum "
                             "if negative, then (v - p1) / (p99 - p1 + 1e-6); no clipping; masks 0/1",
            "crop": "160x160x24 voxels at 0.5x0.5x3 mm centred on the prostate-mask centroid",
            "adc": "negative values set to 0; Gaussian blur (variance 2 mm^2) when its 40th percentile is 0",
            "released_adc_blur": True,  # read by the pipeline: preprocess(..., released_adc_blur=True)
            "dwi_low": "b400 or b500", "dwi_high": "b800",
            "registration": "DWI and ADC registered to T2 (registration preset 'released' follows the authors' "
                            "reg_lib.py); Ktrans not registered",
        },
        "channel_drop": {"trained_with": True, "probability": 0.05,
                         "channels": ["DWI_LOW", "DWI_HIGH", "ADC", "KTRANS"],
                         "note": "exp0 zeroes one of channels 1-4 with p=0.05 each (exp0/configs.py)"},
        "ensemble": {"members": members, "test_time_augmentation": False,
                     "segmentation": "mean of per-model argmax label maps",
                     "wbc_iou": 1e-5,
                     "wbc_fold_pooling": "mdt",
                     "wbc_fold_pooling_note": (
                         "faithful to the toolkit: patch ids repeat across folds, so the fold-pooled weighted box "
                         "clustering counts at most 5 distinct predictions of 25 and shrinks every score by about "
                         "25/45; the thresholds on this card refer to these shrunk scores. "
                         "Set to 'per_member' to count each of the 25 models separately (the thresholds then "
                         "no longer apply).")},
        "thresholds": PUBLISHED_THRESHOLDS,
        "published_results": PUBLISHED_RESULTS,
        "not_published": NOT_PUBLISHED,
        "training_data": PUBLISHED_TRAINING_DATA,
        "intended_use": "Research only. The ProstateX-only model released with Pellicer-Valero et al. 2022; "
                        "not a medical device.",
        "licence": "MIT (authors' repository, LICENSE) / Apache-2.0 (its Medical Detection Toolkit fork, "
                   "MDT_ProstateX file headers)",
        "provenance": {
            "spacing": EXP0 + "/configs.py (target_spacing)",
            "crop_size": EXP0 + "/configs.py (patch_size_3D)",
            "channels": EXP0 + "/configs.py (channels 0-7; droppable_channels comment names them) and "
                        "ProstateX preprocessing.ipynb",
            "class_names": EXP0 + "/configs.py (class_dict, head_classes)",
            "preprocessing": "preprocessing_lib.py and ProstateX preprocessing.ipynb",
            "preprocessing.registration": "reg_lib.py (register_spline) and Registration example.ipynb; " + PAPER
                                          + ", Pre-processing, \"Automated sequence registration\"",
            "channel_drop": EXP0 + "/configs.py (droppable_channels, channel_drop_p)",
            "ensemble.members": EXP0 + "/fold_<f>/<epoch>_best_checkpoint, ranked by epoch_ranking.npy; "
                                "configs.py (test_n_epochs 5, n_cv_splits 5, test_aug False)",
            "ensemble.wbc_iou": EXP0 + "/configs.py (wcs_iou)",
            "ensemble.wbc_fold_pooling": "MDT_ProstateX/predictor.py (weighted box clustering over fold-pooled "
                                         "predictions whose patch ids repeat across folds)",
            "thresholds": "see thresholds.<criterion>.sources",
            "training_data": "see training_data",
        },
        "source": {"repository": REPOSITORY,
                   "commit": "51bd300b45391d7bd1731b7f38a1d4ab3e21829c", "experiment": EXP0},
    }


def find_checkpoints(folder: Path, ranking: Optional[dict[int, list[int]]] = None
                     ) -> list[tuple[int, int, int, Path]]:
    """(fold, rank, epoch, path) for every fold_<f>/<epoch>_best_checkpoint/params.pth.

    The rank within a fold comes from an `epoch_ranking.npy` when present (as MDT_ProstateX/predictor.py ranks them),
    otherwise from `ranking` (fold -> epochs, best first) when the epoch is listed there,
    else ascending epoch.
    """
    import numpy as np

    found = []
    for fold_dir in sorted(folder.glob("fold_*")):
        m = re.match(r"^fold_(\d+)$", fold_dir.name)
        if not m or not fold_dir.is_dir():
            continue
        fold = int(m[1])
        epochs = {}
        for ck in fold_dir.glob("*_best_checkpoint/params.pth"):
            em = re.match(r"^(\d+)_best_checkpoint$", ck.parent.name)
            if em:
                epochs[int(em[1])] = ck
        ranking_files = [fold_dir / "epoch_ranking.npy"] + sorted(fold_dir.glob("*_best_checkpoint/epoch_ranking.npy"))
        ranking_files = [f for f in ranking_files if f.is_file()]
        if ranking_files:
            order = [int(e) for e in np.load(ranking_files[0], allow_pickle=False).ravel()]
        else:
            order = (ranking or {}).get(fold, [])
        ranked = [e for e in order if e in epochs] + sorted(e for e in epochs if e not in order)
        found += [(fold, rank, epoch, epochs[epoch]) for rank, epoch in enumerate(ranked)]
    if not found:
        raise ModelError(f"{folder}: no fold_<n>/<epoch>_best_checkpoint/params.pth files found.")
    return found


def import_mdt(folder: str | Path, out: str | Path, config: Optional[dict[str, Any]] = None,
               card: Optional[dict[str, Any]] = None,
               progress: Callable[[float, str], None] | None = None,
               ranking: Optional[dict[int, list[int]]] = None) -> ModelPackage:
    """Convert a folder of MDT checkpoints into a model package at `out`.

    Each checkpoint is checked key by key against our network built from `config` (the
    published exp0 config by default) and saved as members/fold<f>_rank<r>_epoch<e>.pt;
    `ranking` orders a fold's epochs when the folder has no epoch_ranking.npy (find_checkpoints).
    """
    progress = progress or silent
    folder = Path(folder)
    if not folder.is_dir():
        raise ModelError(f"{folder}: not a folder of MDT checkpoints.")
    checkpoints = find_checkpoints(folder, ranking)
    cfg = config or make_config()
    net = RetinaUNet(cfg)
    members = []
    with staged_output_dir(out) as stage:
        (stage / "members").mkdir()
        files = []
        for i, (fold, rank, epoch, path) in enumerate(checkpoints):
            progress(i / len(checkpoints), f"converting fold {fold} epoch {epoch}")
            state = convert_state_dict(read_checkpoint(path), net, source=str(path))
            rel = f"members/fold{fold}_rank{rank}_epoch{epoch}.pt"
            torch.save(state, stage / rel)
            files.append(rel)
            members.append({"file": rel, "fold": fold, "epoch": epoch, "rank": rank})
        the_card = card or published_card(members)
        the_card = dict(the_card)
        the_card.setdefault("architecture", {"name": "retina_unet", "config": cfg})
        the_card["architecture"]["config"] = cfg
        the_card.setdefault("ensemble", {})["members"] = members
        write_model_card(stage, the_card, files)
    progress(1.0, f"model package written to {out}")
    return load_model_package(out, verify=False)
