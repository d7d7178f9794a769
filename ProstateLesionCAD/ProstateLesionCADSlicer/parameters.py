"""The module's parameter node: a vtkMRMLScriptedModuleNode with typed accessors.

Everything the user chose in the panel lives here, so it is saved with the scene and
restored when the .mrml is loaded again. Slicer's `parameterNodeWrapper` needs the
running application; these accessors need only the MRML classes, so the same code is
tested with the slicer-core wheel. Values are stored as Slicer does (strings and node
references), under the names below.
"""

from __future__ import annotations

from typing import Optional

from ProstateLesionCADLib import device as devices
from ProstateLesionCADLib import ggg_palette
from ProstateLesionCADLib.zones import ANTERIOR_BAND, PZ_SHELL_MM

MODULE_NAME = "ProstateLesionCAD"

# Input roles (node reference names) shown as volume selectors in the panel.
INPUT_ROLES = ("T2", "ADC", "DWI_LOW", "DWI_HIGH", "KTRANS")
CRITERIA = ggg_palette.CRITERIA  # GGG>=k


class _Text:
    def __init__(self, key: str, default: str = ""):
        self.key, self.default = key, default

    def __get__(self, obj, owner=None):
        if obj is None:
            return self
        value = obj.node.GetParameter(self.key)
        return value if value else self.default

    def __set__(self, obj, value) -> None:
        obj.node.SetParameter(self.key, "" if value is None else str(value))


class _Device(_Text):
    """A device name as the command line spells it (auto, cpu, cuda)."""

    def __get__(self, obj, owner=None):
        if obj is None:
            return self
        return devices.canonical_name(super().__get__(obj, owner))

    def __set__(self, obj, value) -> None:
        super().__set__(obj, devices.canonical_name(value))


class _Float(_Text):
    def __get__(self, obj, owner=None):
        if obj is None:
            return self
        value = obj.node.GetParameter(self.key)
        return float(value) if value else float(self.default)

    def __set__(self, obj, value) -> None:
        obj.node.SetParameter(self.key, repr(float(value)))


class _Int(_Float):
    def __get__(self, obj, owner=None):
        if obj is None:
            return self
        return int(super().__get__(obj, owner))

    def __set__(self, obj, value) -> None:
        obj.node.SetParameter(self.key, str(int(value)))


class _Bool(_Text):
    """A tick box: stored as "true" / "false"."""

    def __get__(self, obj, owner=None):
        if obj is None:
            return self
        return super().__get__(obj, owner) == "true"

    def __set__(self, obj, value) -> None:
        obj.node.SetParameter(self.key, "true" if value else "false")


class _ShellMm(_Text):
    """The PZ shell depth in mm, or None when the user turned the step off (stored as "off")."""

    def __get__(self, obj, owner=None):
        if obj is None:
            return self
        value = super().__get__(obj, owner)
        return None if value == "off" else float(value)

    def __set__(self, obj, value) -> None:
        obj.node.SetParameter(self.key, "off" if value is None else repr(float(value)))


class _Node:
    def __init__(self, role: str):
        self.role = role

    def __get__(self, obj, owner=None):
        if obj is None:
            return self
        return obj.node.GetNodeReference(self.role)

    def __set__(self, obj, node) -> None:
        obj.node.SetNodeReferenceID(self.role, node.GetID() if node is not None else None)


class CadParameters:
    """Typed view of the parameter node (wraps, never copies: reads and writes go to the node)."""

    model = _Text("Model")
    device = _Device("Device", "auto")
    min_ggg = _Int("CriterionMinGGG", "2")
    score_threshold = _Float("ScoreThreshold", "0.5")
    detections_file = _Text("DetectionsFile")
    case_id = _Text("CaseId")
    dicom_folder = _Text("DicomFolder")
    lesion_run_key = _Text("LesionRunKey")
    all_candidates = _Bool("AllCandidates", "false")  # FocalNet: `detect --all`
    pz_shell_mm = _ShellMm("PzShellMm", repr(PZ_SHELL_MM))  # zones: --pz-shell-mm (None = off)
    pz_anterior_band = _Float("PzAnteriorBand", repr(ANTERIOR_BAND))  # zones: --pz-anterior-band (0 = off)
    t2 = _Node("T2")
    adc = _Node("ADC")
    dwi_low = _Node("DWI_LOW")
    dwi_high = _Node("DWI_HIGH")
    ktrans = _Node("KTRANS")
    registration_transform = _Node("RegistrationTransform")
    zones = _Node("Zones")
    lesions = _Node("Lesions")
    lesion_table = _Node("LesionTable")

    def __init__(self, node):
        self.node = node

    def input(self, role: str):
        return self.node.GetNodeReference(role)

    def set_input(self, role: str, node) -> None:
        if role not in INPUT_ROLES:
            raise KeyError(role)
        self.node.SetNodeReferenceID(role, node.GetID() if node is not None else None)

    @property
    def dce(self) -> list:
        """DCE time points in order: volume nodes, or one sequence node."""
        n = self.node.GetNumberOfNodeReferences("DCE")
        return [self.node.GetNthNodeReference("DCE", i) for i in range(n)]

    @dce.setter
    def dce(self, nodes: list) -> None:
        self.node.RemoveNodeReferenceIDs("DCE")
        for node in nodes:
            self.node.AddNodeReferenceID("DCE", node.GetID())

    @property
    def criterion(self) -> str:
        return ggg_palette.criterion_name(self.min_ggg)


def get_parameter_node(scene, create: bool = True):
    """The module's singleton parameter node in `scene` (found after a scene reload too)."""
    for i in range(scene.GetNumberOfNodesByClass("vtkMRMLScriptedModuleNode")):
        node = scene.GetNthNodeByClass(i, "vtkMRMLScriptedModuleNode")
        if node.GetAttribute("ModuleName") == MODULE_NAME or node.GetModuleName() == MODULE_NAME:
            return node
    if not create:
        return None
    node = scene.CreateNodeByClass("vtkMRMLScriptedModuleNode")
    node.UnRegister(None)
    node.SetName(f"{MODULE_NAME} parameters")
    node.SetModuleName(MODULE_NAME)
    node.SetAttribute("ModuleName", MODULE_NAME)
    node.SetSingletonTag(MODULE_NAME)
    return scene.AddNode(node)


def parameters(scene, create: bool = True) -> Optional[CadParameters]:
    node = get_parameter_node(scene, create)
    return CadParameters(node) if node is not None else None
