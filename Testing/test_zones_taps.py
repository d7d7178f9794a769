"""Pretrained gland backend (the TAPS ONNX model, run with PyTorch or onnxruntime) on the real ProstateX studies.

- agreement with the `taps` package itself on ProstateX-0000 (Dice ≥ 0.98), and between the
  PyTorch and onnxruntime engines (Dice ≥ 0.999). Running the
  package needs MONAI + nibabel and takes about a minute on 2 cores, so its mask is kept
  in pytest's cache folder (never in the repository), keyed by the sha256 of the input
  NIfTI, of the ONNX file and the taps version: a fresh checkout always runs taps itself;
- a plausible gland on ProstateX-0218 (volume, centroid near the image centre, the known
  ProstateX-0000 lesion inside the gland), PNG contours saved for a look;
- bad inputs: no T2, a 2D image, an empty image, a corrupt ONNX file.
"""

from __future__ import annotations

import hashlib
import importlib.util
from pathlib import Path

import numpy as np
import pytest
import SimpleITK as sitk

from ProstateLesionCADLib.errors import CaseError, ModelError
from ProstateLesionCADLib.zones import taps_gland as taps_backend
from ProstateLesionCADLib.zones.postprocess import dice
from ProstateLesionCADLib.zones.segment import contour_png

if importlib.util.find_spec("taps") is None:  # find_spec: importing taps would load MONAI
    pytest.skip("the pretrained gland model ships in the lavlab-taps package", allow_module_level=True)

LESION_0000_LPS = (25.7457, 31.8707, -38.511)  # data/README.md: biopsied PZ lesion, GGG3


def _t2_from_dicom(study: Path) -> sitk.Image:
    try:
        from ProstateLesionCADLib.study.loading import load_case
    except ImportError:
        load_case = None
    if load_case is not None:
        return load_case(study).t2
    folder = next(p for p in study.iterdir() if "t2" in p.name.lower())
    reader = sitk.ImageSeriesReader()
    reader.SetFileNames(reader.GetGDCMSeriesFileNames(str(folder)))
    return reader.Execute()


@pytest.fixture(scope="module")
def session():
    return taps_backend.open_session()


@pytest.fixture(scope="module")
def t2_0000(prostatex_dir):
    return _t2_from_dicom(prostatex_dir / "ProstateX-0000")


@pytest.fixture(scope="module")
def ours_0000(t2_0000, session):
    return taps_backend.segment_gland(t2_0000, session=session)


def _taps_reference(t2: sitk.Image, cache_dir: Path) -> sitk.Image:
    """The taps package's own mask of `t2` (run through its public `segment`)."""
    pytest.importorskip("monai", reason="running the taps package itself needs MONAI")
    pytest.importorskip("nibabel", reason="running the taps package itself needs nibabel")
    nifti = cache_dir / "input.nii.gz"
    sitk.WriteImage(sitk.Cast(t2, sitk.sitkInt16), str(nifti))
    key = hashlib.sha256(sitk.GetArrayViewFromImage(t2).tobytes() + str(t2.GetSpacing()).encode()
                         + str(t2.GetDirection()).encode()).hexdigest()[:16]
    key += "-" + taps_backend.taps_version() + "-" + hashlib.sha256(
        taps_backend.taps_model_path().read_bytes()).hexdigest()[:12]
    out = cache_dir / f"taps-{key}.nii.gz"
    if not out.is_file():
        from taps import segment

        segment(nifti, out, None, device="cpu", exact=True)
    ref = sitk.ReadImage(str(out))
    # NIfTI round trip: same voxels; put the mask back on the exact T2 grid.
    return sitk.Resample(ref, t2, sitk.Transform(), sitk.sitkNearestNeighbor, 0, sitk.sitkUInt8)


@pytest.mark.slow
def test_matches_taps_package_on_prostatex_0000(t2_0000, ours_0000, request, tmp_path):
    cache = getattr(request.config, "cache", None)  # absent under -p no:cacheprovider: compute afresh
    cache_dir = Path(cache.mkdir("zones-taps-reference")) if cache is not None else tmp_path
    ref = _taps_reference(t2_0000, cache_dir)
    ours = sitk.GetArrayFromImage(ours_0000.mask)
    d = dice(ours, sitk.GetArrayFromImage(ref))
    assert d >= 0.98, f"Dice against the taps package {d:.4f}"
    assert 25.0 <= ours_0000.qc.volume_cm3 <= 60.0
    # The known biopsied lesion (peripheral zone) lies in the gland.
    idx = t2_0000.TransformPhysicalPointToIndex(LESION_0000_LPS)
    assert ours[idx[2], idx[1], idx[0]] == 1
    assert ours_0000.windows_run == ours_0000.windows_total  # no window is pure padding on this study


@pytest.mark.slow
def test_pytorch_and_onnxruntime_engines_give_the_same_gland(t2_0000, ours_0000):
    """The default engine runs the ONNX graph with PyTorch; onnxruntime's mask is the same."""
    assert ours_0000.model["engine"].startswith("pytorch")
    theirs = taps_backend.segment_gland(t2_0000, session=taps_backend.open_session(engine="onnxruntime"))
    assert theirs.model["engine"].startswith("onnxruntime")
    d = dice(sitk.GetArrayFromImage(ours_0000.mask), sitk.GetArrayFromImage(theirs.mask))
    assert d >= 0.999, f"Dice between the engines {d:.5f}"


@pytest.mark.slow
@pytest.mark.extended
def test_plausible_gland_on_prostatex_0218(prostatex_0218_dir, session, tmp_path):
    t2 = _t2_from_dicom(prostatex_0218_dir)
    result = taps_backend.segment_gland(t2, session=session)
    mask = sitk.GetArrayFromImage(result.mask)
    assert 20.0 <= result.qc.volume_cm3 <= 120.0, result.qc.volume_cm3
    assert not result.qc.flags, result.qc.flags
    zc, yc, xc = np.argwhere(mask > 0).mean(axis=0)
    nz, ny, nx = mask.shape
    # Prostate MRI is centred on the gland: centroid within the central half of the field of view.
    assert nx * 0.25 <= xc <= nx * 0.75 and ny * 0.25 <= yc <= ny * 0.75, (xc, yc)
    assert 0.15 * nz <= zc <= 0.85 * nz, zc
    zones = sitk.Cast(result.mask, sitk.sitkUInt8) * 2  # whole gland drawn as one contour
    png = contour_png(t2, zones, tmp_path / "ProstateX-0218-gland.png", "ProstateX-0218 TAPS gland")
    assert png.stat().st_size > 10_000
    print(f"gland contours: {png}")


def test_bad_inputs_give_clear_errors(tmp_path):
    with pytest.raises(CaseError, match="No T2"):
        taps_backend.check_t2(None)
    flat = sitk.Image([64, 64], sitk.sitkFloat32)
    with pytest.raises(CaseError, match="3D volume"):
        taps_backend.check_t2(flat)
    empty = sitk.Image([64, 64, 12], sitk.sitkFloat32)
    with pytest.raises(CaseError, match="empty or constant"):
        taps_backend.segment_gland(empty)
    corrupt = tmp_path / "model_v1.onnx"
    corrupt.write_bytes(taps_backend.taps_model_path().read_bytes()[:4096])
    with pytest.raises(ModelError, match="cannot be loaded"):
        taps_backend.open_session(corrupt)
    with pytest.raises(ModelError, match="does not exist"):
        taps_backend.open_session(tmp_path / "missing.onnx")


def test_empty_prediction_is_an_error_not_an_empty_file():
    mask = sitk.Image([32, 32, 8], sitk.sitkUInt8)
    with pytest.raises(CaseError, match="segmentation is empty"):
        taps_backend.check_gland(mask)


def test_window_layout_skips_pure_padding():
    """Windows over the crop's zero padding only are not run (what made real runs slow)."""

    class Counting:
        calls = 0

        def get_inputs(self):
            return [type("I", (), {"name": "input"})()]

        def run(self, _, feeds):
            Counting.calls += feeds["input"].shape[0]
            return [np.ones_like(feeds["input"])]

    arr = np.zeros((300, 140, 20), np.float32)
    data_box = (np.array([0, 0, 0]), np.array([120, 140, 20]))  # real data only in the first 120 columns
    logits, run, total = taps_backend.sliding_window_logits(Counting(), arr, data_box)
    assert total == 4 * 2 * 1 and run == 2 * 2 and Counting.calls == run
    assert np.allclose(logits[:120], 1.0)


@pytest.mark.slow
def test_cascade_cnn2_splits_the_taps_gland(t2_0000, ours_0000):
    """CNN-1 swapped for TAPS: CNN-2 splits that gland; prostate = CG ∪ PZ exactly, PZ = prostate − CG."""
    from ProstateLesionCADLib.zones.cascade import load_cascade, run_cascade

    out = run_cascade(load_cascade(), t2_0000, prostate=ours_0000.mask)
    gland = sitk.GetArrayFromImage(ours_0000.mask) > 0
    assert np.array_equal(out.zones > 0, gland)
    assert np.array_equal(out.zones == 2, gland & ~out.cg)
    assert not (out.cg & ~gland).any()
