"""The registration bench's pieces: the authors' transforms mapped from their crop frame to LPS,
and the gradient criterion every candidate is compared on."""

from __future__ import annotations

import numpy as np
import SimpleITK as sitk

from ProstateLesionCADLib.demo.benchmarks import registration as bench
from ProstateLesionCADLib.phantoms.generate import make_phantom
from ProstateLesionCADLib.preprocessing.preprocess import crop_geometry_for
from ProstateLesionCADLib.registration.register import identity_transform
from ProstateLesionCADLib.study.loading import load_case


def test_authors_transform_is_conjugated_by_the_crop_frame(prostatex_dir, reference_dir):
    case = load_case(prostatex_dir / "ProstateX-0000")
    geometry = crop_geometry_for(case)
    path = reference_dir / "prostatex_transforms" / "ProstateX-0000.tfm"
    theirs = sitk.ReadTransform(str(path))
    ours = bench.authors_transform(path, geometry)
    direction = np.asarray(geometry.crop.direction).reshape(3, 3)

    def frame(p):  # their crop frame (corner at 0 mm, T2 axes) -> LPS
        return np.asarray(geometry.crop.origin) + direction @ (np.asarray(p) - np.asarray(geometry.crop.spacing) / 2)

    # their first voxel centre is our crop's first voxel centre
    np.testing.assert_allclose(frame((0.25, 0.25, 1.5)), geometry.crop.origin, atol=1e-9)
    for p in np.random.default_rng(0).uniform((0, 0, 0), (80, 80, 72), (20, 3)):
        np.testing.assert_allclose(ours.TransformPoint(tuple(frame(p))), frame(theirs.TransformPoint(tuple(p))),
                                   atol=1e-6)
    moved = [np.linalg.norm(np.subtract(ours.TransformPoint(tuple(frame(p))), frame(p)))
             for p in ((40, 40, 36), (30, 50, 30))]
    assert max(moved) > 0.5  # their field really moves the centre of the crop


def test_gradient_criterion_prefers_the_true_deformation():
    phantom = make_phantom(2, deformation_mm=8.0, with_dce=False, with_ktrans=False)
    case = phantom.case
    before = bench.gradient_criterion(case.t2, case.adc, identity_transform(), case.prostate)
    truth = bench.gradient_criterion(case.t2, case.adc, phantom.deformation, case.prostate)
    assert -1.0 <= before < truth <= 1.0 and truth - before > 0.05, (before, truth)


def test_chosen_names_the_variant_of_a_mixed_multi_start():
    import dataclasses

    from ProstateLesionCADLib.registration.multistart import PRESETS, StartResult
    from ProstateLesionCADLib.registration.register import RegistrationResult
    from ProstateLesionCADLib.registration.scoring import Score

    mixed = dataclasses.replace(PRESETS["fast"], start_variants=((("metric_margin_mm", 10.0),), ()))
    starts = [StartResult(i, identity_transform(), Score(0.1 * i), None, 1, "", 0.0, variant=i % 2) for i in range(4)]

    def result(settings, kept):
        return RegistrationResult(identity_transform(), kept, None if kept else 3, Score(0.3), Score(0.0),
                                  starts=starts, settings=settings)

    assert bench._chosen(result(mixed, False)) == "start 3 (variant 1)"
    assert bench._chosen(result(PRESETS["released"], False)) == "start 3"  # a preset without variants
    assert bench._chosen(result(mixed, True)) == "identity"
