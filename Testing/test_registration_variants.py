"""Mixed multi-start: starts cycling through metric variants (e.g. gland-masked and whole-region),
paired initialisations, reproducible for a seed, one selection score, the identity guard kept;
and the whole-region refinement pass after gland-masked levels."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
import SimpleITK as sitk

from ProstateLesionCADLib.errors import ParameterError
from ProstateLesionCADLib.phantoms.generate import make_phantom
from ProstateLesionCADLib.registration import register as reg
from ProstateLesionCADLib.registration.multistart import PRESETS, initial_bspline, run_start

MASKED = (("metric_fraction", 0.25), ("metric_margin_mm", 10.0))
WHOLE = (("metric_fraction", 0.25), ("metric_margin_mm", None))
MIXED = dataclasses.replace(PRESETS["fast"], metric_fraction=None, metric_margin_mm=None, starts=4,
                            start_variants=(MASKED, WHOLE))


@pytest.fixture(scope="module")
def phantom():
    return make_phantom(2, deformation_mm=8.0, with_dce=False, with_ktrans=False)


@pytest.fixture(scope="module")
def problem(phantom):
    case = phantom.case
    return reg.build_problem(case.t2, case.adc, case.zones, case.prostate, MIXED)


@pytest.fixture(scope="module")
def mixed(phantom):
    return reg.register_case(phantom.case, preset=MIXED, seed=3, workers=2)


def test_each_variant_gets_its_own_metric_mask(problem):
    masked, whole = problem.variant_levels
    assert len(masked) == len(whole) == len(MIXED.gradient_sigmas_mm)
    assert all(m is not None for _, _, m in masked) and all(m is None for _, _, m in whole)
    # the gradient images are the same objects: only the masks differ
    assert all(a[0] is b[0] and a[1] is b[1] for a, b in zip(masked, whole))
    gland = np.any(np.stack(problem.regions.masks), axis=0)
    mask = sitk.GetArrayFromImage(masked[-1][2]) > 0
    assert mask[gland].all() and mask.sum() > gland.sum() and not mask.all()


def test_starts_alternate_variants_from_paired_initialisations(mixed, problem):
    assert [s.variant for s in mixed.starts] == [0, 1, 0, 1]
    assert [s.as_dict()["variant"] for s in mixed.starts] == [0, 1, 0, 1]
    # starts 0 and 1 both begin at the identity, starts 2 and 3 from the same random initialisation
    assert mixed.starts[0].initial_translation_mm == mixed.starts[1].initial_translation_mm == [0.0, 0.0, 0.0]
    assert mixed.starts[2].initial_translation_mm == mixed.starts[3].initial_translation_mm != [0.0, 0.0, 0.0]
    assert mixed.starts[2].initial_translation_mm == initial_bspline(problem, MIXED, 1, 3)[1]
    # the variants really optimise differently (masked metric against whole-region metric)
    params = [np.array(s.transform.GetParameters()) for s in mixed.starts]
    assert not np.allclose(params[0], params[1], atol=1e-4)
    # one selection score for all: the chosen start is the best-scoring one, of whichever variant
    best = max(mixed.starts, key=lambda s: s.score.total)
    assert not mixed.identity_kept and mixed.chosen_start == best.index
    assert mixed.chosen_score.total > mixed.identity_score.total
    assert mixed.as_dict()["settings"]["start_variants"] == [dict(MASKED), dict(WHOLE)]


def test_mixed_run_is_reproducible_for_a_seed_in_process(phantom, mixed):
    again = reg.register_case(phantom.case, preset=MIXED, starts=2, seed=3, workers=1)
    for a, b in zip(again.starts, mixed.starts[:2]):
        assert a.variant == b.variant
        np.testing.assert_allclose(a.transform.GetParameters(), b.transform.GetParameters(), atol=1e-9)
        assert a.score.total == pytest.approx(b.score.total, abs=1e-9)
    other = reg.register_case(phantom.case, preset=MIXED, starts=2, seed=4, workers=1)
    assert not np.allclose(other.starts[0].transform.GetParameters(), mixed.starts[0].transform.GetParameters(),
                           atol=1e-6)


def test_identity_guard_kept_with_variants():
    """Aligned images and starts thrown far away by huge steps: the identity is kept."""
    aligned = make_phantom(4, deformation_mm=0.0, with_dce=False, with_ktrans=False)
    settings = reg.RegistrationSettings(name="test", starts=2, working_spacing_mm=(1.5, 1.5, 3.0), iterations=2,
                                        step_mm=12.0, min_step_mm=11.0, init_translation_sd_mm=12.0,
                                        start_variants=(MASKED, WHOLE))
    result = reg.register_case(aligned.case, preset=settings, starts=4, seed=1, workers=1)
    assert [s.variant for s in result.starts] == [0, 1, 0, 1]
    assert result.best_start_total() <= result.identity_score.total
    assert result.identity_kept and result.chosen_start is None


def test_whole_refinement_adds_one_unmasked_pass(phantom, problem):
    settings = dataclasses.replace(MIXED, start_variants=(), metric_fraction=0.25, metric_margin_mm=10.0)
    refined = dataclasses.replace(settings, whole_refinement=0.25)
    plain_problem = reg.build_problem(phantom.case.t2, phantom.case.adc, phantom.case.zones, phantom.case.prostate,
                                      settings)
    plain, more = run_start(plain_problem, settings, 0, 0), run_start(plain_problem, refined, 0, 0)
    assert plain.iterations < more.iterations <= plain.iterations + settings.iterations
    # the same levels (up to ITK's threaded summation order), then the refinement
    assert more.loss_trace[:plain.iterations] == pytest.approx(plain.loss_trace, rel=1e-9)
    assert not np.allclose(plain.transform.GetParameters(), more.transform.GetParameters(), atol=1e-6)
    assert more.score.total > reg.score_problem(plain_problem, settings, reg.identity_transform()).total


def test_variants_may_only_change_the_metric():
    bad = dataclasses.replace(MIXED, start_variants=(MASKED, (("grid_spacing_mm", 20.0),)))
    with pytest.raises(ParameterError, match="grid_spacing_mm"):
        reg._settings_for(bad, None)
    released = dataclasses.replace(PRESETS["released"], start_variants=(MASKED,))
    with pytest.raises(ParameterError, match="multilevel"):
        reg._settings_for(released, None)


def test_default_preset_is_the_mixed_multi_start(phantom):
    """The default (paper) alternates the gland + 10 mm and the whole-region metric, 10% samples
    each, 50 starts; a short run of it registers a phantom from both variants."""
    paper = PRESETS["paper"]
    assert paper.starts == 50 and paper.variant_count() == 2
    masked, whole = paper.variant(0), paper.variant(1)
    assert (masked.metric_fraction, masked.metric_margin_mm) == (0.1, 10.0)
    assert (whole.metric_fraction, whole.metric_margin_mm) == (0.1, None)
    result = reg.register_case(phantom.case, starts=4, seed=0, workers=2)
    assert result.settings.start_variants == paper.start_variants
    assert [s.variant for s in result.starts] == [0, 1, 0, 1]
    assert all(s.score is not None for s in result.starts)
    assert not result.identity_kept and result.chosen_score.total > result.identity_score.total
