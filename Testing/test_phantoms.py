"""Synthetic phantoms: ground-truth consistency, determinism, GGG-dependent
contrast, the known deformation, and NRRD/DICOM write-read round trips."""

from __future__ import annotations

import json

import numpy as np
import pytest
import SimpleITK as sitk

from ProstateLesionCADLib.study.loading import load_case
from ProstateLesionCADLib.errors import ParameterError
from ProstateLesionCADLib.formats import read_ground_truth
from ProstateLesionCADLib.phantoms.generate import case_seed, make_phantom, make_phantom_set, write_phantom


def arr(img: sitk.Image) -> np.ndarray:
    return sitk.GetArrayFromImage(img)


def on_t2(img: sitk.Image, t2: sitk.Image, transform: sitk.Transform | None = None,
          interp=sitk.sitkLinear) -> np.ndarray:
    return arr(sitk.Resample(img, t2, transform or sitk.Transform(), interp, 0.0, sitk.sitkFloat32))


def world_centroid(mask: np.ndarray, ref: sitk.Image, weights: np.ndarray | None = None) -> np.ndarray:
    idx = np.argwhere(mask)[:, ::-1].astype(float)  # (x, y, z) indices
    w = np.ones(len(idx)) if weights is None else weights[mask]
    mean_idx = (idx * w[:, None]).sum(axis=0) / w.sum()
    return np.array(ref.TransformContinuousIndexToPhysicalPoint(mean_idx.tolist()))


@pytest.fixture(scope="module")
def phantoms():
    return [make_phantom(s) for s in (0, 3, 4, 5)]  # 7 lesions in PZ and CG, and a case without


def test_ground_truth_is_consistent(phantoms):
    n_lesions = 0
    for p in phantoms:
        case, gt = p.case, p.ground_truth
        t2 = case.t2
        zones, prostate, lesions = arr(case.zones), arr(case.prostate), arr(p.lesion_mask)
        assert case.zones.GetPixelID() == sitk.sitkUInt8 and p.lesion_mask.GetPixelID() == sitk.sitkUInt8
        for mask in (case.zones, case.prostate, p.lesion_mask):
            assert mask.GetSize() == t2.GetSize() and mask.GetOrigin() == t2.GetOrigin()
        assert set(np.unique(zones)) == {0, 1, 2}
        assert np.array_equal(prostate > 0, zones > 0)
        volume_cm3 = (prostate > 0).sum() * np.prod(t2.GetSpacing()) / 1000.0
        assert 22.0 < volume_cm3 < 65.0  # drawn 25–60 cm³
        assert 0.2 < (zones == 1).sum() / (zones > 0).sum() < 0.8  # both zones substantial
        assert gt.case_id == case.case_id
        assert gt.patient_ggg == max((l.ggg for l in gt.lesions), default=0)
        assert sorted(np.unique(lesions[lesions > 0]).tolist()) == sorted(l.label for l in gt.lesions)
        assert np.all(zones[lesions > 0] > 0), "every lesion voxel lies inside the gland"
        spacing = np.array(t2.GetSpacing())
        for lesion in gt.lesions:
            n_lesions += 1
            assert 0 <= lesion.ggg <= 3 and lesion.label == lesion.id
            mask = lesions == lesion.label
            centroid = world_centroid(mask, t2)
            offset_idx = np.abs(np.array(t2.TransformPhysicalPointToContinuousIndex(centroid))
                                - np.array(t2.TransformPhysicalPointToContinuousIndex(lesion.center_lps)))
            assert np.all(offset_idx < 1.0), f"{gt.case_id} lesion {lesion.id}: centroid off by {offset_idx} voxels"
            i, j, k = t2.TransformPhysicalPointToIndex(lesion.center_lps)
            around_centre = zones[k - 1:k + 2, j - 1:j + 2, i - 1:i + 2]  # the centre may sit on the CG/PZ border
            assert (1 if p.zone_of_lesion[lesion.id] == "CG" else 2) in around_centre
            volume_mm3 = mask.sum() * np.prod(spacing)
            assert 0.3 * 4 / 3 * np.pi * 2.5 ** 3 < volume_mm3 < 1.8 * 4 / 3 * np.pi * 7.5 ** 3
            assert p.visibility[lesion.id] == "both"
    assert n_lesions >= 4  # the seeds above do draw lesions


def test_geometry_of_every_role():
    p = make_phantom(11, oblique_deg=12.0)
    c = p.case
    assert c.t2.GetSize() == (128, 128, 24) and c.t2.GetSpacing() == pytest.approx((0.625, 0.625, 3.0))
    assert c.adc.GetSpacing() == pytest.approx((2.0, 2.0, 3.0))  # coarse EPI grid like real DWI
    assert sorted(c.dwi) == [50.0, 400.0, 800.0] and sorted(c.dwi_computed) == [1400.0]
    assert len(c.dce) == len(c.dce_times) == 30 and np.all(np.diff(c.dce_times) > 0)
    assert c.ktrans is not None and c.roles_present() == ["T2", "ADC", "DWI", "DWI_COMPUTED", "KTRANS", "DCE"]
    for img in [c.adc, c.ktrans, c.dce[0], *c.dwi.values()]:
        assert np.allclose(img.GetDirection(), c.t2.GetDirection())
    assert abs(np.degrees(np.arccos(np.array(c.t2.GetDirection()).reshape(3, 3)[2, 2])) - 12.0) < 1e-6
    q = make_phantom(11, with_dce=False, with_ktrans=False, size_xy=64, n_slices=16, spacing=(1.0, 1.0, 3.0))
    assert q.case.dce == [] and q.case.ktrans is None and q.case.t2.GetSize() == (64, 64, 16)


def test_deterministic_per_seed():
    a, b, c = make_phantom(7, deformation_mm=3.0), make_phantom(7, deformation_mm=3.0), make_phantom(8)
    for x, y in [(a.case.t2, b.case.t2), (a.case.adc, b.case.adc), (a.case.dce[5], b.case.dce[5]),
                 (a.lesion_mask, b.lesion_mask), (a.case.zones, b.case.zones)]:
        assert np.array_equal(arr(x), arr(y)) and x.GetOrigin() == y.GetOrigin()
    assert a.ground_truth == b.ground_truth and a.visibility == b.visibility
    assert a.deformation.GetParameters() == b.deformation.GetParameters()
    assert not np.array_equal(arr(a.case.zones), arr(c.case.zones))
    assert case_seed(0, 1) != case_seed(1, 0) and case_seed(3, 2) == case_seed(3, 2)


def _lesion_means(ggg_order):
    """Mean of each sequence inside lesions of each GGG (lesion cores, 3 phantoms of 4 PZ lesions)."""
    from scipy.ndimage import binary_erosion

    sums: dict[str, dict[int, list[float]]] = {}
    for seed in range(3):
        p = make_phantom(100 + seed, ggg=ggg_order, lesion_zones=["PZ"] * len(ggg_order))
        c = p.case
        maps = {"t2": arr(c.t2), "adc": on_t2(c.adc, c.t2), "b1400": on_t2(c.dwi_computed[1400.0], c.t2),
                "ktrans": on_t2(c.ktrans, c.t2),
                "dce_early": on_t2(c.dce[6], c.t2) / np.maximum(on_t2(c.dce[0], c.t2), 1.0)}
        labels = arr(p.lesion_mask)
        for lesion in p.ground_truth.lesions:
            core = binary_erosion(labels == lesion.label, iterations=1)
            core = core if core.sum() >= 4 else labels == lesion.label
            for name, m in maps.items():
                sums.setdefault(name, {}).setdefault(lesion.ggg, []).append(float(np.mean(m[core])))
    return {name: [np.mean(v[g]) for g in range(4)] for name, v in sums.items()}


def test_contrast_depends_on_ggg():
    means = _lesion_means([0, 1, 2, 3])
    adc = means["adc"]
    assert all(adc[g] > adc[g + 1] for g in range(3)), f"ADC must fall with GGG: {adc}"
    assert 1100 < adc[0] < 1500 and 550 < adc[3] < 1000  # benign mild, GGG3+ restricted (2 mm voxels blur small lesions)
    assert all(means["t2"][g] > means["t2"][g + 1] for g in range(3)), means["t2"]
    assert all(means["b1400"][g] < means["b1400"][g + 1] for g in range(3)), means["b1400"]
    assert all(means["ktrans"][g] < means["ktrans"][g + 1] for g in range(3)), means["ktrans"]
    assert all(means["dce_early"][g] < means["dce_early"][g + 1] for g in range(3)), means["dce_early"]


def test_normal_tissue_contrasts():
    p = make_phantom(21, n_lesions=0)
    c = p.case
    zones = arr(c.zones)
    adc, t2 = on_t2(c.adc, c.t2), arr(c.t2)
    assert 1400 < np.median(adc[zones == 2]) < 1800 and 1000 < np.median(adc[zones == 1]) < 1400
    assert np.median(t2[zones == 2]) > 1.4 * np.median(t2[zones == 1])  # PZ bright, CG intermediate


def test_single_modality_lesions():
    p = make_phantom(6, ggg=[3, 3, 3], lesion_zones=["PZ", "PZ", "CG"], single_modality_fraction=1.0)
    assert set(p.visibility.values()) <= {"t2_only", "adc_only"}
    c = p.case
    adc, t2, labels, zones = on_t2(c.adc, c.t2), arr(c.t2), arr(p.lesion_mask), arr(c.zones)
    # what each voxel would show without lesions: the median of its zone
    background = labels == 0
    t2_zone = {z: np.median(t2[(zones == z) & background]) for z in (1, 2)}
    adc_zone = {z: np.median(adc[(zones == z) & background]) for z in (1, 2)}
    for lesion in p.ground_truth.lesions:
        inside = labels == lesion.label
        t2_ratio = np.mean(t2[inside]) / np.mean([t2_zone[z] for z in zones[inside]])
        adc_drop = np.mean([adc_zone[z] for z in zones[inside]]) - np.mean(adc[inside])
        if p.visibility[lesion.id] == "t2_only":
            assert t2_ratio < 0.7 and adc_drop < 150, (lesion.id, t2_ratio, adc_drop)
        else:
            assert t2_ratio > 0.8 and adc_drop > 300, (lesion.id, t2_ratio, adc_drop)
    assert set(p.visibility.values()) == {"t2_only", "adc_only"}


def test_known_deformation_moves_adc_features():
    kw = dict(ggg=[3], lesion_zones=["PZ"], lesion_diameters=[12.0])
    p = make_phantom(31, deformation_mm=6.0, **kw)
    ref = make_phantom(31, **kw)  # same anatomy, no deformation
    assert ref.deformation is None and p.ground_truth.lesions[0].center_lps == ref.ground_truth.lesions[0].center_lps
    tx, t2, c = p.deformation, p.case.t2, p.case
    # largest displacement over the T2 field of view is the requested one
    field = arr(sitk.TransformToDisplacementField(tx, sitk.sitkVectorFloat64, t2.GetSize(), t2.GetOrigin(),
                                                  t2.GetSpacing(), t2.GetDirection()))
    assert np.linalg.norm(field, axis=-1).max() == pytest.approx(6.0, rel=0.1)
    # the lesion, found in the DWI images alone (bright at high b, low ADC, gland-level S0),
    # sits at T(centre), not at its T2 centre
    centre = np.array(p.ground_truth.lesions[0].center_lps)
    moved = np.array(tx.TransformPoint(centre.tolist()))
    assert np.linalg.norm(moved - centre) > 2.0
    smooth = lambda img: arr(sitk.SmoothingRecursiveGaussian(img, 1.5))  # noqa: E731
    score = smooth(c.dwi_computed[1400.0]) / np.maximum(smooth(c.adc), 300.0) * (smooth(c.dwi[50.0]) > 200)
    score_img = sitk.GetImageFromArray(score)
    score_img.CopyInformation(c.adc)
    peak = np.unravel_index(np.argmax(score), score.shape)
    blob = arr(sitk.ConnectedThreshold(score_img, [tuple(int(i) for i in peak[::-1])], float(0.6 * score.max()), 1e9))
    found = world_centroid(blob > 0, c.adc, score)
    assert np.linalg.norm(found - moved) < 1.0, (found, moved, centre)
    assert np.linalg.norm(found - centre) > 2.0
    # resampling the deformed ADC through the transform restores the undeformed anatomy
    gland = arr(ref.case.prostate) > 0
    target = on_t2(ref.case.adc, t2)[gland]
    corr_with = np.corrcoef(on_t2(p.case.adc, t2, tx)[gland], target)[0, 1]
    corr_without = np.corrcoef(on_t2(p.case.adc, t2)[gland], target)[0, 1]
    assert corr_with > 0.8 and corr_with > corr_without + 0.1, (corr_with, corr_without)
    # T2, masks, Ktrans and DCE are not deformed
    assert np.array_equal(arr(p.case.zones), arr(ref.case.zones))


def _same(a: sitk.Image, b: sitk.Image, atol: float = 0.0) -> None:
    assert a.GetSize() == b.GetSize()
    assert np.allclose(a.GetOrigin(), b.GetOrigin(), atol=1e-3)
    assert np.allclose(a.GetSpacing(), b.GetSpacing(), atol=1e-5)
    assert np.allclose(a.GetDirection(), b.GetDirection(), atol=1e-6)
    assert np.allclose(arr(a).astype(np.float64), arr(b).astype(np.float64), atol=atol)


def test_nrrd_round_trip(tmp_path):
    p = make_phantom(4, deformation_mm=3.0)
    out = write_phantom(p, tmp_path / "case", "nrrd")
    got = load_case(out)
    c = p.case
    assert got.case_id == c.case_id and got.roles_present() == c.roles_present()
    _same(got.t2, c.t2)
    _same(got.adc, c.adc)
    _same(got.ktrans, c.ktrans, 1e-6)
    for b in c.dwi:
        _same(got.dwi[b], c.dwi[b])
    _same(got.dwi_computed[1400.0], c.dwi_computed[1400.0])
    assert len(got.dce) == 30 and got.dce_times == pytest.approx(c.dce_times)
    _same(got.dce[29], c.dce[29])
    _same(got.zones, c.zones)
    _same(got.prostate, c.prostate)
    _same(sitk.ReadImage(str(out / "zones.nrrd")), c.zones)
    _same(sitk.ReadImage(str(out / "lesions.nrrd")), p.lesion_mask)
    gt = read_ground_truth(out / "ground-truth.json").cases[0]
    assert gt.case_id == c.case_id and gt.lesion_mask == out / "lesions.nrrd"
    assert [(l.id, l.ggg, l.label) for l in gt.lesions] == [(l.id, l.ggg, l.label) for l in p.ground_truth.lesions]
    for a, b in zip(gt.lesions, p.ground_truth.lesions):
        assert np.allclose(a.center_lps, b.center_lps, atol=1e-3)
    tx = sitk.ReadTransform(str(out / "deformation.h5"))
    point = p.ground_truth.lesions[0].center_lps
    assert np.allclose(tx.TransformPoint(point), p.deformation.TransformPoint(point), atol=1e-6)


def test_phantom_set_writes_one_ground_truth(tmp_path):
    out = make_phantom_set(3, 5, tmp_path / "set", with_dce=False, size_xy=64, n_slices=12,
                           spacing=(1.25, 1.25, 3.0))
    gt = read_ground_truth(out / "ground-truth.json")
    assert [c.case_id for c in gt.cases] == ["Phantom-5-000", "Phantom-5-001", "Phantom-5-002"]
    for c in gt.cases:
        assert c.lesion_mask == out / c.case_id / "lesions.nrrd" and c.lesion_mask.is_file()
        assert (out / c.case_id / "case.json").is_file()
        labels = set(np.unique(arr(sitk.ReadImage(str(c.lesion_mask)))).tolist()) - {0}
        assert labels == {l.label for l in c.lesions}
    assert not any(p.name.startswith(".") for p in tmp_path.iterdir())  # no staging leftovers


def test_bad_parameters_are_refused(tmp_path):
    with pytest.raises(ParameterError, match="ggg"):
        make_phantom(0, ggg=[4])
    with pytest.raises(ParameterError, match="n_lesions"):
        make_phantom(0, n_lesions=2, ggg=[1])
    with pytest.raises(ParameterError, match="deformation_mm"):
        make_phantom(0, deformation_mm=-1)
    with pytest.raises(ParameterError, match="format"):
        write_phantom(make_phantom(0, n_lesions=0, size_xy=32, n_slices=8, with_dce=False), tmp_path / "x", "png")
    with pytest.raises(ParameterError, match="field of view"):  # 20 mm across: no room for a lesion
        make_phantom(0, ggg=[2, 2, 2], size_xy=32, n_slices=8, with_dce=False)
    with pytest.raises(ParameterError, match="at least 1"):
        make_phantom_set(0, 0, tmp_path / "none")
    assert not (tmp_path / "none").exists()


def test_cli_writes_a_set(tmp_path):
    from ProstateLesionCADLib.cli import main

    out = tmp_path / "cli"
    assert main(["phantoms", "--n", "2", "--seed", "9", "--out", str(out), "--no-dce", "--size", "64",
                 "--slices", "12", "--deformation-mm", "2"]) == 0
    gt = read_ground_truth(out / "ground-truth.json")
    assert len(gt.cases) == 2 and all((out / c.case_id / "deformation.h5").is_file() for c in gt.cases)
    extras = json.loads((out / "ground-truth.json").read_text())["cases"]
    assert [e["phantom"]["deformation"] for e in extras] == [f"{c.case_id}/deformation.h5" for c in gt.cases]
    assert main(["phantoms", "--n", "0", "--out", str(tmp_path / "bad")]) == 2
    assert not (tmp_path / "bad").exists()


@pytest.mark.parametrize("layout", [
    dict(dwi_layout="single_series", dce_layout="per_time_point", b_value_tag="both"),
    dict(dwi_layout="per_b", dce_layout="single_series", b_value_tag="siemens"),
])
def test_dicom_round_trip(tmp_path, layout):
    import pydicom

    p = make_phantom(3, ggg=[2], size_xy=64, n_slices=10, spacing=(1.25, 1.25, 3.0), oblique_deg=10.0)
    p.case.dce, p.case.dce_times = p.case.dce[:6], p.case.dce_times[:6]  # fewer files, same layout
    out = write_phantom(p, tmp_path / "case", "dicom", **layout)
    files = sorted((out / "dicom").rglob("*.dcm"))
    headers = [pydicom.dcmread(f, stop_before_pixels=True) for f in files]
    assert len({h.StudyInstanceUID for h in headers}) == 1 and len({h.SOPInstanceUID for h in headers}) == len(files)
    adc = [h for h in headers if "ADC" in h.ImageType]
    assert adc and all(h.SeriesDescription == "ep2d_diff_tra_DYNDIST_ADC" for h in adc)
    assert any("CALC_BVALUE" in h.ImageType for h in headers)
    if layout["b_value_tag"] == "siemens":
        assert not any("DiffusionBValue" in h for h in headers)
    c = load_case(out / "dicom")  # the DICOM tree alone: roles from headers only
    assert c.roles_present() == ["T2", "ADC", "DWI", "DWI_COMPUTED", "KTRANS", "DCE"]
    _same(c.t2, p.case.t2)
    _same(c.adc, p.case.adc)
    for b in p.case.dwi:
        _same(c.dwi[b], p.case.dwi[b])
    _same(c.dwi_computed[1400.0], p.case.dwi_computed[1400.0])
    _same(c.ktrans, p.case.ktrans, atol=1e-4)
    assert len(c.dce) == 6 and np.allclose(c.dce_times, p.case.dce_times)
    _same(c.dce[5], p.case.dce[5])
    assert c.unused == []
    # SimpleITK/GDCM reads the same T2 geometry from the files
    reader = sitk.ImageSeriesReader()
    reader.SetFileNames(reader.GetGDCMSeriesFileNames(str(next((out / "dicom").glob("004-*")))))
    _same(sitk.Cast(reader.Execute(), sitk.sitkFloat32), p.case.t2)
    # the folder's case.json adds the masks to the DICOM study
    with_masks = load_case(out)
    _same(with_masks.zones, p.case.zones)
    _same(with_masks.adc, p.case.adc)
