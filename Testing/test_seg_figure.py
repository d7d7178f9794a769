"""The figure of a DICOM SEG over its T2 (`demo/dicom_seg_figure.py`, the demo's DICOM step, the
`seg_figure` developer tool) on the real ProstateX-0000 DICOM study: what it draws is read
from the SEG file. Its masks equal dcmqi's `segimage2itkimage` readback (and the library's
own masks) on the T2 instances the SEG refers to; emptying one segment's frames in the
file empties that segment in the figure; the colour layer covers exactly the lesion pixels."""

from __future__ import annotations

import contextlib
import io
import shutil

import highdicom as hd
import numpy as np
import pydicom
import pytest
import SimpleITK as sitk
from pydicom.pixels import pack_bits

from ProstateLesionCADLib import cli
from ProstateLesionCADLib.commands import seg_figure
from ProstateLesionCADLib.demo.dicom_seg_figure import draw_seg_over_t2, overlay_rgba, read_seg_over_t2
from ProstateLesionCADLib.demo.run import DemoState, dicom_step
from ProstateLesionCADLib.export.results import SEG_FILE, SR_FILE
from ProstateLesionCADLib.export.source import dicom_source
from ProstateLesionCADLib.formats import read_detections
from ProstateLesionCADLib.lesions.masks import detection_mask
from test_export import CASE, _dcmqi_masks, write_run


@pytest.fixture(scope="module")
def study(prostatex_dir):
    return prostatex_dir / CASE


@pytest.fixture(scope="module")
def source(study):
    return dicom_source(study)


@pytest.fixture(scope="module")
def run_dir(source, tmp_path_factory):
    """A demo-like output folder: detections/ (hand-made detections, probability map) and zones/."""
    return write_run(tmp_path_factory.mktemp("demo-out"), source.t2_grid, detections="detections")


@pytest.fixture(scope="module")
def demo_step_run(run_dir, study):
    """The demo's DICOM step on that folder: export, read back, draw."""
    state = DemoState(out=run_dir, case_dir=study, results={"dicom": study})
    messages = []
    dicom_step().run(state, lambda fraction, message: messages.append(message))
    return state, messages


def _volume(overlay, number, source) -> np.ndarray:
    """One segment of the figure's overlay on the T2 grid (k, rows, columns), by the T2 instance each slice is."""
    k_of_uid = {ds.SOPInstanceUID: k for k, ds in enumerate(source.dicom.datasets)}
    shape = tuple(reversed(source.t2_grid.GetSize()))
    volume = np.zeros(shape, bool)
    for image in overlay.slices:
        volume[k_of_uid[image.sop_instance_uid]] = image.masks[number]
    return volume


def test_demo_step_writes_the_seg_sr_and_figure(demo_step_run, run_dir):
    state, messages = demo_step_run
    assert state.outputs == [f"dicom/{SEG_FILE}", f"dicom/{SR_FILE}", "dicom/seg-over-t2.png"]
    assert all((run_dir / p).is_file() for p in state.outputs)
    png = (run_dir / "dicom" / "seg-over-t2.png").read_bytes()
    assert png[:8] == b"\x89PNG\r\n\x1a\n"
    assert messages[-1].startswith(f"{SEG_FILE}: 5 lesions, 2 zones over ")


def test_the_figures_masks_are_the_seg_files_voxels(demo_step_run, run_dir, study, source, tmp_path):
    """Each segment drawn equals dcmqi's readback of the SEG on the T2 grid, and our lesion masks."""
    overlay = read_seg_over_t2(run_dir / "dicom" / SEG_FILE, study)
    labels, masks = _dcmqi_masks(run_dir / "dicom" / SEG_FILE, source.t2_grid, tmp_path / "dcmqi")
    assert [s.label for s in overlay.segments.values()] == labels
    assert [s.lesion for s in overlay.segments.values()] == [True] * 5 + [False] * 2
    # the slices are the T2 instances the SEG's frames refer to, in slice order
    uids = [ds.SOPInstanceUID for ds in source.dicom.datasets]
    assert [uids.index(s.sop_instance_uid) for s in overlay.slices] == \
        sorted(uids.index(s.sop_instance_uid) for s in overlay.slices)
    for number, mask in enumerate(masks, start=1):
        drawn = _volume(overlay, number, source)
        assert drawn.any() and np.array_equal(drawn, mask), labels[number - 1]
    grid = source.t2_grid
    prob = sitk.GetArrayFromImage(sitk.ReadImage(str(run_dir / "detections" / "lesion-probability.nrrd")))
    detections = read_detections(run_dir / "detections" / "detections.json").cases[0].detections
    first = detection_mask(next(d for d in detections if d.id == 11), grid, prob)
    ours = np.zeros(tuple(reversed(grid.GetSize())), bool)
    (i, j, k), (nk, nj, ni) = first.lo, first.mask.shape
    ours[k:k + nk, j:j + nj, i:i + ni] = first.mask
    assert np.array_equal(_volume(overlay, 1, source), ours)
    # the T2 pixels are the referenced instances' own
    for image in overlay.slices[:2]:
        ds = pydicom.dcmread(next(p for p in study.rglob("*.dcm")
                                  if pydicom.dcmread(p, stop_before_pixels=True).SOPInstanceUID == image.sop_instance_uid))
        assert np.array_equal(image.t2, ds.pixel_array)


def test_the_colour_layer_covers_exactly_the_lesion_pixels(demo_step_run, run_dir, study, tmp_path):
    overlay = read_seg_over_t2(run_dir / "dicom" / SEG_FILE, study)
    shown = draw_seg_over_t2(overlay, tmp_path / "figure.png", "test")
    assert 1 <= len(shown) <= 3 and (tmp_path / "figure.png").stat().st_size > 10_000
    for image in overlay.slices:
        layer = overlay_rgba(image, overlay.segments)
        lesions = np.zeros(image.t2.shape, bool)
        for number, segment in overlay.segments.items():
            if segment.lesion:
                lesions |= image.masks[number]
        assert np.array_equal(layer[..., 3] > 0, lesions)
    # a pixel only lesion 1 covers has lesion 1's SEG colour
    image = max(overlay.slices, key=lambda s: s.masks[1].sum())
    only_first = image.masks[1] & ~np.any([image.masks[n] for n in (2, 3, 4, 5)], axis=0)
    r, c = np.argwhere(only_first)[0]
    d = hd.seg.segread(run_dir / "dicom" / SEG_FILE).get_segment_description(1)
    rgb = hd.color.CIELabColor.from_dicom_value(d.RecommendedDisplayCIELabValue).to_rgb()
    assert np.allclose(overlay_rgba(image, overlay.segments)[r, c, :3] * 255, rgb)


def test_the_figure_follows_the_file(demo_step_run, run_dir, study, tmp_path):
    """Emptying segment 1's frames in the SEG file empties segment 1 in the figure, nothing else."""
    before = read_seg_over_t2(run_dir / "dicom" / SEG_FILE, study)
    ds = pydicom.dcmread(run_dir / "dicom" / SEG_FILE)
    frames = ds.pixel_array.copy()
    of_segment = [int(item.SegmentIdentificationSequence[0].ReferencedSegmentNumber)
                  for item in ds.PerFrameFunctionalGroupsSequence]
    frames[[n == 1 for n in of_segment]] = 0
    ds.PixelData = pack_bits(frames.ravel())
    changed = tmp_path / "changed.dcm"
    ds.save_as(changed)
    after = read_seg_over_t2(changed, study)
    for old, new in zip(before.slices, after.slices):
        assert not new.masks[1].any()
        assert all(np.array_equal(old.masks[n], new.masks[n]) for n in range(2, 8))
    assert any(old.masks[1].any() for old in before.slices)


def _captured(call, *args):
    """(exit status, stdout, stderr) of a command-line entry point."""
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        code = call(*args)
    return code, out.getvalue(), err.getvalue()


def _tool(argv):
    return _captured(cli.run_tool, seg_figure, argv)


def test_developer_tool_draws_a_seg_and_refuses_a_wrong_study(demo_step_run, run_dir, study, prostatex_dir, tmp_path):
    code, stdout, stderr = _tool([str(run_dir / "dicom" / SEG_FILE), "--t2", str(study),
                                  "--out", str(tmp_path / "seg.png")])
    assert code == 0, stderr
    assert stdout.startswith(f"{tmp_path / 'seg.png'}: ") and "7 segments" in stdout
    # a folder without the referenced T2 images: one sentence, exit 2
    other = tmp_path / "other"
    shutil.copytree(next(p for p in study.iterdir() if "ADC" in p.name), other)
    code, _, stderr = _tool([str(run_dir / "dicom" / SEG_FILE), "--t2", str(other), "--out", str(tmp_path / "x.png")])
    assert code == 2 and "T2 images the SEG refers to are not there" in stderr and not (tmp_path / "x.png").exists()
    code, _, stderr = _tool([str(study / "missing.dcm"), "--t2", str(study), "--out", str(tmp_path / "x.png")])
    assert code == 2 and "no such file" in stderr


def test_demo_refuses_a_dicom_study_of_another_patient_before_running(study, tmp_path):
    from ProstateLesionCADLib.demo.run import default_steps, run_demo
    from ProstateLesionCADLib.errors import CaseError

    other = tmp_path / "other-patient"
    t2 = next(p for p in study.iterdir() if "t2tsetra" in p.name)
    (other / t2.name).mkdir(parents=True)
    for path in t2.glob("*.dcm"):
        ds = pydicom.dcmread(path)
        ds.PatientID = "ProstateX-9999"
        ds.save_as(other / t2.name / path.name)
    with pytest.raises(CaseError, match="is of 'ProstateX-9999', not of the case 'ProstateX-0000'"):
        run_demo(tmp_path / "out", steps=default_steps()[:1], options={"dicom": other})
    assert not (tmp_path / "out").exists()
    code, _, stderr = _captured(cli.main, ["demo", "--out", str(tmp_path / "out2"), "--dicom", str(tmp_path / "none")])
    assert code == 2 and "--dicom" in stderr and "no such folder" in stderr and not (tmp_path / "out2").exists()



@pytest.mark.parametrize("true_enhanced", [False, True], ids=["legacy-converted", "enhanced-mr"])
def test_over_a_multiframe_t2_the_figure_takes_each_frame_it_refers_to(demo_step_run, run_dir, study, source,
                                                                       tmp_path, true_enhanced):
    """The T2 as one multi-frame object (frames in reverse slice order): each SEG frame is drawn
    over the T2 frame it names, and the masks are those of the SEG over the single-frame T2."""
    from dicom_variants import legacy_enhanced

    copy = legacy_enhanced(study, tmp_path / "study", numbers=[4], true_enhanced=true_enhanced)
    multi = dicom_source(copy)
    code, _, stderr = _captured(cli.main, ["export", str(copy), "--detections",
                                           str(run_dir / "detections" / "detections.json"), "--zones",
                                           str(run_dir / "zones" / "zones.nrrd"), "--out", str(tmp_path / "out"),
                                           "--dicom-seg"])
    assert code == 0, stderr
    overlay = read_seg_over_t2(tmp_path / "out" / SEG_FILE, copy)
    single = read_seg_over_t2(run_dir / "dicom" / SEG_FILE, study)
    k_of_frame = {frame + 1: k for k, frame in enumerate(multi.dicom.frame_of_slice)}
    k_of_uid = {ds.SOPInstanceUID: k for k, ds in enumerate(source.dicom.datasets)}
    assert {s.sop_instance_uid for s in overlay.slices} == {multi.dicom.datasets[0].SOPInstanceUID}
    assert sorted(k_of_frame[s.frame] for s in overlay.slices) == sorted(k_of_uid[s.sop_instance_uid]
                                                                       for s in single.slices)
    by_k = {k_of_uid[s.sop_instance_uid]: s for s in single.slices}
    for image in overlay.slices:
        reference = by_k[k_of_frame[image.frame]]
        assert np.array_equal(image.t2, reference.t2)
        assert all(np.array_equal(image.masks[n], reference.masks[n]) for n in reference.masks)
    draw_seg_over_t2(overlay, tmp_path / "multi.png", "multi-frame")
