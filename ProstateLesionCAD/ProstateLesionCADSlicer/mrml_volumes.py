"""SimpleITK images <-> MRML volume nodes, and MRML transforms -> ITK files.

Geometry goes through ProstateLesionCADLib.coordinates (the only LPS <-> RAS helper):
SimpleITK/ITK geometry is LPS, a volume node's IJKToRAS matrix is RAS.
"""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import numpy as np
import SimpleITK as sitk
import vtk
from slicer.util import arrayFromVTKMatrix, vtkMatrixFromArray
from vtk.util import numpy_support

from ProstateLesionCADLib import coordinates
from ProstateLesionCADLib.errors import CaseError


def image_to_volume_node(scene, image: sitk.Image, name: str, node=None, label: bool = False):
    """Put a 3D SimpleITK image into a (new or given) scalar/label volume node."""
    if node is None:
        node = scene.AddNewNodeByClass("vtkMRMLLabelMapVolumeNode" if label else "vtkMRMLScalarVolumeNode", name)
    array = sitk.GetArrayFromImage(image)
    if array.ndim != 3:
        raise ValueError(f"{name}: expected a 3D scalar image, got an array of shape {array.shape}.")
    data = vtk.vtkImageData()
    data.SetDimensions(*image.GetSize())
    data.GetPointData().SetScalars(numpy_support.numpy_to_vtk(np.ascontiguousarray(array).ravel(), deep=True))
    node.SetIJKToRASMatrix(vtkMatrixFromArray(coordinates.image_ijk_to_ras_matrix(image)))
    node.SetAndObserveImageData(data)
    if node.GetDisplayNode() is None:
        node.CreateDefaultDisplayNodes()
    return node


def volume_node_to_image(node) -> sitk.Image:
    """The voxels of a scalar volume node as a SimpleITK image in LPS (parent transforms ignored)."""
    data = node.GetImageData()
    if data is None:
        raise ValueError(f"Volume '{node.GetName()}' has no image data.")
    dims = data.GetDimensions()
    array = numpy_support.vtk_to_numpy(data.GetPointData().GetScalars())
    if array.ndim != 1:
        raise ValueError(f"Volume '{node.GetName()}' has {array.shape[1]} components; a scalar volume is needed.")
    image = sitk.GetImageFromArray(array.reshape(dims[2], dims[1], dims[0]).copy())
    ijk_to_ras = vtk.vtkMatrix4x4()
    node.GetIJKToRASMatrix(ijk_to_ras)
    origin, spacing, direction = coordinates.itk_geometry_from_ijk_to_ras(arrayFromVTKMatrix(ijk_to_ras))
    image.SetOrigin(origin)
    image.SetSpacing(spacing)
    image.SetDirection(direction)
    return image


def adc_node_to_micro(node) -> Optional[str]:
    """Put an ADC volume's voxels in 10⁻⁶ mm²/s in place, by the rule of the project's loader
    (study.adc_units: the unit named by the 99th percentile of the positive values), as a volume
    read by Slicer's DICOM plugin keeps the scanner's unit (10⁻³ mm²/s or mm²/s on some Philips
    and PACS exports). Returns the note the loader gives (None when nothing was done); window and
    level follow the new values."""
    from ProstateLesionCADLib.study.adc_units import adc_unit

    data = node.GetImageData()
    if data is None or data.GetPointData().GetScalars() is None:
        return None
    values = numpy_support.vtk_to_numpy(data.GetPointData().GetScalars())
    name, factor, p99 = adc_unit(values)
    if name is None:
        return f"ADC values (99th percentile {p99:.4g}) fit no known unit; used as stored, as 10^-6 mm²/s"
    if factor == 1.0:
        return None
    scaled = (values.astype(np.float32) * np.float32(factor)).astype(np.float32)
    data.GetPointData().SetScalars(numpy_support.numpy_to_vtk(scaled, deep=True))
    data.Modified()
    node.Modified()
    display = node.GetDisplayNode()
    if display is not None:
        display.AutoWindowLevelOn()
    return f"ADC stored in {name} (99th percentile {p99:.4g}); multiplied by {factor:g} to 10^-6 mm²/s"


def ras_to_ijk(node, ras) -> tuple[float, float, float]:
    """Continuous voxel index of a RAS point in a volume node."""
    m = vtk.vtkMatrix4x4()
    node.GetRASToIJKMatrix(m)
    return tuple(float(v) for v in (arrayFromVTKMatrix(m) @ np.array([*ras, 1.0]))[:3])


def write_transform_to_itk_file(scene, transform_node, path: Path) -> Path:
    """Write a transform node as an ITK transform file (the registration library reads it)."""
    storage = scene.AddNewNodeByClass("vtkMRMLTransformStorageNode")
    try:
        storage.SetFileName(str(path))
        if not storage.WriteData(transform_node):
            raise OSError(f"could not write transform '{transform_node.GetName()}' to {path}.")
    finally:
        scene.RemoveNode(storage)
    return Path(path)


def read_transform_node(scene, path: Path, name: str, node=None):
    """Load an ITK transform file (e.g. `prostate-cad register`'s transform.h5) into a transform node."""
    storage = scene.AddNewNodeByClass("vtkMRMLTransformStorageNode")
    try:
        storage.SetFileName(str(path))
        if node is None:
            node = scene.AddNewNodeByClass("vtkMRMLTransformNode", name)
        if not storage.ReadData(node):
            raise OSError(f"could not read a transform from {path}.")
    finally:
        scene.RemoveNode(storage)
    return node


def parent_transform(node) -> Optional[object]:
    return node.GetParentTransformNode() if node is not None else None


def write_world_transform(scene, node, path: Path) -> Optional[Path]:
    """Write how a volume is placed in the views as an ITK transform file; None when it is not transformed.

    Slicer writes a transform node's "from parent" transform, which is ITK's resampling
    transform: it maps a point of the reference (T2) space to the point of the volume's own
    acquisition space, what `prostate-cad detect --transform` and the registration library
    expect. A chain of linear transform nodes is written as the one matrix it amounts to.
    """
    transform_node = parent_transform(node)
    if transform_node is None:
        return None
    if transform_node.GetParentTransformNode() is None:
        return write_transform_to_itk_file(scene, transform_node, path)
    if not transform_node.IsTransformToWorldLinear():
        raise CaseError(f"'{node.GetName()}' sits under a chain of transforms that is not linear: harden the "
                        f"outer transforms into '{transform_node.GetName()}' (Transforms module) first.")
    to_world = vtk.vtkMatrix4x4()
    transform_node.GetMatrixTransformToWorld(to_world)
    combined = scene.AddNewNodeByClass("vtkMRMLLinearTransformNode")
    try:
        combined.SetMatrixTransformToParent(to_world)
        return write_transform_to_itk_file(scene, combined, path)
    finally:
        scene.RemoveNode(combined)
