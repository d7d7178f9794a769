"""Vendor conventions on real series: where the b-value is, trace beside direction images,
the unit of the scanner's ADC map.

Copies of ProstateX-0000 (Testing/data/prostatex) are rewritten so that each convention
is the only source of the information (`dicom_variants`), then loaded and compared with the
classic study.
"""

from __future__ import annotations

import numpy as np
import pydicom
import pytest
import SimpleITK as sitk
from pydicom.dataset import Dataset

import dicom_variants as dv
from ProstateLesionCADLib.errors import CaseError
from ProstateLesionCADLib.study.adc_units import adc_to_micro, adc_unit
from ProstateLesionCADLib.study.dicom_roles import load_dicom_case, scan_dicom_tree
from ProstateLesionCADLib.study.diffusion_tags import DIRECTIONAL, ISOTROPIC, b_value_of, directionality_of
from test_dicom_variants import assert_same_case


@pytest.fixture(scope="module")
def study_0000(prostatex_dir):
    return prostatex_dir / "ProstateX-0000"


@pytest.fixture(scope="module")
def case_0000(prostatex_case):
    return prostatex_case("ProstateX-0000")


VENDORS = ("standard", "siemens-csa", "siemens-name", "ge", "philips")


@pytest.mark.parametrize("vendor", VENDORS)
def test_b_values_from_one_vendors_tags_only(vendor, study_0000, case_0000, tmp_path):
    dv.vendor_b_values(study_0000, tmp_path, vendor, diffusion=[6, 8], others=[4, 7])
    ds = pydicom.dcmread(next(tmp_path.glob("6.*/*.dcm")), stop_before_pixels=True)
    sources = {"standard": "DiffusionBValue" in ds, "siemens-name": "SequenceName" in ds,
               "siemens-csa": ds.get((0x0019, 0x0010)) is not None, "ge": ds.get((0x0043, 0x0010)) is not None,
               "philips": ds.get((0x2001, 0x0010)) is not None}
    assert [k for k, present in sources.items() if present] == [vendor]
    assert_same_case(load_dicom_case(tmp_path), case_0000)


def test_directionality_tags_of_each_vendor():
    def ds(**attributes):
        d = Dataset()
        for key, value in attributes.items():
            setattr(d, key, value)
        return d

    assert directionality_of(Dataset()) is None
    assert directionality_of(ds(DiffusionDirectionality="ISOTROPIC")) == ISOTROPIC
    assert directionality_of(ds(DiffusionDirectionality="DIRECTIONAL")) == DIRECTIONAL
    assert directionality_of(ds(DiffusionGradientOrientation=[0.0, 0.0, 0.0])) == ISOTROPIC
    assert directionality_of(ds(DiffusionGradientOrientation=[0.0, 0.6, 0.8])) == DIRECTIONAL
    nested = ds(DiffusionGradientDirectionSequence=pydicom.Sequence([ds(DiffusionGradientOrientation=[1.0, 0, 0])]))
    assert directionality_of(nested) == DIRECTIONAL
    siemens = Dataset()
    siemens.private_block(0x0019, "SIEMENS MR HEADER", create=True).add_new(0x0D, "CS", "ISOTROPIC")
    assert directionality_of(siemens) == ISOTROPIC
    for letter, expected in (("I", ISOTROPIC), ("P", DIRECTIONAL), ("O", DIRECTIONAL)):
        philips = Dataset()
        philips.private_block(0x2001, "Philips Imaging DD 001", create=True).add_new(0x04, "CS", letter)
        assert directionality_of(philips) == expected
    other = Dataset()  # the same element under another creator says nothing
    other.private_block(0x2001, "SOMEONE ELSE", create=True).add_new(0x04, "CS", "I")
    assert directionality_of(other) is None and b_value_of(other) is None


def test_trace_beside_direction_images_is_used(study_0000, case_0000, tmp_path):
    dv.with_directions(study_0000, tmp_path, 6, others=[4, 7, 8], keep_trace=True)
    series = next(s for s in scan_dicom_tree(tmp_path) if s.number == 6)
    assert len(series.slices) == 19 * 3 * 4  # b 50/400/800: the trace and 3 directions at each of 19 positions
    case = load_dicom_case(tmp_path)
    assert_same_case(case, case_0000, same_series=False)
    assert [u.series_number for u in case.used if u.role.startswith("DWI:")] == [6, 6, 6]
    assert any("b=800: the trace-weighted images of 4 per slice position" in n for n in case.notes)


def test_direction_images_without_trace_give_their_geometric_mean(study_0000, case_0000, tmp_path):
    dv.with_directions(study_0000, tmp_path, 6, others=[4, 7, 8], keep_trace=False)
    case = load_dicom_case(tmp_path)
    assert sorted(case.dwi) == [50.0, 400.0, 800.0]
    for b in case.dwi:
        mean, trace = sitk.GetArrayFromImage(case.dwi[b]), sitk.GetArrayFromImage(case_0000.dwi[b])
        assert case.dwi[b].GetOrigin() == case_0000.dwi[b].GetOrigin()
        body = trace > 5  # rounding the direction images to integers moves the mean by < 1
        assert np.abs(mean[body] - trace[body]).max() < 1.0, b
    assert any("b=400: geometric mean of the 3 images per slice position" in n for n in case.notes)
    # an arithmetic mean would be off by (1.25 + 0.8 + 1) / 3 - 1 = 1.7 %: the geometric one is exact
    assert np.isclose(np.mean(sitk.GetArrayFromImage(case.dwi[800.0])), np.mean(sitk.GetArrayFromImage(case_0000.dwi[800.0])),
                      rtol=2e-3)


def test_direction_images_missing_at_one_position_are_refused(study_0000, tmp_path):
    dv.with_directions(study_0000, tmp_path, 6, others=[4], keep_trace=False)
    victim = sorted(tmp_path.glob("6.*/*.dcm"))[-1]
    victim.unlink()
    with pytest.raises(CaseError, match=r"series 6 .* has 2 images at some slice positions and 3 at others at b=800"):
        load_dicom_case(tmp_path)


@pytest.mark.parametrize("slope,unit", [(1e-3, "10^-3 mm²/s"), (1e-6, "mm²/s")])
def test_adc_in_another_unit_is_converted_and_said(slope, unit, study_0000, case_0000, tmp_path):
    dv.scaled_adc(study_0000, tmp_path, 7, others=[4, 6, 8], slope=slope)
    case = load_dicom_case(tmp_path)
    assert np.allclose(sitk.GetArrayFromImage(case.adc), sitk.GetArrayFromImage(case_0000.adc), rtol=1e-5, atol=1e-3)
    assert case.notes == [f"ADC from series 7 'ep2d_diff_tra_DYNDIST_ADC': ADC stored in {unit} "
                          f"(99th percentile {2919 * slope:.4g}); multiplied by {1 / slope:g} to 10^-6 mm²/s"]
    assert unit in next(u.reason for u in case.used if u.role == "ADC")
    assert case_0000.notes == []  # ProstateX stores 10^-6 mm²/s: nothing to say


def test_adc_unit_ranges():
    tissue = np.linspace(0.3e-3, 3.2e-3, 1000)  # mm²/s
    assert adc_unit(tissue * 1e6)[:2] == ("10^-6 mm²/s", 1.0)
    assert adc_unit(tissue * 1e3)[:2] == ("10^-3 mm²/s", 1e3)
    assert adc_unit(tissue)[:2] == ("mm²/s", 1e6)
    assert adc_unit(np.zeros(10))[0] is None
    assert adc_unit(tissue * 3e4)[0] is None  # 10^-5-ish: no known unit
    image = sitk.GetImageFromArray((tissue * 3e4).reshape(10, 10, 10).astype(np.float32))
    kept, note = adc_to_micro(image)
    assert kept is image and "fit no known unit" in note


def test_load_verb_prints_the_unit_note(study_0000, tmp_path, capsys):
    from ProstateLesionCADLib import cli

    dv.scaled_adc(study_0000, tmp_path, 7, others=[4, 6, 8], slope=1e-3)
    assert cli.main(["load", str(tmp_path)]) == 0
    notes = [line for line in capsys.readouterr().err.splitlines() if line.startswith("note: ")]
    assert notes == ["note: ADC from series 7 'ep2d_diff_tra_DYNDIST_ADC': ADC stored in 10^-3 mm²/s "
                     f"(99th percentile {2919 * 1e-3:.4g}); multiplied by 1000 to 10^-6 mm²/s"]
