"""Synthetic mpMRI phantoms with known truth.

`make_phantom(seed)` draws one study, deterministically per seed: a prostate-shaped
gland (CG anterior-central, PZ posterior/peripheral crescent) in a pelvis-like
background (fat, obturator muscles, pubic bone, seminal vesicles, bladder, rectum with
gas), and 0–3
lesions whose contrast depends on their Gleason grade group (GGG): darker on T2, lower
ADC (hence brighter at high b), higher Ktrans, earlier and stronger DCE enhancement with
washout. Sequences are rendered on realistic, different grids:

- T2: `size_xy`² × `n_slices` at `spacing` (default 128×128×24 at 0.625×0.625×3 mm),
- DWI b50/b400/b800 and the ADC fitted from them like a scanner does (log-linear fit),
  plus a computed b1400 extrapolated from that fit, on a coarse EPI grid (2×2×3 mm,
  shifted origin), optionally warped by a known smooth BSpline deformation,
- Ktrans and 30 DCE time points on a 1.5×1.5×3 mm grid.

Ground truth: prostate and zone masks (1 = CG, 2 = PZ) and the lesion label map on the
T2 grid, lesion centres (LPS mm) and GGG as `formats.GroundTruthCase`, the deformation
as a `sitk.Transform` mapping T2 points to ADC/DWI points (the convention of a
registration with T2 fixed), and which lesions are visible in only one of T2/ADC.

`write_phantom` writes NRRD files + case.json, or DICOM series with Siemens-like
headers (see `phantom_dicom.py`); `make_phantom_set` writes many cases and one
ground-truth JSON for all of them.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Optional, Sequence

import numpy as np
import SimpleITK as sitk

from . import anatomy as pa
from ..study.case import Case, SeriesInfo
from ..study.case_json import CASE_FORMAT, CASE_JSON
from ..errors import ParameterError
from ..formats import GroundTruthCase, GroundTruthSet, Lesion, ground_truth_to_dict
from ..output_files import atomic_file, staged_output_dir
from ..progress import ProgressCallback, silent

DWI_B_VALUES = (50.0, 400.0, 800.0)
COMPUTED_B_VALUES = (1400.0,)
DWI_SPACING_XY = 2.0  # EPI in-plane resolution of ProstateX DWI (ProstateX-0000: 2 mm)
DCE_SPACING_XY = 1.5
DCE_N_TIMES = 30
DCE_DT_S = 9.0
DCE_ARRIVAL_S = 27.0  # bolus arrival in the prostate, around the 4th time point
LESION_COUNT_P = (0.15, 0.45, 0.28, 0.12)  # 0, 1, 2, 3 lesions
APPEARANCES = ("default", "realistic")  # T2 renderings (make_phantom's `appearance`)


@dataclass
class Phantom:
    """One synthetic study and its truth. All masks are UInt8 on the T2 grid."""

    case: Case
    lesion_mask: sitk.Image  # label i = lesion id i
    ground_truth: GroundTruthCase
    deformation: Optional[sitk.Transform]  # T2 physical point -> ADC/DWI physical point
    visibility: dict[int, str]  # lesion id -> "both" | "t2_only" | "adc_only"
    zone_of_lesion: dict[int, str] = field(default_factory=dict)  # lesion id -> "PZ" | "CG"
    diameter_mm: dict[int, float] = field(default_factory=dict)
    seed: int = 0
    deformation_mm: float = 0.0


# ---------------------------------------------------------------- grids

def _grid(size: Sequence[int], spacing: Sequence[float], origin: Sequence[float], direction: np.ndarray) -> sitk.Image:
    img = sitk.Image([int(s) for s in size], sitk.sitkFloat32)
    img.SetSpacing([float(s) for s in spacing])
    img.SetOrigin([float(o) for o in origin])
    img.SetDirection([float(v) for v in direction.ravel()])
    return img


def _centered_origin(center: np.ndarray, size, spacing, direction: np.ndarray) -> np.ndarray:
    half = (np.asarray(size) - 1) * np.asarray(spacing) / 2.0
    return center - direction @ half


def _grid_points(img: sitk.Image) -> np.ndarray:
    """World (LPS) coordinates of every voxel centre, in numpy (z, y, x) order, shape (N, 3)."""
    direction = np.array(img.GetDirection()).reshape(3, 3)
    return np.asarray(img.GetOrigin()) + _grid_offsets(img) @ direction.T


def _grid_offsets(img: sitk.Image, dtype=np.float64) -> np.ndarray:
    """index * spacing of every voxel (along the image axes), (z, y, x) order, shape (N, 3)."""
    size = img.GetSize()
    spacing = img.GetSpacing()
    axes = [np.arange(size[a], dtype=dtype) * spacing[a] for a in range(3)]
    out = np.empty((size[2], size[1], size[0], 3), dtype=dtype)
    out[..., 0] = axes[0][None, None, :]
    out[..., 1] = axes[1][None, :, None]
    out[..., 2] = axes[2][:, None, None]
    return out.reshape(-1, 3)


def _body_points(img: sitk.Image, center: np.ndarray, direction: np.ndarray) -> np.ndarray:
    """Body-frame coordinates of every voxel of an image whose axes are the body axes:
    a shifted, scaled index grid (float32 keeps rendering fast; mm precision is ample)."""
    shift = (np.asarray(img.GetOrigin()) - center) @ direction
    return _grid_offsets(img, np.float32) + shift.astype(np.float32)


def _image(array_zyx: np.ndarray, ref: sitk.Image, pixel=sitk.sitkFloat32) -> sitk.Image:
    img = sitk.GetImageFromArray(array_zyx)
    img.CopyInformation(ref)
    return sitk.Cast(img, pixel) if img.GetPixelID() != pixel else img


# ---------------------------------------------------------------- deformation

def _make_deformation(rng: np.random.Generator, t2: sitk.Image, max_mm: float) -> sitk.BSplineTransform:
    """A smooth BSpline deformation whose largest displacement over the T2 field of view is
    `max_mm`: a common shift (patient motion) plus independent control-point displacements
    (EPI distortion, gland deformation). Its mesh (4×4×3, control points ~25 mm apart)
    spans 1.4× the T2 field of view so that the whole DWI field of view lies inside it
    (outside its domain an ITK BSpline is the identity, which would leave a seam)."""
    direction = np.array(t2.GetDirection()).reshape(3, 3)
    size = np.array(t2.GetSize())
    spacing = np.array(t2.GetSpacing())
    center = np.array(t2.TransformContinuousIndexToPhysicalPoint(((size - 1) / 2.0).tolist()))
    big = np.ceil(size * 1.4).astype(int)
    domain = _grid(big, spacing, _centered_origin(center, big, spacing, direction), direction)
    tx = sitk.BSplineTransformInitializer(domain, [4, 4, 3], order=3)
    n = len(tx.GetParameters()) // 3
    coeff = rng.normal(0.0, 1.0, size=(3, n)) + rng.normal(0.0, 1.0, size=(3, 1))
    coeff[2] *= 0.5  # through-plane motion is smaller than in-plane
    tx.SetParameters(coeff.ravel().tolist())
    field_img = sitk.TransformToDisplacementField(tx, sitk.sitkVectorFloat64, [32, 32, 12], t2.GetOrigin(),
                                                  [s * (t2.GetSize()[i] - 1) / ([32, 32, 12][i] - 1)
                                                   for i, s in enumerate(t2.GetSpacing())], t2.GetDirection())
    peak = float(np.max(np.linalg.norm(sitk.GetArrayFromImage(field_img), axis=-1)))
    tx.SetParameters((coeff.ravel() * (max_mm / peak)).tolist())
    return tx


def _inverse_points(tx: sitk.Transform, q: np.ndarray, cover: sitk.Image) -> np.ndarray:
    """Solve T(p) = q for every row of q by fixed-point iteration p <- q - d(p), with d read
    (trilinear) from a dense displacement field of T over `cover` (smooth, |∇d| << 1)."""
    from scipy.ndimage import map_coordinates

    size = [max(8, int(np.ceil(s * sp / 3.0)) + 1) for s, sp in zip(cover.GetSize(), cover.GetSpacing())]
    spacing = [(s - 1) * sp / (n - 1) for s, sp, n in zip(cover.GetSize(), cover.GetSpacing(), size)]
    direction = np.array(cover.GetDirection()).reshape(3, 3)
    # extend by 20% on every side: the DWI field of view is larger than the T2's
    margin = [0.2 * (n - 1) * sp for n, sp in zip(size, spacing)]
    origin = np.asarray(cover.GetOrigin()) - direction @ np.asarray(margin)
    size = [int(n * 1.4) + 1 for n in size]
    field_img = sitk.TransformToDisplacementField(tx, sitk.sitkVectorFloat64, size, origin.tolist(), spacing,
                                                  cover.GetDirection())
    field = sitk.GetArrayFromImage(field_img)  # (z, y, x, 3)
    p = q.copy()
    for _ in range(10):
        idx = ((p - origin) @ direction) / np.asarray(spacing)  # continuous (i, j, k)
        coords = [idx[:, 2], idx[:, 1], idx[:, 0]]
        d = np.stack([map_coordinates(field[..., c], coords, order=1, mode="nearest") for c in range(3)], axis=1)
        p_new = q - d
        if np.max(np.abs(p_new - p)) < 2e-3:
            p = p_new
            break
        p = p_new
    return p


# ---------------------------------------------------------------- rendering helpers

def _to_body(points: np.ndarray, center: np.ndarray, direction: np.ndarray) -> np.ndarray:
    return (points - center) @ direction


def _bias(rng: np.random.Generator, u: np.ndarray, strength: float) -> np.ndarray:
    """Smooth multiplicative coil-sensitivity field: random linear + quadratic trend."""
    s = u / 60.0
    c = rng.normal(0.0, 1.0, size=6)
    trend = c[0] * s[:, 0] + c[1] * s[:, 1] + 0.5 * c[2] * s[:, 2] + c[3] * s[:, 0] ** 2 + c[4] * s[:, 1] ** 2 + c[5] * s[:, 0] * s[:, 1]
    return 1.0 + strength * np.tanh(trend)


def _rician(rng: np.random.Generator, signal: np.ndarray, sigma: float) -> np.ndarray:
    """Magnitude of a signal with complex Gaussian noise (Rician statistics)."""
    re = signal + sigma * rng.standard_normal(size=signal.shape, dtype=np.float32)
    im = sigma * rng.standard_normal(size=signal.shape, dtype=np.float32)
    return np.sqrt(re * re + im * im)


# ---------------------------------------------------------------- the generator

def make_phantom(seed: int, *, n_lesions: Optional[int] = None, ggg: Optional[list[int]] = None,
                 deformation_mm: float = 0.0, size_xy: int = 128, n_slices: int = 24,
                 spacing=(0.625, 0.625, 3.0), single_modality_fraction: float = 0.0,
                 with_dce: bool = True, with_ktrans: bool = True, case_id: Optional[str] = None,
                 oblique_deg: float = 0.0, dwi_spacing_xy: float = DWI_SPACING_XY,
                 lesion_zones: Optional[list[str]] = None,
                 lesion_diameters: Optional[list[float]] = None, min_lesion_distance_mm: float = 0.0,
                 appearance: str = "default") -> Phantom:
    """Draw one synthetic study (deterministic for `seed`; see the module docstring).

    n_lesions / ggg: number of lesions (0–3 drawn when both are None) and their GGG (0..3,
    drawn uniformly when None); lesion_zones: "PZ"/"CG" per lesion (else ~70% PZ);
    lesion_diameters: mean diameter (mm) per lesion (else 5–15 mm; shrunk if it cannot fit).
    deformation_mm: largest displacement of the known DWI/ADC deformation (0 = none).
    single_modality_fraction: share of lesions visible only on T2 or only on ADC/DWI.
    oblique_deg: tilt of the axial slices about the left-right axis (real T2 is often oblique).
    dwi_spacing_xy: in-plane spacing of the DWI/ADC grid (use `spacing[0]` for the T2 grid spacing).
    min_lesion_distance_mm: lesion centres at least this far apart (e.g. the 15 mm matching radius
    of the evaluation, so that no lesion can be scored by its neighbour's detection).
    appearance: "default" (the flat-tissue T2 every test and bundled model was made with) or
    "realistic" (t2_appearance.py: BPH nodules, capsule, levator ani, fat septa, coil bias, more
    noise). The anatomy, the truth and every other sequence are the same for a seed either way.
    """
    if appearance not in APPEARANCES:
        raise ParameterError(f"appearance must be one of {', '.join(APPEARANCES)}, got {appearance!r}.")
    if ggg is not None:
        if n_lesions is not None and n_lesions != len(ggg):
            raise ParameterError(f"n_lesions={n_lesions} does not match the {len(ggg)} GGG values given.")
        n_lesions = len(ggg)
        if any(int(g) not in (0, 1, 2, 3) for g in ggg):
            raise ParameterError(f"ggg values must be GGG classes 0..3, got {list(ggg)}.")
    if n_lesions is not None and not 0 <= n_lesions <= 6:
        raise ParameterError(f"n_lesions must be between 0 and 6, got {n_lesions}.")
    if deformation_mm < 0 or deformation_mm > 20:
        raise ParameterError(f"deformation_mm must be between 0 and 20 mm, got {deformation_mm}.")
    if not 0.0 <= single_modality_fraction <= 1.0:
        raise ParameterError(f"single_modality_fraction must be in [0, 1], got {single_modality_fraction}.")
    if size_xy < 32 or n_slices < 8:
        raise ParameterError(f"the T2 grid must be at least 32×32×8 voxels, got {size_xy}×{size_xy}×{n_slices}.")
    if lesion_zones is not None and any(z not in ("PZ", "CG") for z in lesion_zones):
        raise ParameterError(f"lesion_zones must be 'PZ' or 'CG', got {lesion_zones}.")

    rng = np.random.default_rng(seed)
    if n_lesions is None:
        n_lesions = int(rng.choice(4, p=LESION_COUNT_P))
    gggs = [int(g) for g in ggg] if ggg is not None else [int(g) for g in rng.integers(0, 4, size=n_lesions)]
    if lesion_zones is not None and len(lesion_zones) != n_lesions:
        raise ParameterError(f"lesion_zones has {len(lesion_zones)} entries for {n_lesions} lesions.")
    if lesion_diameters is not None and (len(lesion_diameters) != n_lesions
                                         or any(not 3.0 <= d <= 30.0 for d in lesion_diameters)):
        raise ParameterError(f"lesion_diameters must give one diameter of 3–30 mm per lesion, got {lesion_diameters}.")
    if not 0.0 <= min_lesion_distance_mm <= 40.0:
        raise ParameterError(f"min_lesion_distance_mm must be between 0 and 40 mm, got {min_lesion_distance_mm}.")
    anatomy = pa.make_anatomy(rng, n_lesions, gggs, single_modality_fraction, lesion_zones, lesion_diameters,
                              min_lesion_distance_mm)

    # T2 geometry: image centre near the world origin, prostate centre a few mm off it.
    spacing = tuple(float(s) for s in spacing)
    tilt = np.deg2rad(oblique_deg)
    direction = np.array([[1, 0, 0], [0, np.cos(tilt), np.sin(tilt)], [0, -np.sin(tilt), np.cos(tilt)]])
    t2_size = (size_xy, size_xy, n_slices)
    image_center = rng.normal(0.0, 8.0, size=3)
    gland_center = image_center + direction @ np.array([rng.normal(0, 3), rng.normal(0, 3), rng.normal(0, 2)])
    t2_ref = _grid(t2_size, spacing, _centered_origin(image_center, t2_size, spacing, direction), direction)
    # Lesions must lie inside the imaged region, which small test grids can make tight: any
    # lesion that does not is placed again inside it (with its own random stream, so the
    # default-size phantoms are untouched).
    fov_lo = (np.asarray(t2_ref.GetOrigin()) - gland_center) @ direction
    fov = (fov_lo, fov_lo + (np.array(t2_size) - 1) * np.array(spacing))
    pa.keep_lesions_in_view(anatomy, fov, np.random.default_rng([int(seed) & 0xFFFFFFFFFFFF, 7]),
                            single_modality_fraction)

    def body(points):
        return _to_body(points, gland_center, direction).astype(np.float32)

    # --- T2 and masks
    u_t2 = _body_points(t2_ref, gland_center, direction)
    dist_t2 = anatomy.distances(u_t2)
    width_t2 = 0.35 * spacing[0]
    layers = anatomy.layers(dist_t2, width_t2, "t2")
    t2 = pa.composite(layers, ("t2",))["t2"]
    shape_zyx = (n_slices, size_xy, size_xy)
    gland_soft = layers[len(anatomy.others)][1]
    texture = pa.smooth_texture(rng, shape_zyx, (0.5, 3.0, 3.0)).ravel()
    nodules = pa.smooth_texture(rng, shape_zyx, (1.0, 5.0, 5.0)).ravel()
    cg_soft = layers[len(anatomy.others) + 1][1]
    t2 *= 1.0 + 0.03 * texture + gland_soft * (0.05 * texture + cg_soft * 0.10 * nodules)
    t2 *= _bias(rng, u_t2, 0.2)
    t2 = _rician(rng, t2, 12.0)
    if appearance == "realistic":
        # its own random stream: the default draws above stay as they were, so DWI, DCE and
        # Ktrans (drawn after them) are those of the default phantom of this seed
        from .t2_appearance import render_realistic_t2

        t2 = render_realistic_t2(anatomy, dist_t2, u_t2, width_t2, shape_zyx, spacing,
                                 np.random.default_rng([int(seed) & 0xFFFFFFFFFFFF, 24]))
    t2_img = _image(_scanner_int(t2).reshape(shape_zyx), t2_ref)

    zones_arr = np.where(dist_t2["prostate"] < 0, np.where(dist_t2["cg"] < 0, 1, 2), 0).astype(np.uint8)
    zones_arr = zones_arr.reshape(shape_zyx)
    zones_img = _image(zones_arr, t2_ref, sitk.sitkUInt8)
    prostate_img = _image((zones_arr > 0).astype(np.uint8), t2_ref, sitk.sitkUInt8)
    lesion_arr = np.zeros(u_t2.shape[0], np.uint8)
    for lesion in anatomy.lesions:
        lesion_arr[(dist_t2["lesions"][lesion.id] < 0) & (zones_arr.ravel() > 0)] = lesion.id
    lesion_img = _image(lesion_arr.reshape(shape_zyx), t2_ref, sitk.sitkUInt8)

    # --- DWI / ADC on a coarse EPI grid (shifted origin), through the known deformation
    fov = np.array(t2_size) * np.array(spacing)
    dwi_spacing = (dwi_spacing_xy, dwi_spacing_xy, spacing[2])
    dwi_size = (int(np.ceil(fov[0] * 1.15 / dwi_spacing_xy)), int(np.ceil(fov[1] * 1.15 / dwi_spacing_xy)), n_slices)
    dwi_center = image_center + direction @ np.array([rng.uniform(-2, 2), rng.uniform(-2, 2), 0.0])
    dwi_ref = _grid(dwi_size, dwi_spacing, _centered_origin(dwi_center, dwi_size, dwi_spacing, direction), direction)
    deformation = None
    if deformation_mm > 0:
        deformation = _make_deformation(rng, t2_ref, deformation_mm)
        u_dwi = body(_inverse_points(deformation, _grid_points(dwi_ref), t2_ref))
    else:
        u_dwi = _body_points(dwi_ref, gland_center, direction)
    dwi_layers = anatomy.layers(anatomy.distances(u_dwi), 0.35 * dwi_spacing_xy, "dwi")
    mix = pa.composite(dwi_layers, ("s0", "adc"))
    s0 = mix["s0"] * _bias(rng, u_dwi, 0.25)
    dwi_shape = (dwi_size[2], dwi_size[1], dwi_size[0])
    dwi_arrays = {b: _rician(rng, s0 * np.exp(-b * mix["adc"] * 1e-6), 7.0) for b in DWI_B_VALUES}
    adc_fit, log_s0_fit = _fit_adc(dwi_arrays)
    dwi = {b: _image(_scanner_int(a).reshape(dwi_shape), dwi_ref) for b, a in dwi_arrays.items()}
    adc_img = _image(_scanner_int(adc_fit).reshape(dwi_shape), dwi_ref)
    computed = {b: _image(_scanner_int(np.exp(log_s0_fit - b * adc_fit * 1e-6)).reshape(dwi_shape), dwi_ref)
                for b in COMPUTED_B_VALUES}

    # --- Ktrans and DCE on their own grid, not deformed (the paper registers ADC/DWI only)
    ktrans_img, dce_imgs, dce_times = None, [], []
    if with_dce or with_ktrans:
        dce_spacing = (DCE_SPACING_XY, DCE_SPACING_XY, spacing[2])
        dce_size = (int(np.ceil(fov[0] * 1.1 / DCE_SPACING_XY)), int(np.ceil(fov[1] * 1.1 / DCE_SPACING_XY)), n_slices)
        dce_ref = _grid(dce_size, dce_spacing, _centered_origin(image_center, dce_size, dce_spacing, direction), direction)
        u_dce = _body_points(dce_ref, gland_center, direction)
        dce_layers = anatomy.layers(anatomy.distances(u_dce), 0.35 * DCE_SPACING_XY, "perfusion")
        dce_shape = (dce_size[2], dce_size[1], dce_size[0])
        if with_ktrans:
            kt = pa.composite(dce_layers, ("ktrans",))["ktrans"]
            kt = np.clip(kt * (1.0 + 0.08 * rng.standard_normal(size=kt.shape, dtype=np.float32)), 0.0, None)
            ktrans_img = _image(kt.reshape(dce_shape).astype(np.float32), dce_ref)
        if with_dce:
            times = np.arange(DCE_N_TIMES) * DCE_DT_S
            arrival = DCE_ARRIVAL_S + rng.normal(0, 2.0)
            values, weights = pa.layer_weights(dce_layers)
            curves = np.stack([pa.enhancement_curve(v, times, arrival) for v in values], axis=0)  # (L, T)
            series = curves.T @ weights  # (T, N)
            series *= _bias(rng, u_dce, 0.2)[None, :]
            # DCE signal is far above the noise everywhere but in rectal gas, where Rician and
            # |Gaussian| noise look alike: one normal per voxel instead of two (30 volumes)
            series = np.abs(series + 6.0 * rng.standard_normal(size=series.shape, dtype=np.float32))
            dce_imgs = [_image(_scanner_int(series[t]).reshape(dce_shape), dce_ref) for t in range(len(times))]
            dce_times = [float(t) for t in times]

    case_id = case_id or f"Phantom-{seed}"
    case = Case(case_id=case_id, t2=t2_img, adc=adc_img, dwi=dwi, dwi_computed=computed, ktrans=ktrans_img,
                dce=dce_imgs, dce_times=dce_times, prostate=prostate_img, zones=zones_img)
    case.used = [SeriesInfo(role, f"synthetic {role}", f"phantom seed {seed}", "synthetic phantom")
                 for role in case.roles_present()]
    lesions = [Lesion(id=l.id, ggg=l.ggg, center_lps=tuple(float(v) for v in gland_center + direction @ l.solid.center),
                      label=l.id) for l in anatomy.lesions]
    gt = GroundTruthCase(case_id=case_id, lesions=lesions,
                         patient_ggg=max((l.ggg for l in anatomy.lesions), default=0))
    return Phantom(case=case, lesion_mask=lesion_img, ground_truth=gt, deformation=deformation,
                   visibility={l.id: l.visibility for l in anatomy.lesions},
                   zone_of_lesion={l.id: l.zone for l in anatomy.lesions},
                   diameter_mm={l.id: round(l.diameter_mm, 2) for l in anatomy.lesions},
                   seed=int(seed), deformation_mm=float(deformation_mm))


def _scanner_int(values: np.ndarray) -> np.ndarray:
    """Scanners store magnitude images and ADC maps as 12-bit integers: round and clip, so
    NRRD/DICOM files hold exactly the values of the in-memory case."""
    return np.clip(np.rint(values), 0, 4095).astype(np.float32)


def _fit_adc(dwi: dict[float, np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
    """Scanner-style mono-exponential fit: least squares of log S against b. Returns ADC
    (1e-6 mm²/s, clipped to 0..4000 like vendor maps) and the fitted log S0."""
    b = np.array(sorted(dwi))
    logs = np.log(np.maximum(np.stack([dwi[k] for k in b], axis=0), 1.0))
    bm = b.mean()
    slope = ((b - bm)[:, None] * (logs - logs.mean(axis=0))).sum(axis=0) / ((b - bm) ** 2).sum()
    adc = np.clip(-slope * 1e6, 0.0, 4000.0)
    log_s0 = logs.mean(axis=0) + adc * 1e-6 * bm
    return adc, log_s0


# ---------------------------------------------------------------- writing

def _write(img: sitk.Image, path: Path, integer: bool = False) -> None:
    """Compressed NRRD; `integer` images (scanner magnitudes, ADC) are stored as UInt16."""
    path.parent.mkdir(parents=True, exist_ok=True)
    sitk.WriteImage(sitk.Cast(img, sitk.sitkUInt16) if integer else img, str(path), useCompression=True)


def _b_name(b: float) -> str:
    return f"{int(round(b))}"


def truth_entry(phantom: Phantom, json_path: Path, lesion_mask: Optional[Path]) -> dict:
    """The phantom's ground-truth JSON entry (ARCHITECTURE.md format) plus phantom-only extras
    (zone, visibility and diameter per lesion; seed, deformation) that readers ignore."""
    gt = GroundTruthCase(phantom.ground_truth.case_id, phantom.ground_truth.lesions,
                         phantom.ground_truth.patient_ggg, lesion_mask)
    entry = ground_truth_to_dict(GroundTruthSet([gt]), json_path)["cases"][0]
    for item in entry["lesions"]:
        lid = item["id"]
        item["zone"] = phantom.zone_of_lesion.get(lid)
        item["visibility"] = phantom.visibility.get(lid)
        item["diameter_mm"] = phantom.diameter_mm.get(lid)
    entry["phantom"] = {"seed": phantom.seed, "deformation_mm": phantom.deformation_mm}
    if phantom.deformation is not None and lesion_mask is not None:
        # the known T2 -> ADC/DWI transform, written beside the lesion mask by write_phantom
        entry["phantom"]["deformation"] = _rel_path(lesion_mask.parent / "deformation.h5", json_path)
    return entry


def _rel_path(path: Path, json_path: Path) -> str:
    try:
        return Path(path).resolve().relative_to(json_path.parent.resolve()).as_posix()
    except ValueError:
        return str(Path(path).resolve())


def write_phantom(phantom: Phantom, out_dir, fmt: str = "nrrd", **dicom_options) -> Path:
    """Write one phantom into `out_dir` (created) and return that folder.

    nrrd: one compressed NRRD per role + case.json (`prostate-cad-case/1` of case_files);
    dicom: dicom/<series>/*.dcm with Siemens-like headers (phantom_dicom.py), Ktrans as a
    DICOM map with a rescale slope, and a case.json pointing at that folder. Both:
    prostate.nrrd, zones.nrrd, lesions.nrrd, ground-truth.json (this case) and
    deformation.h5 when the phantom has a deformation. `case_loading.load_case(out_dir)`
    reads either back.
    """
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    case = phantom.case
    if fmt == "nrrd":
        roles: dict = {"T2": "t2.nrrd"}
        _write(case.t2, out / "t2.nrrd", integer=True)
        if case.adc is not None:
            roles["ADC"] = "adc.nrrd"
            _write(case.adc, out / "adc.nrrd", integer=True)
        if case.dwi:
            roles["DWI"] = {}
            for b, img in sorted(case.dwi.items()):
                name = f"dwi-b{_b_name(b)}.nrrd"
                roles["DWI"][_b_name(b)] = name
                _write(img, out / name, integer=True)
        if case.dwi_computed:
            roles["DWI_COMPUTED"] = {}
            for b, img in sorted(case.dwi_computed.items()):
                name = f"dwi-computed-b{_b_name(b)}.nrrd"
                roles["DWI_COMPUTED"][_b_name(b)] = name
                _write(img, out / name, integer=True)
        if case.ktrans is not None:
            roles["KTRANS"] = "ktrans.nrrd"
            _write(case.ktrans, out / "ktrans.nrrd")
        if case.dce:
            names = [f"dce/dce-{t:03d}.nrrd" for t in range(len(case.dce))]
            for name, img in zip(names, case.dce):
                _write(img, out / name, integer=True)
            roles["DCE"] = {"files": names, "times_s": [round(t, 3) for t in case.dce_times]}
    elif fmt == "dicom":
        from .dicom_writer import write_dicom_study

        write_dicom_study(phantom, out / "dicom", **dicom_options)  # Ktrans included, with a rescale slope
        roles = {"dicom": "dicom"}
    else:
        raise ParameterError(f"unknown phantom format {fmt!r}; use 'nrrd' or 'dicom'.")
    _write(case.prostate, out / "prostate.nrrd")
    _write(case.zones, out / "zones.nrrd")
    _write(phantom.lesion_mask, out / "lesions.nrrd")
    roles["prostate"] = "prostate.nrrd"
    roles["zones"] = "zones.nrrd"
    if phantom.deformation is not None:
        sitk.WriteTransform(phantom.deformation, str(out / "deformation.h5"))
    with atomic_file(out / CASE_JSON) as handle:
        json.dump({"format": CASE_FORMAT, "case_id": case.case_id, **roles}, handle, indent=1)
    gt_path = out / "ground-truth.json"
    data = {"format": "prostate-cad-ground-truth/1", "cases": [truth_entry(phantom, gt_path, out / "lesions.nrrd")]}
    with atomic_file(gt_path) as handle:
        json.dump(data, handle, indent=1)
    return out


def case_seed(seed: int, index: int) -> int:
    """Seed of case `index` of a set: independent streams, so sets drawn with different
    seeds never share cases (no train/test leakage)."""
    return int(np.random.SeedSequence([int(seed), int(index)]).generate_state(1)[0])


def make_phantom_set(n: int, seed: int, out_dir, fmt: str = "nrrd", progress: Optional[ProgressCallback] = None,
                     **kw) -> Path:
    """Write `n` phantoms into out_dir/<case_id>/ plus out_dir/ground-truth.json (all cases,
    lesion masks referenced relative to it). Nothing is left half-written on failure.
    Keyword arguments go to make_phantom (and `dce_layout`/`dwi_layout`/`b_value_tag` to
    the DICOM writer). Returns out_dir."""
    if n < 1:
        raise ParameterError(f"the number of phantoms must be at least 1, got {n}.")
    progress = progress or silent
    dicom_keys = {"dce_layout", "dwi_layout", "b_value_tag"}
    dicom_options = {k: kw.pop(k) for k in list(kw) if k in dicom_keys}
    out = Path(out_dir)
    with staged_output_dir(out) as stage:
        entries = []
        gt_path = stage / "ground-truth.json"
        for i in range(n):
            case_id = f"Phantom-{seed}-{i:03d}"
            progress(i / n, f"phantom {i + 1}/{n} ({case_id})")
            phantom = make_phantom(case_seed(seed, i), case_id=case_id, **kw)
            write_phantom(phantom, stage / case_id, fmt, **dicom_options)
            entry = truth_entry(phantom, gt_path, stage / case_id / "lesions.nrrd")
            entries.append(entry)
        with atomic_file(gt_path) as handle:
            json.dump({"format": "prostate-cad-ground-truth/1", "cases": entries}, handle, indent=1)
        progress(1.0, f"{n} phantoms written")
    return out
