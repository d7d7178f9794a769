"""Random Channel Drop (main paper, "Online data augmentation").

Every channel of every training image is blanked with probability p (7.5%), except T2
and the masks (never); the three DCE channels are one unit (dropped together or not).
"""

from __future__ import annotations

from typing import Sequence

import numpy as np

NEVER_DROPPED = ("T2", "PROSTATE", "CG", "PZ")
DCE_GROUP = ("DCE_T10", "DCE_T20", "DCE_T30")
PAPER_PROBABILITY = 0.075


def drop_groups(channels: Sequence[str]) -> list[list[int]]:
    """Channel index groups that are dropped as a unit."""
    groups: list[list[int]] = []
    dce = [i for i, c in enumerate(channels) if c in DCE_GROUP]
    for i, c in enumerate(channels):
        if c in NEVER_DROPPED or c in DCE_GROUP:
            continue
        groups.append([i])
    if dce:
        groups.append(dce)
    return groups


def random_channel_drop(image: np.ndarray, channels: Sequence[str], rng: np.random.Generator,
                        p: float = PAPER_PROBABILITY) -> tuple[np.ndarray, list[str]]:
    """Blank channel groups of a (C, ...) array in place with probability p each; returns
    the array and the names of the blanked channels."""
    dropped: list[str] = []
    for group in drop_groups(channels):
        if rng.random() < p:
            image[group] = 0.0
            dropped += [channels[i] for i in group]
    return image, dropped
