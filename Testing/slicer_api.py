"""The Slicer, VTK and MRML names the Slicer glue uses, and the list of those that exist in the
oldest supported Slicer (Testing/data/slicer-5.12-api.txt).

The glue is ProstateLesionCADSlicer/*.py and the two module files. Collected from their
source (no import): every attribute chain on the `slicer` and `vtk` modules
(`slicer.vtkMRMLScene`, `vtk.vtkCommand.ModifiedEvent`, `slicer.vtkSlicerSegmentationsModuleLogic.
SetBinaryLabelmapToSegment`, `slicer.mrmlScene.Clear` read as vtkMRMLScene.Clear), every
MRML/VTK class named in a string (`AddNewNodeByClass("vtkMRMLSegmentationNode")`), and every
CamelCase method called or event read on an object (`node.SetTerminology(...)`,
`node.PointModifiedEvent`), which is checked by name: some class of Slicer's or VTK's
Python modules must have it. Chains on qt, ctk, slicer.util, slicer.app, slicer.modules and
other Slicer Python modules are GUI-side: the slicer-core wheel cannot check them, so
Testing/test_slicer_api.py lists them as checked by hand.

Regenerate the list in a virtual environment holding slicer-core 5.12.4.0:

    .venv-slicer512/bin/python Testing/slicer_api.py --write
"""

from __future__ import annotations

import ast
import re
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
GLUE = sorted((REPO / "ProstateLesionCAD" / "ProstateLesionCADSlicer").glob("*.py")) + [
    REPO / "ProstateLesionCAD" / "ProstateLesionCAD.py", REPO / "ZonalSegmentation" / "ZonalSegmentation.py"]
LIST_FILE = REPO / "Testing" / "data" / "slicer-5.12-api.txt"
OLDEST = "5.12.4.0"  # slicer-core release of the oldest supported Slicer

CHECKED_MODULES = ("slicer", "vtk")
GUI_PREFIXES = ("qt.", "ctk.", "slicer.util.", "slicer.app.", "slicer.modules.", "slicer.ScriptedLoadableModule.",
                "slicer.i18n.", "slicer.testing.")
GUI_NAMES = {"slicer.mrmlScene"}  # set by the application (slicerqt.py), absent from slicer-core
CAMEL = re.compile(r"^[A-Z][A-Za-z0-9]*$")
CLASS_NAME = re.compile(r"^vtk(MRML|Slicer|Segment|Oriented)[A-Za-z0-9]+$")


def _chain(node) -> list[str]:
    """a.b.c -> ["a", "b", "c"]; a call or subscript at the root gives "()"."""
    parts = []
    while isinstance(node, ast.Attribute):
        parts.append(node.attr)
        node = node.value
    parts.append(node.id if isinstance(node, ast.Name) else "()")
    return parts[::-1]


def _module_aliases(tree) -> dict[str, str]:
    """Local name -> dotted module (or module.member) it was imported as."""
    aliases = {}
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for a in node.names:
                aliases[a.asname or a.name.split(".")[0]] = a.name if a.asname else a.name.split(".")[0]
        elif isinstance(node, ast.ImportFrom):
            base = ("." * node.level) + (node.module or "")
            for a in node.names:
                aliases[a.asname or a.name] = f"{base}.{a.name}" if node.module else base + a.name
    return aliases


def collect(paths=GLUE) -> tuple[set[str], set[str], set[str]]:
    """(attributes, methods, gui): `slicer.X.Y`/`vtk.X.Y` chains, CamelCase names used on objects,
    and the GUI-side chains (qt, ctk, slicer.util, slicer.app, SampleData, ...) for the hand list."""
    attributes, methods, gui = set(), set(), set()
    for path in paths:
        tree = ast.parse(path.read_text(encoding="utf-8"))
        aliases = _module_aliases(tree)
        parents = {child: parent for parent in ast.walk(tree) for child in ast.iter_child_nodes(parent)}
        for node in ast.walk(tree):
            if isinstance(node, ast.Constant) and isinstance(node.value, str) and CLASS_NAME.match(node.value):
                attributes.add(f"slicer.{node.value}")
            if isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                root = node.module.split(".")[0]
                if root in CHECKED_MODULES or root in ("qt", "ctk", "SampleData", "PyTorchUtils"):
                    for a in node.names:
                        dotted = f"{node.module}.{a.name}"
                        (gui if dotted.startswith(GUI_PREFIXES) or root not in CHECKED_MODULES else attributes).add(dotted)
            if not isinstance(node, ast.Attribute) or isinstance(parents.get(node), ast.Attribute):
                continue  # only whole chains: a.b.c, not its a.b part
            parts = _chain(node)
            root = parts[0]
            module = aliases.get(root, "")
            if module in CHECKED_MODULES or module.split(".")[0] in ("qt", "ctk", "SampleData", "PyTorchUtils"):
                dotted = ".".join([module, *parts[1:]])
                if dotted.startswith("slicer.mrmlScene."):
                    dotted = "slicer.vtkMRMLScene." + dotted[len("slicer.mrmlScene."):]
                if dotted.startswith(GUI_PREFIXES) or dotted in GUI_NAMES or module.split(".")[0] not in CHECKED_MODULES:
                    gui.add(dotted)
                else:
                    attributes.add(dotted)
            elif root not in aliases or root == "self":
                name = parts[-1]
                is_call = isinstance(parents.get(node), ast.Call) and parents[node].func is node
                if CAMEL.match(name) and (is_call or name.endswith("Event")):
                    methods.add(name)
    return attributes, methods, gui


def _resolve(dotted: str):
    """The object a dotted name stands for: the longest importable module, then attributes."""
    import importlib

    parts = dotted.split(".")
    for n in range(len(parts), 0, -1):
        try:
            obj = importlib.import_module(".".join(parts[:n]))
        except ImportError:
            continue
        for part in parts[n:]:
            obj = getattr(obj, part)
        return obj
    raise ImportError(dotted)


def _classes(module) -> list[tuple[str, type]]:
    return [(name, value) for name in sorted(dir(module)) if isinstance(value := getattr(module, name, None), type)]


def declaring_classes(name: str, slicer_classes, vtk_classes) -> list[str]:
    """The Slicer classes that declare method `name` themselves; else one VTK class that has it; else []."""
    own = [n for n, cls in slicer_classes if name in cls.__dict__]
    if own:
        return own
    for candidates in ([(n, c) for n, c in vtk_classes if name in c.__dict__],
                       [(n, c) for n, c in [*slicer_classes, *vtk_classes] if hasattr(c, name)]):
        if candidates:
            return [candidates[0][0]]
    return []


def build_list() -> tuple[list[str], list[str]]:
    """(lines of the list file, names the running Slicer lacks)."""
    from importlib.metadata import version

    import slicer
    import vtk

    attributes, methods, _ = collect()
    missing, lines = [], []
    for dotted in sorted(attributes):
        try:
            _resolve(dotted)
            lines.append(f"attr {dotted}")
        except (AttributeError, ImportError):
            missing.append(dotted)
    slicer_classes, vtk_classes = _classes(slicer), _classes(vtk)
    for name in sorted(methods):
        owners = declaring_classes(name, slicer_classes, vtk_classes)
        if owners:
            lines.append(f"method {name} {' '.join(owners)}")
        else:
            missing.append(name)
    header = [f"# The Slicer/VTK names the glue uses, each found in slicer-core {version('slicer-core')} "
              f"(vtk {version('vtk')}); after 'method': the Slicer classes declaring it (else one VTK class).",
              "# Regenerate with slicer-core 5.12.4.0: python Testing/slicer_api.py --write",
              f"slicer-core {version('slicer-core')}"]
    return header + lines, missing


def read_list(path: Path = LIST_FILE) -> tuple[str, set[str], dict[str, list[str]]]:
    """(slicer-core version, attribute chains, method name -> classes declaring it)."""
    core, attributes, methods = "", set(), {}
    for line in path.read_text(encoding="utf-8").splitlines():
        if not line or line.startswith("#"):
            continue
        kind, rest = line.split(" ", 1)
        if kind == "slicer-core":
            core = rest
        elif kind == "attr":
            attributes.add(rest)
        elif kind == "method":
            name, *owners = rest.split()
            methods[name] = owners
    return core, attributes, methods


def main(argv: list[str]) -> int:
    from importlib.metadata import version

    lines, missing = build_list()
    if missing:
        print(f"slicer-core {version('slicer-core')} lacks: {', '.join(missing)}", file=sys.stderr)
        return 1
    if "--write" in argv:
        if version("slicer-core") != OLDEST:
            print(f"error: the list must come from slicer-core {OLDEST}, this is {version('slicer-core')}.",
                  file=sys.stderr)
            return 2
        LIST_FILE.parent.mkdir(parents=True, exist_ok=True)
        LIST_FILE.write_text("\n".join(lines) + "\n", encoding="utf-8")
        print(f"wrote {LIST_FILE} ({len(lines) - 3} names)")
    else:
        print("\n".join(lines))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
