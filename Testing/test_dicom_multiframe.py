"""Enhanced MR objects written here frame by frame: what real conversions of ProstateX lack.

Frames in scrambled order, DCE time only in the Temporal Position functional group, trace
and direction frames in one object (MR Diffusion), a per-frame rescale, a multi-frame object
without per-frame functional groups. The real studies in Enhanced form are in
test_dicom_variants.py.
"""

from __future__ import annotations

import numpy as np
import pytest
import SimpleITK as sitk
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.sequence import Sequence
from pydicom.uid import ExplicitVRLittleEndian, generate_uid

from ProstateLesionCADLib.errors import CaseError
from ProstateLesionCADLib.study.dicom_roles import load_dicom_case, scan_dicom_tree

ENHANCED_MR = "1.2.840.10008.5.1.4.1.1.4.1"
AXIAL = [1.0, 0.0, 0.0, 0.0, 1.0, 0.0]


def _item(**attributes) -> Dataset:
    item = Dataset()
    for key, value in attributes.items():
        setattr(item, key, value)
    return item


def _enhanced(path, number, description, frames, *, echo="SPIN", te=100.0, tr=5000.0, image_type=None,
              per_frame_groups=True, rows=6, cols=5):
    """One Enhanced MR object; `frames` holds per frame: z, value, and optionally b, direction
    (ISOTROPIC/DIRECTIONAL/NONE), temporal (index, offset s), slope."""
    ds = Dataset()
    ds.file_meta = FileMetaDataset()
    ds.file_meta.MediaStorageSOPClassUID = ds.SOPClassUID = ENHANCED_MR
    ds.file_meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID = generate_uid()
    ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds.Modality, ds.PatientID, ds.StudyInstanceUID = "MR", "SYN-E", "1.2.3.9"
    ds.SeriesInstanceUID, ds.SeriesNumber, ds.SeriesDescription = generate_uid(), number, description
    ds.InstanceNumber = 1
    ds.AcquisitionDate, ds.AcquisitionTime = "20240101", "115900"  # the object's; each frame has its own
    ds.ImageType = image_type or ["ORIGINAL", "PRIMARY", "T2", "NONE"]
    ds.EchoPulseSequence = echo
    ds.Rows, ds.Columns, ds.NumberOfFrames = rows, cols, len(frames)
    ds.SamplesPerPixel, ds.PhotometricInterpretation = 1, "MONOCHROME2"
    ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 16, 16, 15, 0
    shared = _item(PixelMeasuresSequence=Sequence([_item(PixelSpacing=[0.5, 0.75], SliceThickness=2.0)]),
                   PlaneOrientationSequence=Sequence([_item(ImageOrientationPatient=AXIAL)]),
                   MRTimingAndRelatedParametersSequence=Sequence([_item(RepetitionTime=tr)]),
                   MREchoSequence=Sequence([_item(EffectiveEchoTime=te)]))
    ds.SharedFunctionalGroupsSequence = Sequence([shared])
    items = []
    for f in frames:
        item = _item(PlanePositionSequence=Sequence([_item(ImagePositionPatient=[-10.0, -20.0, f["z"]])]),
                     FrameContentSequence=Sequence([_item(StackID="1")]))
        if "b" in f:
            item.MRDiffusionSequence = Sequence([_item(DiffusionBValue=f["b"],
                                                       DiffusionDirectionality=f.get("direction", "ISOTROPIC"))])
        if "temporal" in f:
            index, offset = f["temporal"]
            item.FrameContentSequence[0].TemporalPositionIndex = index
            item.TemporalPositionSequence = Sequence([_item(TemporalPositionTimeOffset=offset)])
        if "acquired" in f:
            item.FrameContentSequence[0].FrameAcquisitionDateTime = f["acquired"]
        if "slope" in f:
            item.PixelValueTransformationSequence = Sequence([_item(RescaleSlope=f["slope"], RescaleIntercept=0,
                                                                    RescaleType="US")])
        items.append(item)
    if per_frame_groups:
        ds.PerFrameFunctionalGroupsSequence = Sequence(items)
    pixels = np.stack([np.full((rows, cols), f["value"], dtype=np.uint16) for f in frames])
    pixels[:, 0, 0] = np.arange(len(frames))  # tells frames apart
    ds.PixelData = pixels.tobytes()
    path.parent.mkdir(parents=True, exist_ok=True)
    ds.save_as(path, enforce_file_format=True)
    return ds


def _t2(folder, number=3):
    return _enhanced(folder / f"t2-{number}.dcm", number, "t2_tse_tra",
                     [{"z": 4.0 * k, "value": 100 + k} for k in (2, 0, 3, 1)])


def test_enhanced_t2_frames_in_any_order(tmp_path):
    _t2(tmp_path)
    case = load_dicom_case(tmp_path)
    assert case.t2.GetSize() == (5, 6, 4)
    assert np.allclose(case.t2.GetSpacing(), (0.75, 0.5, 4.0)) and np.allclose(case.t2.GetOrigin(), (-10, -20, 0))
    t2 = sitk.GetArrayFromImage(case.t2)
    assert [int(t2[z, 1, 1]) for z in range(4)] == [100, 101, 102, 103]  # sorted along the normal


def test_dce_time_points_from_the_temporal_position_group(tmp_path):
    _t2(tmp_path)
    order = [(2, 1), (0, 3), (1, 0), (2, 2), (0, 0), (1, 3), (0, 1), (2, 0), (1, 1), (0, 2), (1, 2), (2, 3)]
    frames = [{"z": 4.0 * z, "value": 10 * (t + 1), "temporal": (t + 1, 12.5 * t)} for t, z in order]
    _enhanced(tmp_path / "dce.dcm", 9, "dyn_t1", frames, echo="GRADIENT", te=1.5, tr=4.0,
              image_type=["ORIGINAL", "PRIMARY", "T1", "NONE"])
    case = load_dicom_case(tmp_path)
    assert len(case.dce) == 3 and case.dce_times == [0.0, 12.5, 25.0]
    assert [float(sitk.GetArrayFromImage(img)[2, 3, 3]) for img in case.dce] == [10.0, 20.0, 30.0]
    assert [u.series_number for u in case.used if u.role == "DCE"] == [9]


def test_dce_time_points_from_each_frames_acquisition_time(tmp_path):
    _t2(tmp_path)
    frames = [{"z": 4.0 * z, "value": 10 * (t + 1), "acquired": f"202401011200{t}{z}.000000"}
              for z in (3, 1, 0, 2) for t in (2, 0, 1)]  # 2D: each slice of a time point a second later
    _enhanced(tmp_path / "dce.dcm", 9, "dyn_t1", frames, echo="GRADIENT", te=1.5, tr=4.0,
              image_type=["ORIGINAL", "PRIMARY", "T1", "NONE"])
    case = load_dicom_case(tmp_path)
    assert case.dce_times == [0.0, 10.0, 20.0]
    assert [float(sitk.GetArrayFromImage(img)[2, 3, 3]) for img in case.dce] == [10.0, 20.0, 30.0]


def test_trace_and_direction_frames_in_one_object(tmp_path):
    _t2(tmp_path)
    frames = []
    for z in range(4):
        frames.append({"z": 4.0 * z, "value": 500, "b": 0.0, "direction": "NONE"})
        frames.append({"z": 4.0 * z, "value": 200 + z, "b": 800.0, "direction": "ISOTROPIC"})
        frames += [{"z": 4.0 * z, "value": v, "b": 800.0, "direction": "DIRECTIONAL"} for v in (150, 250, 300)]
    _enhanced(tmp_path / "dwi.dcm", 5, "ep2d_diff_tra", frames, image_type=["ORIGINAL", "PRIMARY", "DIFFUSION", "NONE"])
    case = load_dicom_case(tmp_path)
    assert sorted(case.dwi) == [0.0, 800.0]
    assert [float(sitk.GetArrayFromImage(case.dwi[800.0])[z, 2, 2]) for z in range(4)] == [200, 201, 202, 203]
    assert case.notes == ["DWI:800 from series 5 'ep2d_diff_tra': b=800: the trace-weighted images of 4 per slice position"]
    # Without the trace frames the directions' geometric mean stands in.
    _enhanced(tmp_path / "dwi.dcm", 5, "ep2d_diff_tra", [f for f in frames if f.get("direction") != "ISOTROPIC"],
              image_type=["ORIGINAL", "PRIMARY", "DIFFUSION", "NONE"])
    mean = sitk.GetArrayFromImage(load_dicom_case(tmp_path).dwi[800.0])[:, 2, 2]
    assert np.allclose(mean, (150 * 250 * 300) ** (1 / 3), rtol=1e-5)


def test_per_frame_rescale_is_applied_per_frame(tmp_path):
    _enhanced(tmp_path / "t2.dcm", 3, "t2_tse_tra", [{"z": 4.0 * k, "value": 100, "slope": 1.0 + k} for k in range(3)])
    t2 = sitk.GetArrayFromImage(load_dicom_case(tmp_path).t2)
    assert [float(t2[k, 3, 3]) for k in range(3)] == [100.0, 200.0, 300.0]


def test_multiframe_object_without_per_frame_groups_is_listed_unused(tmp_path):
    _t2(tmp_path)
    _enhanced(tmp_path / "odd.dcm", 7, "t2_tse_tra other", [{"z": 0.0, "value": 1}, {"z": 4.0, "value": 2}],
              per_frame_groups=False)
    series = {s.number: s for s in scan_dicom_tree(tmp_path)}
    assert len(series[7].slices) == 1 and len(series[3].slices) == 4
    case = load_dicom_case(tmp_path)
    assert [(u.series_number, u.reason) for u in case.unused] == [
        (7, "multi-frame object without per-frame functional groups (frame positions unknown)")]


@pytest.mark.parametrize("missing", [1, 2])
def test_enhanced_object_missing_a_frame_is_refused(tmp_path, missing):
    frames = [{"z": 4.0 * k, "value": 100} for k in range(5) if k != missing]
    _enhanced(tmp_path / "t2.dcm", 3, "t2_tse_tra", frames)
    with pytest.raises(CaseError, match=r"^series 3 't2_tse_tra' \(.*\) has 1 missing slice: a gap of 8\.00 mm"):
        load_dicom_case(tmp_path)


def test_adc_frames_stored_with_the_diffusion_frames_are_an_adc_map(tmp_path):
    _t2(tmp_path)
    frames = [{"z": 4.0 * z, "value": v, "b": b, "direction": "ISOTROPIC" if b else "NONE"}
              for z in range(4) for b, v in ((0.0, 500), (800.0, 200))]
    ds = _enhanced(tmp_path / "dwi.dcm", 5, "ep2d_diff_tra", frames + [{"z": 4.0 * z, "value": 1100, "b": 800.0}
                                                                       for z in range(4)],
                   image_type=["ORIGINAL", "PRIMARY", "DIFFUSION", "NONE"])
    for item in ds.PerFrameFunctionalGroupsSequence[8:]:
        item.MRImageFrameTypeSequence = Sequence([_item(FrameType=["DERIVED", "PRIMARY", "DIFFUSION", "ADC"])])
    ds.save_as(tmp_path / "dwi.dcm", enforce_file_format=True)
    case = load_dicom_case(tmp_path)
    assert sorted(case.dwi) == [0.0, 800.0] and case.notes == []
    assert float(sitk.GetArrayFromImage(case.dwi[800.0])[1, 2, 2]) == 200.0
    assert float(sitk.GetArrayFromImage(case.adc)[1, 2, 2]) == 1100.0
    assert [(u.role, u.description) for u in case.used if u.role in ("ADC", "DWI:800")] == [
        ("ADC", "ep2d_diff_tra (ADC frames)"), ("DWI:800", "ep2d_diff_tra")]
