"""One itk-elastix registration, the yardstick of the registration bench (benchmark-only extra).

elastix's own default "bspline" parameter map with 3 resolutions, unchanged (BSpline transform,
final grid 10 mm, Mattes mutual information + bending-energy penalty, adaptive stochastic
gradient descent, 2048 random samples, 256 iterations per level), on the raw intensities of
the two images given (no mask, no initial transform). Timed in the calling process: wall and
CPU seconds (all elastix threads; CPU time is per process) of the registration alone, without
importing itk or converting images. The result is returned as a SimpleITK displacement-field
transform on the fixed grid, a *resampling* transform (fixed point → moving point) like the
presets' transforms, so the bench scores it with the same criterion.

`itk-elastix` is not a dependency of the project: `pip install -e '.[bench]'` (`make bench`
installs it). Imported inside the functions so the bench runs without it.
"""

from __future__ import annotations

import os
import tempfile
import time
from dataclasses import dataclass

import numpy as np
import SimpleITK as sitk

INSTALL_HINT = "pip install -e '.[bench]'"
RESOLUTIONS = 3


@dataclass
class ElastixRun:
    transform: sitk.Transform  # resampling transform, fixed (T2) point -> moving (ADC) point
    wall_s: float
    cpu_s: float
    threads: int  # elastix's threads (its default: one per core)
    version: str


def elastix_available() -> bool:
    """True when itk-elastix can be imported (the check itself does not import itk)."""
    import importlib.metadata

    try:
        importlib.metadata.version("itk-elastix")
    except importlib.metadata.PackageNotFoundError:
        return False
    return True


def missing_sentence(what: str) -> str:
    return f"itk-elastix is not installed, so {what} is not measured (install it with `{INSTALL_HINT}`)."


def _to_itk(image: sitk.Image):
    import itk

    out = itk.image_from_array(sitk.GetArrayFromImage(sitk.Cast(image, sitk.sitkFloat32)))
    out.SetOrigin(image.GetOrigin())
    out.SetSpacing(image.GetSpacing())
    out.SetDirection(itk.matrix_from_array(np.asarray(image.GetDirection(), float).reshape(3, 3)))
    return out


def _displacement_transform(field) -> sitk.Transform:
    import itk

    vectors = sitk.GetImageFromArray(np.asarray(itk.array_from_image(field), dtype=np.float64), isVector=True)
    vectors.SetOrigin(tuple(field.GetOrigin()))
    vectors.SetSpacing(tuple(field.GetSpacing()))
    vectors.SetDirection(tuple(itk.array_from_matrix(field.GetDirection()).ravel()))
    return sitk.DisplacementFieldTransform(vectors)  # takes the image over


def register_bspline(fixed: sitk.Image, moving: sitk.Image, threads: int | None = None) -> ElastixRun:
    """Register `moving` to `fixed` with elastix's default bspline map (3 resolutions)."""
    import importlib.metadata

    import itk

    fixed_itk, moving_itk = _to_itk(fixed), _to_itk(moving)
    parameters = itk.ParameterObject.New()
    parameters.AddParameterMap(parameters.GetDefaultParameterMap("bspline", RESOLUTIONS))
    method = itk.ElastixRegistrationMethod.New(fixed_itk, moving_itk)
    method.SetParameterObject(parameters)
    method.SetLogToConsole(False)
    if threads:
        method.SetNumberOfThreads(int(threads))
    wall, cpu = time.perf_counter(), time.process_time()
    method.UpdateLargestPossibleRegion()
    wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
    # transformix writes deformationField.nii into its output folder (the working folder by default)
    with tempfile.TemporaryDirectory(prefix="elastix-") as folder:
        field = itk.transformix_deformation_field(moving_itk, method.GetTransformParameterObject(),
                                                  output_directory=folder)
    return ElastixRun(transform=_displacement_transform(field), wall_s=wall, cpu_s=cpu,
                      threads=int(threads or os.cpu_count() or 1),
                      version=importlib.metadata.version("itk-elastix"))
