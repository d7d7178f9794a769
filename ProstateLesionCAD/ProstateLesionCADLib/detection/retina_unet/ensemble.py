"""Fold x epoch ensembles stored in a detector model package (main paper "Epoch and CV
ensembling during testing"; MDT_ProstateX/predictor.py of
OscarPellicer/prostate_lesion_detection).

model.json: architecture.config (network config), ensemble.members [{file, fold, epoch,
rank}], ensemble.wbc_fold_pooling ("mdt" = the toolkit's behaviour, "per_member").
"""

from __future__ import annotations

import functools
import json
from typing import Any

import torch

from ...errors import ModelError
from ...models.package import ModelPackage
from .network import RetinaUNet, make_config

WBC_POOLING = ("mdt", "per_member")


def network_config(pkg: ModelPackage) -> dict[str, Any]:
    arch = pkg.card.get("architecture") or {}
    if arch.get("name") != "retina_unet" or not isinstance(arch.get("config"), dict):
        raise ModelError(f"Model '{pkg.name}': model.json has no Retina U-Net architecture config.")
    return make_config(**arch["config"])


def members(pkg: ModelPackage) -> list[dict[str, Any]]:
    found = (pkg.card.get("ensemble") or {}).get("members") or []
    if not found:
        raise ModelError(f"Model '{pkg.name}': model.json lists no ensemble members.")
    return found


def read_member(pkg: ModelPackage, member: dict[str, Any]) -> dict:
    """One member's state_dict (CPU) from a file the package lists and verifies; an unlisted,
    outside, missing or damaged file gives a ModelError."""
    if not isinstance(member, dict) or "file" not in member:
        raise ModelError(f"Model '{pkg.name}': an ensemble member has no 'file'.")
    state = pkg.load_weights(member["file"])
    expected = _parameter_shapes(json.dumps(network_config(pkg), sort_keys=True))
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise ModelError(f"Model '{pkg.name}': weight file {member['file']} holds no state_dict of tensors.")
    shapes = {k: tuple(v.shape) for k, v in state.items()}
    if shapes != expected:
        wrong = sorted(set(expected) ^ set(shapes)) or sorted(k for k in expected if shapes[k] != expected[k])
        raise ModelError(f"Model '{pkg.name}': weight file {member['file']} does not fit the network of its "
                         f"model.json ({len(wrong)} parameters missing, extra or of another shape, e.g. {wrong[0]}).")
    return state


@functools.lru_cache(maxsize=4)
def _parameter_shapes(config_json: str) -> dict[str, tuple[int, ...]]:
    """Name -> shape of every entry of the network's state_dict (built without memory on the meta device)."""
    with torch.device("meta"):
        net = RetinaUNet(json.loads(config_json))
    return {k: tuple(v.shape) for k, v in net.state_dict().items()}


def load_member_states(pkg: ModelPackage) -> tuple[dict[str, Any], list[tuple[dict[str, Any], dict]]]:
    """The network config and every member's state_dict (CPU)."""
    return network_config(pkg), [(m, read_member(pkg, m)) for m in members(pkg)]


def wbc_pooling(pkg: ModelPackage) -> str:
    mode = (pkg.card.get("ensemble") or {}).get("wbc_fold_pooling", "per_member")
    if mode not in WBC_POOLING:
        raise ModelError(f"Model '{pkg.name}': ensemble.wbc_fold_pooling must be one of {WBC_POOLING}, got {mode!r}.")
    return mode


def member_id(member: dict[str, Any], aug_index: int, pooling: str) -> str:
    """Prediction id used by WBC to count missing predictions.

    "mdt": "<rank>_<aug>" like the toolkit, which repeats across folds, so the fold-pooled
    WBC sees at most 5 distinct ids out of 25 models (a quirk of MDT_ProstateX/predictor.py).
    "per_member": unique per fold x epoch (x augmentation).
    """
    if pooling == "mdt":
        return f"{member.get('rank', 0)}_{aug_index}"
    return f"{member.get('fold', 0)}_{member.get('rank', 0)}_{aug_index}"


class StackedMembers:
    """Several members' forward passes as one batched call: their state_dicts stacked along
    a new leading dimension and the network mapped over it with `torch.func.vmap`, so each
    convolution runs once as a grouped convolution for all members (one kernel launch per
    layer on a GPU instead of one per member). Outputs: the network's (class_logits,
    bbox_deltas, seg_logits), each with the member as its first dimension.

    On two CPU cores this is about three times slower than running the members one after
    the other (grouped 3D convolutions are slow there), so the detector uses it on CUDA only
    unless asked to.
    """

    def __init__(self, net: RetinaUNet):
        import copy

        self.template = copy.deepcopy(net).to("meta").eval()  # structure only: every tensor is passed in

    @staticmethod
    def stack(states: list[dict], device: torch.device) -> dict[str, torch.Tensor]:
        return {k: torch.stack([s[k] for s in states]).to(device) for k in states[0]}

    def __call__(self, stacked: dict[str, torch.Tensor], x: torch.Tensor):
        from torch.func import functional_call, vmap

        def one(state, inp):
            return functional_call(self.template, state, (inp,))

        return vmap(one, in_dims=(0, None))(stacked, x)
