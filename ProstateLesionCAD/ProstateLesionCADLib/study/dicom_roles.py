"""Load a prostate mpMRI study from a DICOM folder tree: find the series, give them roles.

The folder may have any depth, any folder and file names and any file order: every file
is read header-only first (`stop_before_pixels`), files are grouped by
SeriesInstanceUID, and each series is classified from its headers alone. Below a folder
holding a DICOMDIR (media), the files its records reference are read instead
(`dicomdir`). An Enhanced MR or Legacy Converted Enhanced MR object counts as one image
per frame, with the frame's position, orientation, pixel spacing, rescale, b-value and
time from its functional groups (`multiframe`); several b-values or time points in one
object are split as for a classic series.

- **T2**: T2-weighted (description mentions T2, or a spin-echo with TE >= 60 ms and
  TR >= 1500 ms), axial slices. Sagittal/coronal T2 series are listed as unused.
- **ADC**: ImageType contains ``ADC`` or the description names an ADC map.
- **DWI_COMPUTED**: scanner-computed high-b images (``CALC_BVAL`` in ImageType or
  description); b-value from the headers as for DWI.
- **DWI**: other diffusion series (ImageType ``DIFFUSION``, a b-value tag, or a sequence
  name such as ``*ep_b800t``). A series interleaving several b-values is split into one
  volume per b-value. The b-value is read from the standard DiffusionBValue (0018,9087),
  then the vendors' private tags (Siemens (0019,100C), GE (0043,1039), Philips
  (2001,1003)), then the sequence name (`diffusion_tags`). A series holding several
  images per slice position at one b-value (a trace image beside the gradient-direction
  images, or the directions alone) gives the images marked isotropic, else the
  geometric mean of the images at each position (the trace of the directions).
- **DCE**: T1-weighted gradient-echo series (TR < 15 ms, or a description naming a
  dynamic/DCE/TWIST/perfusion series) with the same geometry, forming >= 2 time points;
  either one series per time point or one series holding all time points. Time points
  are ordered by TriggerTime, else acquisition date/time, else content date/time.
- Everything else (localisers, FA or exponential-ADC maps, subtraction images,
  sagittal/coronal series, single-slice series, non-image objects) is listed as unused
  with the reason.

**Pick rule** when several candidates exist for one role (a repeated T2, two ADC maps,
the same b-value in two series, two dynamic runs): only candidates with complete,
regular geometry are considered; among them the latest-acquired one wins (acquisition
date/time, then series number; for DCE the run with the most time points first). ADC maps
computed from b-values above 1000 s/mm² rank after the others (PI-RADS v2.1 computes ADC
with b <= 1000): those whose description names high b-values, or whose source diffusion
series (named ``<source>_ADC``, the scanners' convention) holds a b-value above 1000. The
others are listed as unused with the reason. The user overrides the pick with
``choose={"ADC": "9"}`` (series number or SeriesInstanceUID) — keys ``T2``, ``ADC``,
``DCE``, ``DWI:<b>`` / ``DWI_COMPUTED:<b>`` for one b-value, or ``DWI`` /
``DWI_COMPUTED`` with a comma-separated list of series to take all b-values from.

**Validation**: a candidate series with a missing slice, irregular slice spacing, mixed
orientations or image sizes, or unequal slice counts per b-value/time point is only
skipped when a complete alternative exists; otherwise loading fails with a CaseError
naming the series. A study without an axial T2 is refused.

Images are built with SimpleITK in LPS: direction columns = DICOM row direction, column
direction and their cross product (slice normal); origin = ImagePositionPatient of the
first slice along the normal; spacing = (PixelSpacing[1], PixelSpacing[0], slice
distance). Pixel values are float32 after RescaleSlope/Intercept; an ADC map stored in
10⁻³ mm²/s or mm²/s (found from its value range, `adc_units`) is converted to 10⁻⁶ mm²/s
as ProstateX stores it, and `Case.notes` says so. Pixel data are read only for the picked
series, each file decoded once (`pixels`: pydicom with the pylibjpeg decoders for JPEG
2000, JPEG-LS and JPEG lossless, itself for RLE and deflated, falling back to
SimpleITK/GDCM); a series no decoder reads is refused in one sentence naming its
transfer syntax.
"""

from __future__ import annotations

import datetime as _dt
import math
import os
import re
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Iterable, Optional

import numpy as np
import pydicom
import SimpleITK as sitk
from pydicom.errors import InvalidDicomError

from .adc_units import adc_to_micro
from .case import Case, SeriesInfo
from .dicomdir import DICOMDIR, dicomdir_files, is_dicomdir
from .diffusion_tags import ISOTROPIC, b_value_of, directionality_of, number, private, text
from .multiframe import frame_datasets, has_functional_groups, is_multiframe
from .pixels import FrameCache, Undecodable, syntax_name
from ..errors import CaseError, ParameterError
from ..progress import ProgressCallback, silent, sub_progress

PICK_RULE = "latest-acquired complete axial series"
ADC_PICK_RULE = "ADC from b <= 1000 first (PI-RADS v2.1), then latest-acquired complete axial series"
_HIGH_B_TEXT = re.compile(r"(?<![a-z])high[\s_-]*b(?:val|[\s_-]*\d|\b)", re.IGNORECASE)  # not "high bandwidth"
_MAX_ADC_B = 1000.0
_ORIENTATION_TOL = 1e-3  # max difference of direction cosines inside one series
_SPACING_TOL = 0.1  # slice distances may deviate 10 % from the median distance


# ---------------------------------------------------------------- header records

@dataclass
class SliceHeader:
    """The header fields of one DICOM file that classification and geometry need."""

    path: str
    series_uid: str
    series_number: Optional[int]
    description: str
    image_type: tuple[str, ...]
    modality: str
    patient_id: str
    study_uid: str
    iop: Optional[tuple[float, ...]]
    ipp: Optional[tuple[float, float, float]]
    rows: int
    cols: int
    pixel_spacing: Optional[tuple[float, float]]
    frames: int
    has_pixels: bool
    b_value: Optional[float]
    sequence_name: str
    scanning_sequence: str
    acquisition_type: str
    tr: Optional[float]
    te: Optional[float]
    instance_number: Optional[int]
    temporal_position: Optional[int]
    trigger_time_s: Optional[float]
    acquisition_s: Optional[float]
    content_s: Optional[float]
    acquisition_time: Optional[str]
    # Where the uncompressed little-endian pixel data start: (file offset, implicit VR, numpy
    # dtype), so reading pixels does not parse the header a second time; None otherwise.
    raw_pixels: Optional[tuple[int, bool, str]] = None
    slope: Optional[float] = None
    intercept: Optional[float] = None
    frame: Optional[int] = None  # index in a multi-frame object; None for a single-frame file
    transfer_syntax: str = ""
    directionality: Optional[str] = None  # diffusion_tags.ISOTROPIC/DIRECTIONAL when the headers say
    # Images at this slice position whose geometric mean is this slice (diffusion directions
    # without a trace image); empty for an ordinary image.
    combine: tuple["SliceHeader", ...] = ()


@dataclass
class DicomSeries:
    """All files of one SeriesInstanceUID."""

    uid: str
    slices: list[SliceHeader]

    @property
    def first(self) -> SliceHeader:
        return self.slices[0]

    @property
    def number(self) -> Optional[int]:
        return self.first.series_number

    @property
    def description(self) -> str:
        return self.first.description

    @property
    def acquired_s(self) -> float:
        """Acquisition instant used by the pick rule (earliest slice; -inf when unknown)."""
        times = [s.acquisition_s for s in self.slices if s.acquisition_s is not None]
        if not times:
            times = [s.content_s for s in self.slices if s.content_s is not None]
        return min(times) if times else -math.inf

    def label(self) -> str:
        number = f"series {self.number}" if self.number is not None else "series"
        return f"{number} '{self.description}' ({self.uid})"

    def info(self, role: str, reason: str) -> SeriesInfo:
        return SeriesInfo(role=role, description=self.description, source=self.uid, reason=reason,
                          series_number=self.number, acquisition_time=self.first.acquisition_time)


@dataclass
class Geometry:
    size: tuple[int, int, int]
    spacing: tuple[float, float, float]
    origin: tuple[float, float, float]
    direction: tuple[float, ...]  # row-major 3x3, columns = axis directions (SimpleITK)


@dataclass
class Volume:
    """One 3D image to build: slices of one series (one b-value or one time point)."""

    role: str
    series: DicomSeries
    slices: list[SliceHeader]  # sorted along the slice normal once geometry is known
    b_value: Optional[float] = None
    time_s: Optional[float] = None
    geometry: Optional[Geometry] = None
    problem: Optional[str] = None  # why the volume is incomplete/irregular (one sentence part)
    note: Optional[str] = None  # how its images were formed when not one file per slice, for the user


@dataclass
class DceRun:
    """Time points with one geometry: the DCE candidates of one dynamic acquisition."""

    volumes: list[Volume]
    problem: Optional[str] = None

    @property
    def series(self) -> list[DicomSeries]:
        seen: dict[str, DicomSeries] = {}
        for v in self.volumes:
            seen.setdefault(v.series.uid, v.series)
        return list(seen.values())

    @property
    def acquired_s(self) -> float:
        return max(s.acquired_s for s in self.series)


@dataclass
class StudyPlan:
    """What a study holds and which volumes will be read for which role (no pixels yet)."""

    root: Path
    case_id: str
    series: list[DicomSeries]
    picks: dict[str, Volume | DceRun] = field(default_factory=dict)  # slot -> chosen candidate
    reasons: dict[str, str] = field(default_factory=dict)  # slot -> why this candidate
    unused: list[SeriesInfo] = field(default_factory=list)


# ---------------------------------------------------------------- header parsing

_text, _number, _private = text, number, private


def _seconds(date: Optional[str], time: Optional[str]) -> Optional[float]:
    """DICOM DA + TM as seconds (date optional, so times of one day still order)."""
    time = _text(time).replace(":", "")
    if not time:
        return None
    try:
        hh, mm = int(time[0:2]), int(time[2:4] or 0)
        ss = float(time[4:] or 0)
    except ValueError:
        return None
    seconds = hh * 3600 + mm * 60 + ss
    date = _text(date)
    if len(date) == 8 and date.isdigit():
        try:
            day = _dt.date(int(date[:4]), int(date[4:6]), int(date[6:8])).toordinal()
        except ValueError:
            day = 0
        seconds += day * 86400.0
    return seconds


def _floats(value, count: int) -> Optional[tuple[float, ...]]:
    try:
        numbers = tuple(float(v) for v in value)
    except (TypeError, ValueError):
        return None
    return numbers if len(numbers) == count and all(math.isfinite(v) for v in numbers) else None


def read_headers(path: str) -> list[SliceHeader]:
    """Headers of one file: one per frame for a multi-frame object, none when it is not DICOM
    (README, thumbnails, DICOMDIR...)."""
    try:
        with open(path, "rb") as handle:
            ds = pydicom.dcmread(handle, stop_before_pixels=True)
            pixel_offset = handle.tell()  # pydicom stops at the start of the Pixel Data element
    except (InvalidDicomError, OSError, ValueError, TypeError, AttributeError, EOFError):
        return []
    if not _text(ds.get("SeriesInstanceUID")):
        return []
    syntax = _text(getattr(getattr(ds, "file_meta", None), "get", lambda *_: None)("TransferSyntaxUID"))
    if is_multiframe(ds) and has_functional_groups(ds):
        frames = frame_datasets(ds) or []
        return [_header(flat, path, syntax, None, frame=k, frames=len(frames)) for k, flat in enumerate(frames)]
    return [_header(ds, path, syntax, _raw_pixel_layout(ds, pixel_offset), frame=None,
                    frames=int(_number(ds.get("NumberOfFrames")) or 1))]


def _header(ds, path: str, syntax: str, raw_pixels, frame: Optional[int], frames: int) -> SliceHeader:
    uid = _text(ds.get("SeriesInstanceUID"))
    number = _number(ds.get("SeriesNumber"))
    trigger = _number(ds.get("TriggerTime"))
    instance = _number(ds.get("InstanceNumber"))
    temporal = _number(ds.get("TemporalPositionIdentifier"))
    return SliceHeader(
        path=path, series_uid=uid, series_number=int(number) if number is not None else None,
        description=_text(ds.get("SeriesDescription")) or _text(ds.get("ProtocolName")),
        image_type=tuple(_text(v).upper() for v in (ds.get("ImageType") or [])),
        modality=_text(ds.get("Modality")).upper(), patient_id=_text(ds.get("PatientID")),
        study_uid=_text(ds.get("StudyInstanceUID")),
        iop=_floats(ds.get("ImageOrientationPatient"), 6), ipp=_floats(ds.get("ImagePositionPatient"), 3),  # type: ignore[arg-type]
        rows=int(ds.get("Rows") or 0), cols=int(ds.get("Columns") or 0),
        pixel_spacing=_floats(ds.get("PixelSpacing"), 2),  # type: ignore[arg-type]
        frames=frames,
        has_pixels=bool(ds.get("Rows")) and bool(ds.get("Columns")),
        b_value=b_value_of(ds), sequence_name=_text(ds.get("SequenceName")),
        scanning_sequence="\\".join(_text(v) for v in (ds.get("ScanningSequence") or []))
        if isinstance(ds.get("ScanningSequence"), (list, pydicom.multival.MultiValue)) else _text(ds.get("ScanningSequence")),
        acquisition_type=_text(ds.get("MRAcquisitionType")).upper(),
        tr=_number(ds.get("RepetitionTime")), te=_number(ds.get("EchoTime")),
        instance_number=int(instance) if instance is not None else None,
        temporal_position=int(temporal) if temporal is not None else None,
        trigger_time_s=trigger / 1000.0 if trigger is not None else None,
        acquisition_s=_seconds(ds.get("AcquisitionDate") or ds.get("SeriesDate"), ds.get("AcquisitionTime")),
        content_s=_seconds(ds.get("ContentDate"), ds.get("ContentTime")),
        acquisition_time=_text(ds.get("AcquisitionTime")) or None,
        raw_pixels=raw_pixels,
        slope=_number(ds.get("RescaleSlope")), intercept=_number(ds.get("RescaleIntercept")),
        frame=frame, transfer_syntax=syntax, directionality=directionality_of(ds),
    )


_NATIVE_LE = {"1.2.840.10008.1.2": True, "1.2.840.10008.1.2.1": False}  # UID -> implicit VR


def _raw_pixel_layout(ds, offset: int) -> Optional[tuple[int, bool, str]]:
    """Fast-path description for plain single-frame grey-level pixels; None sends reading to pydicom."""
    syntax = _text(getattr(getattr(ds, "file_meta", None), "get", lambda *_: None)("TransferSyntaxUID"))
    bits = int(_number(ds.get("BitsAllocated")) or 0)
    stored = int(_number(ds.get("BitsStored")) or bits)
    signed = int(_number(ds.get("PixelRepresentation")) or 0) == 1
    if (syntax not in _NATIVE_LE or int(_number(ds.get("SamplesPerPixel")) or 1) != 1
            or int(_number(ds.get("NumberOfFrames")) or 1) != 1 or bits not in (8, 16, 32)
            or (signed and stored != bits)):
        return None
    return offset, _NATIVE_LE[syntax], f"<{'i' if signed else 'u'}{bits // 8}"


def study_files(root: str | os.PathLike) -> list[str]:
    """The files of a study: every file under `root` (any depth), except below a folder holding
    a DICOMDIR, where the files its records reference are taken instead; `root` may also be
    the DICOMDIR itself."""
    root = Path(root)
    if is_dicomdir(root):
        return dicomdir_files(root)
    paths: list[str] = []
    for dirpath, dirs, names in os.walk(root):
        index = next((n for n in names if n.upper() == DICOMDIR), None)
        if index is not None:
            paths.extend(dicomdir_files(Path(dirpath) / index))
            dirs.clear()  # the medium's folders hold what its records say, nothing more
            continue
        paths.extend(str(Path(dirpath) / name) for name in names)
    return sorted(paths)


def scan_dicom_tree(root: str | os.PathLike, progress: Optional[ProgressCallback] = None) -> list[DicomSeries]:
    """Read every file's header under `root` (any depth, or a DICOMDIR's files) and group them by series."""
    return scan_files(study_files(root), progress)


def scan_files(paths: list[str], progress: Optional[ProgressCallback] = None) -> list[DicomSeries]:
    """Read the headers of the given files (e.g. a DICOM database's files of one study) and group them by series."""
    progress = progress or silent
    groups: dict[str, list[SliceHeader]] = {}
    for i, path in enumerate(paths):
        headers = read_headers(path)
        if not headers and _unreadable_dicom(path):  # else it would only surface as a missing slice
            raise CaseError(f"{path}: not a readable DICOM file ({os.path.getsize(path)} bytes, marked as "
                            "DICOM but truncated or damaged); remove or replace it.")
        for header in headers:
            groups.setdefault(header.series_uid, []).append(header)
        if i % 50 == 0:
            progress(i / max(1, len(paths)), f"reading DICOM headers ({i}/{len(paths)})")
    progress(1.0, f"read {len(paths)} file headers")
    series = [DicomSeries(uid, sorted(slices, key=lambda s: (s.instance_number or 0, s.path, s.frame or 0)))
              for uid, group in groups.items() for slices in _by_frame_type(group)]
    series.sort(key=lambda s: (s.number if s.number is not None else 1 << 30, s.uid))
    return series


def _unreadable_dicom(path: str) -> bool:
    """The file carries the DICOM Part 10 marker ('DICM' after the 128-byte preamble) but
    pydicom cannot parse it or finds nothing after the file meta header (a truncated file); a
    DICOMDIR or another non-image object parses and is not meant."""
    try:
        with open(path, "rb") as handle:
            if handle.read(132)[128:] != b"DICM":
                return False
            handle.seek(0)
            return len(pydicom.dcmread(handle, stop_before_pixels=True)) == 0
    except OSError:
        return False
    except Exception:  # pydicom raises many types for a damaged file; all mean "unreadable" here
        return True


_MAP_FRAMES = ("ADC", "EADC", "FA", "CALC_BVAL")  # FrameType values of computed maps


def _by_frame_type(headers: list[SliceHeader]) -> list[list[SliceHeader]]:
    """Computed-map frames stored in one multi-frame object with the diffusion images they
    come from (an ADC map beside its b-value images), each map apart with its FrameType
    value added to the description, so they are classified on their own."""
    kinds: dict[str, list[SliceHeader]] = {}
    for h in headers:
        kind = next((k for k in _MAP_FRAMES if k in h.image_type), "") if h.frame is not None else ""
        kinds.setdefault(kind, []).append(h)
    if len(kinds) == 1:
        return [headers]
    return [[replace(h, description=f"{h.description} ({kind} frames)") for h in group] if kind else group
            for kind, group in kinds.items()]


# ---------------------------------------------------------------- geometry

def _normal(iop: tuple[float, ...]) -> np.ndarray:
    row, col = np.asarray(iop[:3]), np.asarray(iop[3:])
    n = np.cross(row, col)
    return n / np.linalg.norm(n)


def orientation_name(iop: Optional[tuple[float, ...]]) -> str:
    """'axial', 'coronal' or 'sagittal' from the dominant LPS component of the slice normal."""
    if iop is None:
        return "unknown"
    axis = int(np.argmax(np.abs(_normal(iop))))
    return ("sagittal", "coronal", "axial")[axis]


def stack_geometry(slices: list[SliceHeader]) -> tuple[list[SliceHeader], Geometry]:
    """Sort slices along the normal and derive the 3D geometry; ValueError(problem) if unusable.

    The problem text continues a sentence starting with the series label, e.g.
    "has a missing slice: ...".
    """
    if any(s.iop is None or s.ipp is None or s.pixel_spacing is None for s in slices):
        raise ValueError("has images without position, orientation or pixel spacing")
    iops = np.array([s.iop for s in slices])
    if np.abs(iops - iops[0]).max() > _ORIENTATION_TOL:
        names = sorted({orientation_name(s.iop) for s in slices})
        raise ValueError(f"mixes slice orientations ({', '.join(names)})")
    sizes = sorted({(s.cols, s.rows, *s.pixel_spacing) for s in slices})  # type: ignore[misc]
    if len(sizes) > 1:
        shown = " and ".join(f"{c}x{r} at {ps[1]:g}x{ps[0]:g} mm" for c, r, *ps in sizes[:2])
        raise ValueError(f"mixes image sizes ({shown})")
    normal = _normal(slices[0].iop)  # type: ignore[arg-type]
    ordered = sorted(slices, key=lambda s: float(np.dot(normal, s.ipp)))
    depth = np.array([float(np.dot(normal, s.ipp)) for s in ordered])
    if len(ordered) < 2:
        raise ValueError("has a single slice, not a 3D volume")
    steps = np.diff(depth)
    if steps.min() < 1e-3:
        raise ValueError("has two images at the same slice position")
    # Nominal spacing from the regular steps only: a missing slice doubles one step and must
    # not pull the estimate up (the median of few steps would).
    spacing_z = float(np.median(steps[steps < 1.5 * steps.min()]))
    off = np.abs(steps - spacing_z) > _SPACING_TOL * spacing_z
    if off.any():
        i = int(np.argmax(np.abs(steps - spacing_z)))
        ratio = steps / spacing_z
        if np.all(np.abs(ratio[off] - np.round(ratio[off])) < _SPACING_TOL) and np.all(ratio[off] > 1.5):
            missing = int(np.sum(np.round(ratio[off]) - 1))
            raise ValueError(
                f"has {missing} missing slice{'s' if missing > 1 else ''}: a gap of {steps[i]:.2f} mm between "
                f"slices {i + 1} and {i + 2} (at {depth[i]:.2f} and {depth[i + 1]:.2f} mm along the slice normal) "
                f"where the slice spacing is {spacing_z:.2f} mm")
        raise ValueError(f"has irregular slice spacing ({steps.min():.2f} to {steps.max():.2f} mm between slices)")
    # Slices must stack along the normal (no shear), otherwise a regular grid would misplace them.
    in_plane = np.array([np.asarray(s.ipp) - d * normal for s, d in zip(ordered, depth)])
    px = min(slices[0].pixel_spacing)  # type: ignore[arg-type]
    if np.abs(in_plane - in_plane[0]).max() > 0.5 * px:
        raise ValueError("has slices that are shifted in-plane (sheared stack), not a regular 3D grid")
    row, col = np.asarray(slices[0].iop[:3]), np.asarray(slices[0].iop[3:])  # type: ignore[index]
    direction = np.column_stack([row, col, normal])
    ps = slices[0].pixel_spacing
    geometry = Geometry(size=(slices[0].cols, slices[0].rows, len(ordered)),
                        spacing=(float(ps[1]), float(ps[0]), spacing_z),  # type: ignore[index]
                        origin=tuple(float(v) for v in ordered[0].ipp),  # type: ignore[arg-type]
                        direction=tuple(float(v) for v in direction.ravel()))
    return ordered, geometry


def _make_volume(role: str, series: DicomSeries, slices: list[SliceHeader], **extra) -> Volume:
    volume = Volume(role=role, series=series, slices=list(slices), **extra)
    try:
        volume.slices, volume.geometry = stack_geometry(volume.slices)
    except ValueError as exc:
        volume.problem = str(exc)
    return volume


# ---------------------------------------------------------------- classification

_LOCALISER = re.compile(r"(^|[^a-z])loc([^a-z]|$)|locali[sz]er|scout|survey|pilot|3-?plane", re.IGNORECASE)
_DYNAMIC = re.compile(r"dyn|dce|twist|perf|vibe|tricks|disco", re.IGNORECASE)
_FA_MAP = re.compile(r"(^|[^a-z])fa([^a-z]|$)|fractional|tensor|dti", re.IGNORECASE)
_EXP_MAP = re.compile(r"eadc|exp(onential)?[ _-]?adc", re.IGNORECASE)


def _compact(text: str) -> str:
    return re.sub(r"[^A-Z0-9]", "", text.upper())


@dataclass
class _Classified:
    volumes: list[Volume] = field(default_factory=list)  # role candidates
    dynamic: list[DicomSeries] = field(default_factory=list)  # T1 GRE series: DCE candidates
    unused: list[SeriesInfo] = field(default_factory=list)


def _one_per_position(at: dict[float, list[SliceHeader]], b: float) -> tuple[list[SliceHeader], str, Optional[str]]:
    """One image per slice position from several (trace + directions, or directions alone).

    The trace-weighted images are used when the headers mark exactly one per position;
    otherwise each position gets the geometric mean of its images, which is the trace of
    the diffusion directions (and stays the trace when the trace image is among them).
    Returns (slices, note, problem).
    """
    groups = [sorted(images, key=lambda s: (s.instance_number or 0, s.path, s.frame or 0))
              for _depth, images in sorted(at.items())]
    per_position = sorted({len(g) for g in groups})
    traces = [[s for s in g if s.directionality == ISOTROPIC] for g in groups]
    if all(len(t) == 1 for t in traces):
        return ([t[0] for t in traces],
                f"b={format_b(b)}: the trace-weighted images of {per_position[-1]} per slice position", None)
    slices = [g[0] if len(g) == 1 else replace(g[0], combine=tuple(g)) for g in groups]
    note = f"b={format_b(b)}: geometric mean of the {per_position[-1]} images per slice position (diffusion directions)"
    problem = None
    if len(per_position) > 1:
        problem = (f"has {per_position[0]} images at some slice positions and {per_position[-1]} at others "
                   f"at b={format_b(b)} (missing images)")
    return slices, note, problem


def _split_by_b(series: DicomSeries, role: str) -> tuple[list[Volume], Optional[str]]:
    """One volume per b-value; returns (volumes, unused reason)."""
    by_b: dict[float, list[SliceHeader]] = {}
    for s in series.slices:
        if s.b_value is None:
            return [], "diffusion series without b-values in its headers"
        by_b.setdefault(s.b_value, []).append(s)
    volumes = []
    for b, slices in sorted(by_b.items()):
        normal = _normal(slices[0].iop) if slices[0].iop else None
        note = problem = None
        if normal is not None and all(s.ipp for s in slices):
            at: dict[float, list[SliceHeader]] = {}
            for s in slices:
                at.setdefault(round(float(np.dot(normal, s.ipp)), 2), []).append(s)  # type: ignore[arg-type]
            if any(len(images) > 1 for images in at.values()):
                slices, note, problem = _one_per_position(at, b)
        volume = _make_volume(role, series, slices, b_value=b, note=note)
        volume.problem = problem or volume.problem
        volumes.append(volume)
    counts = {v.b_value: len(v.slices) for v in volumes}
    if len(set(counts.values())) > 1:
        most = max(counts.values())
        for v in volumes:
            if len(v.slices) < most and v.problem is None:
                v.problem = (f"has {len(v.slices)} slices at b={format_b(v.b_value)} but {most} at other b-values "
                             f"(missing slices)")
    return volumes, None


def _classify_series(series: DicomSeries, out: _Classified) -> None:
    first = series.first
    description = series.description
    itype = set(first.image_type)
    compact = _compact(description)
    lower = description.lower()

    def unused(reason: str) -> None:
        out.unused.append(series.info("unused", reason))

    if not first.has_pixels or first.modality not in ("MR", ""):
        unused(f"not an MR image series (modality {first.modality or 'unknown'})")
        return
    if first.frames > 1 and first.frame is None:
        unused("multi-frame object without per-frame functional groups (frame positions unknown)")
        return
    if "LOCALIZER" in itype or _LOCALISER.search(description):
        unused("localiser")
        return
    orientations = {orientation_name(s.iop) for s in series.slices}
    if "unknown" in orientations:
        unused("images without position/orientation")
        return
    if len(series.slices) < 2:
        unused("single image, not a 3D volume")
        return
    orientation = orientation_name(first.iop) if len(orientations) == 1 else "mixed"
    diffusion = ("DIFFUSION" in itype or "TRACEW" in itype or "ADC" in itype
                 or first.b_value is not None or bool(re.search(r"diff|dwi|adc", lower)))
    if diffusion:
        if "FA" in itype or _FA_MAP.search(description):
            unused("FA (fractional anisotropy) map")
            return
        if "EADC" in itype or "EXP" in itype or _EXP_MAP.search(description):
            unused("exponential ADC map")
            return
        if orientation not in ("axial", "mixed"):
            unused(f"{orientation} diffusion series (only axial series are used)")
            return
        if "ADC" in itype or re.search(r"(^|[^A-Z])ADC", description.upper()) or "apparent diffusion" in lower:
            out.volumes.append(_make_volume("ADC", series, series.slices))
            return
        if "CALCBVAL" in _compact(" ".join(first.image_type)) or "CALCBVAL" in compact:
            volumes, reason = _split_by_b(series, "DWI_COMPUTED")
            if reason:
                unused(f"computed high-b series: {reason}")
            out.volumes.extend(volumes)
            return
        volumes, reason = _split_by_b(series, "DWI")
        if reason:
            unused(reason)
        out.volumes.extend(volumes)
        return
    if "SUB" in itype or "subtract" in lower:
        unused("subtraction images")
        return
    if {"MIP", "MPR", "PROJECTION IMAGE", "REFORMATTED"} & itype:
        unused("reformatted/projection images")
        return
    if "KTRANS" in itype or "ktrans" in lower:
        if orientation != "axial":
            unused(f"{orientation} Ktrans map (only axial maps are used)")
            return
        out.volumes.append(_make_volume("KTRANS", series, series.slices))
        return
    spin_echo = "SE" in first.scanning_sequence.upper().split("\\")
    t2 = bool(re.search(r"t2", lower)) or (spin_echo and (first.te or 0) >= 60 and (first.tr or 0) >= 1500)
    if t2:
        if orientation not in ("axial", "mixed"):  # mixed: validation names the problem
            unused(f"{orientation} T2 (only axial T2 is used)")
            return
        out.volumes.append(_make_volume("T2", series, series.slices))
        return
    gradient_echo = "GR" in first.scanning_sequence.upper().split("\\")
    if (gradient_echo and first.tr is not None and first.tr < 15) or _DYNAMIC.search(description):
        if "ORIGINAL" not in itype and itype:
            unused("derived T1-weighted images (not an original dynamic series)")
            return
        out.dynamic.append(series)
        return
    unused(f"no role for this series (ImageType {'/'.join(first.image_type) or '-'}, "
           f"sequence {first.sequence_name or first.scanning_sequence or '-'})")


def _time_of(slices: Iterable[SliceHeader], source: str) -> Optional[float]:
    values = [getattr(s, source) for s in slices]
    if any(v is None for v in values):
        return None
    return min(values) if values else None


def _dce_runs(series_list: list[DicomSeries], unused: list[SeriesInfo]) -> list[DceRun]:
    """Group T1 gradient-echo series into dynamic runs of >= 2 time points with one geometry."""
    volumes: list[Volume] = []
    broken: list[tuple[DicomSeries, str]] = []
    for series in series_list:
        first = series.first
        if first.iop is None:
            continue
        normal = _normal(first.iop)
        at: dict[float, list[SliceHeader]] = {}
        for s in series.slices:
            at.setdefault(round(float(np.dot(normal, s.ipp)), 2), []).append(s)  # type: ignore[arg-type]
        counts = sorted({len(v) for v in at.values()})
        if len(counts) > 1:
            broken.append((series, f"has {counts[0]} time points at some slice positions and {counts[-1]} at others"))
            continue
        n_times = counts[0]
        # k-th image at every position (in time order) belongs to time point k; works for 3D
        # acquisitions (one time per volume) and 2D ones (a time per slice).
        def order(s: SliceHeader):
            return (s.temporal_position if s.temporal_position is not None else 0,
                    s.trigger_time_s if s.trigger_time_s is not None else 0.0,
                    s.acquisition_s if s.acquisition_s is not None else 0.0,
                    s.content_s if s.content_s is not None else 0.0, s.instance_number or 0)
        columns = [sorted(v, key=order) for v in at.values()]
        for k in range(n_times):
            slices = [column[k] for column in columns]
            volumes.append(_make_volume("DCE", series, slices))
    # Group time points by image grid (a run = one dynamic acquisition). The key uses the
    # slice headers, not the validated geometry, so a time point with a missing slice stays
    # in its run and makes the run incomplete instead of silently vanishing.
    runs: dict[tuple, list[Volume]] = {}
    for v in volumes:
        s = v.slices[0]
        key = (s.cols, s.rows, tuple(round(x, 3) for x in s.pixel_spacing or ()),
               tuple(round(x, 3) for x in s.iop or ()))
        runs.setdefault(key, []).append(v)
    result: list[DceRun] = []
    for run_volumes in runs.values():
        run = DceRun(run_volumes)
        problems = [v for v in run_volumes if v.problem]
        if problems:
            run.problem = f"{problems[0].series.label()} {problems[0].problem}"
        if len(run_volumes) < 2:
            why = f" and {problems[0].problem}" if problems else ""
            for s in run.series:
                unused.append(s.info("unused", f"T1-weighted gradient-echo series with a single time point "
                                               f"(not a dynamic series){why}"))
            continue
        _order_time_points(run)
        result.append(run)
    for series, problem in broken:  # one series holding all time points, but not evenly
        result.append(DceRun([Volume("DCE", series, series.slices, problem=problem)],
                             problem=f"{series.label()} {problem}"))
    return result


def _order_time_points(run: DceRun) -> None:
    """Sort a run's time points by TriggerTime, else acquisition, else content date/time."""
    for source in ("trigger_time_s", "acquisition_s", "content_s"):
        times = [_time_of(v.slices, source) for v in run.volumes]
        if all(t is not None for t in times) and len(set(times)) == len(times):
            for v, t in zip(run.volumes, times):
                v.time_s = t
            run.volumes.sort(key=lambda v: v.time_s)  # type: ignore[arg-type,return-value]
            return
    run.volumes.sort(key=lambda v: (v.series.number or 0, v.slices[0].instance_number or 0))


# ---------------------------------------------------------------- picking

def format_b(b: Optional[float]) -> str:
    if b is None:
        return "?"
    return str(int(b)) if float(b).is_integer() else f"{b:g}"


def _slot(volume: Volume) -> str:
    if volume.role in ("DWI", "DWI_COMPUTED"):
        return f"{volume.role}:{format_b(volume.b_value)}"
    return volume.role


def _matches(series: DicomSeries, value: str) -> bool:
    value = value.strip()
    return value == series.uid or (series.number is not None and value.isdigit() and int(value) == series.number)


def _candidate_series(candidate: Volume | DceRun) -> list[DicomSeries]:
    return candidate.series if isinstance(candidate, DceRun) else [candidate.series]


def _candidate_problem(candidate: Volume | DceRun) -> Optional[str]:
    if isinstance(candidate, DceRun):
        return candidate.problem
    return f"{candidate.series.label()} {candidate.problem}" if candidate.problem else None


def _rank(candidate: Volume | DceRun, high_b_adc: frozenset = frozenset()):
    """Pick rule: latest acquisition, then highest series number (DCE: most time points first;
    ADC: maps from b > 1000, uids in `high_b_adc`, last)."""
    if isinstance(candidate, DceRun):
        return (len(candidate.volumes), candidate.acquired_s, max(s.number or 0 for s in candidate.series))
    return (candidate.series.uid not in high_b_adc, candidate.series.acquired_s, candidate.series.number or 0)


def _high_b_adc_maps(adc_maps: list[Volume], diffusion: list[Volume]) -> frozenset:
    """SeriesInstanceUIDs of ADC maps computed from b-values above 1000 s/mm²: described as
    high-b, or named after a diffusion series ('<source>_ADC') that holds such a b-value."""
    b_by_description: dict[str, set[float]] = {}
    for v in diffusion:
        if v.b_value is not None:
            b_by_description.setdefault(_compact(v.series.description), set()).add(v.b_value)
    high = set()
    for adc in adc_maps:
        name = _compact(adc.series.description)
        sources = [bs for source, bs in b_by_description.items() if source and name.startswith(source) and name != source]
        if _HIGH_B_TEXT.search(adc.series.description) or any(max(bs) > _MAX_ADC_B for bs in sources):
            high.add(adc.series.uid)
    return frozenset(high)


_CHOOSE_KEYS = "T2, ADC, KTRANS, DCE, DWI, DWI:<b>, DWI_COMPUTED, DWI_COMPUTED:<b>"


def _normalise_choose(choose: Optional[dict]) -> dict[str, list[str]]:
    result: dict[str, list[str]] = {}
    for key, value in (choose or {}).items():
        k = str(key).strip().upper().replace(" ", "")
        k = re.sub(r"^(DWI(?:_COMPUTED)?)[:_]?B?(\d+(?:\.\d+)?)$", lambda m: f"{m.group(1)}:{format_b(float(m.group(2)))}", k)
        base = k.split(":")[0]
        if base not in ("T2", "ADC", "KTRANS", "DCE", "DWI", "DWI_COMPUTED") or (":" in k and base not in ("DWI", "DWI_COMPUTED")):
            raise ParameterError(f"Unknown role {key!r} in the series choice; use one of {_CHOOSE_KEYS}.")
        values = [v.strip() for v in str(value).split(",") if v.strip()]
        if not values:
            raise ParameterError(f"The series choice for {key!r} is empty; give a series number or SeriesInstanceUID.")
        result[k] = values
    return result


def plan_study(root: str | os.PathLike, choose: Optional[dict] = None,
               progress: Optional[ProgressCallback] = None, series: Optional[list[DicomSeries]] = None) -> StudyPlan:
    """Scan headers, classify series, validate and pick one candidate per role (no pixel data)."""
    root = Path(root)
    if not root.exists():
        raise CaseError(f"{root}: folder not found.")
    wanted = _normalise_choose(choose)
    all_series = series if series is not None else scan_dicom_tree(root, progress)
    if not all_series:
        raise CaseError(f"{root}: no DICOM files found in this folder or its subfolders.")
    patients = sorted({s.first.patient_id for s in all_series if s.first.patient_id})
    studies = sorted({s.first.study_uid for s in all_series if s.first.study_uid})
    if len(patients) > 1 or len(studies) > 1:
        shown = ", ".join(patients) if len(patients) > 1 else f"{len(studies)} StudyInstanceUIDs"
        raise CaseError(f"{root}: holds more than one study ({shown}); point at the folder of one study.")
    case_id = patients[0] if patients else root.name

    classified = _Classified()
    for s in all_series:
        _classify_series(s, classified)
    slots: dict[str, list[Volume | DceRun]] = {}
    for v in classified.volumes:
        slots.setdefault(_slot(v), []).append(v)
    for run in _dce_runs(classified.dynamic, classified.unused):
        slots.setdefault("DCE", []).append(run)

    plan = StudyPlan(root=root, case_id=case_id, series=all_series, unused=list(classified.unused))
    # Series lists given for a whole family (DWI=8,17) restrict every b-value slot of it.
    for family in ("DWI", "DWI_COMPUTED"):
        if family in wanted:
            allowed = wanted[family]
            for value in allowed:
                if not any(_matches(s, value) for slot, cands in slots.items() if slot.split(":")[0] == family
                           for c in cands for s in _candidate_series(c)):
                    raise ParameterError(f"Series {value!r} chosen for {family} is not among the {family} candidates of {root}; "
                                         f"candidates: {_list_candidates(slots, family)}.")
            for slot in [k for k in slots if k.split(":")[0] == family]:
                kept = [c for c in slots[slot] if any(_matches(s, v) for s in _candidate_series(c) for v in allowed)]
                for c in slots[slot]:
                    if c not in kept:
                        _note_unused(plan, c, slot, f"not among the series chosen for {family} ({', '.join(allowed)})")
                if kept:
                    slots[slot] = kept
                else:
                    del slots[slot]

    high_b_adc = _high_b_adc_maps(slots.get("ADC", []), [v for k, cands in slots.items()
                                                         if k.split(":")[0] == "DWI" for v in cands])
    for slot in sorted(slots, key=_slot_order):
        candidates = slots[slot]
        chosen: Optional[Volume | DceRun] = None
        how = ""
        if slot in wanted:
            value = wanted[slot][0]
            matching = [c for c in candidates if any(_matches(s, value) for s in _candidate_series(c))]
            if not matching:
                raise ParameterError(f"Series {value!r} chosen for {slot} is not among the {slot} candidates of {root}; "
                                     f"candidates: {_list_candidates(slots, slot)}.")
            chosen, how = matching[0], "chosen by the user"
            problem = _candidate_problem(chosen)
            if problem:
                raise CaseError(f"{problem}; it cannot be used as {slot}.")
        else:
            complete = [c for c in candidates if _candidate_problem(c) is None]
            if not complete:
                broken = max(candidates, key=lambda c: _rank(c, high_b_adc))
                raise CaseError(f"{_candidate_problem(broken)}; it cannot be used as {slot}.")
            chosen = max(complete, key=lambda c: _rank(c, high_b_adc))
            how = ("only candidate" if len(candidates) == 1 else
                   ADC_PICK_RULE if slot == "ADC" and high_b_adc else PICK_RULE)
        plan.picks[slot] = chosen
        plan.reasons[slot] = how
        for c in candidates:
            if c is chosen:
                continue
            problem = _candidate_problem(c)
            label = ", ".join(str(s.number) for s in _candidate_series(chosen))
            reason = (f"incomplete {slot} candidate: {problem}" if problem
                      else f"another {slot} candidate; series {label} used ({how})")
            _note_unused(plan, c, slot, reason)
    for key in wanted:
        if key not in ("DWI", "DWI_COMPUTED") and key not in slots:
            raise ParameterError(f"No {key} candidates in {root}, so series {wanted[key][0]!r} cannot be chosen for it.")
    if "T2" not in plan.picks:
        others = [u for u in plan.unused if "T2" in u.reason]
        hint = "; found " + ", ".join(f"series {u.series_number} '{u.description}' ({u.reason})" for u in others) if others else ""
        raise CaseError(f"{root}: no axial T2 series found{hint}.")
    return plan


def _slot_order(slot: str):
    order = {"T2": 0, "ADC": 1, "DWI": 2, "DWI_COMPUTED": 3, "KTRANS": 4, "DCE": 5}
    base, _, b = slot.partition(":")
    return (order.get(base, 9), float(b) if b else 0.0)


def _list_candidates(slots: dict[str, list], prefix: str) -> str:
    numbers = sorted({f"{s.number} '{s.description}'" for slot, cands in slots.items()
                      if slot == prefix or slot.split(":")[0] == prefix for c in cands for s in _candidate_series(c)})
    return ", ".join(numbers) or "none"


def _note_unused(plan: StudyPlan, candidate: Volume | DceRun, slot: str, reason: str) -> None:
    for s in _candidate_series(candidate):
        plan.unused.append(s.info(slot, reason))


# ---------------------------------------------------------------- pixel reading

def _read_raw(header: SliceHeader) -> Optional[np.ndarray]:
    """Native little-endian pixels read at the offset found by the header scan, or None."""
    offset, implicit, dtype = header.raw_pixels  # type: ignore[misc]
    expected = header.rows * header.cols * np.dtype(dtype).itemsize
    with open(header.path, "rb") as handle:
        handle.seek(offset)
        head = handle.read(8)
        if len(head) < 8 or head[:4] != b"\xe0\x7f\x10\x00":
            return None
        if implicit:
            length = int.from_bytes(head[4:8], "little")
        elif head[4:6] in (b"OB", b"OW", b"OF", b"UN", b"OD", b"OL"):
            length = int.from_bytes(handle.read(4), "little")
        else:
            length = int.from_bytes(head[6:8], "little")
        if length != expected:  # encapsulated/odd-padded data: let pydicom handle it
            return None
        data = handle.read(length)
    if len(data) != expected:
        return None
    return np.frombuffer(data, dtype=dtype).reshape(header.rows, header.cols).astype(np.float32)


def _read_slice(header: SliceHeader, cache: FrameCache) -> np.ndarray:
    if header.combine:  # diffusion directions without a trace image: their geometric mean
        stack = np.stack([_read_slice(replace(h, combine=()), cache) for h in header.combine]).astype(np.float64)
        return np.exp(np.log(np.maximum(stack, 1e-12)).mean(axis=0)).astype(np.float32) * (stack > 0).all(axis=0)
    array = _read_raw(header) if header.raw_pixels is not None else None
    if array is None:
        array, rescaled = cache.frame(header.path, header.frame or 0)
        if rescaled:  # GDCM already applied the rescale
            return array
    if header.slope is not None and header.slope != 1.0:
        array *= np.float32(header.slope)
    if header.intercept:
        array += np.float32(header.intercept)
    return array


def read_volume(volume: Volume, cache: Optional[FrameCache] = None) -> sitk.Image:
    """Pixel data of one planned volume as a float32 SimpleITK image in LPS."""
    g = volume.geometry
    assert g is not None, "read_volume needs a validated volume"
    cache = cache or FrameCache()
    try:
        array = np.stack([_read_slice(s, cache) for s in volume.slices])
    except Undecodable as exc:
        syntax = exc.syntax or volume.slices[0].transfer_syntax
        raise CaseError(f"{volume.series.label()} cannot be decoded: its transfer syntax is {syntax_name(syntax)} "
                        f"and no installed decoder reads it ({exc.detail}).") from None
    if array.shape != (g.size[2], g.size[1], g.size[0]):
        raise CaseError(f"{volume.series.label()} has pixel data of shape {array.shape[::-1]} "
                        f"that disagrees with its headers ({g.size}).")
    image = sitk.GetImageFromArray(array)
    image.SetSpacing(g.spacing)
    image.SetOrigin(g.origin)
    image.SetDirection(g.direction)
    return image


def load_dicom_case(root: str | os.PathLike, choose: Optional[dict] = None,
                    progress: Optional[ProgressCallback] = None,
                    series: Optional[list[DicomSeries]] = None) -> Case:
    """Load a study from a DICOM folder tree: classify, validate, pick, then read pixels.

    `series` (from `scan_dicom_tree(root)`) skips the header scan when already done.
    """
    plan = plan_study(root, choose, sub_progress(progress, 0.0, 0.3), series=series)
    read = sub_progress(progress, 0.3, 1.0)
    volumes: list[Volume] = []
    for pick in plan.picks.values():
        volumes.extend(pick.volumes if isinstance(pick, DceRun) else [pick])
    total = sum(len(v.slices) for v in volumes) or 1
    done = 0
    images: dict[int, sitk.Image] = {}
    cache = FrameCache()
    for v in volumes:
        read(done / total, f"reading {_slot(v)} from series {v.series.number}")
        images[id(v)] = read_volume(v, cache)
        done += len(v.slices)
    read(1.0, "study loaded")

    t2 = plan.picks["T2"]
    assert isinstance(t2, Volume)
    case = Case(case_id=plan.case_id, t2=images[id(t2)], unused=plan.unused)
    for slot, pick in sorted(plan.picks.items(), key=lambda kv: _slot_order(kv[0])):
        if isinstance(pick, DceRun):
            start = pick.volumes[0].time_s
            for i, v in enumerate(pick.volumes):
                case.dce.append(images[id(v)])
                if start is not None and v.time_s is not None:
                    case.dce_times.append(round(float(v.time_s - start), 3))
                note = f"time point {i + 1} of {len(pick.volumes)}"
                if case.dce_times:
                    note += f" at {case.dce_times[-1]:g} s"
                if not any(u.source == v.series.uid and u.role == "DCE" for u in case.used):
                    case.used.append(v.series.info("DCE", note))
            if len(case.dce_times) != len(case.dce):
                case.dce_times = []
            continue
        image = images[id(pick)]
        reason = plan.reasons[slot]
        notes = [pick.note] if pick.note else []
        if slot == "ADC":
            image, unit_note = adc_to_micro(image)
            notes += [unit_note] if unit_note else []
        for note in notes:
            case.notes.append(f"{slot} from series {pick.series.number} '{pick.series.description}': {note}")
        case.used.append(pick.series.info(slot, "; ".join([reason] + notes)))
        if slot == "ADC":
            case.adc = image
        elif slot == "KTRANS":
            case.ktrans = image
        elif slot.startswith("DWI_COMPUTED:"):
            case.dwi_computed[float(pick.b_value)] = image  # type: ignore[arg-type]
        elif slot.startswith("DWI:"):
            case.dwi[float(pick.b_value)] = image  # type: ignore[arg-type]
    return case
