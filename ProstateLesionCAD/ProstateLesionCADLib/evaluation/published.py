"""Published results to compare against: Pellicer-Valero et al. 2022, Table 1 and lesion DSC.

Transcribed from the paper (Results, Table 1: IVO and ProstateX test sets; working points
computed a posteriori on the test data; "Lesion segmentation performance" for the DSC).
Each row: (n_positive, n, auc, (t, sens, spec) at max sensitivity, (t, sens, spec) balanced).
These figures are those of the paper's model, trained on ProstateX and IVO data ("Data
partitioning"), not of the ProstateX-only model the authors released (its own figures are on
its model card, detection/retina_unet/mdt_import.py).
"""

from __future__ import annotations

from typing import Any

CITATION = "Pellicer-Valero et al., Sci. Rep. 12, 2975 (2022), Table 1"
# the paper, "Data partitioning": who trained and who tested the model Table 1 describes
MODEL = ("the paper's model, trained and 5-fold cross-validated on 191 IVO + 159 ProstateX patients with GGG "
         "and the 140 ProstateX challenge patients without GGG (segmentation and box regression only), "
         "not the ProstateX-only model the authors released")
TEST_SETS = {"prostatex": "ProstateX test set: 45 patients, 69 lesions", "ivo": "IVO test set: 30 patients, 33 lesions"}

_ROWS = {
    "prostatex": {
        "GGG>=1": {"lesion": (17, 69, 0.898, (0.028, 0.941, 0.788), (0.053, 0.824, 0.865)),
                   "patient": (16, 45, 0.866, (0.108, 1.000, 0.138), (0.104, 0.938, 0.655))},
        "GGG>=2": {"lesion": (13, 69, 0.959, (0.028, 1.000, 0.786), (0.108, 0.923, 0.911)),
                   "patient": (13, 45, 0.865, (0.028, 1.000, 0.375), (0.108, 0.923, 0.688))},
        "GGG>=3": {"lesion": (7, 69, 0.751, (0.195, 0.714, 0.887), (0.195, 0.714, 0.887)),
                   "patient": (7, 45, 0.767, (0.016, 1.000, 0.395), (0.026, 0.857, 0.500))},
    },
    "ivo": {
        "GGG>=1": {"lesion": (13, 33, 0.892, (0.027, 1.000, 0.350), (0.105, 0.923, 0.700)),
                   "patient": (15, 30, 0.920, (0.253, 1.000, 0.667), (0.301, 0.867, 0.800))},
        "GGG>=2": {"lesion": (8, 33, 0.945, (0.173, 1.000, 0.800), (0.301, 0.875, 0.920)),
                   "patient": (9, 30, 0.910, (0.219, 1.000, 0.762), (0.262, 0.889, 0.810))},
        "GGG>=3": {"lesion": (3, 33, 0.856, (0.301, 1.000, 0.800), (0.315, 0.667, 0.867)),
                   "patient": (3, 30, 0.840, (0.301, 1.000, 0.778), (0.315, 0.667, 0.852))},
    },
}
_DICE = {"prostatex": {"0.25": 0.255, "0.5": 0.244}, "ivo": {"0.25": 0.276, "0.5": 0.245}}
DATASETS = tuple(_ROWS)


def published(dataset: str) -> dict[str, Any]:
    """The published metrics of one test set in the layout of an evaluation result."""
    name = "ProstateX" if dataset == "prostatex" else "IVO"
    source = (f"{CITATION} ({name} test set), {MODEL}; {TEST_SETS[dataset]}, working points computed a posteriori "
              "on the test data; mean DSC from Results, \"Lesion segmentation performance\"")
    out: dict[str, Any] = {"dataset": dataset, "source": source, "model": MODEL, "dice_mean": _DICE[dataset]}
    for key, levels in _ROWS[dataset].items():
        out[key] = {}
        for level, (n_pos, n, auc, ms, bal) in levels.items():
            out[key][level] = {"n": n, "n_positive": n_pos, "auc": auc, "working_points": {
                name: {"threshold": t, "sensitivity": se, "specificity": sp}
                for name, (t, se, sp) in (("max_sensitivity", ms), ("balanced", bal))}}
    return out
