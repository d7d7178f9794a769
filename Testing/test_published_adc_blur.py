"""The released code's ADC blur for the published model's inputs: an ADC whose 40th percentile is 0
on the T2 grid is blurred with a Gaussian of variance 2 mm² (sigma sqrt(2) mm); any other ADC, and
every input of a package that does not ask for it (the demo models), is left as it was."""

from __future__ import annotations

from types import SimpleNamespace

import numpy as np
import SimpleITK as sitk

from ProstateLesionCADLib.demo.detector_model import demo_card
from ProstateLesionCADLib.detection.retina_unet.mdt_import import published_card
from ProstateLesionCADLib.pipeline import _retina_prepare
from ProstateLesionCADLib.preprocessing.crop_geometry import Grid
from ProstateLesionCADLib.preprocessing.preprocess import blur_sparse_adc, preprocess
from ProstateLesionCADLib.study.case import Case

SPACING = (0.5, 0.5, 3.0)
IMPULSE = (40, 20, 4)  # x, y, z: far from the filled half


def _image(arr: np.ndarray) -> sitk.Image:
    img = sitk.GetImageFromArray(arr.astype(np.float32))  # arr is (z, y, x)
    img.SetSpacing(SPACING)
    img.SetOrigin((-40.0, -40.0, -36.0))
    return img


def _adc(filled_rows: int) -> sitk.Image:
    """ADC on a 160x160x9 grid: rows 160 - filled_rows.. hold 1500, one bright voxel at IMPULSE, zero elsewhere."""
    arr = np.zeros((9, 160, 160))
    arr[:, 160 - filled_rows:, :] = 1500.0
    arr[IMPULSE[2], IMPULSE[1], IMPULSE[0]] = 1000.0
    return _image(arr)


def _t2() -> sitk.Image:
    rng = np.random.default_rng(0)
    return _image(200.0 + 50.0 * rng.random((9, 160, 160)))


def _variance_mm2(profile: np.ndarray, centre: int) -> float:
    offsets = (np.arange(len(profile)) - centre) * SPACING[0]
    return float(np.sum(profile * offsets ** 2) / np.sum(profile))


def test_mostly_empty_adc_is_blurred_with_variance_2_mm2():
    adc = _adc(filled_rows=80)  # half the voxels are 0: the 40th percentile is 0
    blurred, transform, description = blur_sparse_adc(adc, Grid.of(_t2()), None, "ADC")
    assert transform is None and "blurred" in description
    arr = sitk.GetArrayFromImage(blurred)
    x, y, z = IMPULSE
    along_x, along_y = arr[z, y, x - 15:x + 16], arr[z, y - 15:y + 16, x]
    assert abs(_variance_mm2(along_x, 15) - 2.0) < 0.2 and abs(_variance_mm2(along_y, 15) - 2.0) < 0.2
    assert arr[z, y, x] < 0.2 * 1000.0  # the peak spread over neighbours
    assert np.isclose(arr[z, 150, 80], 1500.0, rtol=1e-3)  # the filled half keeps its level


def test_adc_with_few_zeros_is_unchanged():
    adc = _adc(filled_rows=110)  # 31% zeros
    transform = sitk.TranslationTransform(3, (1.0, 0.0, 0.0))
    same, kept, description = blur_sparse_adc(adc, Grid.of(_t2()), transform, "ADC")
    assert same is adc and kept is transform and description == "ADC"


def _channels(adc: sitk.Image, card: dict) -> tuple[np.ndarray, dict]:
    case = Case("Blur", t2=_t2(), adc=adc)
    prep = _retina_prepare(SimpleNamespace(pkg=SimpleNamespace(card=card)), case, None, None, None, None)
    return prep.array, prep.sources


def test_only_the_published_package_asks_for_the_blur():
    published, demo = published_card([]), demo_card()
    assert published["preprocessing"]["released_adc_blur"] is True
    assert not (demo.get("preprocessing") or {}).get("released_adc_blur")
    sparse = _adc(filled_rows=80)
    with_blur, sources = _channels(sparse, published)
    without, demo_sources = _channels(sparse, demo)
    adc_channel = 3  # T2, DWI_LOW, DWI_HIGH, ADC, ...
    assert "blurred" in sources["ADC"] and "blurred" not in demo_sources["ADC"]
    assert not np.allclose(with_blur[adc_channel], without[adc_channel], atol=1e-3)
    assert np.array_equal(np.delete(with_blur, adc_channel, 0), np.delete(without, adc_channel, 0))
    # the demo models' inputs are what preprocess gives without the option
    assert np.array_equal(without, preprocess(Case("Blur", t2=_t2(), adc=sparse)).array)
    dense = _adc(filled_rows=110)
    assert np.array_equal(_channels(dense, published)[0], _channels(dense, demo)[0])
