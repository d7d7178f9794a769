"""Continuous synthetic pelvis for the phantom generator: shapes, tissues, lesions.

The anatomy is a set of soft-edged solids defined in a *body frame* (millimetres, axes
along the T2 image axes: x to the patient's left, y posterior, z superior, origin at the
prostate centre). Because it is continuous, every sequence is rendered directly on its
own grid (T2 fine, DWI/ADC coarse and possibly deformed, DCE/Ktrans in between) by
evaluating the solids at that grid's points: no resampling blur, and a known deformation
is exact. Contrasts follow the relative values radiologists see on 3 T mpMRI (PI-RADS
v2 descriptions; ADC in 1e-6 mm²/s as in ProstateX):

- T2: fat and peripheral zone (PZ) bright, central gland (CG) intermediate and nodular,
  muscle dark, urine very bright, rectal gas black; tumours dark, darker with grade.
- DWI/ADC: PZ ~1600, CG ~1200, urine ~2800; tumour ADC falls with GGG (≈1300 benign to
  ≈700 for GGG3+), so tumours are bright on high-b images; fat is suppressed.
- Ktrans and DCE: tumours enhance earlier and more strongly with grade and wash out.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from ..errors import ParameterError

# Tissue table. Every solid is one tissue; lesions get per-lesion values (see lesion_tissue).
# t2: T2-weighted TSE signal; s0: DWI signal at b=0 (fat-suppressed EPI); adc: 1e-6 mm²/s;
# ktrans: 1/min; pre: T1-weighted pre-contrast signal; enh: relative peak enhancement;
# tau_in: wash-in time constant (s); onset: delay after bolus arrival (s); k_out: washout (1/s).
TISSUES: dict[str, dict[str, float]] = {
    "fat":     dict(t2=600, s0=70,  adc=700,  ktrans=0.02, pre=420, enh=0.10, tau_in=90, onset=10, k_out=0.0),
    "muscle":  dict(t2=170, s0=180, adc=1400, ktrans=0.06, pre=170, enh=0.45, tau_in=70, onset=8,  k_out=0.0),
    "bone":    dict(t2=300, s0=60,  adc=500,  ktrans=0.02, pre=350, enh=0.08, tau_in=90, onset=10, k_out=0.0),
    "bladder": dict(t2=1050, s0=700, adc=2800, ktrans=0.0, pre=80, enh=0.0,  tau_in=90, onset=0,  k_out=0.0),
    "rectum":  dict(t2=230, s0=250, adc=1300, ktrans=0.10, pre=160, enh=0.70, tau_in=40, onset=6,  k_out=0.0),
    "vesicle": dict(t2=820, s0=320, adc=1900, ktrans=0.05, pre=140, enh=0.30, tau_in=80, onset=10, k_out=0.0),
    "gas":     dict(t2=30,  s0=3,   adc=1000, ktrans=0.0,  pre=10,  enh=0.0,  tau_in=90, onset=0,  k_out=0.0),
    "pz":      dict(t2=520, s0=420, adc=1600, ktrans=0.12, pre=150, enh=0.45, tau_in=75, onset=8,  k_out=0.0),
    "cg":      dict(t2=290, s0=380, adc=1200, ktrans=0.18, pre=160, enh=0.60, tau_in=60, onset=7,  k_out=0.0),
}
PARAMS = ("t2", "s0", "adc", "ktrans", "pre", "enh", "tau_in", "onset", "k_out")

# GGG-dependent lesion contrast (means; each lesion draws around them).
LESION_T2_FACTOR = {0: 0.82, 1: 0.66, 2: 0.56, 3: 0.46}  # x surrounding zone's T2
LESION_ADC = {0: 1300.0, 1: 1050.0, 2: 900.0, 3: 720.0}
LESION_KTRANS = {0: 0.22, 1: 0.30, 2: 0.42, 3: 0.56}
LESION_TAU_IN = {0: 45.0, 1: 35.0, 2: 22.0, 3: 14.0}
LESION_ONSET = {0: 6.0, 1: 4.0, 2: 2.0, 3: 0.0}
LESION_K_OUT = {0: 0.0, 1: 0.0008, 2: 0.0018, 3: 0.0030}


@dataclass
class Solid:
    """A smooth star-shaped solid: a rotated ellipsoid whose radius is modulated by
    low-order polynomials of the direction (lobulation), or an elliptic cylinder
    (axis z, infinite) when `cylinder` is set."""

    center: np.ndarray  # body frame, mm
    radii: np.ndarray  # semi-axes, mm
    rotation: np.ndarray = field(default_factory=lambda: np.eye(3))  # columns = solid axes
    # radius(d) = 1 + sum(c * term(d)), d = unit direction in the normalised frame
    modulation: dict[str, float] = field(default_factory=dict)
    cylinder: bool = False

    def bound(self) -> float:
        """Radius (mm) of a sphere (a disc for cylinders) around `center` holding the solid."""
        return float(np.max(self.radii) * (1.0 + sum(abs(c) for c in self.modulation.values())))

    def distance(self, u: np.ndarray, far: float = 8.0) -> np.ndarray:
        """Approximate signed distance (mm, negative inside) of body-frame points u (N, 3).
        Points farther than `far` mm beyond the bounding sphere get `far` (only the sign and
        the value within a few voxels of the surface matter), which keeps rendering fast."""
        delta = u - self.center.astype(u.dtype)
        if self.cylinder:
            r2 = delta[:, 0] ** 2 + delta[:, 1] ** 2
        else:
            r2 = np.einsum("ij,ij->i", delta, delta)
        near = np.flatnonzero(r2 < (self.bound() + far) ** 2)
        out = np.full(u.shape[0], far, dtype=u.dtype)
        if near.size == 0:
            return out
        v = delta[near] @ self.rotation.astype(u.dtype)
        if self.cylinder:
            v[:, 2] = 0.0
        n = v / self.radii.astype(u.dtype)
        rho = np.sqrt(np.einsum("ij,ij->i", n, n)) + 1e-6
        d = n / rho[:, None]
        r = np.ones_like(rho)
        for term, coeff in self.modulation.items():
            r += coeff * _TERMS[term](d)
        r = np.maximum(r, 0.3)
        # the local radius along this direction (mm) turns the normalised gap into mm
        local = np.sqrt(np.einsum("ij,ij->i", v, v)) / rho
        out[near] = (rho - r) * local
        return out

    def contains(self, u: np.ndarray, margin: float = 0.0) -> np.ndarray:
        return self.distance(u) < -margin


# Direction polynomials. Even ones keep a solid point-symmetric (its centroid stays at
# `center`, which the lesion ground truth relies on); odd ones shape the gland.
_TERMS = {
    "xx_yy": lambda d: d[:, 0] ** 2 - d[:, 1] ** 2,
    "zz": lambda d: d[:, 2] ** 2 - 1.0 / 3.0,
    "xy": lambda d: d[:, 0] * d[:, 1],
    "xz": lambda d: d[:, 0] * d[:, 2],
    "yz": lambda d: d[:, 1] * d[:, 2],
    "xxyy": lambda d: (d[:, 0] * d[:, 1]) ** 2 - 1.0 / 15.0,
    "post_flat": lambda d: -np.maximum(d[:, 1], 0.0) ** 2,  # flattened rectal side
    "apex": lambda d: -np.maximum(-d[:, 2], 0.0) ** 2,  # narrower apex
    "y": lambda d: d[:, 1],
}
_EVEN_TERMS = ("xx_yy", "zz", "xy", "xz", "yz", "xxyy")


def _rot_z(deg: float) -> np.ndarray:
    t = np.deg2rad(deg)
    return np.array([[np.cos(t), -np.sin(t), 0.0], [np.sin(t), np.cos(t), 0.0], [0.0, 0.0, 1.0]])


def random_rotation(rng: np.random.Generator, max_deg: float) -> np.ndarray:
    """A rotation matrix of up to max_deg about a random axis."""
    axis = rng.normal(size=3)
    axis /= np.linalg.norm(axis)
    angle = np.deg2rad(rng.uniform(-max_deg, max_deg))
    k = np.array([[0, -axis[2], axis[1]], [axis[2], 0, -axis[0]], [-axis[1], axis[0], 0]])
    return np.eye(3) + np.sin(angle) * k + (1 - np.cos(angle)) * (k @ k)


@dataclass
class LesionSpec:
    id: int
    ggg: int
    zone: str  # "PZ" or "CG"
    solid: Solid
    visibility: str  # "both" | "t2_only" | "adc_only"
    values: dict[str, float]  # tissue parameters (PARAMS)

    @property
    def diameter_mm(self) -> float:
        return float(2.0 * np.cbrt(np.prod(self.solid.radii)))


@dataclass
class Anatomy:
    """Every solid of one phantom, in the body frame, plus its lesions."""

    prostate: Solid
    cg: Solid  # central gland = prostate ∩ cg
    others: list[tuple[str, Solid]]  # background solids, bottom to top, tissue name
    lesions: list[LesionSpec]
    zone_t2: dict[str, float]  # per-case T2 of PZ and CG (lesion T2 is relative to these)
    min_lesion_distance_mm: float = 0.0  # lesion centres at least this far apart (besides a 3 mm edge gap)

    def distances(self, u: np.ndarray) -> dict:
        """Signed distances of points u to every solid: evaluate once, use for several
        modalities and for the label maps."""
        return {"others": [s.distance(u) for _, s in self.others],
                "prostate": self.prostate.distance(u), "cg": self.cg.distance(u),
                "lesions": {l.id: l.solid.distance(u) for l in self.lesions}}

    def layers(self, dist: dict, width: float, modality: str) -> list[tuple[dict, np.ndarray]]:
        """Soft occupancies (0..1) of every layer, bottom to top, with the tissue parameters
        each layer contributes; `modality` ("t2", "dwi" or "perfusion") selects which
        lesions show."""
        out: list[tuple[dict, np.ndarray]] = []
        for (name, _), d in zip(self.others, dist["others"]):
            out.append((TISSUES[name], occupancy(d, width)))
        gland = occupancy(dist["prostate"], width)
        out.append((dict(TISSUES["pz"], t2=self.zone_t2["PZ"]), gland))
        out.append((dict(TISSUES["cg"], t2=self.zone_t2["CG"]), gland * occupancy(dist["cg"], width)))
        for lesion in self.lesions:
            if lesion_visible(lesion.visibility, modality):
                out.append((lesion.values, occupancy(dist["lesions"][lesion.id], width)))
        return out


def lesion_visible(visibility: str, modality: str) -> bool:
    """Single-modality lesions (FocalNet's mutual-finding studies): "t2_only" shows on T2
    alone, "adc_only" on ADC/DWI alone; perfusion (Ktrans, DCE) shows only "both"."""
    if modality == "t2":
        return visibility in ("both", "t2_only")
    if modality == "dwi":
        return visibility in ("both", "adc_only")
    return visibility == "both"


def smooth_texture(rng: np.random.Generator, shape: tuple[int, ...], sigma_vox) -> np.ndarray:
    """Zero-mean, unit-std smooth random texture (scipy's Gaussian filter of white noise): gland
    heterogeneity, BPH nodularity, fat septa."""
    from scipy.ndimage import gaussian_filter

    t = gaussian_filter(rng.normal(size=shape), sigma_vox, mode="wrap")
    return (t - t.mean()) / (t.std() + 1e-9)


def occupancy(distance: np.ndarray, width: float) -> np.ndarray:
    """Soft inside-ness from a signed distance: partial volume over about one voxel."""
    return 0.5 * (1.0 - np.tanh(distance / width))


def composite(layers: list[tuple[dict, np.ndarray]], keys: tuple[str, ...]) -> dict[str, np.ndarray]:
    """Alpha-composite layers (bottom to top) into per-point tissue parameters; the bottom
    layer is fat, which fills the rest of the pelvis."""
    n = layers[0][1].shape[0]
    remaining = np.ones(n)
    acc = {k: np.zeros(n) for k in keys}
    for values, alpha in reversed(layers):
        w = alpha * remaining
        for k in keys:
            acc[k] += w * values[k]
        remaining *= 1.0 - alpha
    for k in keys:
        acc[k] += remaining * TISSUES["fat"][k]
    return acc


def layer_weights(layers: list[tuple[dict, np.ndarray]]) -> tuple[list[dict], np.ndarray]:
    """Per-point weights of every layer (and fat underneath) for mixing time curves."""
    n = layers[0][1].shape[0]
    remaining = np.ones(n)
    weights = []
    for values, alpha in reversed(layers):
        weights.append(alpha * remaining)
        remaining = remaining * (1.0 - alpha)
    values = [v for v, _ in reversed(layers)] + [TISSUES["fat"]]
    weights.append(remaining)
    return values, np.stack(weights, axis=0)


def make_anatomy(rng: np.random.Generator, n_lesions: int, gggs: list[int],
                 single_modality_fraction: float, zone_choices: list[str] | None = None,
                 diameters: list[float] | None = None, min_lesion_distance_mm: float = 0.0) -> Anatomy:
    """Draw one pelvis: gland 25–60 cm³, CG anterior-central, background organs, lesions."""
    volume_mm3 = rng.uniform(25.0, 60.0) * 1000.0
    shape = np.array([1.30, 1.0, 1.10]) * rng.uniform(0.9, 1.1, size=3)  # LR > SI > AP
    # the flattened rectal side and narrower apex remove ~11% of the ellipsoid's volume
    scale = np.cbrt(volume_mm3 / (0.89 * 4.0 / 3.0 * np.pi * np.prod(shape)))
    a, b, c = shape * scale
    prostate = Solid(center=np.zeros(3), radii=np.array([a, b, c]), rotation=random_rotation(rng, 6.0),
                     modulation={"post_flat": rng.uniform(0.12, 0.22), "apex": rng.uniform(0.05, 0.15),
                                 "xx_yy": rng.normal(0, 0.04), "xz": rng.normal(0, 0.04),
                                 "yz": rng.normal(0, 0.04), "xxyy": rng.normal(0, 0.1)})
    cg_scale = rng.uniform(0.9, 1.12)
    cg = Solid(center=np.array([rng.normal(0, 0.03) * a, -0.27 * b, 0.15 * c]),
               radii=np.array([0.62 * a, 0.78 * b, 0.72 * c]) * cg_scale,
               rotation=random_rotation(rng, 5.0),
               modulation={"xx_yy": rng.normal(0, 0.05), "xxyy": rng.normal(0, 0.1)})
    ob_gap = rng.uniform(8.0, 14.0)
    others: list[tuple[str, Solid]] = [
        # obturator internus on both sides, pubic symphysis anterior, seminal vesicles,
        # bladder anterior-superior, rectum (wall, then gas) posterior; later solids lie on
        # top of earlier ones and the gland on top of all
        ("muscle", Solid(np.array([a + ob_gap + 9.0, rng.normal(0, 3), 0.0]), np.array([9.0, 26.0, 1.0]),
                         random_rotation(rng, 0.0), {}, cylinder=True)),
        ("muscle", Solid(np.array([-(a + ob_gap + 9.0), rng.normal(0, 3), 0.0]), np.array([9.0, 26.0, 1.0]),
                         random_rotation(rng, 0.0), {}, cylinder=True)),
        ("bone", Solid(np.array([0.0, -(b + rng.uniform(14, 20) + 8.0), 6.0]), np.array([16.0, 8.0, 1.0]),
                       np.eye(3), {}, cylinder=True)),
    ]
    for side in (-1.0, 1.0):  # seminal vesicles: fluid-filled, bright on T2, behind the base
        others.append(("vesicle", Solid(np.array([side * rng.uniform(0.35, 0.55) * a, 0.75 * b, 0.85 * c]),
                                        np.array([rng.uniform(12, 16), rng.uniform(4, 6), rng.uniform(6, 9)]),
                                        random_rotation(rng, 15.0) @ _rot_z(side * rng.uniform(15, 35)),
                                        {"xx_yy": rng.normal(0, 0.05)})))
    r_bladder = rng.uniform(22.0, 32.0)
    others.append(("bladder", Solid(np.array([rng.normal(0, 3), -0.35 * b, c + r_bladder - rng.uniform(4, 9)]),
                                    np.array([1.2, 0.9, 0.8]) * r_bladder, np.eye(3), {"xx_yy": 0.05})))
    r_rect = rng.uniform(10.0, 14.0)
    rect_center = np.array([rng.normal(0, 2), b + r_rect + rng.uniform(1, 4), 0.0])
    others.append(("rectum", Solid(rect_center, np.array([1.25, 0.9, 1.0]) * r_rect, np.eye(3), {}, cylinder=True)))
    gas = rng.uniform(0.35, 0.65)
    others.append(("gas", Solid(rect_center + [0, 1.0, 0], np.array([1.25, 0.9, 1.0]) * r_rect * gas,
                                np.eye(3), {}, cylinder=True)))
    zone_t2 = {"PZ": TISSUES["pz"]["t2"] * rng.uniform(0.9, 1.1), "CG": TISSUES["cg"]["t2"] * rng.uniform(0.9, 1.1)}
    anatomy = Anatomy(prostate, cg, others, [], zone_t2, float(min_lesion_distance_mm))
    for i in range(n_lesions):
        zone = zone_choices[i] if zone_choices else ("PZ" if rng.uniform() < 0.7 else "CG")
        diameter = diameters[i] if diameters else None
        anatomy.lesions.append(_place_lesion(rng, anatomy, i + 1, gggs[i], zone, single_modality_fraction, diameter))
    return anatomy


def _lesion_surface(solid: Solid) -> np.ndarray:
    """Points just outside a lesion's largest possible extent (its radius modulation is < 35%)."""
    return solid.center + (_sphere_dirs() * solid.radii * 1.35) @ solid.rotation.T


def _in_box(points: np.ndarray, fov: tuple[np.ndarray, np.ndarray], margin: float) -> bool:
    return bool(np.all(points >= fov[0] + margin) and np.all(points <= fov[1] - margin))


def keep_lesions_in_view(anatomy: Anatomy, fov: tuple[np.ndarray, np.ndarray], rng: np.random.Generator,
                         single_modality_fraction: float) -> None:
    """Place again (same id, GGG, zone and size) every lesion not wholly inside `fov`, a
    body-frame box (the T2 field of view), so the lesion masks always hold every lesion."""
    for index, lesion in enumerate(anatomy.lesions):
        if _in_box(_lesion_surface(lesion.solid), fov, 1.0):
            continue
        others = anatomy.lesions[:index] + anatomy.lesions[index + 1:]
        anatomy.lesions = others
        try:
            placed = _place_lesion(rng, anatomy, lesion.id, lesion.ggg, lesion.zone, single_modality_fraction,
                                   lesion.diameter_mm, fov)
        finally:
            anatomy.lesions = others
        anatomy.lesions = others[:index] + [placed] + others[index:]


def zone_at(anatomy: Anatomy, u: np.ndarray) -> np.ndarray:
    """0 outside the gland, 1 CG, 2 PZ (the label convention of Case.zones)."""
    inside = anatomy.prostate.distance(u) < 0
    in_cg = anatomy.cg.distance(u) < 0
    return np.where(inside, np.where(in_cg, 1, 2), 0).astype(np.uint8)


_SPHERE_DIRS = None


def _sphere_dirs() -> np.ndarray:
    global _SPHERE_DIRS
    if _SPHERE_DIRS is None:  # a fixed Fibonacci sphere: where a lesion's surface is checked
        k = np.arange(64) + 0.5
        phi = np.arccos(1 - 2 * k / 64)
        theta = np.pi * (1 + 5 ** 0.5) * k
        _SPHERE_DIRS = np.stack([np.cos(theta) * np.sin(phi), np.sin(theta) * np.sin(phi), np.cos(phi)], axis=1)
    return _SPHERE_DIRS


def _place_lesion(rng: np.random.Generator, anatomy: Anatomy, lesion_id: int, ggg: int, zone: str,
                  single_modality_fraction: float, diameter: float | None = None,
                  fov: tuple[np.ndarray, np.ndarray] | None = None) -> LesionSpec:
    """A lobulated ellipsoid 5–15 mm across (or `diameter`), wholly inside the gland (0.5 mm
    margin), centred in the requested zone, apart from the other lesions; shrinks if it
    cannot fit. `fov` (body-frame box) is the imaged region the lesion must stay in (1 mm)."""
    drawn = rng.uniform(5.0, 15.0)
    diameter = float(diameter) if diameter else drawn
    aspect = rng.uniform(0.8, 1.2, size=3)
    rotation = random_rotation(rng, 180.0)
    modulation = {k: rng.normal(0, 0.06) for k in _EVEN_TERMS}
    want = 1 if zone == "CG" else 2
    p = anatomy.prostate
    for attempt in range(400):
        if attempt and attempt % 80 == 0:
            diameter = max(3.0, diameter * 0.85)
        radii = diameter / 2.0 * aspect / np.cbrt(np.prod(aspect))
        center = p.center + p.rotation @ (rng.uniform(-0.9, 0.9, size=3) * p.radii)
        if zone_at(anatomy, center[None])[0] != want:
            continue
        solid = Solid(center, radii, rotation, modulation)
        # surface points (max modulated radius) must sit inside the gland with a margin
        surface = _lesion_surface(solid)
        if not np.all(p.contains(surface, margin=0.5)):
            continue
        if fov is not None and not _in_box(surface, fov, 1.0):
            continue
        if any(np.linalg.norm(center - o.solid.center) < max((diameter + o.diameter_mm) / 2.0 + 3.0,
                                                             anatomy.min_lesion_distance_mm)
               for o in anatomy.lesions):
            continue
        break
    else:
        raise ParameterError(f"lesion {lesion_id} ({zone}) does not fit inside the imaged part of the phantom "
                             f"gland; use a larger field of view (size_xy, n_slices, spacing) or fewer lesions.")
    visibility = "both"
    if single_modality_fraction > 0 and rng.uniform() < single_modality_fraction:
        visibility = "t2_only" if rng.uniform() < 0.5 else "adc_only"
    base = TISSUES["pz" if zone == "PZ" else "cg"]
    ktrans = max(0.05, LESION_KTRANS[ggg] + rng.normal(0, 0.03))
    values = dict(
        t2=anatomy.zone_t2[zone] * LESION_T2_FACTOR[ggg] * rng.uniform(0.93, 1.07),
        s0=base["s0"] * rng.uniform(0.85, 0.95),
        adc=LESION_ADC[ggg] + rng.normal(0, 45.0),
        ktrans=ktrans,
        pre=base["pre"] * rng.uniform(0.95, 1.05),
        enh=2.6 * ktrans,
        tau_in=LESION_TAU_IN[ggg] * rng.uniform(0.85, 1.15),
        onset=LESION_ONSET[ggg],
        k_out=LESION_K_OUT[ggg],
    )
    return LesionSpec(lesion_id, ggg, zone, Solid(center, radii, rotation, modulation), visibility, values)


def enhancement_curve(values: dict, times: np.ndarray, arrival: float) -> np.ndarray:
    """T1-weighted DCE signal of one tissue: pre-contrast level times (1 + wash-in with
    exponential washout) after the bolus arrives (a Tofts-like shape without an AIF)."""
    t = np.maximum(times - arrival - values["onset"], 0.0)
    rise = 1.0 - np.exp(-t / max(values["tau_in"], 1e-3))
    return values["pre"] * (1.0 + values["enh"] * rise * np.exp(-values["k_out"] * t))
