"""The layer rule of ARCHITECTURE.md, checked on the source: every project import, at module
level or inside a function, goes to the importer's own layer or a lower one, and no chain
of imports comes back to where it started.

Layers, lowest first (a module may import its own layer and the ones below it):

  foundation   errors, progress, output_files, resources, device, coordinates, ggg_palette,
               formats, image_files, cancellation
  data         study/, models/
  stages       phantoms/, registration/, preprocessing/, lesions/, evaluation/, export/
  models run   zones/, detection/
  pipeline     pipeline.py
  tools        demo/ (demo run, demo-model recipes, accuracy, benchmarks)
  interface    cli.py, __main__.py, capabilities.py, requirements.py, commands/
  Slicer glue  ProstateLesionCADSlicer/ (may import the whole library)
  modules      ProstateLesionCAD.py, ZonalSegmentation.py
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
LIB = REPO / "ProstateLesionCAD" / "ProstateLesionCADLib"
GLUE = REPO / "ProstateLesionCAD" / "ProstateLesionCADSlicer"
MODULE_FILES = {"ProstateLesionCAD": REPO / "ProstateLesionCAD" / "ProstateLesionCAD.py",
                "ZonalSegmentation": REPO / "ZonalSegmentation" / "ZonalSegmentation.py"}

LAYERS = [
    {"errors", "progress", "output_files", "resources", "device", "coordinates", "ggg_palette", "formats",
     "image_files", "orientation", "cancellation", "__init__"},
    {"study", "models"},
    {"phantoms", "registration", "preprocessing", "lesions", "evaluation", "export"},
    {"zones", "detection"},
    {"pipeline", "batch"},
    {"demo"},
    {"cli", "__main__", "capabilities", "requirements", "commands"},
]
GLUE_LAYER = len(LAYERS)
MODULE_LAYER = len(LAYERS) + 1
GUI_PACKAGES = {"slicer", "qt", "ctk", "vtk", "SampleData", "DICOMLib"}


def _modules() -> dict[str, Path]:
    """Dotted name -> file, for the library, the Slicer glue and the module files."""
    found = {}
    for top, root in (("ProstateLesionCADLib", LIB), ("ProstateLesionCADSlicer", GLUE)):
        for path in root.rglob("*.py"):
            parts = path.relative_to(root).with_suffix("").parts
            if parts[-1] == "__init__":
                parts = parts[:-1]
            found[".".join((top,) + parts)] = path
    for name, path in MODULE_FILES.items():
        found[name] = path
    return found


MODULES = _modules()


def _layer(module: str) -> int:
    top, _, rest = module.partition(".")
    if top in MODULE_FILES:
        return MODULE_LAYER
    if top == "ProstateLesionCADSlicer":
        return GLUE_LAYER
    first = rest.split(".")[0] if rest else "__init__"
    for index, names in enumerate(LAYERS):
        if first in names:
            return index
    raise AssertionError(f"{module} belongs to no layer: add its folder to ARCHITECTURE.md and LAYERS")


def _is_package(module: str) -> bool:
    return MODULES[module].name == "__init__.py"


def _imports(module: str) -> set[str]:
    """Project modules that `module` imports (a `from package import name` counts the
    submodule when `name` is one, else the package)."""
    tree = ast.parse(MODULES[module].read_text(encoding="utf-8"))
    package = module if _is_package(module) else module.rpartition(".")[0]
    found = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            targets = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")
                base = base[:len(base) - (node.level - 1)]
                source = ".".join(base + ([node.module] if node.module else []))
            else:
                source = node.module or ""
            targets = [f"{source}.{a.name}" if f"{source}.{a.name}" in MODULES else source for a in node.names]
        else:
            continue
        for target in targets:
            while target and target not in MODULES:
                target = target.rpartition(".")[0]
            if target and target != module:
                found.add(target)
    return found


GRAPH = {module: _imports(module) for module in MODULES}


def test_every_library_module_has_a_layer():
    for module in MODULES:
        _layer(module)


def test_no_import_from_a_lower_layer_to_a_higher_one():
    wrong = [f"{module} (layer {_layer(module)}) imports {target} (layer {_layer(target)})"
             for module, targets in GRAPH.items() for target in sorted(targets) if _layer(target) > _layer(module)]
    assert not wrong, "\n".join(wrong)


def test_no_import_circles():
    """Depth-first search over module -> imported module; a back edge is a circle.
    Importing a package's own __init__ from inside it is not a circle of modules."""
    state: dict[str, int] = {}
    circles = []

    def visit(module: str, path: list[str]) -> None:
        state[module] = 1
        for target in sorted(GRAPH[module]):
            if module.startswith(target + "."):  # a submodule importing its package's __init__
                continue
            if state.get(target) == 1:
                circles.append(" -> ".join(path[path.index(target):] + [target]))
            elif target not in state:
                visit(target, path + [target])
        state[module] = 2

    for module in sorted(GRAPH):
        if module not in state:
            visit(module, [module])
    assert not circles, "\n".join(circles)


def test_the_library_never_imports_slicer_or_qt():
    for module, path in MODULES.items():
        if not module.startswith("ProstateLesionCADLib"):
            continue
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            names = ([a.name for a in node.names] if isinstance(node, ast.Import)
                     else [node.module or ""] if isinstance(node, ast.ImportFrom) and not node.level else [])
            bad = {n.split(".")[0] for n in names} & GUI_PACKAGES
            assert not bad, f"{path.relative_to(REPO)} imports {bad}"


@pytest.mark.parametrize("source, target, allowed", [
    ("ProstateLesionCADLib.study.loading", "ProstateLesionCADLib.errors", True),
    ("ProstateLesionCADLib.errors", "ProstateLesionCADLib.study.loading", False),
    ("ProstateLesionCADLib.detection.retina_unet.inference", "ProstateLesionCADLib.preprocessing.preprocess", True),
    ("ProstateLesionCADLib.preprocessing.preprocess", "ProstateLesionCADLib.pipeline", False),
    ("ProstateLesionCADSlicer.cad_logic", "ProstateLesionCADLib.pipeline", True),
    ("ProstateLesionCADLib.commands.detect", "ProstateLesionCADSlicer.cad_logic", False),
])
def test_the_rule_itself(source, target, allowed):
    """The checker ranks modules as documented (so the tests above can fail)."""
    assert (_layer(target) <= _layer(source)) is allowed


def test_the_walker_sees_function_level_and_relative_imports():
    imports = GRAPH["ProstateLesionCADLib.commands.zones"]
    assert "ProstateLesionCADLib.zones.segment" in imports  # imported inside run()
    assert "ProstateLesionCADLib.zones" in imports  # `from ..zones import BACKENDS` at module level
