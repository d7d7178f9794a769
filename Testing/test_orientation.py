"""Voxel order does not change the answer: a study written with flipped or permuted axes
(the same physical images, as NIfTI converters or another slice sorting write them) gives
the same detections and the same zones as the original, through the real command line.

The copies are made here with numpy (flip/transpose of the voxel array, origin and
direction recomputed by hand), independently of `orientation.py`, and are checked to
describe exactly the same physical images before anything is compared."""

from __future__ import annotations

import contextlib
import dataclasses
import io
import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import SimpleITK as sitk

from ProstateLesionCADLib import cli
from ProstateLesionCADLib.demo.detector_model import DEMO_NAME, demo_phantom
from ProstateLesionCADLib.orientation import CANONICAL, canonical_case, onto_grid, orientation_code, to_canonical
from ProstateLesionCADLib.phantoms.generate import write_phantom
from ProstateLesionCADLib.study.loading import load_case

pytestmark = pytest.mark.usefixtures("one_torch_thread")

# new axis k = old axis PERM[k], then reversed where FLIP[k]
COPIES = {"flipped": ((0, 1, 2), (True, False, True)), "permuted": ((1, 0, 2), (False, True, False))}
FOCALNET = "focalnet-demo"


def reordered(image: sitk.Image, perm, flip) -> sitk.Image:
    """The same physical image with its voxel axes permuted and flipped."""
    data = sitk.GetArrayFromImage(image).transpose(2, 1, 0).transpose(perm)  # (x, y, z) in the new order
    for axis, f in enumerate(flip):
        if f:
            data = np.flip(data, axis)
    out = sitk.GetImageFromArray(np.ascontiguousarray(data.transpose(2, 1, 0)))
    direction = np.asarray(image.GetDirection()).reshape(3, 3)
    out.SetDirection(np.stack([direction[:, perm[k]] * (-1.0 if flip[k] else 1.0) for k in range(3)],
                              axis=1).ravel().tolist())
    out.SetSpacing([image.GetSpacing()[perm[k]] for k in range(3)])
    first = [0, 0, 0]  # the old index of the new voxel (0, 0, 0)
    for k in range(3):
        first[perm[k]] = image.GetSize()[perm[k]] - 1 if flip[k] else 0
    out.SetOrigin(image.TransformIndexToPhysicalPoint(first))
    return out


def assert_same_physical_image(copy: sitk.Image, original: sitk.Image) -> None:
    assert copy.GetSize() != original.GetSize() or copy.GetDirection() != original.GetDirection()
    back = sitk.Resample(copy, original, sitk.Transform(), sitk.sitkNearestNeighbor, -12345.0, copy.GetPixelID())
    np.testing.assert_array_equal(sitk.GetArrayFromImage(back), sitk.GetArrayFromImage(original))
    size = np.asarray(original.GetSize())
    corners = [[i, j, k] for i in (0, size[0] - 1) for j in (0, size[1] - 1) for k in (0, size[2] - 1)]
    points = sorted(tuple(np.round(original.TransformIndexToPhysicalPoint([int(v) for v in c]), 6)) for c in corners)
    csize = np.asarray(copy.GetSize())
    ccorners = [[i, j, k] for i in (0, csize[0] - 1) for j in (0, csize[1] - 1) for k in (0, csize[2] - 1)]
    cpoints = sorted(tuple(np.round(copy.TransformIndexToPhysicalPoint([int(v) for v in c]), 6)) for c in ccorners)
    np.testing.assert_allclose(cpoints, points, atol=1e-6)


def run_cli(argv: list[str]) -> str:
    buffer = io.StringIO()
    with contextlib.redirect_stdout(buffer):
        code = cli.main(argv)
    assert code == 0, buffer.getvalue()
    return buffer.getvalue()


def dice(a: np.ndarray, b: np.ndarray) -> float:
    total = int(a.sum()) + int(b.sum())
    return 1.0 if total == 0 else 2.0 * int((a & b).sum()) / total


def on_grid(path: Path, reference: sitk.Image) -> np.ndarray:
    image = sitk.ReadImage(str(path))
    return sitk.GetArrayFromImage(sitk.Resample(image, reference, sitk.Transform(), sitk.sitkNearestNeighbor, 0.0,
                                                image.GetPixelID()))


@pytest.fixture(scope="module")
def studies(tmp_path_factory):
    """A phantom case folder without masks (zones are segmented) and its two reordered copies,
    every image of the case reordered the same way."""
    sitk.ProcessObject.SetGlobalDefaultNumberOfThreads(1)
    root = tmp_path_factory.mktemp("orientation")
    phantom = demo_phantom(9003, case_id="Orientation-9003", ggg=[3])
    original = write_phantom(phantom, root / "original")
    meta = json.loads((original / "case.json").read_text())
    for key in ("prostate", "zones"):
        meta.pop(key)
    (original / "case.json").write_text(json.dumps(meta))
    folders = {"original": original}
    for name, (perm, flip) in COPIES.items():
        folder = root / name
        shutil.copytree(original, folder)
        for path in sorted(folder.rglob("*.nrrd")):
            source = sitk.ReadImage(str(original / path.relative_to(folder)))
            copy = reordered(source, perm, flip)
            assert_same_physical_image(copy, source)
            sitk.WriteImage(copy, str(path), True)
        folders[name] = folder
    return root, folders


@pytest.fixture(scope="module")
def detections(studies):
    """`prostate-cad detect` with both demo detectors (Retina U-Net: zones by the cascade,
    no registration) on the original and on each copy."""
    root, folders = studies
    out = {}
    for name, folder in folders.items():
        for model, extra in ((DEMO_NAME, ["--zones-backend", "cascade", "--no-register"]), (FOCALNET, [])):
            target = root / "out" / name / model
            run_cli(["detect", str(folder), "--model", model, "--out", str(target), "--device", "cpu", *extra])
            out[name, model] = target
    return out


def _detections(folder: Path) -> list[dict]:
    data = json.loads((folder / "detections.json").read_text())
    return sorted(data["cases"][0]["detections"], key=lambda d: (-d["score"], d["center_lps"]))


@pytest.mark.parametrize("model", [DEMO_NAME, FOCALNET])
@pytest.mark.parametrize("copy", list(COPIES))
def test_reordered_study_gives_the_same_detections(studies, detections, copy, model):
    _, folders = studies
    t2 = sitk.ReadImage(str(folders["original"] / "t2.nrrd"))
    voxel = max(t2.GetSpacing())
    expected, got = _detections(detections["original", model]), _detections(detections[copy, model])
    assert expected, "the original gives no detection: nothing would be compared"
    assert len(got) == len(expected)
    for a, b in zip(expected, got):
        assert abs(a["score"] - b["score"]) <= 1e-4
        assert a["ggg"] == b["ggg"]
        assert np.linalg.norm(np.subtract(a["center_lps"], b["center_lps"])) <= voxel
        for key in a["class_scores"]:
            assert abs(a["class_scores"][key] - b["class_scores"][key]) <= 1e-4
    # the probability map is written on each study's own T2 grid: back on the original grid it is the same
    original_map = sitk.ReadImage(str(detections["original", model] / "lesion-probability.nrrd"))
    copy_t2 = sitk.ReadImage(str(folders[copy] / "t2.nrrd"))
    copy_map = sitk.ReadImage(str(detections[copy, model] / "lesion-probability.nrrd"))
    assert copy_map.GetSize() == copy_t2.GetSize() and copy_map.GetDirection() == copy_t2.GetDirection()
    np.testing.assert_allclose(on_grid(detections[copy, model] / "lesion-probability.nrrd", original_map),
                               sitk.GetArrayFromImage(original_map), atol=1e-4)


@pytest.mark.parametrize("copy", list(COPIES))
def test_reordered_study_gives_the_same_cascade_zones(studies, copy):
    root, folders = studies
    maps = {}
    for name in ("original", copy):
        out = root / "zones-cascade" / name
        if not (out / "zones.nrrd").is_file():
            run_cli(["zones", str(folders[name]), "--backend", "cascade", "--out", str(out)])
        maps[name] = out / "zones.nrrd"
    original = sitk.ReadImage(str(maps["original"]))
    copy_zones = sitk.ReadImage(str(maps[copy]))
    copy_t2 = sitk.ReadImage(str(folders[copy] / "t2.nrrd"))
    assert copy_zones.GetSize() == copy_t2.GetSize() and copy_zones.GetOrigin() == copy_t2.GetOrigin()
    a, b = sitk.GetArrayFromImage(original), on_grid(maps[copy], original)
    assert (a > 0).sum() > 1000
    for label in (1, 2):
        assert dice(a == label, b == label) >= 0.99


def test_reordered_t2_gives_the_same_taps_zones(repo_dir, tmp_path):
    """The TAPS gland network on a real T2 (the sample's, cut to one 80 mm window around the
    gland to keep the test short), given as a file with flipped and permuted axes."""
    t2 = sitk.ReadImage(str(repo_dir / "Resources" / "Sample" / "ProstateX-0000" / "t2.nrrd"))[112:272, 112:272, :]
    copy = reordered(t2, (1, 0, 2), (True, False, True))
    assert_same_physical_image(copy, t2)
    assert orientation_code(t2) == CANONICAL and orientation_code(copy) != CANONICAL
    for name, image in (("original", t2), ("copy", copy)):
        sitk.WriteImage(image, str(tmp_path / f"{name}.nrrd"), True)
        run_cli(["zones", str(tmp_path / f"{name}.nrrd"), "--backend", "taps", "--out", str(tmp_path / name)])
    original = sitk.ReadImage(str(tmp_path / "original" / "zones.nrrd"))
    b = on_grid(tmp_path / "copy" / "zones.nrrd", original)
    a = sitk.GetArrayFromImage(original)
    assert (a > 0).sum() > 1000
    assert dice(a > 0, b > 0) >= 0.99
    for label in (1, 2):
        assert dice(a == label, b == label) >= 0.99


def test_canonical_order_is_lossless_and_leaves_today_s_inputs_untouched(repo_dir):
    """The sample (oblique axial DICOM order) is already canonical and passes through as the
    same object; a reordered copy becomes it voxel for voxel and comes back exactly."""
    t2 = sitk.ReadImage(str(repo_dir / "Resources" / "Sample" / "ProstateX-0000" / "t2.nrrd"))
    assert to_canonical(t2) is t2 and onto_grid(t2, t2) is t2
    for perm, flip in list(COPIES.values()) + [((2, 0, 1), (True, True, False))]:
        copy = reordered(t2, perm, flip)
        canonical = to_canonical(copy)
        np.testing.assert_array_equal(sitk.GetArrayFromImage(canonical), sitk.GetArrayFromImage(t2))
        np.testing.assert_allclose(canonical.GetOrigin(), t2.GetOrigin(), atol=1e-6)
        np.testing.assert_allclose(canonical.GetDirection(), t2.GetDirection(), atol=1e-12)
        back = onto_grid(canonical, copy)
        np.testing.assert_array_equal(sitk.GetArrayFromImage(back), sitk.GetArrayFromImage(copy))
        assert back.GetOrigin() == copy.GetOrigin() and back.GetDirection() == copy.GetDirection()


def test_canonical_case_reorders_every_image_and_returns_a_canonical_case_itself(repo_dir):
    case = load_case(repo_dir / "Resources" / "Sample" / "ProstateX-0000")
    assert canonical_case(case) is case
    perm, flip = COPIES["permuted"]
    moved = dataclasses.replace(case, t2=reordered(case.t2, perm, flip), adc=reordered(case.adc, perm, flip),
                                dwi={b: reordered(image, perm, flip) for b, image in case.dwi.items()})
    back = canonical_case(moved)
    assert back is not moved and back.used is moved.used and back.dwi_computed is moved.dwi_computed
    for original, canonical in [(case.t2, back.t2), (case.adc, back.adc)] + [(case.dwi[b], back.dwi[b]) for b in case.dwi]:
        assert orientation_code(canonical) == CANONICAL
        np.testing.assert_array_equal(sitk.GetArrayFromImage(canonical), sitk.GetArrayFromImage(original))
