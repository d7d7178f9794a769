"""ProstateX-0000 as a Sample Data source (ProstateLesionCADSlicer.sample_data).

Checked here: the source names existing files with the panel's roles; the thumbnail is a
128x128 PNG drawn from the sample's T2; the registration's keyword arguments are those of
SampleData.SampleDataLogic.registerCustomSampleDataSource in Slicer 5.12 and form a valid
SampleDataSource (equal-length lists, checksums of the files); on real MRML classes
(slicer-core) `load_sample` gives the nodes the source describes, with their roles and
b-values, as the panel's Load sample does. Only a running Slicer shows the button in the
Sample Data module and calls it.
"""

from __future__ import annotations

import hashlib
import sys
from pathlib import Path
from urllib.parse import unquote, urlsplit

import numpy as np
import pytest

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "ProstateLesionCAD"))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from ProstateLesionCADSlicer import sample_data  # noqa: E402

# Parameters of SampleDataLogic.registerCustomSampleDataSource on Slicer's 5.12 branch and on
# main (Slicer/Slicer Modules/Scripted/SampleData/SampleData.py, checked by hand). Lists must
# have equal lengths (SampleDataSource.__init__ raises ValueError otherwise); the Sample Data
# button calls customDownloader(source) when one is given, instead of downloading.
REGISTER_PARAMETERS = {"category", "sampleName", "uris", "fileNames", "nodeNames", "customDownloader",
                       "thumbnailFileName", "loadFileTypes", "loadFiles", "loadFileProperties", "checksums",
                       "loadFileType"}
LIST_PARAMETERS = ("uris", "fileNames", "nodeNames", "checksums")


def test_the_source_lists_existing_files_with_the_panels_roles():
    source = sample_data.sample_source()
    assert (source.name, source.category) == ("ProstateX-0000", "Prostate")
    assert [v.role for v in source.volumes] == ["T2", "ADC", "DWI_LOW", "DWI_HIGH"]
    assert all(v.path.is_file() and v.path.parent == source.folder for v in source.volumes)
    files = {v.role: (v.path.name, v.b_value) for v in source.volumes}
    assert files == {"T2": ("t2.nrrd", None), "ADC": ("adc.nrrd", None),
                     "DWI_LOW": ("dwi-b400.nrrd", 400.0), "DWI_HIGH": ("dwi-b800.nrrd", 800.0)}
    assert [v.node_name for v in source.volumes] == [
        "ProstateX-0000 T2", "ProstateX-0000 ADC", "ProstateX-0000 DWI b400 (measured)",
        "ProstateX-0000 DWI b800 (measured)"]


def test_thumbnail_is_a_128_png_drawn_from_the_t2():
    from PIL import Image
    from sample_thumbnail import thumbnail_pixels

    path = sample_data.sample_source().thumbnail
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    image = Image.open(path)
    assert image.format == "PNG" and image.size == (128, 128)
    stored = np.asarray(image.convert("L")).astype(int)
    redrawn = thumbnail_pixels().astype(int)
    assert np.abs(stored - redrawn).max() <= 2  # the committed file is what the tool draws today
    assert stored.std() > 20  # an image, not a flat square


def test_registration_arguments_make_a_valid_sample_data_source():
    def load(source):
        return source

    arguments = sample_data.registration_arguments(load)
    assert set(arguments) <= REGISTER_PARAMETERS
    assert arguments["category"] == "Prostate" and arguments["sampleName"] == "ProstateX-0000"
    assert arguments["customDownloader"] is load and Path(arguments["thumbnailFileName"]).is_file()
    lengths = {len(arguments[key]) for key in LIST_PARAMETERS}
    assert lengths == {4}
    source = sample_data.sample_source()
    for volume, uri, checksum, node_name in zip(source.volumes, arguments["uris"], arguments["checksums"],
                                                arguments["nodeNames"]):
        parts = urlsplit(uri)
        assert parts.scheme == "file" and Path(unquote(parts.path)) == volume.path.resolve()
        assert checksum == "SHA256:" + hashlib.sha256(volume.path.read_bytes()).hexdigest()
        assert node_name == volume.node_name
    assert len(set(arguments["fileNames"])) == 4 and all(n.startswith("ProstateX-0000-") for n in arguments["fileNames"])


def test_register_calls_sample_datas_function_once_with_those_arguments():
    calls = []

    def load(source):
        return source

    sample_data.register(lambda **kwargs: calls.append(kwargs), load)
    assert calls == [sample_data.registration_arguments(load)]


def test_load_sample_gives_the_described_nodes_with_roles_and_b_values():
    slicer = pytest.importorskip("slicer", reason="the slicer-core wheel is a dev dependency")
    from ProstateLesionCADSlicer.cad_logic import B_VALUE_ATTRIBUTE, ROLE_ATTRIBUTE, CadLogic

    scene = slicer.vtkMRMLScene()
    cad = CadLogic(scene)
    created = sample_data.load_sample(cad)
    source = sample_data.sample_source()
    assert sorted(created) == sorted(v.role for v in source.volumes)
    for volume in source.volumes:
        node = created[volume.role]
        assert node.GetName() == volume.node_name and node.GetAttribute(ROLE_ATTRIBUTE) == volume.role
        assert cad.params.input(volume.role) is node
        if volume.b_value is not None:
            assert float(node.GetAttribute(B_VALUE_ATTRIBUTE)) == volume.b_value
            # loaded by SampleData.downloadSample (a script): no attribute, the b-value comes from the name
            bare = scene.AddNewNodeByClass("vtkMRMLScalarVolumeNode", volume.node_name)
            assert cad.b_value_of(bare, volume.role) == volume.b_value
    assert cad.params.case_id == source.name


def _method_source(tree, class_name: str, method: str) -> str:
    import ast

    cls = next(n for n in tree.body if isinstance(n, ast.ClassDef) and n.name == class_name)
    return ast.unparse(next(n for n in cls.body if isinstance(n, ast.FunctionDef) and n.name == method))


def test_the_sample_data_button_and_the_panels_load_sample_share_one_function():
    import ast

    module = REPO / "ProstateLesionCAD" / "ProstateLesionCAD.py"
    tree = ast.parse(module.read_text(encoding="utf-8"))
    registration = _method_source(tree, "ProstateLesionCAD", "onStartupCompleted")
    assert ("sample_data.register(SampleData.SampleDataLogic.registerCustomSampleDataSource, "
            "ProstateLesionCAD.loadSample)") in registration
    assert "sample_data.load_sample(CadLogic(slicer.mrmlScene))" in _method_source(tree, "ProstateLesionCAD",
                                                                                    "loadSample")
    setup = _method_source(tree, "ProstateLesionCADWidget", "setup")
    assert "self.ui.loadSampleButton.connect('clicked()', lambda: self.loadStudy(None))" in setup
    assert "sample_data.load_sample(self.cad)" in _method_source(tree, "ProstateLesionCADWidget", "loadStudy")
