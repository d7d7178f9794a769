"""Copies of a real classic DICOM study in the other shapes scanners and archives deliver.

Each builder reads the classic single-frame files of a ProstateX study and writes a copy:
- `legacy_enhanced`: one Legacy Converted Enhanced MR object per series (highdicom), series
  listed in `merge` put into one object (all DCE time points in one object);
- `enhanced_mr`: true Enhanced MR objects: the legacy conversion with everything it keeps
  in its Unassigned Converted Attributes moved to the standard functional groups (MR
  Diffusion, MR Timing, MR Echo, Frame Content, Temporal Position) and all private and
  classic-only attributes dropped, so b-values exist only as DiffusionBValue;
- `reencoded`: every file in another transfer syntax (RLE, JPEG 2000, JPEG-LS, JPEG
  lossless, deflated);
- `dicomdir_copy`: a file-set with a DICOMDIR as written to media;
- `vendor_b_values`: diffusion series whose b-values exist only in one vendor's tags;
- `with_directions`: a DWI series holding three gradient-direction images per slice
  position beside (or instead of) the trace image;
- `scaled_adc`: the ADC series stored in another unit through RescaleSlope.
"""

from __future__ import annotations

import copy
import shutil
import tempfile
import warnings
from pathlib import Path
from typing import Iterable, Optional

import numpy as np
import pydicom
from pydicom.dataset import Dataset
from pydicom.sequence import Sequence
from pydicom.uid import (DeflatedExplicitVRLittleEndian, ExplicitVRLittleEndian, JPEG2000, JPEG2000Lossless,
                         JPEGLosslessSV1, JPEGLSLossless, RLELossless, generate_uid)

ENHANCED_MR = "1.2.840.10008.5.1.4.1.1.4.1"
SYNTAXES = {"rle": RLELossless, "jpeg2000": JPEG2000Lossless, "jpeg-ls": JPEGLSLossless,
            "jpeg-lossless": JPEGLosslessSV1, "deflated": DeflatedExplicitVRLittleEndian,
            "jpeg2000-lossy": JPEG2000}


def series_folders(study: Path) -> dict[int, Path]:
    """Series number -> folder, from TCIA's folder names ('4.000000-t2tsetra-00702')."""
    return {int(float(p.name.split("-")[0])): p for p in Path(study).iterdir() if p.is_dir()}


def read_series(folder: Path) -> list[Dataset]:
    return [pydicom.dcmread(f) for f in sorted(Path(folder).glob("*.dcm"))]


def _numbers(study: Path, numbers: Optional[Iterable[int]]) -> list[int]:
    folders = series_folders(study)
    return sorted(folders) if numbers is None else sorted(numbers)


def copy_classic(study: Path, dest: Path, numbers: Optional[Iterable[int]] = None) -> Path:
    folders = series_folders(study)
    for n in _numbers(study, numbers):
        shutil.copytree(folders[n], dest / folders[n].name)
    return dest


# ---------------------------------------------------------------- enhanced multi-frame

def _legacy(datasets: list[Dataset], syntax: str = ExplicitVRLittleEndian):
    import highdicom as hd

    first = datasets[0]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # highdicom's remarks on the anonymised names
        image = hd.legacy.LegacyConvertedEnhancedMRImage(
            datasets, series_instance_uid=first.SeriesInstanceUID, series_number=first.SeriesNumber,
            sop_instance_uid=generate_uid(), instance_number=1, transfer_syntax_uid=syntax)
    image.SeriesDescription = first.SeriesDescription  # highdicom appends "(enhanced conversion)"
    return image


def legacy_enhanced(study: Path, dest: Path, numbers: Optional[Iterable[int]] = None,
                    merge: Iterable[int] = (), syntax: str = ExplicitVRLittleEndian, true_enhanced: bool = False) -> Path:
    """One multi-frame object per series; the series in `merge` go into one object together
    (under the first one's SeriesInstanceUID and number)."""
    folders = series_folders(study)
    dest.mkdir(parents=True, exist_ok=True)
    merge = sorted(merge)
    groups = [[n] for n in _numbers(study, numbers) if n not in merge] + ([merge] if merge else [])
    for group in groups:
        datasets = [ds for n in group for ds in read_series(folders[n])]
        for ds in datasets[1:]:
            ds.SeriesInstanceUID, ds.SeriesNumber = datasets[0].SeriesInstanceUID, datasets[0].SeriesNumber
        image = _legacy(datasets, syntax)
        if true_enhanced:
            image = to_enhanced_mr(image, datasets)
        image.save_as(dest / f"{group[0]}.dcm", enforce_file_format=True)
    return dest


def _item(**attributes) -> Dataset:
    item = Dataset()
    for key, value in attributes.items():
        setattr(item, key, value)
    return item


def to_enhanced_mr(legacy: Dataset, sources: list[Dataset]) -> Dataset:
    """The legacy object as an Enhanced MR Image: standard functional groups only."""
    from ProstateLesionCADLib.study.diffusion_tags import b_value_of

    ds = legacy
    ds.SOPClassUID = ENHANCED_MR
    ds.file_meta.MediaStorageSOPClassUID = ENHANCED_MR
    by_uid = {s.SOPInstanceUID: s for s in sources}
    shared = ds.SharedFunctionalGroupsSequence[0]
    unassigned = shared.UnassignedSharedConvertedAttributesSequence[0]
    del shared.UnassignedSharedConvertedAttributesSequence
    scanning = unassigned.get("ScanningSequence", sources[0].ScanningSequence)
    scanning = [scanning] if isinstance(scanning, str) else list(scanning)
    ds.EchoPulseSequence = "GRADIENT" if "GR" in scanning else "SPIN"
    ds.EchoPlanarPulseSequence = "YES" if "EP" in scanning else "NO"
    ds.PulseSequenceName = str(sources[0].get("SequenceName", "")).strip("*")[:16] or "unknown"
    shared.MRTimingAndRelatedParametersSequence = Sequence([_item(RepetitionTime=sources[0].RepetitionTime,
                                                                  EchoTrainLength=1, FlipAngle=sources[0].FlipAngle)])
    shared.MREchoSequence = Sequence([_item(EffectiveEchoTime=sources[0].EchoTime)])
    times = sorted({s.AcquisitionTime for s in sources})
    for index, frame in enumerate(ds.PerFrameFunctionalGroupsSequence):
        del frame.UnassignedPerFrameConvertedAttributesSequence
        source = by_uid[frame.ConversionSourceAttributesSequence[0].ReferencedSOPInstanceUID]
        frame.FrameContentSequence[0].TemporalPositionIndex = times.index(source.AcquisitionTime) + 1
        b = b_value_of(source)
        if b is not None and "DIFFUSION" in [str(v) for v in source.ImageType]:
            frame.MRDiffusionSequence = Sequence([_item(DiffusionBValue=float(b),
                                                        DiffusionDirectionality="ISOTROPIC" if b else "NONE")])
    for element in list(ds):  # a few classic/private top-level leftovers
        if element.tag.is_private:
            del ds[element.tag]
    return ds


# ---------------------------------------------------------------- transfer syntaxes

def _jpeg_lossless(ds: Dataset) -> None:
    """JPEG lossless (process 14, SV1) through SimpleITK's GDCM writer; pydicom has no encoder."""
    import SimpleITK as sitk

    image = sitk.GetImageFromArray(ds.pixel_array[np.newaxis].astype(np.uint16))
    with tempfile.TemporaryDirectory() as folder:
        path = str(Path(folder) / "x.dcm")
        writer = sitk.ImageFileWriter()
        writer.SetFileName(path)
        writer.SetUseCompression(True)
        writer.SetCompressor("JPEG")
        writer.Execute(image)
        encoded = pydicom.dcmread(path)
    assert encoded.file_meta.TransferSyntaxUID == JPEGLosslessSV1
    ds.PixelData = encoded.PixelData
    ds["PixelData"].VR = "OB"
    ds["PixelData"].is_undefined_length = True
    ds.BitsStored, ds.HighBit = encoded.BitsStored, encoded.HighBit  # the stream's precision
    ds.file_meta.TransferSyntaxUID = JPEGLosslessSV1


def reencode(ds: Dataset, name: str) -> Dataset:
    syntax = SYNTAXES[name]
    if name == "deflated":
        ds.file_meta.TransferSyntaxUID = syntax
    elif name == "jpeg-lossless":
        _jpeg_lossless(ds)
    elif name == "jpeg2000-lossy":
        ds.compress(syntax, j2k_cr=[5], encoding_plugin="pylibjpeg")
    else:
        ds.compress(syntax)
    return ds


def reencoded(study: Path, dest: Path, name: str, numbers: Optional[Iterable[int]] = None) -> Path:
    folders = series_folders(study)
    for n in _numbers(study, numbers):
        out = dest / folders[n].name
        out.mkdir(parents=True, exist_ok=True)
        for path in sorted(folders[n].glob("*.dcm")):
            reencode(pydicom.dcmread(path), name).save_as(out / path.name, enforce_file_format=True)
    return dest


# ---------------------------------------------------------------- media

def dicomdir_copy(study: Path, dest: Path, numbers: Optional[Iterable[int]] = None, lower_case: bool = False) -> Path:
    """The study as a DICOM file-set (DICOMDIR + PT*/ST*/SE*/IM* files), as burned to media."""
    from pydicom.fileset import FileSet

    folders = series_folders(study)
    fs = FileSet()
    for n in _numbers(study, numbers):
        for path in sorted(folders[n].glob("*.dcm")):
            ds = pydicom.dcmread(path)
            ds.StudyID = ds.get("StudyID") or "1"  # a STUDY record needs one; ProstateX's is empty
            fs.add(ds)
    fs.write(str(dest))
    if lower_case:  # a copy of the medium on a case-changing file system
        for path in sorted(dest.rglob("*"), key=lambda p: -len(p.parts)):
            if path.name != "DICOMDIR":
                path.rename(path.with_name(path.name.lower()))
    return dest


# ---------------------------------------------------------------- vendor conventions

def _drop_b_tags(ds: Dataset) -> None:
    for tag in [e.tag for e in ds if e.tag.group in (0x0019, 0x0029, 0x0043, 0x2001) and e.tag.is_private]:
        del ds[tag]
    for keyword in ("SequenceName", "DiffusionBValue"):
        if keyword in ds:
            delattr(ds, keyword)


def set_vendor_b_value(ds: Dataset, vendor: str, b: float) -> None:
    """Keep the b-value only where `vendor` puts it."""
    _drop_b_tags(ds)
    if vendor == "standard":
        ds.DiffusionBValue = float(b)
    elif vendor == "ge":
        block = ds.private_block(0x0043, "GEMS_PARM_01", create=True)
        block.add_new(0x39, "IS", [int(b) + 1000000000, 0, 0, 0])
    elif vendor == "philips":
        block = ds.private_block(0x2001, "Philips Imaging DD 001", create=True)
        block.add_new(0x03, "FL", float(b))
    elif vendor == "siemens-csa":
        block = ds.private_block(0x0019, "SIEMENS MR HEADER", create=True)
        block.add_new(0x0C, "IS", str(int(b)))
    elif vendor == "siemens-name":
        ds.SequenceName = f"*ep_b{int(b)}t"
    else:
        raise ValueError(vendor)


def vendor_b_values(study: Path, dest: Path, vendor: str, diffusion: Iterable[int], others: Iterable[int] = ()) -> Path:
    from ProstateLesionCADLib.study.diffusion_tags import b_value_of

    folders = series_folders(study)
    copy_classic(study, dest, others)
    for n in diffusion:
        out = dest / folders[n].name
        out.mkdir(parents=True)
        for path in sorted(folders[n].glob("*.dcm")):
            ds = pydicom.dcmread(path)
            set_vendor_b_value(ds, vendor, b_value_of(ds))
            ds.save_as(out / path.name, enforce_file_format=True)
    return dest


def with_directions(study: Path, dest: Path, number: int, others: Iterable[int], keep_trace: bool,
                    factors=(1.25, 0.8, 1.0)) -> Path:
    """The DWI series `number` with, for b > 0, three direction images per trace image whose
    geometric mean is the trace (`factors` multiply to 1), marked DIRECTIONAL the Siemens way;
    without `keep_trace` only the directions remain."""
    folders = series_folders(study)
    copy_classic(study, dest, others)
    out = dest / folders[number].name
    out.mkdir(parents=True)
    count = 0
    for path in sorted(folders[number].glob("*.dcm")):
        ds = pydicom.dcmread(path)
        b = float(str(ds[0x0019, 0x100C].value.decode().strip()))
        images = [ds] if keep_trace or b == 0 else []
        if b > 0:
            for k, factor in enumerate(factors):
                d = copy.deepcopy(ds)
                d.SOPInstanceUID = d.file_meta.MediaStorageSOPInstanceUID = generate_uid()
                d[0x0019, 0x100D].value = b"DIRECTIONAL "
                d.PixelData = np.clip(np.round(ds.pixel_array * factor), 0, 4095).astype(np.uint16).tobytes()
                d.InstanceNumber = 1000 + 3 * int(ds.InstanceNumber) + k
                images.append(d)
        for image in images:
            count += 1
            image.save_as(out / f"{count:04d}.dcm", enforce_file_format=True)
    return dest


def scaled_adc(study: Path, dest: Path, number: int, others: Iterable[int], slope: float) -> Path:
    """The ADC series with RescaleSlope `slope`: the same stored integers in another unit."""
    folders = series_folders(study)
    copy_classic(study, dest, others)
    out = dest / folders[number].name
    out.mkdir(parents=True)
    for path in sorted(folders[number].glob("*.dcm")):
        ds = pydicom.dcmread(path)
        ds.RescaleSlope, ds.RescaleIntercept, ds.RescaleType = f"{slope:g}", "0", "US"
        ds.save_as(out / path.name, enforce_file_format=True)
    return dest


# ---------------------------------------------------------------- the small copy kept in the repository

SMALL_CROP = {4: 64, 6: 32, 7: 32, 8: 32}  # series -> width and height of the central crop (pixels)


def crop_box(rows: int, cols: int, size: int) -> tuple[int, int]:
    """(first row, first column) of the central `size` x `size` window."""
    return (rows - size) // 2, (cols - size) // 2


def _crop(ds: Dataset, size: int) -> Dataset:
    r0, c0 = crop_box(int(ds.Rows), int(ds.Columns), size)
    pixels = ds.pixel_array[r0:r0 + size, c0:c0 + size].copy()
    row, col = np.array(ds.ImageOrientationPatient[:3], float), np.array(ds.ImageOrientationPatient[3:], float)
    dy, dx = (float(v) for v in ds.PixelSpacing)
    ds.ImagePositionPatient = [f"{v:.6f}" for v in np.array(ds.ImagePositionPatient, float) + c0 * dx * row + r0 * dy * col]
    ds.Rows, ds.Columns = size, size
    ds.PixelData = pixels.astype(np.uint16).tobytes()
    for keyword in ("SmallestImagePixelValue", "LargestImagePixelValue"):
        if keyword in ds:
            delattr(ds, keyword)
    for tag in [e.tag for e in ds if e.tag.group == 0x0029 and e.tag.is_private]:  # Siemens CSA headers: bulk
        del ds[tag]
    return ds


def small_medium(study: Path, dest: Path) -> Path:
    """ProstateX-0000 cropped around the image centre, one Legacy Converted Enhanced MR object
    per series in JPEG 2000 (lossless), on a medium with a DICOMDIR: a few hundred KB."""
    from pydicom.fileset import FileSet

    folders = series_folders(study)
    fs = FileSet()
    for number, size in SMALL_CROP.items():
        datasets = [_crop(ds, size) for ds in read_series(folders[number])]
        image = _legacy(datasets, JPEG2000Lossless)
        image.StudyID = "1"
        fs.add(image)
    fs.write(str(dest))
    return dest


if __name__ == "__main__":
    import sys

    if len(sys.argv) != 3:
        sys.exit("usage: python Testing/dicom_variants.py PROSTATEX-0000-FOLDER OUT-FOLDER  (writes the small medium)")
    print(small_medium(Path(sys.argv[1]), Path(sys.argv[2])))
