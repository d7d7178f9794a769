"""Render a real MRML scene's axial slice view to a PNG, offscreen, without the Slicer application.

Uses Slicer's own slice logic (volume layers, window/level, colour tables) and its 2D
displayable managers for segmentations and markups, the same classes that draw Slicer's
slice views, on a VTK offscreen render window (EGL/OSMesa). Used for the README
screenshots and to test what a radiologist would see; run as

    python -m ProstateLesionCADSlicer.slice_rendering --case DIR --detections FILE --out PNG
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Optional, Sequence

import numpy as np
import slicer
import vtk
from vtk.util import numpy_support

from slicer.util import arrayFromVTKMatrix

DISPLAYABLE_MANAGERS = ("vtkMRMLSegmentationsDisplayableManager2D", "vtkMRMLMarkupsDisplayableManager")


def prepare_scene(scene):
    """Application, colour and markups logics a slice view needs (Slicer creates them at start-up)."""
    app = slicer.vtkMRMLApplicationLogic()
    app.SetMRMLScene(scene)
    colors = slicer.vtkMRMLColorLogic()
    colors.SetMRMLScene(scene)
    markups = slicer.vtkSlicerMarkupsLogic()
    markups.SetMRMLScene(scene)
    app.SetModuleLogic("Markups", markups)
    return app, (colors, markups)


def render_axial(scene, app, volume_node, center_ras: Sequence[float], out_png: Optional[Path] = None,
                 size: tuple[int, int] = (600, 600), field_of_view_mm: float = 120.0,
                 window_percentiles: tuple[float, float] = (1.0, 99.5)) -> tuple[np.ndarray, np.ndarray]:
    """Render the axial slice through `center_ras`; returns (RGB image, RAS->XY 4x4 matrix)."""
    width, height = size
    display = volume_node.GetDisplayNode()
    values = numpy_support.vtk_to_numpy(volume_node.GetImageData().GetPointData().GetScalars())
    lo, hi = np.percentile(values, window_percentiles)
    display.AutoWindowLevelOff()
    display.SetWindowLevel(float(hi - lo), float(hi + lo) / 2)

    slice_logic = slicer.vtkMRMLSliceLogic()
    slice_logic.SetMRMLApplicationLogic(app)
    slice_logic.SetMRMLScene(scene)
    slice_node = slice_logic.AddSliceNode("Red")
    slice_node.SetOrientation("Axial")
    slice_node.SetDimensions(width, height, 1)
    slice_logic.GetSliceCompositeNode().SetBackgroundVolumeID(volume_node.GetID())
    slice_logic.FitSliceToAll(width, height)
    slice_node.SetFieldOfView(field_of_view_mm, field_of_view_mm * height / width, slice_node.GetFieldOfView()[2])
    slice_node.JumpSliceByCentering(*center_ras)

    window = vtk.vtkRenderWindow()
    window.SetOffScreenRendering(1)
    window.SetSize(width, height)
    renderer = vtk.vtkRenderer()
    window.AddRenderer(renderer)
    interactor = vtk.vtkRenderWindowInteractor()  # displayable managers expect one
    interactor.SetRenderWindow(window)
    mapper = vtk.vtkImageMapper()
    mapper.SetInputConnection(slice_logic.GetImageDataConnection())
    mapper.SetColorWindow(255)
    mapper.SetColorLevel(127.5)
    image_actor = vtk.vtkActor2D()
    image_actor.SetMapper(mapper)
    renderer.AddViewProp(image_actor)
    factory = slicer.vtkMRMLSliceViewDisplayableManagerFactory.GetInstance()
    factory.SetMRMLApplicationLogic(app)
    for name in DISPLAYABLE_MANAGERS:
        if not factory.IsDisplayableManagerRegistered(name):
            factory.RegisterDisplayableManager(name)
    group = factory.InstantiateDisplayableManagers(renderer)
    group.SetMRMLDisplayableNode(slice_node)
    window.Render()
    window.Render()  # second pass: widgets placed after the first layout
    grab = vtk.vtkWindowToImageFilter()
    grab.SetInput(window)
    grab.Update()
    if out_png is not None:
        Path(out_png).parent.mkdir(parents=True, exist_ok=True)
        writer = vtk.vtkPNGWriter()
        writer.SetFileName(str(out_png))
        writer.SetInputConnection(grab.GetOutputPort())
        writer.Write()
    pixels = numpy_support.vtk_to_numpy(grab.GetOutput().GetPointData().GetScalars())
    rgb = pixels.reshape(height, width, -1)[::-1, :, :3]  # VTK rows run bottom-up
    ras_to_xy = np.linalg.inv(arrayFromVTKMatrix(slice_node.GetXYToRAS()))
    return rgb, ras_to_xy


def pixel_of(ras_to_xy: np.ndarray, ras: Sequence[float], height: int) -> tuple[int, int]:
    """(row, column) in the returned RGB image of a RAS point on the rendered slice."""
    x, y = (ras_to_xy @ np.array([*ras, 1.0]))[:2]
    return int(round(height - 1 - y)), int(round(x))


def ground_truth_as_detections(ground_truth_path, out_path) -> None:
    """Known lesions (ground-truth JSON) as a detections file, score 1, model "ground truth"."""
    from ProstateLesionCADLib import formats

    truth = formats.read_ground_truth(ground_truth_path)
    cases = [formats.DetectionCase(c.case_id, [formats.Detection(l.id, l.ggg, 1.0, l.center_lps) for l in c.lesions])
             for c in truth.cases]
    formats.write_detections(formats.DetectionSet(cases, {"name": "ground truth"}), out_path)


def main(argv: Optional[Sequence[str]] = None) -> int:
    from .cad_logic import CadLogic

    parser = argparse.ArgumentParser(description="Render the CAD panel's lesions over T2 offscreen.")
    parser.add_argument("--case", required=True, help="case folder / case.json / DICOM folder")
    source = parser.add_mutually_exclusive_group(required=True)
    source.add_argument("--detections", help="detections.json (DESIGN.md format)")
    source.add_argument("--ground-truth", help="ground-truth JSON: its lesions shown as detections of score 1")
    parser.add_argument("--out", required=True, help="PNG to write")
    parser.add_argument("--min-ggg", type=int, default=1)
    parser.add_argument("--threshold", type=float, default=0.0)
    parser.add_argument("--fov", type=float, default=120.0, help="field of view in mm")
    args = parser.parse_args(argv)
    scene = slicer.vtkMRMLScene()
    app, _keep = prepare_scene(scene)
    logic = CadLogic(scene)
    logic.load_study(args.case)
    detections = args.detections
    if args.ground_truth:
        detections = str(Path(args.out).with_suffix(".detections.json"))
        ground_truth_as_detections(args.ground_truth, detections)
    try:
        logic.load_detections(detections)
    finally:
        if args.ground_truth:
            Path(detections).unlink(missing_ok=True)
    shown = logic.apply_filter(args.min_ggg, args.threshold)
    center = shown[0].center_ras if shown else (0.0, 0.0, 0.0)
    render_axial(scene, app, logic.params.t2, center, Path(args.out), field_of_view_mm=args.fov)
    print(f"wrote {args.out} ({len(shown)} lesions shown)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
