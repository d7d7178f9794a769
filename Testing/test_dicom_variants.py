"""The real ProstateX studies in every shape a scanner or archive delivers them give the same case.

Copies are built from Testing/data/prostatex (ProstateX-0218: extended data) with `dicom_variants` (once per session, in a
temporary folder): Legacy Converted Enhanced MR objects (one per series; all 70 DCE time
points of ProstateX-0218 in one object), true Enhanced MR objects with standard functional
groups only, every file re-encoded in each compressed transfer syntax, and a DICOMDIR
file-set. Each must give the same roles, the same series choices and voxel-identical images
(within the codec's loss for lossy JPEG 2000) as the classic study, and `detect` the same
detections.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pydicom
import pytest
import SimpleITK as sitk
from pydicom.tag import Tag

import dicom_variants as dv
from ProstateLesionCADLib import cli
from ProstateLesionCADLib.errors import CaseError
from ProstateLesionCADLib.study.dicom_roles import load_dicom_case
from ProstateLesionCADLib.study.loading import load_case
from ProstateLesionCADLib.study.pixels import decode_file


@pytest.fixture(scope="session")
def study_0000(prostatex_dir):
    return prostatex_dir / "ProstateX-0000"


@pytest.fixture(scope="session")
def case_0000(prostatex_case):
    return prostatex_case("ProstateX-0000")


@pytest.fixture(scope="session")
def built(tmp_path_factory):
    """`built(name, builder)`: the folder `builder(folder)` fills, built once per session."""
    root = tmp_path_factory.mktemp("dicom-variants")
    cache = {}

    def get(name, builder):
        if name not in cache:
            cache[name] = builder(root / name)
        return cache[name]

    return get


def _pairs(copy, classic):
    pairs = [("T2", copy.t2, classic.t2)]
    if classic.adc is not None:
        pairs.append(("ADC", copy.adc, classic.adc))
    pairs += [(f"DWI b={b:g}", copy.dwi[b], classic.dwi[b]) for b in classic.dwi]
    pairs += [(f"DWI_COMPUTED b={b:g}", copy.dwi_computed[b], classic.dwi_computed[b]) for b in classic.dwi_computed]
    pairs += [(f"DCE {i}", a, b) for i, (a, b) in enumerate(zip(copy.dce, classic.dce))]
    return pairs


def assert_same_case(copy, classic, same_series=True, tolerance=None):
    """Same roles, b-values, DCE times, series choices, geometry; voxels identical unless a
    lossy `tolerance` (largest RMS error relative to the image's 99th percentile) is given."""
    assert copy.case_id == classic.case_id
    assert copy.roles_present() == classic.roles_present()
    assert sorted(copy.dwi) == sorted(classic.dwi) and sorted(copy.dwi_computed) == sorted(classic.dwi_computed)
    assert len(copy.dce) == len(classic.dce) and copy.dce_times == classic.dce_times
    if same_series:
        assert [(u.role, u.series_number, u.description) for u in copy.used] == \
               [(u.role, u.series_number, u.description) for u in classic.used]
        assert [(u.role, u.series_number, u.reason) for u in copy.unused] == \
               [(u.role, u.series_number, u.reason) for u in classic.unused]
    for name, a, b in _pairs(copy, classic):
        assert a.GetSize() == b.GetSize(), name
        assert np.allclose(a.GetSpacing(), b.GetSpacing(), atol=1e-5), name
        assert np.allclose(a.GetOrigin(), b.GetOrigin(), atol=1e-4), name
        assert np.allclose(a.GetDirection(), b.GetDirection(), atol=1e-6), name
        x, y = sitk.GetArrayFromImage(a), sitk.GetArrayFromImage(b)
        if tolerance is None:
            assert np.array_equal(x, y), name
        else:
            rms = float(np.sqrt(np.mean((x - y) ** 2)))
            assert rms <= tolerance * float(np.percentile(y, 99)), (name, rms)


def _files(folder):
    return sorted(p for p in folder.rglob("*") if p.is_file() and p.name != "DICOMDIR")


# ---------------------------------------------------------------- enhanced multi-frame

def test_legacy_converted_enhanced_copy_gives_the_same_case(study_0000, case_0000, built):
    folder = built("legacy-0000", lambda d: dv.legacy_enhanced(study_0000, d))
    files = _files(folder)
    assert len(files) == 4  # one multi-frame object per series
    headers = [pydicom.dcmread(f, stop_before_pixels=True) for f in files]
    assert {h.SOPClassUID for h in headers} == {"1.2.840.10008.5.1.4.1.1.4.4"}
    assert sorted(int(h.NumberOfFrames) for h in headers) == [19, 19, 19, 57]  # DWI: 3 b-values in one object
    assert_same_case(load_dicom_case(folder), case_0000)


def test_enhanced_mr_with_standard_functional_groups_only(study_0000, case_0000, built):
    """b-values only in MR Diffusion, TE/TR only in MR Echo/Timing, no private tags at all."""
    folder = built("enhanced-0000", lambda d: dv.legacy_enhanced(study_0000, d, true_enhanced=True))
    for f in _files(folder):
        ds = pydicom.dcmread(f, stop_before_pixels=True)
        assert ds.SOPClassUID == dv.ENHANCED_MR
        assert "EchoTime" not in ds and "RepetitionTime" not in ds and "SequenceName" not in ds
        tags = set()
        ds.walk(lambda _ds, element: tags.add(element.tag))
        assert not any(t.is_private for t in tags), f.name
        assert Tag(0x0020, 0x9170) not in tags and Tag(0x0020, 0x9171) not in tags  # no unassigned attributes
        assert (Tag(0x0018, 0x9117) in tags) == (int(ds.SeriesNumber) != 4)  # MR Diffusion in all but the T2
        assert Tag(0x0028, 0x9110) in tags and Tag(0x0020, 0x9113) in tags
    assert_same_case(load_dicom_case(folder), case_0000)


@pytest.mark.extended
def test_0218_with_every_dce_time_point_in_one_object(prostatex_0218_dir, prostatex_case, built):
    """70 time points x 20 slices in one legacy-converted object are split into the same 70
    volumes, in the same order, with the same times (from each frame's acquisition time)."""
    study = prostatex_0218_dir
    folder = built("legacy-0218", lambda d: dv.legacy_enhanced(study, d, merge=range(27, 97)))
    dce_object = pydicom.dcmread(folder / "27.dcm", stop_before_pixels=True)
    assert int(dce_object.NumberOfFrames) == 1400
    copy, classic = load_dicom_case(folder), prostatex_case("ProstateX-0218")
    assert_same_case(copy, classic, same_series=False)
    assert [(u.role, u.series_number) for u in copy.used if u.role != "DCE"] == \
           [(u.role, u.series_number) for u in classic.used if u.role != "DCE"]
    assert [u.series_number for u in copy.used if u.role == "DCE"] == [27]


def test_enhanced_object_with_a_missing_frame_is_refused_naming_the_series(study_0000, invalid_dir, tmp_path):
    dv.legacy_enhanced(study_0000, tmp_path, numbers=[4])
    broken = invalid_dir / "ProstateX-0000-missing-slice"
    datasets = [pydicom.dcmread(f) for f in sorted(broken.rglob("*.dcm"))]
    dv._legacy(datasets).save_as(tmp_path / "8.dcm", enforce_file_format=True)
    with pytest.raises(CaseError) as err:
        load_dicom_case(tmp_path)
    message = str(err.value)
    assert message.startswith("series 8 'ep2d_diff_tra_DYNDISTCALC_BVAL'") and "1 missing slice" in message
    assert message.endswith("mm; it cannot be used as DWI_COMPUTED:1000.") and "\n" not in message


def test_enhanced_object_mixing_orientations_is_refused(study_0000, tmp_path):
    dv.legacy_enhanced(study_0000, tmp_path, numbers=[4])
    ds = pydicom.dcmread(tmp_path / "4.dcm")
    frame = ds.PerFrameFunctionalGroupsSequence[7]
    frame.PlaneOrientationSequence = pydicom.Sequence([dv._item(ImageOrientationPatient=[0, 1, 0, 0, 0, -1])])
    ds.save_as(tmp_path / "4.dcm")
    with pytest.raises(CaseError, match=r"^series 4 't2_tse_tra' .* mixes slice orientations \(axial, sagittal\); "
                                        r"it cannot be used as T2\.$"):
        load_dicom_case(tmp_path)


# ---------------------------------------------------------------- transfer syntaxes

LOSSLESS = ("rle", "jpeg2000", "jpeg-ls", "jpeg-lossless", "deflated")


@pytest.mark.parametrize("name", LOSSLESS)
def test_each_lossless_syntax_loads_voxel_identical(name, study_0000, case_0000, built):
    folder = built(name, lambda d: dv.reencoded(study_0000, d, name))
    files = _files(folder)
    assert {str(pydicom.dcmread(f, stop_before_pixels=True).file_meta.TransferSyntaxUID) for f in files} == \
           {dv.SYNTAXES[name]}
    # pydicom with the declared decoders reads it; JPEG lossless goes to SimpleITK's GDCM (the
    # pylibjpeg plugin for it is GPL-3.0 and not a dependency)
    assert decode_file(str(files[0]))[1] is (name == "jpeg-lossless")
    assert_same_case(load_dicom_case(folder), case_0000)


@pytest.mark.parametrize("name", ["jpeg-ls", "jpeg-lossless", "legacy-jpeg2000"])
def test_without_pydicom_decoders_gdcm_reads_the_same_voxels(name, study_0000, case_0000, built, monkeypatch):
    """Slicer before the decoders are installed: SimpleITK's GDCM decodes instead."""
    if name == "legacy-jpeg2000":
        folder = built(name, lambda d: dv.legacy_enhanced(study_0000, d, syntax=dv.JPEG2000Lossless))
    else:
        folder = built(name, lambda d: dv.reencoded(study_0000, d, name))

    def no_decoder(self):
        raise NotImplementedError("no pixel data decoder for this transfer syntax")

    monkeypatch.setattr(pydicom.dataset.Dataset, "pixel_array", property(no_decoder))
    assert decode_file(str(_files(folder)[0]))[1] is True  # GDCM's answer, already rescaled
    assert_same_case(load_dicom_case(folder), case_0000)


def test_lossy_jpeg2000_loads_within_the_codec_loss(study_0000, case_0000, built):
    folder = built("jpeg2000-lossy", lambda d: dv.reencoded(study_0000, d, "jpeg2000-lossy"))
    copy = load_dicom_case(folder)
    assert_same_case(copy, case_0000, tolerance=0.05)
    assert not np.array_equal(sitk.GetArrayFromImage(copy.t2), sitk.GetArrayFromImage(case_0000.t2))


def test_compressed_enhanced_objects(study_0000, case_0000, built):
    folder = built("legacy-jpeg2000", lambda d: dv.legacy_enhanced(study_0000, d, syntax=dv.JPEG2000Lossless))
    assert {str(pydicom.dcmread(f, stop_before_pixels=True).file_meta.TransferSyntaxUID)
            for f in _files(folder)} == {dv.JPEG2000Lossless}
    assert_same_case(load_dicom_case(folder), case_0000)


def test_undecodable_syntax_is_one_sentence_naming_series_and_syntax(study_0000, tmp_path, capsys):
    dv.copy_classic(study_0000, tmp_path, [4, 7])
    for path in (tmp_path).glob("4.*/*.dcm"):
        ds = pydicom.dcmread(path)
        ds.file_meta.TransferSyntaxUID = "1.2.840.10008.1.2.4.100"  # MPEG2 video: no decoder reads it
        ds.PixelData = pydicom.encaps.encapsulate([b"\x00\x00\x01\xb3" + bytes(60)])
        ds["PixelData"].VR = "OB"
        ds.save_as(path, enforce_file_format=True)
    with pytest.raises(CaseError, match=r"^series 4 't2_tse_tra' \(.*\) cannot be decoded: its transfer syntax is "
                                        r"MPEG2 Main Profile / Main Level \(1\.2\.840\.10008\.1\.2\.4\.100\)"):
        load_dicom_case(tmp_path)
    assert cli.main(["load", str(tmp_path)]) == 2
    err = "".join(line for line in capsys.readouterr().err.splitlines(True) if not line.startswith("PROGRESS "))
    err = err.strip()
    assert err.startswith("error: series 4 't2_tse_tra'") and "MPEG2" in err and len(err.splitlines()) == 1


# ---------------------------------------------------------------- media

def test_dicomdir_file_set_is_followed(study_0000, case_0000, built, tmp_path):
    folder = built("dicomdir", lambda d: dv.dicomdir_copy(study_0000, d, lower_case=True))
    assert (folder / "DICOMDIR").is_file() and not any("." in p.name for p in _files(folder))
    assert_same_case(load_dicom_case(folder), case_0000)
    # A file the records do not reference is not part of the study, even in the medium's folders:
    # a later-acquired T2 copy would otherwise win the pick.
    medium = tmp_path / "medium"
    shutil.copytree(folder, medium)
    stray = pydicom.dcmread(next((study_0000).glob("4.*/*.dcm")))
    stray.SeriesInstanceUID, stray.SeriesNumber, stray.AcquisitionTime = pydicom.uid.generate_uid(), 99, "235959"
    stray.save_as(medium / "pt000000" / "stray", enforce_file_format=True)
    assert_same_case(load_dicom_case(medium), case_0000)
    # load_case accepts the DICOMDIR itself, and a medium missing a listed file is refused.
    assert_same_case(load_case(medium / "DICOMDIR"), case_0000)
    victim = _files(medium)[3]
    victim.unlink()
    with pytest.raises(CaseError, match=r"DICOMDIR: lists .* missing from the media"):
        load_dicom_case(medium)


# ---------------------------------------------------------------- detection

def test_detect_on_the_enhanced_copy_gives_the_same_detections(study_0000, built, tmp_path, capsys):
    folder = built("enhanced-0000", lambda d: dv.legacy_enhanced(study_0000, d, true_enhanced=True))
    results = {}
    for name, source in (("classic", study_0000), ("enhanced", folder)):
        out = tmp_path / name
        # --all: every local maximum (the phantom demo's working point keeps 14 of 257 on this real study)
        assert cli.main(["detect", str(source), "--model", "focalnet-demo", "--no-register", "--zones-backend",
                         "cascade", "--device", "cpu", "--out", str(out), "--all"]) == 0
        data = json.loads((out / "detections.json").read_text())
        results[name] = (data["cases"][0]["detections"],
                         sitk.GetArrayFromImage(sitk.ReadImage(str(out / "lesion-probability.nrrd"))))
    capsys.readouterr()
    assert results["enhanced"][0] == results["classic"][0] and len(results["classic"][0]) > 0
    assert np.array_equal(results["enhanced"][1], results["classic"][1])


# ---------------------------------------------------------------- the small copy in the repository

SMALL = Path(__file__).parent / "data" / "dicom-variants" / "ProstateX-0000-small"


def test_small_enhanced_compressed_medium_in_the_repository_loads_without_shared_data():
    files = [p for p in SMALL.rglob("*") if p.is_file()]
    assert sum(p.stat().st_size for p in files) < 400_000
    case = load_case(SMALL / "DICOMDIR")
    assert case.case_id == "ProstateX-0000"
    assert case.roles_present() == ["T2", "ADC", "DWI", "DWI_COMPUTED"]
    assert sorted(case.dwi) == [50.0, 400.0, 800.0] and sorted(case.dwi_computed) == [1000.0]
    assert case.t2.GetSize() == (64, 64, 19) and case.adc.GetSize() == (32, 32, 19)
    assert [(u.role, u.series_number) for u in case.used] == [
        ("T2", 4), ("ADC", 7), ("DWI:50", 6), ("DWI:400", 6), ("DWI:800", 6), ("DWI_COMPUTED:1000", 8)]
    syntaxes = {str(pydicom.dcmread(p, stop_before_pixels=True).file_meta.TransferSyntaxUID)
                for p in files if p.name != "DICOMDIR"}
    assert syntaxes == {dv.JPEG2000Lossless}


def test_small_medium_is_the_crop_of_the_classic_study(case_0000):
    case = load_case(SMALL)
    for name, small, full in _pairs(case, case_0000):
        size = small.GetSize()[0]
        r0, c0 = dv.crop_box(full.GetSize()[1], full.GetSize()[0], size)
        crop = full[c0:c0 + size, r0:r0 + size, :]
        assert np.allclose(small.GetOrigin(), crop.GetOrigin(), atol=1e-4), name
        assert np.allclose(small.GetDirection(), crop.GetDirection(), atol=1e-6), name
        assert np.array_equal(sitk.GetArrayFromImage(small), sitk.GetArrayFromImage(crop)), name
