"""Case JSON (prostate-cad-case/1), write_case_files, load_case dispatch and the embedded sample."""

from __future__ import annotations

import json

import numpy as np
import pytest
import SimpleITK as sitk

from ProstateLesionCADLib import cli
from ProstateLesionCADLib.study.case import Case
from ProstateLesionCADLib.study.case_json import CASE_FORMAT, read_case_json, write_case_files
from ProstateLesionCADLib.commands.load import role_lines
from ProstateLesionCADLib.study.loading import load_case
from ProstateLesionCADLib.errors import CaseError, FormatError, ParameterError
from ProstateLesionCADLib.formats import read_ground_truth
from ProstateLesionCADLib.resources import sample_case_dir


@pytest.fixture(scope="module")
def dicom_0000(prostatex_dir):
    return load_case(prostatex_dir / "ProstateX-0000")


def _image(size=(6, 5, 4), spacing=(0.5, 0.6, 3.0), origin=(1.0, -2.0, 3.0), seed=0, dtype=np.float32, scale=1.0):
    rng = np.random.default_rng(seed)
    img = sitk.GetImageFromArray((rng.random(size[::-1]) * scale).astype(dtype))
    img.SetSpacing(spacing)
    img.SetOrigin(origin)
    img.SetDirection((1, 0, 0, 0, 0.8, -0.6, 0, 0.6, 0.8))
    return sitk.Cast(img, sitk.sitkFloat32)


def _arrays_equal(a, b):
    return (a.GetSize() == b.GetSize() and np.allclose(a.GetOrigin(), b.GetOrigin(), atol=1e-6)
            and np.allclose(a.GetSpacing(), b.GetSpacing(), atol=1e-9)
            and np.allclose(a.GetDirection(), b.GetDirection(), atol=1e-9)
            and np.array_equal(sitk.GetArrayFromImage(a), sitk.GetArrayFromImage(b)))


def test_embedded_sample_matches_the_dicom(dicom_0000):
    sample = load_case(sample_case_dir())
    assert sample.case_id == "ProstateX-0000"
    assert sample.roles_present() == dicom_0000.roles_present()
    assert sorted(sample.dwi) == [50.0, 400.0, 800.0] and sorted(sample.dwi_computed) == [1000.0]
    pairs = [(sample.t2, dicom_0000.t2), (sample.adc, dicom_0000.adc)]
    pairs += [(sample.dwi[b], dicom_0000.dwi[b]) for b in dicom_0000.dwi]
    pairs += [(sample.dwi_computed[1000.0], dicom_0000.dwi_computed[1000.0])]
    for a, b in pairs:
        assert a.GetPixelID() == sitk.sitkFloat32
        assert _arrays_equal(a, b)
    # The sample remembers where each role came from: `load` prints the same lines.
    assert role_lines(sample) == role_lines(dicom_0000)
    # Small enough to ship, int16 storage as in the source.
    files = list(sample_case_dir().glob("*.nrrd"))
    assert sum(f.stat().st_size for f in files) < 6_000_000
    assert sitk.ReadImage(str(sample_case_dir() / "t2.nrrd")).GetPixelID() == sitk.sitkInt16
    # Ground truth: the biopsied GGG3 lesion lies inside the T2 volume.
    gt = read_ground_truth(sample_case_dir() / "ground-truth.json").by_case()["ProstateX-0000"]
    assert gt.patient_ggg == 3 and [l.ggg for l in gt.lesions] == [3]
    index = sample.t2.TransformPhysicalPointToContinuousIndex(gt.lesions[0].center_lps)
    assert all(0 <= i < n - 1 for i, n in zip(index, sample.t2.GetSize()))
    assert "CC BY 3.0" in (sample_case_dir() / "ATTRIBUTION.md").read_text()


def test_write_and_read_round_trip_every_role(tmp_path):
    t2 = _image(seed=1)
    mask = sitk.Cast(t2 > 0.5, sitk.sitkUInt8)
    zones = sitk.Cast((t2 > 0.3) + (t2 > 0.7), sitk.sitkUInt8)
    integer_adc = sitk.Cast(sitk.Cast(_image(seed=2, scale=3000.0), sitk.sitkUInt16), sitk.sitkFloat32)
    case = Case("SYN-7", t2, adc=integer_adc, dwi={50.0: _image(seed=3), 1400.0: _image(seed=4)},
                dwi_computed={2000.0: _image(seed=5)}, ktrans=_image(seed=6, scale=0.3),
                dce=[_image(seed=10 + i) for i in range(3)], dce_times=[0.0, 4.25, 8.5], prostate=mask, zones=zones)
    json_path = write_case_files(case, tmp_path / "out")
    data = json.loads(json_path.read_text())
    assert data["format"] == CASE_FORMAT and data["DWI"] == {"50": "dwi-b50.nrrd", "1400": "dwi-b1400.nrrd"}
    assert data["DCE"] == {"files": ["dce-000.nrrd", "dce-001.nrrd", "dce-002.nrrd"], "times_s": [0.0, 4.25, 8.5]}
    # Integer-valued data are stored as int16, real-valued as float32 (lossless both ways).
    assert sitk.ReadImage(str(tmp_path / "out" / "adc.nrrd")).GetPixelID() == sitk.sitkInt16
    assert sitk.ReadImage(str(tmp_path / "out" / "ktrans.nrrd")).GetPixelID() == sitk.sitkFloat32
    back = load_case(tmp_path / "out")
    assert back.case_id == "SYN-7" and back.dce_times == [0.0, 4.25, 8.5]
    for a, b in [(back.t2, t2), (back.adc, integer_adc), (back.ktrans, case.ktrans), (back.dwi[1400.0], case.dwi[1400.0]),
                 (back.dwi_computed[2000.0], case.dwi_computed[2000.0]), (back.dce[2], case.dce[2]),
                 (back.prostate, mask), (back.zones, zones)]:
        assert _arrays_equal(a, b)
    assert back.prostate.GetPixelID() == sitk.sitkUInt8


def _write_json(path, data):
    path.write_text(json.dumps(data))
    return path


def test_case_json_errors_are_one_clear_sentence(tmp_path):
    sitk.WriteImage(_image(), str(tmp_path / "t2.nrrd"))
    sitk.WriteImage(_image(size=(3, 3, 3)), str(tmp_path / "small.nrrd"))
    base = {"format": CASE_FORMAT, "T2": "t2.nrrd"}
    with pytest.raises(FormatError, match="unknown format 'prostate-cad-case/9'"):
        read_case_json(_write_json(tmp_path / "a.json", {**base, "format": "prostate-cad-case/9"}))
    with pytest.raises(CaseError, match="no 'T2' image and no 'dicom' folder"):
        read_case_json(_write_json(tmp_path / "b.json", {"format": CASE_FORMAT, "ADC": "t2.nrrd"}))
    with pytest.raises(CaseError, match=r"adc\.nrrd: ADC image file not found"):
        read_case_json(_write_json(tmp_path / "c.json", {**base, "ADC": "adc.nrrd"}))
    with pytest.raises(CaseError, match="the prostate mask is not on the T2 image grid"):
        read_case_json(_write_json(tmp_path / "d.json", {**base, "prostate": "small.nrrd"}))
    with pytest.raises(FormatError, match="'DCE' has 1 time points but 2 'times_s' values"):
        read_case_json(_write_json(tmp_path / "e.json", {**base, "DCE": {"files": ["t2.nrrd"], "times_s": [0, 1]}}))
    with pytest.raises(FormatError, match="'DWI' key 'high' is not a b-value"):
        read_case_json(_write_json(tmp_path / "f.json", {**base, "DWI": {"high": "t2.nrrd"}}))
    with pytest.raises(CaseError, match="DCE time point 2 has a different image grid"):
        read_case_json(_write_json(tmp_path / "g.json", {**base, "DCE": {"files": ["t2.nrrd", "small.nrrd"]}}))
    with pytest.raises(ParameterError, match="a series choice only applies to DICOM studies"):
        load_case(_write_json(tmp_path / "h.json", base), {"ADC": "9"})
    (tmp_path / "notes.txt").write_text("x")
    with pytest.raises(CaseError, match="expected a DICOM folder, a folder with case.json, or a case .json file"):
        load_case(tmp_path / "notes.txt")
    with pytest.raises(CaseError, match="no such file or folder"):
        load_case(tmp_path / "missing")


def test_4d_dce_file_and_case_json_next_to_images(tmp_path):
    frames = [_image(seed=20 + i) for i in range(4)]
    sitk.WriteImage(sitk.JoinSeries(frames), str(tmp_path / "dce.nii.gz"))
    sitk.WriteImage(frames[0], str(tmp_path / "t2.mha"))
    path = _write_json(tmp_path / "case-x.json", {"format": CASE_FORMAT, "T2": "t2.mha",
                                                  "DCE": {"file": "dce.nii.gz", "times_s": [0, 5, 10, 15]}})
    case = load_case(path)
    assert case.case_id == "case-x" and len(case.dce) == 4 and case.dce_times == [0.0, 5.0, 10.0, 15.0]
    assert np.allclose(sitk.GetArrayFromImage(case.dce[3]), sitk.GetArrayFromImage(frames[3]))
    assert np.allclose(case.dce[3].GetOrigin(), frames[3].GetOrigin(), atol=1e-4)


def test_case_json_over_dicom_with_choice_and_ktrans_file(prostatex_dir, tmp_path, dicom_0000):
    ktrans = sitk.Image(dicom_0000.t2.GetSize(), sitk.sitkFloat32)
    ktrans.CopyInformation(dicom_0000.t2)
    ktrans += 0.25
    sitk.WriteImage(ktrans, str(tmp_path / "ktrans.nrrd"))
    path = _write_json(tmp_path / "case.json", {"format": CASE_FORMAT, "case_id": "P0",
                                                "dicom": str(prostatex_dir / "ProstateX-0000"),
                                                "choose": {"T2": "4"}, "KTRANS": "ktrans.nrrd"})
    case = load_case(tmp_path)
    assert case.case_id == "P0" and case.roles_present() == ["T2", "ADC", "DWI", "DWI_COMPUTED", "KTRANS"]
    assert float(sitk.GetArrayViewFromImage(case.ktrans).mean()) == pytest.approx(0.25)
    assert [u.reason for u in case.used if u.role == "T2"] == ["chosen by the user"]
    with pytest.raises(ParameterError, match="Series '99' chosen for ADC"):
        load_case(path, {"ADC": "99"})
    # --ktrans on the command line for a DICOM study, plus export.
    out = tmp_path / "export"
    assert cli.main(["load", str(sample_case_dir()), "--ktrans", str(tmp_path / "ktrans.nrrd"),
                     "--export", str(out)]) == 0
    exported = load_case(out)
    assert exported.ktrans is not None and sorted(exported.dwi) == [50.0, 400.0, 800.0]


def test_failed_export_leaves_no_files(invalid_dir, tmp_path, capsys):
    out = tmp_path / "never"
    assert cli.main(["load", str(invalid_dir), "--export", str(out)]) == 2
    assert not out.exists() and list(tmp_path.iterdir()) == []
    assert "missing slice" in capsys.readouterr().err
