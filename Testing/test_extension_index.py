"""Extensions Index readiness: the description file ProstateLesionCAD.json, the CMake metadata
it must agree with, and the URLs both point at.

The rules come from Slicer's sources, checked by hand (no network in the tests):
- Slicer/Slicer Schemas/slicer-extension-catalog-entry-schema-v1.0.1.json: required
  `$schema`, `category`, `scm_url`; optional `scm_revision`, `scm_type` (git|local),
  `build_dependencies` (strings), `build_subdirectory`, `enabled`, `tier` (1..5); nothing else.
- Slicer/ExtensionsIndex scripts/check_description_files.py: the file is named after the
  CMake project, LF line endings, an accepted category, an https/git scm_url, a licence file
  in the repository root, a checked-out repository under 100 MB, icon and screenshot URLs
  that download as images (here: that they name files of this repository).
- Slicer/Slicer Utilities/Templates/Extensions/Default/CMakeLists.txt: contributors as
  "Name (Organization)".
"""

from __future__ import annotations

import ast
import json
import re
import subprocess
from pathlib import Path
from urllib.parse import urlsplit

REPO = Path(__file__).resolve().parents[1]
DESCRIPTION = REPO / "ProstateLesionCAD.json"
SCHEMA_PROPERTIES = {"$schema": str, "category": str, "scm_url": str, "scm_revision": str, "scm_type": str,
                     "build_dependencies": list, "build_subdirectory": str, "enabled": bool, "tier": int}
SCHEMA_REQUIRED = {"$schema", "category", "scm_url"}
# A few of ExtensionsIndex's ACCEPTED_EXTENSION_CATEGORIES; "Prostate" is not one of them.
ACCEPTED_CATEGORIES = {"Segmentation", "Quantification", "Informatics", "Registration", "Analysis", "Utilities"}
SIZE_LIMIT_MB = 100
CONTRIBUTOR = re.compile(r"^[^()]+ \([^()]+\)$")


def _cmake() -> dict[str, str]:
    text = (REPO / "CMakeLists.txt").read_text(encoding="utf-8")
    values = dict(re.findall(r'set\((EXTENSION_\w+)\s+"([^"]*)"\)', text))
    values["project"] = re.search(r"project\((\w+)\)", text).group(1)
    return values


def _description() -> dict:
    return json.loads(DESCRIPTION.read_text(encoding="utf-8"))


def test_description_file_follows_the_catalog_schema():
    data = _description()
    assert DESCRIPTION.stem == _cmake()["project"] == "ProstateLesionCAD"
    assert b"\r" not in DESCRIPTION.read_bytes()
    assert SCHEMA_REQUIRED <= set(data), f"missing: {SCHEMA_REQUIRED - set(data)}"
    assert set(data) <= set(SCHEMA_PROPERTIES), f"not in the schema: {set(data) - set(SCHEMA_PROPERTIES)}"
    for key, value in data.items():
        assert isinstance(value, SCHEMA_PROPERTIES[key]), key
    assert data["$schema"].endswith("/Schemas/slicer-extension-catalog-entry-schema-v1.0.1.json#")
    assert all(isinstance(d, str) for d in data["build_dependencies"])
    assert 1 <= data["tier"] <= 5
    assert urlsplit(data["scm_url"]).scheme in ("https", "git")


def test_description_file_agrees_with_the_cmake_metadata():
    data, cmake = _description(), _cmake()
    assert data["category"] == cmake["EXTENSION_CATEGORY"] and data["category"] in ACCEPTED_CATEGORIES
    assert data["build_dependencies"] == cmake["EXTENSION_DEPENDS"].split() == ["PyTorch"]
    assert data["build_subdirectory"] == cmake["EXTENSION_BUILD_SUBDIRECTORY"]


def _repository(url: str) -> str:
    """owner/name of a github.com or raw.githubusercontent.com URL."""
    parts = urlsplit(url).path.strip("/").split("/")
    return "/".join(parts[:2]).removesuffix(".git")


def test_homepage_icon_and_screenshots_point_at_files_of_this_repository():
    data, cmake = _description(), _cmake()
    repository = _repository(data["scm_url"])
    assert urlsplit(data["scm_url"]).netloc == "github.com"
    homepage = cmake["EXTENSION_HOMEPAGE"]
    assert _repository(homepage) == repository and homepage.endswith("#readme") and (REPO / "README.md").is_file()
    images = [cmake["EXTENSION_ICONURL"], *cmake["EXTENSION_SCREENSHOTURLS"].split()]
    assert len(images) >= 2
    for url in images:
        parts = urlsplit(url)
        assert parts.netloc == "raw.githubusercontent.com" and _repository(url) == repository, url
        revision, path = parts.path.strip("/").split("/", 3)[2:]
        assert revision == data["scm_revision"], url
        assert (REPO / path).is_file() and path.endswith(".png"), f"{path} is not a file of this repository"
    from PIL import Image

    assert Image.open(REPO / urlsplit(cmake["EXTENSION_ICONURL"]).path.split("/", 4)[4]).size == (128, 128)


def _module_texts(path: Path) -> dict:
    """parent.contributors and parent.helpText of a module file's module class."""
    tree = ast.parse(path.read_text(encoding="utf-8"))
    out = {}
    for node in ast.walk(tree):
        if isinstance(node, ast.Assign) and isinstance(node.targets[0], ast.Attribute) and isinstance(
                node.targets[0].value, ast.Attribute) and node.targets[0].value.attr == "parent":
            out[node.targets[0].attr] = ast.literal_eval(node.value)
    return out


def _readme_anchors() -> set[str]:
    headings = re.findall(r"^#+ (.+)$", (REPO / "README.md").read_text(encoding="utf-8"), re.M)
    return {re.sub(r"[^\w\- ]", "", h).strip().lower().replace(" ", "-") for h in headings}


def test_contributors_name_a_party_and_help_links_reach_the_readme():
    cmake = _cmake()
    contributors = cmake["EXTENSION_CONTRIBUTORS"]
    assert CONTRIBUTOR.match(contributors), contributors
    repository = _repository(_description()["scm_url"])
    for module in (REPO / "ProstateLesionCAD" / "ProstateLesionCAD.py", REPO / "ZonalSegmentation" / "ZonalSegmentation.py"):
        texts = _module_texts(module)
        assert texts["contributors"] == [contributors], module.name
        for link in re.findall(r'href="([^"]+)"', texts["helpText"]):
            assert _repository(link) == repository, link
            assert urlsplit(link).fragment in _readme_anchors(), f"{link}: no such README section"


def test_licence_and_repository_size():
    assert (REPO / "LICENSE").is_file()
    listed = subprocess.run(["git", "ls-files", "-z"], cwd=REPO, capture_output=True, check=True).stdout
    files = [REPO / f for f in listed.decode().split("\0") if f]
    size = sum(f.stat().st_size for f in files if f.is_file())
    assert len(files) > 100 and size < SIZE_LIMIT_MB * 1024 * 1024 / 2, f"{size / 2**20:.1f} MB tracked"
