"""Shared fixtures: the real test data.

Kept in the repository (Testing/data/): the ProstateX-0000 DICOM study, the reference vectors
of the published network and the authors' registration transforms, so that a fresh clone runs
the suite on its own. The large ProstateX-0218 study (91 MB) is not: the tests that need it
are marked `extended` and run when a data folder holding `prostatex/ProstateX-0218` is given
(PROSTATE_CAD_DATA, or ../shared/data beside the clone as in CI); otherwise they are skipped
and the summary says how many and why. Tests marked `bench_extra` need the benchmark-only extra
(itk-elastix, about 300 MB of ITK wheels, so `make test` does not install it); without it they
are skipped and counted the same way."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
DATA = REPO / "Testing" / "data"
# where the extended data may be: PROSTATE_CAD_DATA, else the older PROSTATE_CAD_SHARED/data,
# else ../shared/data beside the clone
if os.environ.get("PROSTATE_CAD_DATA"):
    EXTENDED_DATA = Path(os.environ["PROSTATE_CAD_DATA"])
else:
    EXTENDED_DATA = Path(os.environ.get("PROSTATE_CAD_SHARED", REPO.parent / "shared")) / "data"
STUDY_0218 = EXTENDED_DATA / "prostatex" / "ProstateX-0218"
EXTENDED_REASON = (f"ProstateX-0218 not found in {EXTENDED_DATA} "
                   "(set PROSTATE_CAD_DATA=<folder holding prostatex/ProstateX-0218>)")
MISSING_SLICE = "1-06.dcm"
BENCH_EXTRA_REASON = "itk-elastix (the benchmark-only extra) is not installed (pip install -e '.[bench]')"

os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")


def _extended_available() -> bool:
    return STUDY_0218.is_dir()


def _bench_extra_available() -> bool:
    import importlib.metadata

    try:  # the distribution, not an import: importing itk takes seconds
        importlib.metadata.version("itk-elastix")
    except importlib.metadata.PackageNotFoundError:
        return False
    return True


def pytest_collection_modifyitems(config, items):
    for marker, available, reason in (("extended", _extended_available(), EXTENDED_REASON),
                                      ("bench_extra", _bench_extra_available(), BENCH_EXTRA_REASON)):
        if available:
            continue
        skip = pytest.mark.skip(reason=reason)
        for item in items:
            if item.get_closest_marker(marker):
                item.add_marker(skip)


def _skipped_for(report, reason: str) -> bool:
    longrepr = report.longrepr
    return (report.skipped and isinstance(longrepr, tuple) and len(longrepr) == 3
            and reason in str(longrepr[2]))


def _is_extended_skip(report) -> bool:
    return _skipped_for(report, EXTENDED_REASON)


NOT_RUN = "extended not run"
EXTRA_NOT_RUN = "bench-extra not run"


def pytest_report_teststatus(report, config):
    # a category of its own, so that pytest's final line reads "N passed, M extended not run"
    if _is_extended_skip(report):
        return NOT_RUN, "e", "EXTENDED NOT RUN"
    if _skipped_for(report, BENCH_EXTRA_REASON):
        return EXTRA_NOT_RUN, "b", "BENCH EXTRA NOT RUN"
    return None


def pytest_terminal_summary(terminalreporter, exitstatus, config):
    count = len(terminalreporter.stats.get(NOT_RUN, []))
    if count:
        terminalreporter.write_line(f"{count} extended test{'s' if count != 1 else ''} not run (skipped, "
                                    f"not passed): {EXTENDED_REASON}", yellow=True, bold=True)
    elif _extended_available():
        terminalreporter.write_line(f"extended tests ran with {STUDY_0218}")
    count = len(terminalreporter.stats.get(EXTRA_NOT_RUN, []))
    if count:
        terminalreporter.write_line(f"{count} bench-extra test{'s' if count != 1 else ''} not run (skipped, "
                                    f"not passed): {BENCH_EXTRA_REASON}", yellow=True, bold=True)


def _require_0218() -> Path:
    # also guards a test that uses ProstateX-0218 without the marker
    if not _extended_available():
        pytest.skip(EXTENDED_REASON)
    return STUDY_0218


@pytest.fixture(scope="session")
def prostatex_dir() -> Path:
    """The folder holding ProstateX-0000 (in the repository); ProstateX-0218 is `prostatex_0218_dir`."""
    return DATA / "prostatex"


@pytest.fixture(scope="session")
def prostatex_0218_dir() -> Path:
    """The ProstateX-0218 study (extended data); skips the test when absent."""
    return _require_0218()


def _study(name: str) -> Path:
    return _require_0218() if name == "ProstateX-0218" else DATA / "prostatex" / name


@pytest.fixture(scope="session")
def prostatex_study():
    """`prostatex_study("ProstateX-0218")`: the folder of a real study by name."""
    return _study


@pytest.fixture(scope="session")
def invalid_dir(tmp_path_factory) -> Path:
    """A folder holding `ProstateX-0000-missing-slice/`: the computed-b series of ProstateX-0000
    with one slice file removed, which loading must refuse naming the series."""
    root = tmp_path_factory.mktemp("invalid")
    source = DATA / "prostatex" / "ProstateX-0000" / "8.000000-ep2ddifftraDYNDISTCALCBVAL-83202"
    target = root / "ProstateX-0000-missing-slice" / source.name
    shutil.copytree(source, target, ignore=shutil.ignore_patterns(MISSING_SLICE))
    assert (source / MISSING_SLICE).is_file() and not (target / MISSING_SLICE).exists()
    return root


@pytest.fixture(scope="session")
def shared_dir() -> Path:
    """The external data folder's parent (../shared); only for tests marked `extended`."""
    _require_0218()
    return EXTENDED_DATA.parent


@pytest.fixture(scope="session")
def reference_dir() -> Path:
    return DATA / "reference"


@pytest.fixture(scope="session")
def repo_dir() -> Path:
    return REPO


@pytest.fixture(scope="session")
def prostatex_scan():
    """`prostatex_scan("ProstateX-0218")`: the header scan of a real study, once per session."""
    from ProstateLesionCADLib.study.dicom_roles import scan_dicom_tree

    cache = {}

    def get(name: str):
        if name not in cache:
            cache[name] = scan_dicom_tree(_study(name))
        return cache[name]

    return get


@pytest.fixture(scope="session")
def prostatex_case(prostatex_scan):
    """`prostatex_case("ProstateX-0218")`: a real study loaded once per test session
    (ProstateX-0218 with its 70 DCE series takes tens of seconds). Treat the Case as read-only."""
    from ProstateLesionCADLib.study.dicom_roles import load_dicom_case

    cache = {}

    def get(name: str):
        if name not in cache:
            cache[name] = load_dicom_case(_study(name), series=prostatex_scan(name))
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
