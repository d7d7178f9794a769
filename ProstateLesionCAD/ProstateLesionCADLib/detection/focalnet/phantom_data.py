"""Training / test data for FocalNet: each phantom (`phantom_cases`) or study with ground
truth (`study_cases`) as a `SliceStack` with targets, plus its ground truth and lesion mask
for the evaluation package (tests, demo, study, `prostate-cad train focalnet`)."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
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


def study_cases(cases_dir: str | os.PathLike, ground_truth: str | os.PathLike, size: int = 64,
                progress: Optional[ProgressCallback] = None) -> list[PhantomCase]:
    """Every case of `ground_truth`, loaded from `cases_dir`/<case id> (DICOM or case.json) with
    its lesion mask, prepared for FocalNet training."""
    import numpy as np

    from ...errors import ParameterError
    from ...formats import read_ground_truth
    from ...image_files import read_image_file
    from ...study.loading import load_case

    progress = progress or silent
    truth = read_ground_truth(ground_truth)
    out = []
    for i, gt in enumerate(truth.cases):
        if gt.lesion_mask is None and gt.lesions:
            raise ParameterError(f"{ground_truth}: case {gt.case_id} has lesions but no lesion_mask to train on.")
        case = load_case(Path(cases_dir) / gt.case_id)
        mask = read_image_file(gt.lesion_mask, "lesion mask") if gt.lesion_mask else None
        ggg = {l.label if l.label is not None else l.id: l.ggg for l in gt.lesions}
        stack = prepare_case(case, size, lesion_mask=mask, lesion_ggg=ggg)
        if stack.classes is None:
            stack.classes = np.zeros(stack.t2.shape, np.uint8)
        out.append(PhantomCase(stack, gt, mask, {}))
        progress((i + 1) / len(truth.cases), f"case {gt.case_id}")
    return out
