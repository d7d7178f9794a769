"""The main paper's pre-processing (Pellicer-Valero 2022, Methods, "Pre-processing"; Eq. 1):
channel order, crop geometry, b-value / DCE selection, normalisation, masks, and the inverse
mapping of points, boxes and maps back to the T2 grid and LPS — on real ProstateX DICOM
(ProstateX-0000, ProstateX-0218) and on the project's phantoms."""

from __future__ import annotations

import json

import numpy as np
import pytest
import SimpleITK as sitk

from ProstateLesionCADLib.study.case import Case
from ProstateLesionCADLib.preprocessing.channels import CHANNELS, choose_dwi_high, choose_dwi_low, dce_indices
from ProstateLesionCADLib.preprocessing.crop_geometry import CropGeometry, Grid
from ProstateLesionCADLib.errors import CaseError, FormatError
from ProstateLesionCADLib.preprocessing.preprocess import (load_preprocessed, mask_centroid_lps, normalise, percentiles,
                                                preprocess, save_preprocessed)

EXPECTED_CHANNELS = ("T2", "DWI_LOW", "DWI_HIGH", "ADC", "KTRANS", "DCE_T10", "DCE_T20", "DCE_T30",
                     "PROSTATE", "CG", "PZ")
LESION_0000_LPS = (25.7457, 31.8707, -38.511)  # biopsied lesion of ProstateX-0000 (data/README.md)


def _ellipsoid(reference: sitk.Image, center_lps, radii_mm, label: int = 1) -> sitk.Image:
    """A mask on `reference`'s grid: ellipsoid (axes along LPS) of the given radii."""
    grid = Grid.of(reference)
    nx, ny, nz = grid.size
    kk, jj, ii = np.meshgrid(np.arange(nz), np.arange(ny), np.arange(nx), indexing="ij")
    pts = grid.index_to_lps(np.stack([ii.ravel(), jj.ravel(), kk.ravel()], 1).astype(float))
    d = ((pts - np.asarray(center_lps)) / np.asarray(radii_mm)) ** 2
    arr = (d.sum(1) <= 1.0).reshape(nz, ny, nx).astype(np.uint8) * label
    img = sitk.GetImageFromArray(arr)
    img.CopyInformation(reference)
    return img


def _dice(a: np.ndarray, b: np.ndarray) -> float:
    a, b = a.astype(bool), b.astype(bool)
    return 2.0 * np.logical_and(a, b).sum() / (a.sum() + b.sum())


@pytest.fixture(scope="module")
def case0000(prostatex_case) -> Case:
    return prostatex_case("ProstateX-0000")  # loaded once per session (conftest), read-only


@pytest.fixture(scope="module")
def case0218(prostatex_case) -> Case:
    return prostatex_case("ProstateX-0218")


@pytest.fixture(scope="module")
def gland0000(case0000):
    """A gland-sized ellipsoid around the ProstateX-0000 prostate (centre read off the T2)."""
    center = Grid.of(case0000.t2).index_to_lps((196.0, 192.0, 9.0))
    return _ellipsoid(case0000.t2, center, (22.0, 17.0, 18.0))


@pytest.fixture(scope="module")
def prep0000(case0000, gland0000):
    return preprocess(case0000, prostate=gland0000)


@pytest.fixture(scope="module")
def prep0218(case0218):
    # percentiles over the crop (the paper's literal reading); ProstateX-0000 covers the default
    return preprocess(case0218, normalise_over="crop")


@pytest.fixture(scope="module")
def phantom():
    from ProstateLesionCADLib.phantoms.generate import make_phantom

    # oblique slices and 0.625 mm T2: the crop needs real interpolation (not a copy)
    return make_phantom(7, n_lesions=2, ggg=[3, 1], oblique_deg=12.0, size_xy=112, n_slices=20)


@pytest.fixture(scope="module")
def prep_phantom(phantom):
    return preprocess(phantom.case)


# ---------------------------------------------------------------- channel selection rules

def test_dce_indices_follow_the_paper_for_30_points_and_relative_times_otherwise():
    assert dce_indices(30) == (9, 19, 29)  # 1-based t = 10, 20, 30
    assert dce_indices(70) == (22, 46, 69)  # 1-based 23, 47, 70 = round(70/3), round(140/3), 70
    assert dce_indices(1) == (0, 0, 0)
    assert dce_indices(3) == (0, 1, 2)
    for n in range(1, 121):
        idx = dce_indices(n)
        assert idx[2] == n - 1 and 0 <= idx[0] <= idx[1] <= idx[2]
        for k, i in enumerate(idx, 1):  # within half a time point of the relative time k/3
            assert abs((i + 1) - max(1.0, n * k / 3)) <= 0.5 + 1e-9
    with pytest.raises(ValueError):
        dce_indices(0)


def test_b_values_map_to_low_and_high_channels():
    img = sitk.Image(2, 2, 2, sitk.sitkFloat32)
    m = lambda *bs: {float(b): img for b in bs}  # noqa: E731
    # ProstateX: b50/b400/b800 measured + computed b1400
    assert choose_dwi_low(m(50, 400, 800), m(1400)).b_value == 400
    high = choose_dwi_high(m(50, 400, 800), m(1400))
    assert (high.b_value, high.computed) == (800, False)
    # IVO-like: b100/b500/b1000 and b1400
    assert choose_dwi_low(m(100, 500, 1000), {}).b_value == 500
    assert choose_dwi_high(m(100, 500, 1000), {}).b_value == 1000
    assert choose_dwi_high(m(100, 500, 1400), {}).b_value == 1400
    # several candidates: nearest to 450 / 800, ties to the lower b-value
    assert choose_dwi_low(m(400, 500), {}).b_value == 400
    assert choose_dwi_low(m(300, 600), {}).b_value == 300
    assert choose_dwi_high(m(1000, 1400), {}).b_value == 1000
    # measured preferred over computed, computed used when nothing measured is in range
    assert choose_dwi_high(m(1400), m(800)).b_value == 1400
    high = choose_dwi_high(m(50, 400), m(1400))
    assert (high.b_value, high.computed) == (1400, True)
    assert choose_dwi_low(m(50, 100), m(1400)) is None
    assert choose_dwi_high(m(50, 100), {}) is None


def test_normalisation_maps_p1_to_0_and_p99_to_1():
    rng = np.random.default_rng(0)
    values = rng.gamma(2.0, 100.0, size=(10, 20, 30)).astype(np.float32)
    p1, p99 = percentiles(values)
    out = normalise(values, p1, p99)
    q1, q99 = np.percentile(out, [1, 99])
    assert abs(q1) < 1e-5 and abs(q99 - 1) < 1e-5
    assert out.min() < 0 and out.max() > 1  # no clipping, as the released code
    assert not normalise(np.full((3, 3, 3), 7.0, np.float32), 7.0, 7.0).any()  # constant -> zeros


# ---------------------------------------------------------------- real data: ProstateX-0000

def test_prostatex0000_channels_shape_spacing_and_sources(prep0000, case0000):
    assert prep0000.channels == EXPECTED_CHANNELS == CHANNELS
    assert prep0000.array.shape == (11, 24, 160, 160) and prep0000.array.dtype == np.float32
    crop = prep0000.geometry.crop
    assert crop.size == (160, 160, 24) and crop.spacing == (0.5, 0.5, 3.0)
    assert np.allclose(crop.direction, case0000.t2.GetDirection())  # the T2 frame (oblique here)
    assert prep0000.sources["DWI_LOW"] == "DWI b400 (measured)"
    assert prep0000.sources["DWI_HIGH"] == "DWI b800 (measured)"
    assert prep0000.to_mdt().shape == (11, 160, 160, 24)
    assert np.array_equal(prep0000.to_mdt(["T2"])[0, :, :, 5], prep0000.channel("T2")[5])
    # ProstateX has no DCE series here and no Ktrans: all-zero channels
    for name in ("KTRANS", "DCE_T10", "DCE_T20", "DCE_T30", "CG", "PZ"):
        assert prep0000.sources[name] == "missing" and not prep0000.channel(name).any(), name
    assert set(prep0000.missing()) == {"KTRANS", "DCE_T10", "DCE_T20", "DCE_T30", "CG", "PZ"}
    for name in ("T2", "DWI_LOW", "DWI_HIGH", "ADC"):
        ch = prep0000.channel(name)
        assert ch.std() > 0.05 and np.isfinite(ch).all(), name
    assert prep0000.channel("ADC").min() >= 0.0  # ADC is non-negative


def test_prostatex0000_crop_is_a_copy_of_normalised_t2_voxels(prep0000, case0000):
    """The 0.5x0.5x3 mm T2 of ProstateX-0000 shares the crop lattice: every crop voxel inside
    the T2 field of view is exactly (T2 - p1) / (p99 - p1) of the T2 voxel at the same place,
    with p1/p99 the 1st/99th percentiles of the whole T2 volume (Eq. 1)."""
    t2 = sitk.GetArrayFromImage(case0000.t2).astype(np.float64)
    p1, p99 = np.percentile(t2, [1, 99])
    assert np.allclose(prep0000.normalisation["T2"], [p1, p99])
    off = prep0000.geometry.t2_offset()
    assert off is not None
    geom = prep0000.geometry
    rng = np.random.default_rng(1)
    idx = np.stack([rng.integers(0, 160, 400), rng.integers(0, 160, 400), rng.integers(0, 24, 400)], 1)
    t2_idx = np.rint(geom.crop_index_to_t2_index(idx)).astype(int)
    inside = np.all((t2_idx >= 0) & (t2_idx < np.asarray(geom.t2.size)), axis=1)
    assert inside.sum() > 200
    got = prep0000.channel("T2")[idx[inside, 2], idx[inside, 1], idx[inside, 0]]
    want = (t2[t2_idx[inside, 2], t2_idx[inside, 1], t2_idx[inside, 0]] - p1) / (p99 - p1)
    assert np.allclose(got, want, atol=1e-5)
    # same world point: crop voxel centre == T2 voxel centre
    assert np.abs(geom.crop_index_to_t2_index(idx) - np.rint(geom.crop_index_to_t2_index(idx))).max() < 1e-3
    # outside the T2 field of view (the crop is 72 mm tall, the T2 57 mm): zeros
    assert not prep0000.channel("T2")[idx[~inside, 2], idx[~inside, 1], idx[~inside, 0]].any()


def test_image_channels_normalised_over_t2_grid_volume(prep0000, case0000):
    """p1 -> 0 and p99 -> 1 over the channel resampled onto the T2 grid (released code)."""
    geom = prep0000.geometry
    for name, image in (("ADC", case0000.adc),):
        on_t2 = sitk.GetArrayFromImage(sitk.Resample(image, case0000.t2, sitk.Transform(), sitk.sitkBSpline,
                                                     0.0, sitk.sitkFloat32))
        if name == "ADC":
            on_t2 = np.maximum(on_t2, 0)
        p1, p99 = prep0000.normalisation[name]
        q = np.percentile(normalise(on_t2, p1, p99), [1, 99])
        assert np.allclose(q, [0.0, 1.0], atol=1e-4), name
        assert geom.t2_offset() is not None


def test_crop_is_centred_on_the_prostate_centroid(prep0000, gland0000):
    geom = prep0000.geometry
    assert geom.center_source == "prostate mask"
    centroid = mask_centroid_lps(gland0000)
    assert np.allclose(geom.center_lps, centroid)
    # grid centre within half a T2 voxel of the centroid along each T2 axis (origin snapped)
    delta = geom.t2.lps_to_index(geom.grid_center_lps()) - geom.t2.lps_to_index(centroid)
    assert np.all(np.abs(delta) <= 0.5 + 1e-6), delta
    # the PROSTATE channel is the mask, centred in the crop
    mask = prep0000.channel("PROSTATE")
    assert set(np.unique(mask)) == {0.0, 1.0}
    zz, yy, xx = np.nonzero(mask)
    mask_centre = np.array([xx.mean(), yy.mean(), zz.mean()])
    assert np.all(np.abs(mask_centre - np.array([79.5, 79.5, 11.5])) < 1.0), mask_centre
    ref = sitk.GetArrayFromImage(gland0000).sum() * np.prod(geom.t2.spacing)
    assert abs(mask.sum() * np.prod(geom.crop.spacing) - ref) / ref < 0.05  # volume kept


def test_fallback_centre_is_the_t2_field_of_view(case0000):
    from ProstateLesionCADLib.preprocessing.preprocess import crop_geometry_for

    geom = crop_geometry_for(case0000)
    assert geom.center_source == "field of view"
    t2 = Grid.of(case0000.t2)
    assert np.allclose(geom.center_lps, t2.index_to_lps((np.asarray(t2.size) - 1) / 2))
    # the known ProstateX-0000 lesion lies inside this fallback crop
    idx = geom.lps_to_crop_index(LESION_0000_LPS)
    assert np.all(idx > 0) and np.all(idx < np.asarray(geom.crop.size) - 1), idx
    with pytest.raises(CaseError, match="prostate mask is empty"):
        empty = sitk.Image(case0000.t2.GetSize(), sitk.sitkUInt8)
        empty.CopyInformation(case0000.t2)
        crop_geometry_for(case0000, prostate=empty)


# ---------------------------------------------------------------- inverse mapping

def test_points_round_trip_crop_t2_lps_under_one_voxel(prep0000, prep_phantom):
    rng = np.random.default_rng(3)
    for prep in (prep0000, prep_phantom):
        geom = prep.geometry
        idx = rng.uniform([-0.5, -0.5, -0.5], [159.5, 159.5, 23.5], size=(1000, 3))
        lps = geom.crop_index_to_lps(idx)
        t2_idx = geom.t2.lps_to_index(lps)
        back = geom.t2_index_to_crop_index(t2_idx)
        assert np.abs(back - idx).max() < 1e-6
        # world distances preserved: 1 crop voxel step along x is 0.5 mm
        step = geom.crop_index_to_lps([1, 0, 0]) - geom.crop_index_to_lps([0, 0, 0])
        assert abs(np.linalg.norm(step) - 0.5) < 1e-9
    # a known world point: the ProstateX-0000 lesion goes to the crop and back
    geom = prep0000.geometry
    back = geom.crop_index_to_lps(geom.lps_to_crop_index(LESION_0000_LPS))
    assert np.linalg.norm(back - np.asarray(LESION_0000_LPS)) < 1e-6
    # and SimpleITK agrees with our matrices
    ref = geom.crop.image()
    for p in ([0, 0, 0], [159, 3, 23], [17.25, 80.5, 3.75]):
        assert np.allclose(geom.crop_index_to_lps(p), ref.TransformContinuousIndexToPhysicalPoint(p), atol=1e-9)


def test_boxes_map_to_t2_and_lps(prep0000, prep_phantom):
    for prep in (prep0000, prep_phantom):
        geom = prep.geometry
        lo, hi = np.array([40.0, 50.0, 6.0]), np.array([71.0, 90.0, 13.0])
        t2_lo, t2_hi = geom.box_crop_to_t2(lo, hi)
        # crop and T2 share directions: the T2 box is axis-aligned, extents scale with spacing
        ratio = np.asarray(geom.crop.spacing) / np.asarray(geom.t2.spacing)
        assert np.allclose(t2_hi - t2_lo, (hi - lo) * ratio, atol=1e-6)
        back = geom.t2_index_to_crop_index(np.stack([t2_lo, t2_hi]))
        assert np.abs(back - np.stack([lo, hi])).max() < 1e-6
        # LPS box: the hull of the 8 transformed corners; contains the box centre and maps back
        # to a box containing the original (equal when the slices are not oblique)
        lps_lo, lps_hi = geom.box_crop_to_lps(lo, hi)
        centre = geom.crop_index_to_lps((lo + hi) / 2)
        assert np.all(lps_lo <= centre) and np.all(centre <= lps_hi)
        c_lo, c_hi = geom.box_lps_to_crop(lps_lo, lps_hi)
        assert np.all(c_lo <= lo + 1e-6) and np.all(c_hi >= hi - 1e-6)
        # MDT (y1, x1, y2, x2, z1, z2) boxes use the same mapping
        mdt = geom.mdt_box_to_lps((lo[1], lo[0], hi[1], hi[0], lo[2], hi[2]))
        assert np.allclose(mdt[0], lps_lo) and np.allclose(mdt[1], lps_hi)
    geom = prep_phantom.geometry
    # phantom is tilted 12 degrees: the hull is strictly bigger in y/z, exact in x
    lps_lo, lps_hi = geom.box_crop_to_lps([40, 50, 6], [71, 90, 13])
    assert abs((lps_hi - lps_lo)[0] - 31 * 0.5) < 1e-6


def test_label_map_round_trip_to_t2_grid(prep0000, case0000):
    geom = prep0000.geometry
    # a lesion-like label on the crop grid, around the known lesion
    centre_idx = geom.lps_to_crop_index(LESION_0000_LPS)
    lesion = _ellipsoid(geom.crop.image(sitk.sitkUInt8), LESION_0000_LPS, (6.0, 5.0, 7.0), label=3)
    arr = sitk.GetArrayFromImage(lesion)
    on_t2 = geom.to_t2(arr, interpolation="nearest")
    assert Grid.of(on_t2) == geom.t2 or geom.t2.same_as(on_t2)
    assert set(np.unique(sitk.GetArrayFromImage(on_t2))) == {0, 3}
    back = sitk.GetArrayFromImage(geom.from_t2(on_t2, "label"))
    assert _dice(back == 3, arr == 3) > 0.97
    zz, yy, xx = np.nonzero(back == 3)
    assert np.linalg.norm(np.array([xx.mean(), yy.mean(), zz.mean()]) - centre_idx) < 1.0
    # a probability map goes back with linear interpolation, same centre in world coordinates
    prob = np.zeros(arr.shape, np.float32)
    prob[arr == 3] = 0.8
    p_t2 = geom.to_t2(prob, interpolation="linear")
    stats = sitk.LabelShapeStatisticsImageFilter()
    stats.Execute(sitk.Cast(p_t2 > 0.4, sitk.sitkUInt8))
    assert np.linalg.norm(np.asarray(stats.GetCentroid(1)) - np.asarray(LESION_0000_LPS)) < 1.0  # mm
    # MDT layout (y, x, z) is accepted too
    p_mdt = geom.to_t2(np.transpose(prob, (1, 2, 0)), interpolation="linear", layout="yxz")
    assert np.array_equal(sitk.GetArrayFromImage(p_mdt), sitk.GetArrayFromImage(p_t2))
    with pytest.raises(ValueError, match="does not match the crop grid"):
        geom.to_t2(prob[:, :, :100])


# ---------------------------------------------------------------- real data: ProstateX-0218

@pytest.mark.extended
def test_prostatex0218_dwi_and_70_point_dce(prep0218, case0218):
    assert len(case0218.dce) == 70
    assert prep0218.array.shape == (11, 24, 160, 160)
    assert prep0218.geometry.crop.spacing == (0.5, 0.5, 3.0)
    assert prep0218.geometry.t2_offset() is None  # 0.625 x 0.625 x 3.6 mm T2: interpolated crop
    assert np.allclose(prep0218.geometry.crop.direction, case0218.t2.GetDirection())
    assert prep0218.geometry.center_source == "field of view"
    assert prep0218.sources["DWI_LOW"] == "DWI b400 (measured)"  # b400 and b500: tie at 450 -> lower
    assert prep0218.sources["DWI_HIGH"] == "DWI b800 (measured)"  # nearest 800 among b800/b1400
    for name, pos in (("DCE_T10", 23), ("DCE_T20", 47), ("DCE_T30", 70)):
        assert prep0218.sources[name].startswith(f"DCE time point {pos} of 70"), prep0218.sources[name]
        ch = prep0218.channel(name)
        assert ch.std() > 0.05, name
    # enhancement: the sampled DCE images differ (not the same time point thrice)
    assert not np.allclose(prep0218.channel("DCE_T10"), prep0218.channel("DCE_T30"))
    for name in ("KTRANS", "PROSTATE", "CG", "PZ"):
        assert not prep0218.channel(name).any(), name
    # the DCE channel equals the chosen time point resampled directly
    geom = prep0218.geometry
    direct = sitk.GetArrayFromImage(sitk.Resample(case0218.dce[69], geom.crop.image(), sitk.Transform(),
                                                  sitk.sitkBSpline, 0.0, sitk.sitkFloat32))
    inside = geom.inside_t2_mask()
    p1, p99 = prep0218.normalisation["DCE_T30"]
    assert np.allclose(prep0218.channel("DCE_T30")[inside], ((direct - p1) / (p99 - p1))[inside], atol=1e-4)
    assert not prep0218.channel("DCE_T30")[~inside].any()
    # normalise_over="crop": p1 -> 0 and p99 -> 1 exactly over the crop
    for name in ("T2", "DWI_LOW", "DWI_HIGH", "ADC", "DCE_T10", "DCE_T20", "DCE_T30"):
        q = np.percentile(prep0218.channel(name), [1, 99])
        assert np.allclose(q, [0.0, 1.0], atol=1e-4), name


# ---------------------------------------------------------------- phantoms

def test_phantom_zones_channels_and_lesions_inside_crop(phantom, prep_phantom):
    prep = prep_phantom
    assert prep.channels == EXPECTED_CHANNELS
    assert prep.missing() == []  # the phantom has every sequence and both masks
    assert prep.geometry.center_source == "prostate mask"
    assert prep.sources["DWI_LOW"] == "DWI b400 (measured)"
    assert prep.sources["DWI_HIGH"] == "DWI b800 (measured)"
    assert prep.sources["DCE_T10"].startswith("DCE time point 10 of 30")
    cg, pz, gland = prep.channel("CG"), prep.channel("PZ"), prep.channel("PROSTATE")
    for ch in (cg, pz, gland):
        assert set(np.unique(ch)) <= {0.0, 1.0}
    assert not np.logical_and(cg, pz).any()
    assert _dice(np.logical_or(cg, pz), gland) > 0.97
    # zones on the crop agree with the truth resampled there by nearest neighbour
    zones_nn = sitk.GetArrayFromImage(prep.geometry.from_t2(phantom.case.zones, "nearest"))
    assert _dice(cg, zones_nn == 1) > 0.9 and _dice(pz, zones_nn == 2) > 0.9
    # every lesion centre falls in the crop, inside the PROSTATE channel, and comes back to LPS
    for lesion in phantom.ground_truth.lesions:
        idx = prep.geometry.lps_to_crop_index(lesion.center_lps)
        assert np.all(idx >= 0) and np.all(idx <= np.asarray(prep.geometry.crop.size) - 1)
        i, j, k = np.rint(idx).astype(int)
        assert gland[k, j, i] == 1.0
        assert np.linalg.norm(prep.geometry.crop_index_to_lps(idx) - lesion.center_lps) < 1e-6
    # the lesion label map: T2 grid -> crop (label interpolation) -> T2 grid keeps each lesion
    lesions_crop = prep.geometry.from_t2(phantom.lesion_mask, "label")
    back = sitk.GetArrayFromImage(prep.geometry.to_t2(lesions_crop, "nearest"))
    truth = sitk.GetArrayFromImage(phantom.lesion_mask)
    t2_grid = prep.geometry.t2
    for lesion in phantom.ground_truth.lesions:
        zz, yy, xx = np.nonzero(back == lesion.label)
        zt, yt, xt = np.nonzero(truth == lesion.label)
        shift = np.array([xx.mean() - xt.mean(), yy.mean() - yt.mean(), zz.mean() - zt.mean()])
        assert np.all(np.abs(shift) < 1.0), shift  # under one T2 voxel
        if phantom.diameter_mm[lesion.id] >= 8.0:
            # Gaussian label interpolation (SimpleITK: sigma = input spacing) erodes small
            # lesions; lesions of 8 mm or more keep their shape
            assert _dice(back == lesion.label, truth == lesion.label) > 0.9
    assert any(d >= 8.0 for d in phantom.diameter_mm.values())
    assert t2_grid.same_as(phantom.case.t2)
    # nearest-neighbour both ways: the crop (0.5 mm) is finer than this T2 (0.625 mm) -> exact
    nn = prep.geometry.to_t2(prep.geometry.from_t2(phantom.lesion_mask, "nearest"), "nearest")
    assert np.array_equal(sitk.GetArrayFromImage(nn), truth)


def test_phantom_value_range_and_registration_transform_is_applied(phantom, prep_phantom):
    prep = prep_phantom
    for name in ("T2", "DWI_LOW", "DWI_HIGH", "ADC", "KTRANS", "DCE_T10", "DCE_T20", "DCE_T30"):
        ch = prep.channel(name)
        p1, p99 = prep.normalisation[name]
        assert p99 > p1 and np.isfinite(ch).all(), name
        # the crop holds the gland: its values sit mostly inside [0, 1] with some spread
        assert -0.5 < np.percentile(ch, 50) < 1.5 and ch.std() > 0.02, name
    # a DWI/ADC transform (registration result) moves those channels only
    slice_axis = np.asarray(phantom.case.t2.GetDirection()).reshape(3, 3)[:, 2]
    shift = sitk.TranslationTransform(3, tuple(6.0 * slice_axis))  # two slices along the slice axis
    sub = Case("sub", t2=phantom.case.t2, adc=phantom.case.adc, ktrans=phantom.case.ktrans,
               prostate=phantom.case.prostate)
    moved = preprocess(sub, dwi_adc_transform=shift)
    for name in ("T2", "KTRANS", "PROSTATE"):
        assert np.array_equal(moved.channel(name), prep.channel(name)), name
    assert not np.allclose(moved.channel("ADC"), prep.channel("ADC"))
    # the shifted ADC equals the unshifted one 2 slices (6 mm) further, inside the gland
    gland = prep.channel("PROSTATE")[4:-4].astype(bool)
    assert np.abs(moved.channel("ADC")[4:-4] - np.roll(prep.channel("ADC"), -2, axis=0)[4:-4])[gland].mean() < \
        0.35 * np.abs(moved.channel("ADC")[4:-4] - prep.channel("ADC")[4:-4])[gland].mean()


def test_zones_without_prostate_mask_and_explicit_centre(phantom):
    case = Case(phantom.case.case_id, t2=phantom.case.t2, zones=phantom.case.zones)
    prep = preprocess(case)
    assert prep.geometry.center_source == "zones mask"
    assert prep.sources["PROSTATE"] == "zones mask (CG + PZ)"
    assert np.array_equal(prep.channel("PROSTATE"), np.logical_or(prep.channel("CG"), prep.channel("PZ")))
    for name in ("DWI_LOW", "DWI_HIGH", "ADC", "KTRANS", "DCE_T10", "DCE_T20", "DCE_T30"):
        assert prep.sources[name] == "missing" and not prep.channel(name).any()
    from ProstateLesionCADLib.preprocessing.preprocess import crop_geometry_for

    bad = sitk.Cast(phantom.case.zones, sitk.sitkUInt8) * 2  # labels 0, 2, 4
    with pytest.raises(CaseError, match=r"zonal mask has labels \[4\]"):
        preprocess(case, zones=bad)
    centre = phantom.ground_truth.lesions[0].center_lps
    geom = crop_geometry_for(case, zones=case.zones, center_lps=centre)
    assert geom.center_source == "given point"
    delta = geom.t2.lps_to_index(geom.grid_center_lps()) - geom.t2.lps_to_index(centre)
    assert np.all(np.abs(delta) <= 0.5 + 1e-6)


# ---------------------------------------------------------------- files and CLI

def test_save_and_load_preprocessed(prep_phantom, tmp_path):
    written = save_preprocessed(prep_phantom, tmp_path / "prep")
    names = sorted(p.name for p in written)
    assert names == sorted([f"{c}.nrrd" for c in CHANNELS] + ["channels.npy", "preprocessed.json"])
    img = sitk.ReadImage(str(tmp_path / "prep" / "ADC.nrrd"))
    assert img.GetSize() == (160, 160, 24) and np.allclose(img.GetSpacing(), (0.5, 0.5, 3.0))
    assert prep_phantom.geometry.crop.same_as(img)
    assert np.array_equal(sitk.GetArrayFromImage(img), prep_phantom.channel("ADC"))
    meta = json.loads((tmp_path / "prep" / "preprocessed.json").read_text())
    assert meta["axis_order"] == "CZYX" and meta["channels"] == list(CHANNELS)
    loaded = load_preprocessed(tmp_path / "prep")
    assert np.array_equal(loaded.array, prep_phantom.array)
    assert loaded.geometry == prep_phantom.geometry
    assert loaded.sources == prep_phantom.sources
    (tmp_path / "prep" / "channels.npy").unlink()  # the NRRD files alone suffice
    assert np.array_equal(load_preprocessed(tmp_path / "prep").array, prep_phantom.array)
    with pytest.raises(FormatError, match="not a pre-processed case folder"):
        load_preprocessed(tmp_path / "nothing")
    assert CropGeometry.from_dict(json.loads(json.dumps(prep_phantom.geometry.to_dict()))) == prep_phantom.geometry


def test_cli_preprocess_writes_channels_and_refuses_bad_masks(case0000, tmp_path, capsys):
    from ProstateLesionCADLib.cli import main
    from ProstateLesionCADLib.resources import sample_case_dir

    # zones on the T2 grid of the embedded sample (= ProstateX-0000): CG inside, PZ behind it
    centre = Grid.of(case0000.t2).index_to_lps((196.0, 192.0, 9.0))
    gland = sitk.GetArrayFromImage(_ellipsoid(case0000.t2, centre, (22.0, 17.0, 18.0)))
    cg = sitk.GetArrayFromImage(_ellipsoid(case0000.t2, centre - np.array([0, 4.0, 0]), (14.0, 10.0, 14.0)))
    zones = sitk.GetImageFromArray((gland * np.where(cg > 0, 1, 2)).astype(np.uint8))
    zones.CopyInformation(case0000.t2)
    zones_path = tmp_path / "zones.nrrd"
    sitk.WriteImage(zones, str(zones_path))
    out = tmp_path / "out"
    ktrans_path = tmp_path / "ktrans.nrrd"  # any map on its own grid stands in for a Ktrans file
    sitk.WriteImage(sitk.Cast(case0000.adc, sitk.sitkFloat32) / 1000.0, str(ktrans_path))
    assert main(["preprocess", str(sample_case_dir()), "--out", str(out), "--zones", str(zones_path),
                 "--ktrans", str(ktrans_path), "--normalise-over", "crop"]) == 0
    captured = capsys.readouterr()
    assert "PROGRESS 100.0" in captured.err and "DWI_HIGH  DWI b800 (measured)" in captured.out
    loaded = load_preprocessed(out)
    assert loaded.case_id == "ProstateX-0000" and loaded.geometry.center_source == "zones mask"
    assert loaded.normalise_over == "crop"
    assert loaded.sources["KTRANS"] == "Ktrans" and loaded.channel("KTRANS").std() > 0.05
    cg_ch, pz_ch = loaded.channel("CG"), loaded.channel("PZ")
    assert cg_ch.any() and pz_ch.any() and not np.logical_and(cg_ch, pz_ch).any()
    expected_cg = sitk.GetArrayFromImage(loaded.geometry.from_t2(zones, "nearest")) == 1
    assert _dice(cg_ch, expected_cg) > 0.95
    # bad input: one sentence, exit 2, nothing written
    bad_out = tmp_path / "bad"
    assert main(["preprocess", str(sample_case_dir()), "--out", str(bad_out),
                 "--prostate", str(tmp_path / "no.nrrd")]) == 2
    assert "prostate mask" in capsys.readouterr().err and not bad_out.exists()
    assert main(["preprocess", str(sample_case_dir()), "--out", str(bad_out), "--center", "1,2"]) == 2
    assert "--center" in capsys.readouterr().err and not bad_out.exists()
    assert main(["preprocess", str(tmp_path / "nowhere"), "--out", str(bad_out)]) == 2
    assert not bad_out.exists()
