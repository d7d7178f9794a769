"""The cost settings of the multilevel registration: random metric sampling (reproducible for a
seed), the mask-restricted metric, the coarser first level, early stopping."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
import SimpleITK as sitk

from ProstateLesionCADLib.phantoms.generate import make_phantom
from ProstateLesionCADLib.registration import register as reg
from ProstateLesionCADLib.registration.multistart import PRESETS, run_start

# every start alike (no variants), every voxel of a 1.5 mm grid: each option below is added to this
FAST = dataclasses.replace(PRESETS["fast"], metric_fraction=None, metric_margin_mm=None, level_shrink=(),
                           convergence_window=0, start_variants=(), working_spacing_mm=(1.5, 1.5, 3.0))


@pytest.fixture(scope="module")
def phantom():
    return make_phantom(1, deformation_mm=8.0, with_dce=False, with_ktrans=False)


@pytest.fixture(autouse=True, scope="module")
def one_itk_thread():
    previous = sitk.ProcessObject.GetGlobalDefaultNumberOfThreads()
    sitk.ProcessObject.SetGlobalDefaultNumberOfThreads(1)
    yield
    sitk.ProcessObject.SetGlobalDefaultNumberOfThreads(previous)


def test_random_sampling_is_reproducible_for_a_seed_and_differs_between_seeds(phantom):
    settings = dataclasses.replace(FAST, metric_fraction=0.2)
    problem = reg.build_problem(phantom.case.t2, phantom.case.adc, phantom.case.zones, phantom.case.prostate, settings)
    # start 0 begins at the identity whatever the seed: only the metric's samples depend on it
    first, again, other = (run_start(problem, settings, 0, seed) for seed in (5, 5, 6))
    assert first.score is not None and first.score.total > reg.score_problem(problem, settings,
                                                                              reg.identity_transform()).total
    np.testing.assert_array_equal(first.transform.GetParameters(), again.transform.GetParameters())
    assert first.loss_trace == again.loss_trace
    assert not np.allclose(first.transform.GetParameters(), other.transform.GetParameters(), atol=1e-6)
    # every voxel: the seed changes nothing for start 0
    full = [run_start(problem, FAST, 0, seed).transform.GetParameters() for seed in (5, 6)]
    np.testing.assert_array_equal(full[0], full[1])


def test_metric_mask_is_the_gland_plus_margin_and_coarse_level_is_shrunk(phantom):
    case = phantom.case
    settings = dataclasses.replace(FAST, metric_margin_mm=6.0, level_shrink=(2,))
    problem = reg.build_problem(case.t2, case.adc, case.zones, case.prostate, settings)
    assert len(problem.levels_mi) == len(settings.gradient_sigmas_mm)
    (coarse, _, coarse_mask), *_, (fine, _, fine_mask) = problem.levels_mi
    assert coarse.GetSize()[2] == fine.GetSize()[2]
    assert [c * 2 for c in coarse.GetSize()[:2]] == pytest.approx(fine.GetSize()[:2], abs=1)
    assert fine.GetSize() == problem.fixed_features_mi.GetSize()
    mask = sitk.GetArrayFromImage(fine_mask) > 0
    gland = np.any(np.stack(problem.regions.masks), axis=0)
    assert mask[gland].all() and 0.05 < mask.mean() < 0.9 and mask.sum() > gland.sum()
    assert sitk.GetArrayFromImage(coarse_mask).any() and coarse_mask.GetSize() == coarse.GetSize()
    # the mask on the finest level only: the coarse levels see the whole working region
    fine_only = reg.build_problem(case.t2, case.adc, case.zones, case.prostate,
                                  dataclasses.replace(settings, metric_mask_levels=1))
    assert [m is None for _, _, m in fine_only.levels_mi] == [True] * (len(fine_only.levels_mi) - 1) + [False]
    # without any mask (central region) the metric uses the whole working region
    bare = reg.build_problem(case.t2, case.adc, None, None, settings)
    assert all(m is None for _, _, m in bare.levels_mi)


def test_early_stop_ends_levels_sooner_on_an_easy_pair():
    easy = make_phantom(4, deformation_mm=2.0, with_dce=False, with_ktrans=False)
    case = easy.case
    settings = dataclasses.replace(FAST, iterations=30)
    stopping = dataclasses.replace(settings, convergence_window=3, convergence_tolerance=1e-3)
    problem = reg.build_problem(case.t2, case.adc, case.zones, case.prostate, settings)
    full, early = run_start(problem, settings, 0, 0), run_start(problem, stopping, 0, 0)
    assert early.iterations < full.iterations, (early.iterations, full.iterations)
    assert early.stop_condition != "failed" and len(early.loss_trace) == early.iterations
    # still a registration: better than leaving the images as they are
    identity = reg.score_problem(problem, settings, reg.identity_transform())
    assert early.score.total > identity.total, (early.score.total, identity.total)
