"""A T2 rendering of a phantom closer to what real prostate T2 TSE looks like (`appearance="realistic"`).

The default phantom T2 (generate.py) is a few flat tissues with a gentle texture: the gland's
zones differ by one contrast step and the fat around the gland is nearly as bright as the PZ.
A zonal network trained only on it splits real T2 into ragged CG islands. Real 3 T axial T2
(e.g. ProstateX-0000; PI-RADS v2.1 and Weinreb et al. 2016 describe the same appearance) has:

- PZ bright, fairly homogeneous, with a fine striated texture; a thin dark capsule around the gland;
- CG / transition zone intermediate-to-dark and heterogeneous: well-circumscribed BPH nodules of
  mixed signal (bright glandular, dark stromal), each with a dark pseudo-capsule; the urethra
  running through it; the anterior fibromuscular stroma dark;
- periprostatic fat bright, crossed by dark fibrous septa and vessels; the levator ani a dark band
  hugging the gland laterally and posterolaterally; the rectal wall dark; bladder urine very bright;
- a smooth receive-coil sensitivity (posterior brighter), through-plane partial volume of 3 mm
  slices and Rician noise well above the default's.

`render_realistic_t2` draws all of this from its own random stream (so the default phantoms, and
every other sequence of a realistic phantom, stay the same for a seed) on the same anatomy and
ground truth: only the T2 signal changes.
"""

from __future__ import annotations

import numpy as np
from scipy.ndimage import gaussian_filter

from . import anatomy as pa

# T2 signal per tissue for the realistic rendering (the default's scale: PZ ~520). Fat is the
# brightest tissue after urine, as on real TSE (ProstateX-0000: fat ≈ 1.8 × PZ, CG ≈ 0.45 × PZ).
REALISTIC_T2 = {"fat": 930.0, "muscle": 140.0, "bone": 380.0, "bladder": 1250.0, "rectum": 190.0,
                "vesicle": 900.0, "gas": 25.0}
PZ_T2 = 540.0
CG_OVER_PZ = (0.38, 0.65)  # the CG/PZ contrast varies between patients (BPH, prostatitis, age)


def _field(rng: np.random.Generator, shape, sigma_vox) -> np.ndarray:
    """anatomy.smooth_texture, flattened to the body points' order."""
    return pa.smooth_texture(rng, shape, sigma_vox).ravel()


def _ridges(rng: np.random.Generator, shape, sigma_vox, width: float) -> np.ndarray:
    """Thin curvilinear structures (fibrous septa, vessels): where a smooth random field
    crosses zero, 1 on the line and 0 away from it."""
    return np.exp(-(_field(rng, shape, sigma_vox) / width) ** 2)


def _ellipsoid_radius(u: np.ndarray, center: np.ndarray, radii: np.ndarray) -> np.ndarray:
    """Normalised radius (1 on the surface) of an axis-aligned ellipsoid at body points u."""
    return np.sqrt(np.sum(((u - center.astype(u.dtype)) / radii.astype(u.dtype)) ** 2, axis=1))


def _bph_nodules(rng: np.random.Generator, anatomy: pa.Anatomy, u: np.ndarray, dist: dict) -> np.ndarray:
    """Multiplicative CG modulation: a few to a dozen well-circumscribed nodules of mixed signal,
    each with a dark rim, inside the central gland."""
    factor = np.ones(u.shape[0], dtype=np.float32)
    inside = np.flatnonzero((dist["cg"] < -1.5) & (dist["prostate"] < -1.5))
    if inside.size == 0:
        return factor
    for _ in range(int(rng.integers(3, 13))):
        center = u[inside[rng.integers(inside.size)]]
        radii = rng.uniform(2.5, 8.0) * rng.uniform(0.75, 1.25, size=3)
        r = _ellipsoid_radius(u, center, radii)
        mean_r = float(np.mean(radii))
        occupancy = 0.5 * (1.0 - np.tanh((r - 1.0) * mean_r / 0.5))
        level = float(np.exp(rng.normal(0.0, 0.35)))  # bright glandular or dark stromal nodule
        rim = np.exp(-(((r - 1.0) * mean_r) / 0.7) ** 2)
        factor *= (1.0 + occupancy * (level - 1.0)) * (1.0 - 0.35 * rim)
    return factor


def _urethra_afs(rng: np.random.Generator, anatomy: pa.Anatomy, u: np.ndarray) -> np.ndarray:
    """Multiplicative gland modulation: the urethra (a thin tube near the CG centre, bright with
    fluid or dark when collapsed) and the dark anterior fibromuscular stroma."""
    a, b, c = anatomy.prostate.radii
    cg = anatomy.cg.center
    x0, y0 = cg[0] + rng.normal(0, 1.0), cg[1] + rng.uniform(0.1, 0.35) * b
    bend = rng.uniform(-0.15, 0.05) * b  # the urethra runs anteriorly towards the base
    y_line = y0 + bend * np.clip(u[:, 2] / c, -1.0, 1.0)
    radius = rng.uniform(1.2, 2.5)
    tube = np.exp(-((u[:, 0] - x0) ** 2 + (u[:, 1] - y_line) ** 2) / (2 * radius ** 2))
    tube *= (np.abs(u[:, 2]) < 0.9 * c)
    urethra = rng.choice([1.7, 0.55])
    # anterior fibromuscular stroma: the gland's anterior cap, dark
    afs = 1.0 / (1.0 + np.exp((u[:, 1] + 0.62 * b) / 1.5)) * np.exp(-(u[:, 0] / (0.55 * a)) ** 2)
    return ((1.0 + tube * (urethra - 1.0)) * (1.0 - 0.45 * afs)).astype(np.float32)


def _levator_ani(rng: np.random.Generator, anatomy: pa.Anatomy, u: np.ndarray) -> np.ndarray:
    """Occupancy (0..1) of the levator ani: a dark muscular band a few mm outside the gland,
    lateral and posterolateral (not anterior, not straight behind where the rectum is), at the
    apex and mid gland."""
    a, b, c = anatomy.prostate.radii
    gap, thickness = rng.uniform(1.5, 5.0), rng.uniform(3.0, 7.0)
    # the anatomy's distances are clipped 8 mm beyond the gland's bounding sphere: the band
    # reaches farther, so measure it again with a larger reach
    d = anatomy.prostate.distance(u, far=gap + thickness + 10.0)
    band = 0.5 * (np.tanh((d - gap) / 0.8) - np.tanh((d - gap - thickness) / 0.8))
    angle = np.degrees(np.arctan2(u[:, 1], np.abs(u[:, 0])))  # 0 lateral, +90 posterior
    lo, hi = rng.uniform(-35, -15), rng.uniform(55, 75)
    sector = 0.5 * (np.tanh((angle - lo) / 8.0) - np.tanh((angle - hi) / 8.0))
    height = 1.0 / (1.0 + np.exp((u[:, 2] - rng.uniform(0.2, 0.7) * c) / 3.0))
    return (band * sector * height).astype(np.float32)


def render_realistic_t2(anatomy: pa.Anatomy, dist: dict, u: np.ndarray, width: float,
                        shape_zyx: tuple[int, int, int], spacing, rng: np.random.Generator) -> np.ndarray:
    """T2 signal (float, one value per voxel in the ravelled (z, y, x) order of `u`) of the realistic
    appearance: per-tissue values and textures composited with the anatomy's soft occupancies, then
    capsule, levator ani, coil sensitivity, through-plane partial volume and Rician noise."""
    sp_z, sp_y, sp_x = float(spacing[2]), float(spacing[1]), float(spacing[0])

    def vox(mm_xy: float, mm_z: float):
        return (mm_z / sp_z, mm_xy / sp_y, mm_xy / sp_x)

    pz = PZ_T2 * rng.uniform(0.8, 1.15)
    cg = pz * rng.uniform(*CG_OVER_PZ)
    layers = anatomy.layers(dist, width, "t2")
    n_others = len(anatomy.others)
    values = [REALISTIC_T2[name] for name, _ in anatomy.others] + [pz, cg]
    for lesion in anatomy.lesions:
        if pa.lesion_visible(lesion.visibility, "t2"):  # darker than its zone by the default's factor
            zone = pz if lesion.zone == "PZ" else cg
            values.append(zone * lesion.values["t2"] / anatomy.zone_t2[lesion.zone])
    _, weights = pa.layer_weights([({}, alpha) for _, alpha in layers])  # top layer first, fat last
    values = values[::-1] + [REALISTIC_T2["fat"]]
    names = [name for name, _ in anatomy.others] + ["pz", "cg"] + ["lesion"] * (len(layers) - n_others - 2)
    names = names[::-1] + ["fat"]

    fine = _field(rng, shape_zyx, vox(0.8, 1.0))
    grain = _field(rng, shape_zyx, vox(2.0, 2.0))
    patches = _field(rng, shape_zyx, vox(6.0, 5.0))
    texture = {
        "fat": ((1.0 - 0.65 * _ridges(rng, shape_zyx, vox(3.0, 3.0), 0.1))  # fibrous septa
                * (1.0 - 0.5 * _ridges(rng, shape_zyx, vox(1.2, 2.0), 0.15))  # small vessels
                * (1.0 + 0.06 * grain)),
        "pz": (1.0 + 0.15 * fine + 0.06 * grain + 0.12 * patches),  # striated, mildly patchy
        "cg": _bph_nodules(rng, anatomy, u, dist) * (1.0 + 0.12 * grain + 0.08 * fine),
        "vesicle": 1.0 - 0.6 * _ridges(rng, shape_zyx, vox(1.5, 2.0), 0.25),
        "rectum": 1.0 + 0.25 * grain,
        "muscle": 1.0 + 0.10 * grain,
        "lesion": 1.0 + 0.06 * fine,
    }
    signal = np.zeros(u.shape[0], dtype=np.float32)
    for name, value, w in zip(names, values, weights):
        signal += (w * value * texture.get(name, 1.0)).astype(np.float32)

    gland = layers[n_others][1]
    signal *= 1.0 + gland * (_urethra_afs(rng, anatomy, u) - 1.0)
    # thin dark capsule on the gland surface, then the levator ani outside it
    d = dist["prostate"]
    signal *= 1.0 - rng.uniform(0.35, 0.6) * np.exp(-((d - 0.5) / 0.8) ** 2)
    levator = _levator_ani(rng, anatomy, u) * (d > 0)
    signal = signal * (1.0 - levator) + levator * REALISTIC_T2["muscle"] * (1.0 + 0.1 * grain)
    # receive-coil sensitivity: posterior brighter, plus a random smooth trend
    s = u / 60.0
    c = rng.normal(0.0, 1.0, size=5)
    trend = c[0] * s[:, 0] + 0.5 * c[1] * s[:, 2] + c[2] * s[:, 0] ** 2 + c[3] * s[:, 1] ** 2 + c[4] * s[:, 0] * s[:, 1]
    signal *= (1.0 + rng.uniform(0.0, 0.35) * np.tanh(u[:, 1] / 40.0)) * (1.0 + 0.25 * np.tanh(trend))
    # 3 mm slices: the slice profile mixes neighbouring tissue through the plane
    signal = gaussian_filter(signal.reshape(shape_zyx), (0.35, 0.0, 0.0), mode="nearest").ravel()
    sigma = rng.uniform(15.0, 35.0)
    re = signal + sigma * rng.standard_normal(size=signal.shape).astype(np.float32)
    im = sigma * rng.standard_normal(size=signal.shape).astype(np.float32)
    return np.hypot(re, im)
