"""Shared fixtures: the real ProstateX studies and reference data in ../shared."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
SHARED = Path(os.environ.get("PROSTATE_CAD_SHARED", REPO.parent / "shared"))

os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")


@pytest.fixture(scope="session")
def shared_dir() -> Path:
    if not (SHARED / "data").is_dir():
        pytest.fail(f"../shared not found at {SHARED}: the real test data must sit beside the clone.")
    return SHARED


@pytest.fixture(scope="session")
def prostatex_dir(shared_dir) -> Path:
    return shared_dir / "data" / "prostatex"


@pytest.fixture(scope="session")
def reference_dir(shared_dir) -> Path:
    return shared_dir / "reference"


@pytest.fixture(scope="session")
def repo_dir() -> Path:
    return REPO


@pytest.fixture(scope="session")
def prostatex_scan(prostatex_dir):
    """`prostatex_scan("ProstateX-0218")`: the header scan of a real study, once per session."""
    from ProstateLesionCADLib.study.dicom_roles import scan_dicom_tree

    cache = {}

    def get(name: str):
        if name not in cache:
            cache[name] = scan_dicom_tree(prostatex_dir / name)
        return cache[name]

    return get


@pytest.fixture(scope="session")
def prostatex_case(prostatex_dir, prostatex_scan):
    """`prostatex_case("ProstateX-0218")`: a real study loaded once per test session
    (ProstateX-0218 with its 70 DCE series takes tens of seconds). Treat the Case as read-only."""
    from ProstateLesionCADLib.study.dicom_roles import load_dicom_case

    cache = {}

    def get(name: str):
        if name not in cache:
            cache[name] = load_dicom_case(prostatex_dir / name, series=prostatex_scan(name))
        return cache[name]

    return get


@pytest.fixture(scope="module")
def one_torch_thread():
    """One torch thread for a module (opt in with pytest.mark.usefixtures)."""
    import torch
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)
