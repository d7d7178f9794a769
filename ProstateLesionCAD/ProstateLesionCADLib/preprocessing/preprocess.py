"""The main paper's pre-processing: a case -> the 11-channel 160×160×24 detector input.

Pellicer-Valero et al. 2022, Methods, "Pre-processing" (objective 1) and Equation 1:

1. Every sequence is resampled into the T2 frame (T2 direction; the T2 taken in the
   canonical voxel order of `orientation.py`, so any voxel order gives the same input) at spacing
   (0.5, 0.5, 3) mm on a 160×160×24 grid centred on the prostate (`crop_geometry.py`);
   3rd-order B-spline for images, Gaussian label interpolation for masks.
2. b-values are mapped to DWI_LOW (b400/b500) and DWI_HIGH (b800/b1000/b1400); a DCE
   series is sampled at time points 10, 20, 30 of 30 (`channels.py` states the rules).
3. Each image channel is normalised independently, I' = (I - p1) / (p99 - p1), with
   p1, p99 its 1st and 99th percentiles (Equation 1), without clipping.
4. Missing sequences are all-zero channels; the prostate, CG and PZ masks are binary
   0/1 channels (not normalised).

Over which voxels are p1/p99 taken? The paper applies Eq. 1 "to every channel of an
image" after cropping; the authors' released code (OscarPellicer/prostate_lesion_detection, preprocessing_lib.py)
takes them over the whole sequence resampled onto the T2 grid, *before* cropping. We
follow the released code by default (`normalise_over="t2"`, so inputs match the
published weights); `normalise_over="crop"` gives the paper's literal reading.
Outside the T2 field of view every channel is 0 (the T2 frame defines the study, as in
the released code, which resamples everything onto the T2 grid before cropping).
ADC values below 0 (B-spline undershoot; ADC is non-negative) are set to 0, as the
released code does. Its extra blur of ADC maps whose 40th percentile is 0 (on the T2 grid,
mostly empty background: Gaussian of variance 2 mm², at most 16 voxels wide) is done only when
asked (`released_adc_blur`, set by a detector package whose `preprocessing` settings request it,
as the published model's do), so the demo models' inputs stay as they were trained.

Crop centre: the centroid of the prostate mask (given, or the case's), else of the
zonal mask, else the centre of the T2 field of view: axial prostate T2 is planned with
the gland at the centre of the field of view (both ProstateX studies here: gland within
about 1 cm of it), and the 80×80×72 mm crop leaves several centimetres of margin, so no
shift is applied. `center_source` in the geometry records which was used.

Array layout: `Preprocessed.array` is (C, Z, Y, X) float32 — channel, slice, row,
column, as `sitk.GetArrayFromImage` gives; `Preprocessed.to_mdt()` returns the MDT
Retina U-Net layout (C, Y, X, Z).
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Optional, Sequence

import numpy as np
import SimpleITK as sitk

from ..study.case import Case
from .channels import (CHANNELS, IMAGE_CHANNELS, MASK_CHANNELS, choose_dwi_high, choose_dwi_low,
                       dce_indices)
from .crop_geometry import CROP_SIZE, CROP_SPACING, CropGeometry, Grid, resample
from ..errors import CaseError, FormatError
from ..orientation import canonical_case, to_canonical
from ..output_files import atomic_file
from ..progress import ProgressCallback, silent

PREPROCESSED_FORMAT = "prostate-cad-preprocessed/1"
AXIS_ORDER = "CZYX"
METADATA_FILE = "preprocessed.json"
ARRAY_FILE = "channels.npy"


@dataclass
class Preprocessed:
    """The detector input of one case and where every value came from."""

    case_id: str
    array: np.ndarray  # (C, Z, Y, X) float32, C in `channels` order
    channels: tuple[str, ...]
    geometry: CropGeometry
    sources: dict[str, str] = field(default_factory=dict)  # channel -> what filled it ("missing" if none)
    normalisation: dict[str, list[float]] = field(default_factory=dict)  # channel -> [p1, p99]
    normalise_over: str = "t2"

    def channel(self, name: str) -> np.ndarray:
        """One channel as a (Z, Y, X) array."""
        return self.array[self.channels.index(name)]

    def image(self, name: str) -> sitk.Image:
        """One channel as a SimpleITK image on the crop grid (LPS)."""
        return self.geometry.as_crop_image(self.channel(name))

    def missing(self) -> list[str]:
        return [c for c in self.channels if self.sources.get(c, "missing") == "missing"]

    def to_mdt(self, channels: Optional[Sequence[str]] = None) -> np.ndarray:
        """(C, Y, X, Z) array for the MDT Retina U-Net, optionally with a subset of channels."""
        names = list(channels) if channels is not None else list(self.channels)
        unknown = [n for n in names if n not in self.channels]
        if unknown:
            raise ValueError(f"unknown channel(s) {unknown}; available: {list(self.channels)}")
        sub = self.array[[self.channels.index(n) for n in names]]
        return np.ascontiguousarray(np.transpose(sub, (0, 2, 3, 1)))


# --------------------------------------------------------------------------------------
# helpers

def percentiles(values: np.ndarray) -> tuple[float, float]:
    """1st and 99th percentiles of all voxels (Equation 1)."""
    p1, p99 = np.percentile(values, [1.0, 99.0])
    return float(p1), float(p99)


def normalise(values: np.ndarray, p1: float, p99: float) -> np.ndarray:
    """Equation 1, I' = (I - p1) / (p99 - p1), no clipping; a constant channel gives zeros."""
    if not np.isfinite(p1) or not np.isfinite(p99) or p99 <= p1:
        return np.zeros_like(values, dtype=np.float32)
    return ((values - p1) / (p99 - p1)).astype(np.float32)


def _binary(mask: sitk.Image, what: str) -> sitk.Image:
    if mask.GetDimension() != 3:
        raise CaseError(f"The {what} mask must be a 3D image, not {mask.GetDimension()}D.")
    return sitk.Cast(mask > 0, sitk.sitkUInt8)


def _zone_labels(zones: sitk.Image) -> sitk.Image:
    """The zonal mask as UInt8 with labels 0, 1 = CG, 2 = PZ (anything else is refused)."""
    if zones.GetDimension() != 3:
        raise CaseError(f"The zonal mask must be a 3D image, not {zones.GetDimension()}D.")
    arr = sitk.GetArrayViewFromImage(zones)
    bad = sorted(set(np.unique(arr).tolist()) - {0, 1, 2})
    if bad:
        raise CaseError(f"The zonal mask has labels {bad[:5]}; expected only 0 (background), 1 (CG) and 2 (PZ).")
    return sitk.Cast(zones, sitk.sitkUInt8)


def mask_centroid_lps(mask: sitk.Image, what: str = "prostate") -> np.ndarray:
    """Centroid (LPS mm) of all non-zero voxels of a mask."""
    stats = sitk.LabelShapeStatisticsImageFilter()
    stats.Execute(_binary(mask, what))
    if not stats.HasLabel(1):
        raise CaseError(f"The {what} mask is empty, so the crop cannot be centred on the prostate.")
    return np.asarray(stats.GetCentroid(1), float)


def fov_center_lps(image: sitk.Image) -> np.ndarray:
    """Centre of an image's field of view (LPS mm)."""
    grid = Grid.of(image)
    return grid.index_to_lps((np.asarray(grid.size, float) - 1.0) / 2.0)


def crop_geometry_for(case: Case, prostate: Optional[sitk.Image] = None, zones: Optional[sitk.Image] = None,
                      center_lps: Optional[Sequence[float]] = None,
                      size: Sequence[int] = CROP_SIZE, spacing: Sequence[float] = CROP_SPACING) -> CropGeometry:
    """Place the crop: given point > prostate centroid > zones centroid > T2 field-of-view centre."""
    if center_lps is not None:
        center, source = np.asarray(center_lps, float), "given point"
    elif prostate is not None:
        center, source = mask_centroid_lps(prostate, "prostate"), "prostate mask"
    elif zones is not None:
        center, source = mask_centroid_lps(zones, "zonal"), "zones mask"
    else:
        center, source = fov_center_lps(case.t2), "field of view"
    return CropGeometry.around(Grid.of(to_canonical(case.t2)), center, source, size, spacing)


def blur_sparse_adc(adc: sitk.Image, t2_grid: Grid, transform: Optional[sitk.Transform],
                    description: str) -> tuple[sitk.Image, Optional[sitk.Transform], str]:
    """The released code's ADC step (preprocessing_lib.py): on the T2 grid, negatives set to 0, and
    when the 40th percentile is then 0 (an ADC map mostly empty in the T2 frame), a Gaussian blur
    of variance 2 mm² (sigma sqrt(2) mm, kernel at most 16 voxels). Returns (image, transform,
    description) for the channel loop: the blurred ADC already on the T2 grid (transform applied,
    so None), or the ADC, transform and description unchanged when its 40th percentile is above 0."""
    on_t2 = sitk.Maximum(resample(adc, t2_grid, "bspline", transform), 0.0)
    p40, p99 = np.percentile(sitk.GetArrayViewFromImage(on_t2), [40, 99])
    # "0" up to the B-spline's tails in empty background (values around 1e-28, not exactly 0)
    if p40 > 1e-6 * p99:
        return adc, transform, description
    blurred = sitk.DiscreteGaussian(on_t2, variance=2.0, maximumKernelWidth=16, useImageSpacing=True)
    return blurred, None, f"{description}, blurred (variance 2 mm²: its 40th percentile is 0, as the released code)"


def _image_sources(case: Case) -> dict[str, tuple[Optional[sitk.Image], str, bool]]:
    """channel -> (image or None, description, is diffusion-derived)."""
    out: dict[str, tuple[Optional[sitk.Image], str, bool]] = {"T2": (case.t2, "T2", False)}
    low = choose_dwi_low(case.dwi, case.dwi_computed)
    high = choose_dwi_high(case.dwi, case.dwi_computed)
    for name, choice in (("DWI_LOW", low), ("DWI_HIGH", high)):
        if choice is None:
            out[name] = (None, "missing", True)
        else:
            pool = case.dwi_computed if choice.computed else case.dwi
            out[name] = (pool[choice.b_value], f"DWI {choice.describe()}", True)
    out["ADC"] = (case.adc, "ADC" if case.adc is not None else "missing", True)
    out["KTRANS"] = (case.ktrans, "Ktrans" if case.ktrans is not None else "missing", False)
    names = ("DCE_T10", "DCE_T20", "DCE_T30")
    if case.dce:
        n = len(case.dce)
        for name, idx in zip(names, dce_indices(n)):
            when = f", t={case.dce_times[idx]:g} s" if len(case.dce_times) == n else ""
            out[name] = (case.dce[idx], f"DCE time point {idx + 1} of {n}{when}", False)
    else:
        for name in names:
            out[name] = (None, "missing", False)
    return out


# --------------------------------------------------------------------------------------
# the pipeline

def preprocess(case: Case, prostate: Optional[sitk.Image] = None, zones: Optional[sitk.Image] = None, *,
               center_lps: Optional[Sequence[float]] = None,
               dwi_adc_transform: Optional[sitk.Transform] = None,
               normalise_over: str = "t2",
               progress: Optional[ProgressCallback] = None,
               released_adc_blur: bool = False) -> Preprocessed:
    """Pre-process a case into the 11-channel detector input (see the module docstring).

    prostate / zones: masks (any grid; zones 1 = CG, 2 = PZ); default: the case's own.
    center_lps: put the crop centre here instead of on the prostate centroid.
    dwi_adc_transform: an ADC->T2 registration result (T2 points -> DWI/ADC points),
        applied to DWI_LOW, DWI_HIGH and ADC as the paper's registration step does.
    normalise_over: "t2" (whole T2-grid volume, as the released code) or "crop".
    released_adc_blur: blur a mostly-zero ADC as the released code does (`blur_sparse_adc`).
    """
    if normalise_over not in ("t2", "crop"):
        raise ValueError(f"normalise_over must be 't2' or 'crop', not {normalise_over!r}")
    report = progress or silent
    if case.t2 is None:
        raise CaseError(f"Case {case.case_id} has no T2 image, which the pre-processing needs as reference.")
    # The crop and every channel follow the T2 in the canonical voxel order (orientation.py),
    # so the detector sees the same array whatever the voxel order of the files.
    case = canonical_case(case)
    prostate = to_canonical(prostate) if prostate is not None else case.prostate
    zones = to_canonical(zones) if zones is not None else case.zones
    if zones is not None:
        zones = _zone_labels(zones)  # refuse bad labels before any work

    geometry = crop_geometry_for(case, prostate, zones, center_lps)
    t2_grid = geometry.t2
    report(0.02, f"crop centred on the {geometry.center_source} at LPS "
                 f"({', '.join(f'{c:.1f}' for c in geometry.center_lps)}) mm")

    aligned = geometry.t2_offset() is not None
    inside_t2: Optional[np.ndarray] = None  # computed when first needed
    array = np.zeros((len(CHANNELS),) + tuple(reversed(geometry.crop.size)), np.float32)
    sources: dict[str, str] = {}
    norm: dict[str, list[float]] = {}
    image_sources = _image_sources(case)
    for i, name in enumerate(IMAGE_CHANNELS):
        image, description, diffusion = image_sources[name]
        sources[name] = description
        if image is None:
            report((i + 1) / 11 * 0.9, f"{name}: missing, all-zero channel")
            continue
        transform = dwi_adc_transform if diffusion else None
        if name == "ADC" and released_adc_blur:
            image, transform, description = blur_sparse_adc(image, t2_grid, transform, description)
            sources[name] = description
        native = transform is None and t2_grid.same_as(image)
        on_t2 = None
        if native:
            on_t2 = sitk.GetArrayFromImage(image).astype(np.float32)
        elif normalise_over == "t2":
            on_t2 = sitk.GetArrayFromImage(resample(image, t2_grid, "bspline", transform))
        if aligned and on_t2 is not None:
            # B-spline interpolation is exact on the T2 lattice: a copy equals resampling there.
            crop = geometry.extract_from_t2_array(on_t2)
        else:
            crop = sitk.GetArrayFromImage(resample(image, geometry.crop, "bspline", transform))
            if inside_t2 is None:
                inside_t2 = geometry.inside_t2_mask()
            crop[~inside_t2] = 0.0
        values = on_t2 if normalise_over == "t2" else crop
        if name == "ADC":
            values, crop = np.maximum(values, 0.0), np.maximum(crop, 0.0)
        p1, p99 = percentiles(values)
        norm[name] = [p1, p99]
        array[i] = normalise(crop, p1, p99)
        report((i + 1) / 11 * 0.9, f"{name}: {description}")

    # Masks: Gaussian label interpolation onto the crop grid, then binary channels.
    masks: dict[str, Optional[np.ndarray]] = {"PROSTATE": None, "CG": None, "PZ": None}
    if zones is not None:
        z = sitk.GetArrayFromImage(resample(_zone_labels(zones), geometry.crop, "label"))
        masks["CG"], masks["PZ"] = (z == 1), (z == 2)
        masks["PROSTATE"] = z > 0
        sources.update(CG="zones mask label 1", PZ="zones mask label 2", PROSTATE="zones mask (CG + PZ)")
    if prostate is not None:
        p = sitk.GetArrayFromImage(resample(_binary(prostate, "prostate"), geometry.crop, "label"))
        masks["PROSTATE"] = p > 0
        sources["PROSTATE"] = "prostate mask"
    for name in MASK_CHANNELS:
        sources.setdefault(name, "missing")
        if masks[name] is not None:
            array[CHANNELS.index(name)] = masks[name].astype(np.float32)
    report(1.0, f"pre-processed {case.case_id}: {len(CHANNELS)} channels of "
                f"{'x'.join(str(s) for s in geometry.crop.size)} voxels")
    return Preprocessed(case.case_id, array, CHANNELS, geometry, sources, norm, normalise_over)


# --------------------------------------------------------------------------------------
# files

def save_preprocessed(prep: Preprocessed, out_dir: str | os.PathLike) -> list[Path]:
    """Write `<CHANNEL>.nrrd` per channel (crop grid, LPS), `channels.npy` (C, Z, Y, X float32)
    and `preprocessed.json` (channels, axis order, geometry, sources, normalisation)."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    written = []
    for name in prep.channels:
        path = out / f"{name}.nrrd"
        sitk.WriteImage(prep.image(name), str(path), True)
        written.append(path)
    np.save(out / ARRAY_FILE, prep.array.astype(np.float32))
    written.append(out / ARRAY_FILE)
    meta = {"format": PREPROCESSED_FORMAT, "case_id": prep.case_id, "channels": list(prep.channels),
            "axis_order": AXIS_ORDER, "array": ARRAY_FILE,
            "channel_files": {name: f"{name}.nrrd" for name in prep.channels},
            "geometry": prep.geometry.to_dict(), "sources": prep.sources,
            "normalisation": {"equation": "(I - p1) / (p99 - p1)", "over": prep.normalise_over,
                              "percentiles": prep.normalisation}}
    with atomic_file(out / METADATA_FILE) as handle:
        json.dump(meta, handle, indent=2)
    written.append(out / METADATA_FILE)
    return written


def load_preprocessed(folder: str | os.PathLike) -> Preprocessed:
    """Read what `save_preprocessed` wrote."""
    folder = Path(folder)
    meta_path = folder / METADATA_FILE
    if not meta_path.is_file():
        raise FormatError(f"{meta_path} does not exist: {folder} is not a pre-processed case folder.")
    try:
        meta = json.loads(meta_path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as exc:
        raise FormatError(f"{meta_path} is not valid JSON ({exc.msg} at line {exc.lineno}).") from exc
    if meta.get("format") != PREPROCESSED_FORMAT:
        raise FormatError(f"{meta_path} has format {meta.get('format')!r}, expected {PREPROCESSED_FORMAT!r}.")
    geometry = CropGeometry.from_dict(meta["geometry"])
    channels = tuple(meta["channels"])
    array_path = folder / meta.get("array", ARRAY_FILE)
    if array_path.is_file():
        array = np.load(array_path).astype(np.float32, copy=False)
    else:  # the NRRD files alone are enough
        array = np.stack([sitk.GetArrayFromImage(sitk.ReadImage(str(folder / meta["channel_files"][c])))
                          for c in channels]).astype(np.float32)
    expected = (len(channels),) + tuple(reversed(geometry.crop.size))
    if array.shape != expected:
        raise FormatError(f"{array_path} has shape {array.shape}, but {meta_path} describes {expected}.")
    norm = meta.get("normalisation", {})
    return Preprocessed(meta["case_id"], array, channels, geometry, dict(meta.get("sources", {})),
                        {k: list(v) for k, v in norm.get("percentiles", {}).items()}, norm.get("over", "t2"))
