"""Write a phantom as DICOM MR series that look like a Siemens 3 T prostate study.

The headers mimic the PROSTATEx studies (Siemens Skyra / TrioTim exports): one
file per slice, series descriptions `t2_tse_tra`, `ep2d_diff_tra_DYNDIST` (+ `_ADC`,
`CALC_BVAL`), `Twist_dynamic_Wip576_TT=...`, ImageType values (`ADC`, `CALC_BVALUE`,
`TRACEW`), b-values in the standard DiffusionBValue (0018,9087) and/or Siemens' private
B_value (0019,100C), 12-bit unsigned pixels, and RescaleSlope for float maps (Ktrans).
Everything is deterministic: UIDs derive from the case id and seed, so the same phantom
always gives byte-identical files. The loader (`dicom_roles`) must find every role from
these headers alone, which is what the phantom round-trip test exercises.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Optional

import numpy as np
import SimpleITK as sitk
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.uid import ExplicitVRLittleEndian, MRImageStorage, generate_uid

from ..errors import ParameterError

STUDY_DATE = "20240101"
_T2_TIME_S = 11 * 3600 + 53 * 60  # acquisition clock of the T2; other series follow it
_DWI_TIME_S = _T2_TIME_S + 600
_DCE_TIME_S = _T2_TIME_S + 1200
KTRANS_SLOPE = 1e-4  # Ktrans (1/min) stored as uint16 * slope


def _tm(seconds: float) -> str:
    seconds = seconds % 86400
    h, rem = divmod(seconds, 3600)
    m, s = divmod(rem, 60)
    return f"{int(h):02d}{int(m):02d}{s:09.6f}"


class _Writer:
    def __init__(self, phantom, root: Path):
        self.case = phantom.case
        self.root = root
        self.key = f"{self.case.case_id}/{phantom.seed}"
        self.study_uid = self.uid("study")
        self.frame_uid = self.uid("frame")
        self.series_count = 0

    def uid(self, *parts) -> str:
        return generate_uid(entropy_srcs=[self.key, *[str(p) for p in parts]])

    def base(self, series_uid: str, number: int, description: str) -> Dataset:
        ds = Dataset()
        ds.SpecificCharacterSet = "ISO_IR 100"
        ds.SOPClassUID = MRImageStorage
        ds.StudyDate = ds.SeriesDate = ds.AcquisitionDate = ds.ContentDate = STUDY_DATE
        ds.StudyTime = _tm(_T2_TIME_S - 300)
        ds.Modality = "MR"
        ds.Manufacturer = "SIEMENS"
        ds.ManufacturerModelName = "Skyra"
        ds.StudyDescription = "MR prostate phantom (synthetic)"
        ds.SeriesDescription = description
        ds.PatientName = self.case.case_id
        ds.PatientID = self.case.case_id
        ds.PatientBirthDate = ""
        ds.PatientSex = "M"
        ds.StudyInstanceUID = self.study_uid
        ds.SeriesInstanceUID = series_uid
        ds.StudyID = "1"
        ds.SeriesNumber = number
        ds.FrameOfReferenceUID = self.frame_uid
        ds.PositionReferenceIndicator = ""
        ds.BodyPartExamined = "PROSTATE"
        ds.PatientPosition = "FFS"
        ds.MagneticFieldStrength = 3
        ds.ImagedNucleus = "1H"
        ds.SamplesPerPixel = 1
        ds.PhotometricInterpretation = "MONOCHROME2"
        ds.BitsAllocated = 16
        ds.BitsStored = 12
        ds.HighBit = 11
        ds.PixelRepresentation = 0
        return ds

    def write_series(self, description: str, volumes: list[tuple[sitk.Image, dict]], header: dict,
                     interleave: bool = True, slope: Optional[float] = None) -> str:
        """One series of one or several volumes with the same geometry. Each volume carries
        its own per-slice header items (b-value, trigger time...). With `interleave`, files
        are numbered slice by slice (all volumes of slice 1, then slice 2), as Siemens
        numbers multi-b DWI; otherwise volume by volume."""
        self.series_count += 1
        number = header.pop("SeriesNumber", self.series_count)
        series_uid = self.uid("series", number, description)
        folder = self.root / f"{number:03d}-{re.sub(r'[^A-Za-z0-9_.=-]+', '_', description)}"
        folder.mkdir(parents=True, exist_ok=True)
        ref = volumes[0][0]
        size = ref.GetSize()
        spacing = ref.GetSpacing()
        direction = np.array(ref.GetDirection()).reshape(3, 3)
        origin = np.array(ref.GetOrigin())
        normal = direction[:, 2]
        bits = 16 if slope else 12  # float maps use the full 16 bits with a rescale slope
        arrays = []
        for img, _ in volumes:
            a = sitk.GetArrayFromImage(img).astype(np.float64)
            a = a / slope if slope else a
            arrays.append(np.clip(np.rint(a), 0, (1 << bits) - 1).astype(np.uint16))
        order = ([(k, v) for k in range(size[2]) for v in range(len(volumes))] if interleave
                 else [(k, v) for v in range(len(volumes)) for k in range(size[2])])
        # one dataset per series, updated per file (building ~50 elements per file is slow)
        ds = self.base(series_uid, number, description)
        for key, value in header.items():
            setattr(ds, key, value)
        ds.ImageOrientationPatient = [f"{x:.8f}" for x in np.concatenate([direction[:, 0], direction[:, 1]])]
        ds.PixelSpacing = [f"{spacing[1]:.6g}", f"{spacing[0]:.6g}"]
        ds.SliceThickness = f"{spacing[2]:.6g}"
        ds.SpacingBetweenSlices = f"{spacing[2]:.6g}"
        ds.Rows, ds.Columns = size[1], size[0]
        ds.BitsStored, ds.HighBit = bits, bits - 1
        if slope:
            ds.RescaleIntercept = "0"
            ds.RescaleSlope = f"{slope:.6g}"
            ds.RescaleType = "US"
        for instance, (k, v) in enumerate(order, start=1):
            extra = dict(volumes[v][1])
            private_b = extra.pop("_siemens_b", None)
            for key, value in extra.items():
                setattr(ds, key, value)
            if private_b is not None:
                block = ds.private_block(0x0019, "SIEMENS MR HEADER", create=True)
                block.add_new(0x0C, "IS", str(int(round(private_b))))
            ipp = origin + direction @ np.array([0.0, 0.0, k * spacing[2]])
            ds.ImagePositionPatient = [f"{x:.6f}" for x in ipp]
            ds.SliceLocation = f"{float(normal @ ipp):.6f}"
            ds.InstanceNumber = instance
            pixels = arrays[v][k]
            ds.SmallestImagePixelValue = int(pixels.min())
            ds.LargestImagePixelValue = int(pixels.max())
            ds.PixelData = pixels.tobytes()
            ds.SOPInstanceUID = self.uid("image", series_uid, instance)
            meta = FileMetaDataset()
            meta.MediaStorageSOPClassUID = MRImageStorage
            meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
            meta.TransferSyntaxUID = ExplicitVRLittleEndian
            ds.file_meta = meta
            ds.save_as(folder / f"IM{instance:05d}.dcm", enforce_file_format=True)
        return series_uid


def _window(img: sitk.Image) -> dict:
    a = sitk.GetArrayFromImage(img)
    lo, hi = np.percentile(a, [1, 99])
    return {"WindowCenter": f"{(lo + hi) / 2:.0f}", "WindowWidth": f"{max(hi - lo, 1):.0f}"}


def _b_items(b: float, b_value_tag: str) -> dict:
    items: dict = {"SequenceName": f"*ep_b{int(round(b))}t"}
    if b_value_tag in ("standard", "both"):
        items["DiffusionBValue"] = float(b)
    if b_value_tag in ("siemens", "both"):
        items["_siemens_b"] = b
    return items


def write_dicom_study(phantom, out_dir, *, dwi_layout: str = "single_series", dce_layout: str = "per_time_point",
                      b_value_tag: str = "both") -> Path:
    """Write every role of `phantom.case` as DICOM series under out_dir.

    dwi_layout: "single_series" (all b-values interleaved in one series, like ProstateX-0000)
    or "per_b" (one series per b-value, like ProstateX-0218's extra series).
    dce_layout: "per_time_point" (one series per time point, like ProstateX-0218's TWIST) or
    "single_series" (all time points in one series, told apart by TriggerTime and
    TemporalPositionIdentifier).
    b_value_tag: where the b-value is written: "standard" (0018,9087), "siemens"
    (0019,100C), or "both".
    """
    if dwi_layout not in ("single_series", "per_b"):
        raise ParameterError(f"dwi_layout must be 'single_series' or 'per_b', got {dwi_layout!r}.")
    if dce_layout not in ("per_time_point", "single_series"):
        raise ParameterError(f"dce_layout must be 'per_time_point' or 'single_series', got {dce_layout!r}.")
    if b_value_tag not in ("standard", "siemens", "both"):
        raise ParameterError(f"b_value_tag must be 'standard', 'siemens' or 'both', got {b_value_tag!r}.")
    root = Path(out_dir)
    root.mkdir(parents=True, exist_ok=True)
    case = phantom.case
    w = _Writer(phantom, root)

    w.write_series("t2_tse_tra", [(case.t2, {})], dict(
        SeriesNumber=4, ProtocolName="t2_tse_tra", ImageType=["ORIGINAL", "PRIMARY", "M", "NORM", "DIS2D"],
        ScanningSequence="SE", SequenceVariant=["SK", "SP", "OSP"], MRAcquisitionType="2D",
        SequenceName="*tse2d1_25", RepetitionTime="5660", EchoTime="104", FlipAngle="160", EchoTrainLength=25,
        AcquisitionTime=_tm(_T2_TIME_S), SeriesTime=_tm(_T2_TIME_S + 250), ContentTime=_tm(_T2_TIME_S + 250),
        **_window(case.t2)))

    dwi_common = dict(ProtocolName="ep2d_diff_tra", ScanningSequence="EP", SequenceVariant=["SK", "SP", "OSP"],
                      MRAcquisitionType="2D", RepetitionTime="2700", EchoTime="63", FlipAngle="90")
    if case.dwi:
        bs = sorted(case.dwi)
        if dwi_layout == "single_series":
            w.write_series("ep2d_diff_tra_DYNDIST", [(case.dwi[b], _b_items(b, b_value_tag)) for b in bs], dict(
                SeriesNumber=6, ImageType=["DERIVED", "PRIMARY", "DIFFUSION", "TRACEW", "DIS2D"],
                AcquisitionTime=_tm(_DWI_TIME_S), SeriesTime=_tm(_DWI_TIME_S + 60), ContentTime=_tm(_DWI_TIME_S + 60),
                **dwi_common, **_window(case.dwi[bs[0]])))
        else:
            for i, b in enumerate(bs):
                w.write_series(f"ep2d_diff_tra_b{int(round(b))}", [(case.dwi[b], _b_items(b, b_value_tag))], dict(
                    SeriesNumber=10 + i, ImageType=["DERIVED", "PRIMARY", "DIFFUSION", "TRACEW", "ND"],
                    AcquisitionTime=_tm(_DWI_TIME_S + 40 * i), SeriesTime=_tm(_DWI_TIME_S + 40 * i + 30),
                    ContentTime=_tm(_DWI_TIME_S + 40 * i + 30), **dwi_common, **_window(case.dwi[b])))
    if case.adc is not None:
        w.write_series("ep2d_diff_tra_DYNDIST_ADC", [(case.adc, {})], dict(
            SeriesNumber=7, ImageType=["DERIVED", "PRIMARY", "DIFFUSION", "ADC", "DIS2D"],
            SequenceName="*ep_b50_800", AcquisitionTime=_tm(_DWI_TIME_S + 16),
            SeriesTime=_tm(_DWI_TIME_S + 61), ContentTime=_tm(_DWI_TIME_S + 61), **dwi_common, **_window(case.adc)))
    for i, (b, img) in enumerate(sorted(case.dwi_computed.items())):
        items = _b_items(b, b_value_tag)
        items["SequenceName"] = "*ep_b50_800"
        w.write_series("ep2d_diff_tra_DYNDISTCALC_BVAL", [(img, items)], dict(
            SeriesNumber=8 + 20 * i, ImageType=["DERIVED", "PRIMARY", "DIFFUSION", "CALC_BVALUE", "TRACEW", "DIS2D"],
            AcquisitionTime=_tm(_DWI_TIME_S + 16), SeriesTime=_tm(_DWI_TIME_S + 62), ContentTime=_tm(_DWI_TIME_S + 62),
            **dwi_common, **_window(img)))
    if case.ktrans is not None:
        w.write_series("Ktrans", [(case.ktrans, {})], dict(
            SeriesNumber=99, ProtocolName="Ktrans", ImageType=["DERIVED", "SECONDARY", "KTRANS"],
            ScanningSequence="GR", MRAcquisitionType="3D", AcquisitionTime=_tm(_DCE_TIME_S),
            SeriesTime=_tm(_DCE_TIME_S + 400), ContentTime=_tm(_DCE_TIME_S + 400)), slope=KTRANS_SLOPE)
    if case.dce:
        dce_common = dict(ProtocolName="Twist_dynamic_Wip576", ImageType=["ORIGINAL", "PRIMARY", "M", "ND"],
                          ScanningSequence="GR", SequenceVariant=["SP", "OSP"], MRAcquisitionType="3D",
                          SequenceName="fldyn3d1", RepetitionTime="3.85", EchoTime="1.42", FlipAngle="12",
                          **_window(case.dce[-1]))
        per_time = [dict(AcquisitionTime=_tm(_DCE_TIME_S + t), ContentTime=_tm(_DCE_TIME_S + t),
                         TriggerTime=f"{t * 1000.0:.1f}", TemporalPositionIdentifier=i + 1,
                         NumberOfTemporalPositions=len(case.dce))
                    for i, t in enumerate(case.dce_times)]
        if dce_layout == "per_time_point":
            for i, (img, t) in enumerate(zip(case.dce, case.dce_times)):
                w.write_series(f"Twist_dynamic_Wip576_TT={t:.1f}s", [(img, per_time[i])],
                               dict(SeriesNumber=30 + i, SeriesTime=_tm(_DCE_TIME_S + t), **dce_common))
        else:
            w.write_series("Twist_dynamic_Wip576", [(img, per_time[i]) for i, img in enumerate(case.dce)],
                           dict(SeriesNumber=30, SeriesTime=_tm(_DCE_TIME_S), **dce_common), interleave=False)
    return root
