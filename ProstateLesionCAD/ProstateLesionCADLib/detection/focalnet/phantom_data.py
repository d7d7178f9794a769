"""Phantom training / test data for FocalNet: each phantom as a `SliceStack` with targets,
plus its ground truth and lesion mask for the evaluation package (tests, demo, study)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Optional, Sequence

import SimpleITK as sitk

from ...formats import GroundTruthCase
from ...phantoms.generate import make_phantom
from ...progress import ProgressCallback, silent
from .preprocessing import FOV_MM, SliceStack, prepare_case


@dataclass
class PhantomCase:
    stack: SliceStack
    truth: GroundTruthCase
    lesion_mask: sitk.Image
    visibility: dict[int, str]
    case: object = None  # the Case, kept only when asked (memory)


def phantom_cases(seeds: Sequence[int], size: int = 64, fov_mm: float = FOV_MM, single_modality_fraction: float = 0.0,
                  keep_case: bool = False, progress: Optional[ProgressCallback] = None, **phantom_options) -> list[PhantomCase]:
    """Draw phantoms (T2 + DWI/ADC only: FocalNet uses no DCE) and prepare them for FocalNet."""
    progress = progress or silent
    out = []
    for i, seed in enumerate(seeds):
        p = make_phantom(int(seed), with_dce=False, with_ktrans=False,
                         single_modality_fraction=single_modality_fraction, **phantom_options)
        ggg = {l.id: l.ggg for l in p.ground_truth.lesions}
        stack = prepare_case(p.case, size, fov_mm, lesion_mask=p.lesion_mask, lesion_ggg=ggg)
        out.append(PhantomCase(stack, p.ground_truth, p.lesion_mask, dict(p.visibility), p.case if keep_case else None))
        progress((i + 1) / len(seeds), f"phantom {i + 1}/{len(seeds)}")
    return out
