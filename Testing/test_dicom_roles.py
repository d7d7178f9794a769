"""Case loading from DICOM: roles, b-values, DCE time points, pick rule, validation.

Real studies: Testing/data/prostatex (ProstateX-0000), ProstateX-0218 (extended data) and the
broken series built from ProstateX-0000 (conftest `invalid_dir`). Edge cases the real data lack (sagittal T2, localiser,
one-series DCE, irregular spacing, mixed orientation, vendor b-value tags) use tiny
DICOM files written here with pydicom.
"""

from __future__ import annotations

import random
import shutil
from pathlib import Path

import numpy as np
import pydicom
import pytest
import SimpleITK as sitk
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.uid import ExplicitVRLittleEndian, MRImageStorage, generate_uid

from ProstateLesionCADLib import cli
from ProstateLesionCADLib.study.dicom_roles import (b_value_of, load_dicom_case, plan_study, scan_dicom_tree,
                                              stack_geometry)
from ProstateLesionCADLib.errors import CaseError, ParameterError


# ---------------------------------------------------------------- real studies (session cache)

@pytest.fixture(scope="session")
def scan_0218(prostatex_scan):
    return prostatex_scan("ProstateX-0218")


@pytest.fixture(scope="session")
def case_0000(prostatex_case):
    return prostatex_case("ProstateX-0000")


@pytest.fixture(scope="session")
def case_0218(prostatex_case):
    return prostatex_case("ProstateX-0218")


def _used(case, role):
    return [u for u in case.used if u.role == role]


def test_prostatex_0000_roles_and_b_values(case_0000, prostatex_dir):
    case = case_0000
    assert case.case_id == "ProstateX-0000"
    assert case.roles_present() == ["T2", "ADC", "DWI", "DWI_COMPUTED"]
    assert sorted(case.dwi) == [50.0, 400.0, 800.0]
    assert sorted(case.dwi_computed) == [1000.0]
    assert case.dce == [] and case.ktrans is None
    assert case.t2.GetSize() == (384, 384, 19)
    assert np.allclose(case.t2.GetSpacing(), (0.5, 0.5, 3.0), atol=1e-4)
    assert case.adc.GetSize() == (84, 128, 19)
    for img in case.dwi.values():
        assert img.GetSize() == (84, 128, 19)
    assert [u.series_number for u in _used(case, "T2")] == [4]
    assert [u.series_number for u in _used(case, "ADC")] == [7]
    assert {u.series_number for u in case.used if u.role.startswith("DWI:")} == {6}
    assert [u.series_number for u in _used(case, "DWI_COMPUTED:1000")] == [8]
    assert case.unused == []

    # Geometry and voxels agree with SimpleITK/GDCM's own series reader.
    folder = prostatex_dir / "ProstateX-0000" / "4.000000-t2tsetra-00702"
    reader = sitk.ImageSeriesReader()
    reader.SetFileNames(reader.GetGDCMSeriesFileNames(str(folder)))
    ref = reader.Execute()
    assert np.allclose(ref.GetOrigin(), case.t2.GetOrigin(), atol=1e-4)
    assert np.allclose(ref.GetDirection(), case.t2.GetDirection(), atol=1e-6)
    assert np.array_equal(sitk.GetArrayFromImage(ref), sitk.GetArrayFromImage(case.t2))


def test_prostatex_0000_b_values_are_assigned_to_the_right_images(case_0000):
    """Signal falls with b, and ln(S50/S800)/750 reproduces the scanner's ADC map."""
    s50, s400, s800 = (sitk.GetArrayFromImage(case_0000.dwi[b]) for b in (50.0, 400.0, 800.0))
    adc = sitk.GetArrayFromImage(case_0000.adc)
    body = (s50 > np.percentile(s50, 75)) & (s800 > 5) & (adc > 0)
    assert s50[body].mean() > s400[body].mean() > s800[body].mean()
    estimate = np.log(s50[body] / s800[body]) / 750.0 * 1e6  # 1e-6 mm²/s like the map
    ratio = np.median(estimate / adc[body])
    assert 0.8 < ratio < 1.25, ratio


@pytest.mark.extended
def test_prostatex_0218_roles_b_values_and_dce(case_0218):
    case = case_0218
    assert case.roles_present() == ["T2", "ADC", "DWI", "DWI_COMPUTED", "DCE"]
    assert sorted(case.dwi) == [0.0, 100.0, 400.0, 500.0, 800.0, 1400.0]
    assert sorted(case.dwi_computed) == [1600.0]
    assert case.t2.GetSize() == (320, 320, 20)
    assert np.allclose(case.t2.GetSpacing(), (0.625, 0.625, 3.6), atol=1e-4)
    # 70 DCE time points, one series each, in acquisition order (= series order here).
    assert len(case.dce) == 70 and len(case.dce_times) == 70
    assert all(img.GetSize() == (160, 160, 20) for img in case.dce)
    assert case.dce_times[0] == 0.0 and np.all(np.diff(case.dce_times) > 0)
    assert 290 < case.dce_times[-1] < 300
    dce_series = [u.series_number for u in _used(case, "DCE")]
    assert dce_series == list(range(27, 97))
    # b-values from their own series: b100/b500/b1400 series, the rest from the 4-b series.
    assert [u.series_number for u in _used(case, "DWI:100")] == [17]
    assert [u.series_number for u in _used(case, "DWI:500")] == [18]
    assert [u.series_number for u in _used(case, "DWI:1400")] == [19]
    assert {u.series_number for r in ("DWI:0", "DWI:400", "DWI:800") for u in _used(case, r)} == {8}
    # Pick rule: two ADC maps; 21 'ADC_high bvalue' is later but computed from b up to 1400,
    # so the standard map 9 (from series 8, b <= 800) is used (PI-RADS: ADC from b <= 1000).
    assert [u.series_number for u in _used(case, "ADC")] == [9]
    unused = {(u.series_number, u.role): u.reason for u in case.unused}
    assert "series 9 used (ADC from b <= 1000 first" in unused[(21, "ADC")]
    assert "series 17 used" in unused[(8, "DWI:100")]


@pytest.mark.extended
def test_choose_overrides_the_pick(prostatex_0218_dir, scan_0218):
    root = prostatex_0218_dir
    assert plan_study(root, series=scan_0218).picks["ADC"].series.number == 9
    plan = plan_study(root, {"ADC": "21"}, series=scan_0218)
    assert plan.picks["ADC"].series.number == 21
    assert plan.reasons["ADC"] == "chosen by the user"
    uid = plan.picks["ADC"].series.uid
    assert plan_study(root, {"adc": uid}, series=scan_0218).picks["ADC"].series.number == 21
    # A whole DWI family from one series: only its b-values remain.
    plan = plan_study(root, {"DWI": "8"}, series=scan_0218)
    assert sorted(k for k in plan.picks if k.startswith("DWI:")) == ["DWI:0", "DWI:100", "DWI:400", "DWI:800"]
    assert plan.picks["DWI:100"].series.number == 8
    assert plan_study(root, {"DWI:100": "8"}, series=scan_0218).picks["DWI:100"].series.number == 8
    with pytest.raises(ParameterError, match=r"Series '5' chosen for ADC is not among the ADC candidates.*9 'ep2d"):
        plan_study(root, {"ADC": "5"}, series=scan_0218)
    with pytest.raises(ParameterError, match="Unknown role 'FLAIR'"):
        plan_study(root, {"FLAIR": "5"}, series=scan_0218)
    with pytest.raises(ParameterError, match="No KTRANS candidates"):
        plan_study(root, {"KTRANS": "5"}, series=scan_0218)


def test_missing_slice_is_refused_naming_the_series(invalid_dir):
    with pytest.raises(CaseError) as err:
        load_dicom_case(invalid_dir / "ProstateX-0000-missing-slice")
    message = str(err.value)
    assert "series 8 'ep2d_diff_tra_DYNDISTCALC_BVAL'" in message
    assert "1 missing slice" in message and "6.00 mm" in message and "3.00 mm" in message


def _scrambled_copy(folders: list[Path], dest: Path, seed: int) -> None:
    """Copy every file under random names into random nested folders, in random order."""
    rng = random.Random(seed)
    files = [f for folder in folders for f in folder.rglob("*") if f.is_file()]
    rng.shuffle(files)
    for i, f in enumerate(files):
        sub = dest / f"d{rng.randrange(4)}" / f"x {rng.randrange(3)}"
        sub.mkdir(parents=True, exist_ok=True)
        shutil.copy(f, sub / f"{rng.getrandbits(40):010x}")
    (dest / "README.txt").write_text("not DICOM")  # non-DICOM files are skipped


def test_shuffled_renamed_copy_gives_the_same_case(case_0000, prostatex_dir, tmp_path):
    _scrambled_copy([prostatex_dir / "ProstateX-0000"], tmp_path, seed=7)
    copy = load_dicom_case(tmp_path)
    assert copy.roles_present() == case_0000.roles_present()
    assert sorted(copy.dwi) == sorted(case_0000.dwi) and sorted(copy.dwi_computed) == sorted(case_0000.dwi_computed)
    for a, b in [(copy.t2, case_0000.t2), (copy.adc, case_0000.adc), (copy.dwi[400.0], case_0000.dwi[400.0])]:
        assert a.GetOrigin() == b.GetOrigin() and a.GetDirection() == b.GetDirection()
        assert np.array_equal(sitk.GetArrayFromImage(a), sitk.GetArrayFromImage(b))


@pytest.mark.extended
def test_shuffled_dce_series_keep_time_order(case_0218, prostatex_0218_dir, tmp_path):
    root = prostatex_0218_dir
    picked = [27, 28, 40, 55, 70, 96]
    folders = [p for p in root.iterdir() if p.name.split(".")[0] in {"5", *map(str, picked)}]
    _scrambled_copy(folders, tmp_path, seed=3)
    copy = load_dicom_case(tmp_path)
    assert [u.series_number for u in _used(copy, "DCE")] == picked
    full_times = dict(zip([u.series_number for u in _used(case_0218, "DCE")], case_0218.dce_times))
    assert np.allclose(copy.dce_times, [full_times[n] - full_times[27] for n in picked])
    for img, n in zip(copy.dce, picked):
        assert np.array_equal(sitk.GetArrayFromImage(img), sitk.GetArrayFromImage(case_0218.dce[n - 27]))


# ---------------------------------------------------------------- synthetic edge cases

AXIAL = (1.0, 0.0, 0.0, 0.0, 1.0, 0.0)
SAGITTAL = (0.0, 1.0, 0.0, 0.0, 0.0, -1.0)


def _write_series(folder: Path, number: int, description: str, positions, *, iop=AXIAL, rows=8, cols=8,
                  study="1.2.3.4", per_slice=None, **tags) -> str:
    """Tiny single-frame MR DICOM files; `per_slice(i)` returns extra tags for slice i."""
    folder.mkdir(parents=True, exist_ok=True)
    uid = generate_uid()
    for i, pos in enumerate(positions):
        ds = Dataset()
        ds.file_meta = FileMetaDataset()
        ds.file_meta.MediaStorageSOPClassUID = MRImageStorage
        ds.file_meta.MediaStorageSOPInstanceUID = generate_uid()
        ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
        ds.SOPClassUID = MRImageStorage
        ds.SOPInstanceUID = ds.file_meta.MediaStorageSOPInstanceUID
        ds.Modality = "MR"
        ds.PatientID = "SYN-1"
        ds.StudyInstanceUID = study
        ds.SeriesInstanceUID = uid
        ds.SeriesNumber = number
        ds.SeriesDescription = description
        ds.InstanceNumber = i + 1
        ds.ImageType = ["ORIGINAL", "PRIMARY", "M"]
        ds.ImageOrientationPatient = list(iop)
        ds.ImagePositionPatient = list(pos)
        ds.PixelSpacing = [1.0, 1.0]
        ds.Rows, ds.Columns = rows, cols
        ds.SamplesPerPixel = 1
        ds.PhotometricInterpretation = "MONOCHROME2"
        ds.BitsAllocated = ds.BitsStored = 16
        ds.HighBit = 15
        ds.PixelRepresentation = 0
        ds.AcquisitionDate = "20240101"
        ds.AcquisitionTime = f"1200{number % 60:02d}.000"
        for key, value in {**tags, **(per_slice(i) if per_slice else {})}.items():
            setattr(ds, key, value)
        ds.PixelData = np.full((rows, cols), i + 1, dtype=np.uint16).tobytes()
        ds.save_as(folder / f"{number}-{i:03d}.dcm", enforce_file_format=True)
    return uid


def _axial(n, step=3.0, z0=0.0):
    return [(0.0, 0.0, z0 + step * k) for k in range(n)]


T2_TAGS = dict(ScanningSequence="SE", RepetitionTime="5000", EchoTime="100")


def test_synthetic_roles_unused_reasons_and_one_series_dce(tmp_path):
    _write_series(tmp_path / "a", 1, "localizer", _axial(3), ImageType=["ORIGINAL", "PRIMARY", "LOCALIZER"])
    _write_series(tmp_path / "b", 2, "t2_tse_sag", [(3.0 * k, 0.0, 0.0) for k in range(4)], iop=SAGITTAL, **T2_TAGS)
    _write_series(tmp_path / "c", 3, "t2_tse_tra", _axial(5), **T2_TAGS)
    _write_series(tmp_path / "c2", 4, "t2_tse_tra repeat", _axial(5), **T2_TAGS)
    # DWI with b-values only in the standard tag, interleaved in one series.
    _write_series(tmp_path / "d", 5, "diff", _axial(4) * 2, ImageType=["DERIVED", "PRIMARY", "DIFFUSION", "TRACEW"],
                  per_slice=lambda i: {"DiffusionBValue": 50.0 if i < 4 else 1000.0})
    _write_series(tmp_path / "e", 6, "diff_FA", _axial(4), ImageType=["DERIVED", "PRIMARY", "DIFFUSION", "FA"])
    # One series holding 3 time points (2D: a time per slice), files in scrambled time order.
    order = [2, 0, 1]
    _write_series(tmp_path / "f", 7, "dyn_t1", _axial(4) * 3, ScanningSequence="GR", RepetitionTime="4",
                  per_slice=lambda i: {"TriggerTime": str(1000.0 * (10 * order[i // 4] + i % 4))})
    case = load_dicom_case(tmp_path)
    assert case.roles_present() == ["T2", "DWI", "DCE"]
    assert sorted(case.dwi) == [50.0, 1000.0]
    assert [u.series_number for u in _used(case, "T2")] == [4]  # latest-acquired of two
    assert len(case.dce) == 3 and case.dce_times == [0.0, 10.0, 20.0]
    reasons = {u.series_number: u.reason for u in case.unused}
    assert reasons[1] == "localiser"
    assert "sagittal T2" in reasons[2]
    assert "series 4 used" in reasons[3]
    assert "FA" in reasons[6]
    # Choosing the earlier T2 by number.
    assert [u.series_number for u in _used(load_dicom_case(tmp_path, {"T2": "3"}), "T2")] == [3]


def test_no_axial_t2_is_refused(tmp_path):
    _write_series(tmp_path, 2, "t2_tse_sag", [(3.0 * k, 0.0, 0.0) for k in range(4)], iop=SAGITTAL, **T2_TAGS)
    with pytest.raises(CaseError, match=r"no axial T2 series found; found series 2 't2_tse_sag' \(sagittal T2"):
        load_dicom_case(tmp_path)


def test_geometry_problems_name_the_series(tmp_path):
    _write_series(tmp_path / "irregular", 3, "t2_tse_tra", [(0, 0, 0), (0, 0, 3), (0, 0, 7), (0, 0, 10)], **T2_TAGS)
    with pytest.raises(CaseError, match=r"series 3 't2_tse_tra' .* has irregular slice spacing"):
        load_dicom_case(tmp_path / "irregular")
    _write_series(tmp_path / "mixed", 4, "t2_tse_tra", _axial(4), **T2_TAGS,
                  per_slice=lambda i: {"ImageOrientationPatient": list(AXIAL if i != 2 else (1, 0, 0, 0, 0.8, -0.6))})
    with pytest.raises(CaseError, match=r"series 4 't2_tse_tra' .* mixes slice orientations"):
        load_dicom_case(tmp_path / "mixed")
    _write_series(tmp_path / "planes", 8, "t2_tse", _axial(2) + [(6.0, 0, 0)], **T2_TAGS,
                  per_slice=lambda i: {"ImageOrientationPatient": list(AXIAL if i < 2 else SAGITTAL)})
    with pytest.raises(CaseError, match=r"series 8 't2_tse' .* mixes slice orientations \(axial, sagittal\)"):
        load_dicom_case(tmp_path / "planes")
    _write_series(tmp_path / "sizes", 5, "t2_tse_tra", _axial(4), **T2_TAGS,
                  per_slice=lambda i: {"PixelSpacing": [1.0, 1.0] if i else [0.5, 0.5]})
    with pytest.raises(CaseError, match=r"series 5 't2_tse_tra' .* mixes image sizes"):
        load_dicom_case(tmp_path / "sizes")
    # A broken repeat is skipped when a complete candidate exists, and listed with its problem.
    _write_series(tmp_path / "ok" / "a", 6, "t2_tse_tra", _axial(4), **T2_TAGS)
    _write_series(tmp_path / "ok" / "b", 7, "t2_tse_tra", [(0, 0, 0), (0, 0, 3), (0, 0, 9)], **T2_TAGS)
    case = load_dicom_case(tmp_path / "ok")
    assert [u.series_number for u in _used(case, "T2")] == [6]
    assert "missing slice" in case.unused[0].reason and case.unused[0].series_number == 7
    with pytest.raises(CaseError, match=r"series 7 .* missing slice.*cannot be used as T2"):
        load_dicom_case(tmp_path / "ok", {"T2": "7"})


def test_two_studies_in_one_folder_are_refused(tmp_path):
    _write_series(tmp_path / "a", 3, "t2_tse_tra", _axial(3), study="1.2.3", **T2_TAGS)
    _write_series(tmp_path / "b", 3, "t2_tse_tra", _axial(3), study="1.2.4", **T2_TAGS)
    with pytest.raises(CaseError, match="holds more than one study"):
        load_dicom_case(tmp_path)
    with pytest.raises(CaseError, match="no DICOM files found"):
        (tmp_path / "empty").mkdir()
        load_dicom_case(tmp_path / "empty")


def test_b_value_tags_of_each_vendor():
    def ds_with(**private):
        ds = Dataset()
        for (group, block, creator), (element, vr, value) in private.get("items", {}).items():
            ds.add_new((group, block), "LO", creator)
            ds.add_new((group, (block << 8) | element), vr, value)
        return ds

    assert b_value_of(ds_with()) is None
    std = Dataset()
    std.DiffusionBValue = 1400.0
    assert b_value_of(std) == 1400.0
    assert b_value_of(ds_with(items={(0x0019, 0x10, "SIEMENS MR HEADER"): (0x0C, "OB", b"800 ")})) == 800.0
    assert b_value_of(ds_with(items={(0x0019, 0x11, "SIEMENS MR HEADER"): (0x0C, "IS", "500")})) == 500.0
    # Same element number under another creator is not a b-value.
    assert b_value_of(ds_with(items={(0x0019, 0x10, "OTHER VENDOR"): (0x0C, "IS", "500")})) is None
    assert b_value_of(ds_with(items={(0x0043, 0x10, "GEMS_PARM_01"): (0x39, "IS", [1000001000, 0, 0, 0])})) == 1000.0
    assert b_value_of(ds_with(items={(0x2001, 0x10, "Philips Imaging DD 001"): (0x03, "FL", 1500.0)})) == 1500.0
    seq = Dataset()
    seq.SequenceName = "*ep_b800t"
    assert b_value_of(seq) == 800.0
    seq.SequenceName = "*ep_b50_800"  # an ADC's sequence name names two b-values: not one image's
    assert b_value_of(seq) is None


def test_adc_named_after_a_high_b_series_ranks_last():
    from types import SimpleNamespace as NS
    from ProstateLesionCADLib.study.dicom_roles import _high_b_adc_maps
    def vol(description, uid, b=None):
        return NS(series=NS(description=description, uid=uid), b_value=b)
    diffusion = [vol("ep2d_diff_hb", "d1", b) for b in (50.0, 1400.0)] + [vol("ep2d_diff", "d2", b) for b in (50.0, 800.0)]
    adc = [vol("ep2d_diff_ADC", "a1"), vol("ep2d_diff_hb_ADC", "a2"), vol("ADC map", "a3"), vol("ADC high-b", "a4"),
           vol("ADC highbandwidth", "a5")]
    # a1's source is ep2d_diff (b <= 800); ep2d_diff_hb_ADC also starts with it but its own
    # source (b 1400) counts; a3 has no known source; a4 says high b; a5 only "high bandwidth".
    assert _high_b_adc_maps(adc, diffusion) == frozenset({"a2", "a4"})


def test_cli_load_prints_roles_and_refuses_invalid(prostatex_dir, invalid_dir, capsys):
    assert cli.main(["load", str(prostatex_dir / "ProstateX-0000")]) == 0
    out = capsys.readouterr().out
    lines = [l for l in out.splitlines() if not l.startswith("PROGRESS")]
    assert lines[0] == "case ProstateX-0000"
    assert lines[1].split()[:4] == ["T2", "-", "384x384x19", "0.5x0.5x3"]
    assert "series 4 't2_tse_tra'" in lines[1]
    assert [l.split()[1] for l in lines if l.startswith("DWI ")] == ["b=50", "b=400", "b=800"]
    assert any(l.startswith("DWI_COMPUTED  b=1000") for l in lines)
    assert cli.main(["load", str(invalid_dir / "ProstateX-0000-missing-slice")]) == 2
    err = "".join(line for line in capsys.readouterr().err.splitlines(True) if not line.startswith("PROGRESS "))
    assert err.startswith("error: series 8 'ep2d_diff_tra_DYNDISTCALC_BVAL'") and "missing slice" in err
    assert cli.main(["load", str(prostatex_dir / "ProstateX-0000"), "--choose", "ADC"]) == 2
    assert "expected ROLE=SERIES" in capsys.readouterr().err


def test_stack_geometry_sorts_any_file_order():
    from ProstateLesionCADLib.study.dicom_roles import SliceHeader

    def header(z, n):
        return SliceHeader(path=f"{n}", series_uid="1", series_number=1, description="", image_type=(), modality="MR",
                           patient_id="", study_uid="", iop=(1, 0, 0, 0, 0.8, -0.6), ipp=(1.0, 0.6 * z, 0.8 * z),
                           rows=4, cols=6, pixel_spacing=(0.5, 0.25), frames=1, has_pixels=True, b_value=None,
                           sequence_name="", scanning_sequence="", acquisition_type="", tr=None, te=None,
                           instance_number=n, temporal_position=None, trigger_time_s=None, acquisition_s=None,
                           content_s=None, acquisition_time=None)

    slices = [header(z, n) for n, z in enumerate([6.0, 0.0, 9.0, 3.0])]
    ordered, g = stack_geometry(slices)
    assert [s.path for s in ordered] == ["1", "3", "0", "2"]
    assert g.size == (6, 4, 4) and np.allclose(g.spacing, (0.25, 0.5, 3.0)) and np.allclose(g.origin, (1, 0, 0))
    # Slice normal = row x column: (0, 0.6, 0.8) is the third direction column.
    assert np.allclose(np.array(g.direction).reshape(3, 3)[:, 2], (0, 0.6, 0.8))


@pytest.mark.extended
def test_fast_pixel_path_equals_pydicom(prostatex_dir, scan_0218):
    """Pixels read at the offset found by the header scan equal pydicom's decoding."""
    from ProstateLesionCADLib.study.dicom_roles import _read_raw

    series = scan_dicom_tree(prostatex_dir / "ProstateX-0000") + scan_0218[:12]
    checked = 0
    for s in series:
        for header in s.slices[:: max(1, len(s.slices) // 3)]:
            assert header.raw_pixels is not None
            raw = _read_raw(header)
            assert raw is not None and np.array_equal(raw, pydicom.dcmread(header.path).pixel_array.astype(np.float32))
            checked += 1
    assert checked > 40
