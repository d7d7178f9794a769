"""The bundled ProstateX-0000 case as a Sample Data source, and the one function that loads it.

Slicer's Sample Data module lists the case under "Prostate" (the ProstateLesionCAD module
registers it once Slicer has started). Its button and the panel's *Load sample* both call
`load_sample`, which loads T2, ADC and the two DWI volumes the detector uses with the roles,
b-values and selector entries of any loaded study. The registration also names those
files (file:// URIs with SHA256 checksums), so a script calling
`SampleData.downloadSample("ProstateX-0000")` gets the same volumes under the same names,
without the panel's role attributes.

Qt-free: `register` takes Sample Data's registration function as an argument.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

from ProstateLesionCADLib.preprocessing.channels import choose_dwi_high, choose_dwi_low
from ProstateLesionCADLib.resources import sample_case_dir

SAMPLE_NAME = "ProstateX-0000"
CATEGORY = "Prostate"
THUMBNAIL = "thumbnail.png"  # 128x128, drawn from the T2 by Testing/sample_thumbnail.py


@dataclass(frozen=True)
class SampleVolume:
    role: str  # the panel's role (cad_logic.ROLE_ATTRIBUTE): T2, ADC, DWI_LOW, DWI_HIGH
    path: Path
    node_name: str  # the name CadLogic.load_study gives the node
    b_value: float | None = None


@dataclass(frozen=True)
class SampleSource:
    name: str
    category: str
    folder: Path
    thumbnail: Path
    volumes: tuple[SampleVolume, ...]


def sample_source(folder: Path | None = None) -> SampleSource:
    """What Sample Data lists: the sample's folder, thumbnail, and one volume per role it loads."""
    folder = Path(folder) if folder is not None else sample_case_dir()
    data = json.loads((folder / "case.json").read_text(encoding="utf-8"))
    case_id = data["case_id"]
    measured = {float(b): folder / name for b, name in (data.get("DWI") or {}).items()}
    computed = {float(b): folder / name for b, name in (data.get("DWI_COMPUTED") or {}).items()}
    volumes = [SampleVolume("T2", folder / data["T2"], f"{case_id} T2")]
    if data.get("ADC"):
        volumes.append(SampleVolume("ADC", folder / data["ADC"], f"{case_id} ADC"))
    for role, choice in (("DWI_LOW", choose_dwi_low(measured, computed)),
                         ("DWI_HIGH", choose_dwi_high(measured, computed))):
        if choice is not None:
            path = (computed if choice.computed else measured)[choice.b_value]
            volumes.append(SampleVolume(role, path, f"{case_id} DWI {choice.describe()}", choice.b_value))
    return SampleSource(case_id, CATEGORY, folder, folder / THUMBNAIL, tuple(volumes))


def load_sample(cad) -> dict:
    """Load the sample into a CadLogic's scene as a study: role -> node, selectors filled."""
    return cad.load_study(str(sample_source().folder))


def _sha256(path: Path) -> str:
    return "SHA256:" + hashlib.sha256(path.read_bytes()).hexdigest()


def registration_arguments(load: Callable, source: SampleSource | None = None) -> dict:
    """Keyword arguments of SampleData.SampleDataLogic.registerCustomSampleDataSource for the sample.

    `load(sample_data_source)` is what the Sample Data button calls (its customDownloader).
    """
    source = source or sample_source()
    return dict(category=source.category, sampleName=source.name, thumbnailFileName=str(source.thumbnail),
                uris=[v.path.resolve().as_uri() for v in source.volumes],
                fileNames=[f"{source.name}-{v.path.name}" for v in source.volumes],
                nodeNames=[v.node_name for v in source.volumes],
                checksums=[_sha256(v.path) for v in source.volumes],
                customDownloader=load)


def register(register_source: Callable, load: Callable) -> None:
    """Register the sample with Sample Data (`register_source` is its registerCustomSampleDataSource)."""
    register_source(**registration_arguments(load))
