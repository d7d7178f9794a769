"""Model catalogue, download (local HTTP server on 127.0.0.1) and installation; device choice."""

from __future__ import annotations

import functools
import http.server
import json
import threading
import zipfile
from pathlib import Path

import pytest

from ProstateLesionCADLib import cli, device
from ProstateLesionCADLib.models import catalog as model_catalog
from ProstateLesionCADLib.errors import ModelError, ParameterError
from ProstateLesionCADLib.models.package import load_model_package, sha256_of, write_model_card


def _make_package(root: Path, name: str = "tiny-detector", version: str = "1.0") -> Path:
    root.mkdir(parents=True)
    (root / "weights.bin").write_bytes(bytes(range(256)) * 64)
    write_model_card(root, {"name": name, "version": version, "task": "detector",
                            "intended_use": "Demo trained on synthetic data, not for diagnosis.",
                            "training_data": "synthetic phantoms",
                            "thresholds": {"GGG>=2": {"max_sensitivity": 0.1, "balanced": 0.4, "computed_on": "val"}}},
                     ["weights.bin"])
    return root


def _zip(folder: Path, archive: Path) -> Path:
    with zipfile.ZipFile(archive, "w") as zf:
        for f in folder.rglob("*"):
            zf.write(f, f.relative_to(folder.parent))
    return archive


@pytest.fixture
def user_dirs(tmp_path, monkeypatch):
    monkeypatch.setenv("PROSTATE_CAD_MODELS", str(tmp_path / "user" / "models"))
    return tmp_path / "user" / "models"


@pytest.fixture
def http_root(tmp_path):
    root = tmp_path / "www"
    root.mkdir()
    class Quiet(http.server.SimpleHTTPRequestHandler):
        def log_message(self, *args):
            pass

    handler = functools.partial(Quiet, directory=str(root))
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield root, f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()


def test_install_from_url_verifies_sha256_caches_and_reports_progress(tmp_path, user_dirs, http_root):
    www, base = http_root
    archive = _zip(_make_package(tmp_path / "src" / "tiny-detector"), www / "tiny.zip")
    digest = sha256_of(archive)
    seen = []
    pkg = model_catalog.install_package(f"{base}/tiny.zip", sha256=digest, progress=lambda f, m: seen.append(f),
                                        catalog=[])
    assert pkg.root == user_dirs / "tiny-detector" and pkg.thresholds("GGG>=2")["balanced"] == 0.4
    load_model_package(pkg.root, verify=True)
    assert seen[-1] == 1.0 and any(0 < f < 1 for f in seen)
    cached = list(model_catalog.downloads_dir().glob("*tiny.zip"))
    assert len(cached) == 1 and sha256_of(cached[0]) == digest
    # second install re-uses the cached copy even when the server no longer has it
    (www / "tiny.zip").unlink()
    with pytest.raises(ModelError, match="already installed.*version 1.0"):
        model_catalog.install_package(f"{base}/tiny.zip", sha256=digest, catalog=[])
    again = model_catalog.install_package(f"{base}/tiny.zip", sha256=digest, catalog=[], replace=True)
    assert again.version == "1.0"


def test_corrupted_download_is_refused_and_nothing_is_left(tmp_path, user_dirs, http_root):
    www, base = http_root
    archive = _zip(_make_package(tmp_path / "src" / "tiny-detector"), www / "tiny.zip")
    good = sha256_of(archive)
    data = bytearray(archive.read_bytes())
    data[100] ^= 0xFF
    archive.write_bytes(bytes(data))
    with pytest.raises(ModelError, match="fails its sha256 check"):
        model_catalog.install_package(f"{base}/tiny.zip", sha256=good, catalog=[])
    assert not list(model_catalog.downloads_dir().glob("*tiny.zip"))
    assert not (user_dirs / "tiny-detector").exists()
    assert not user_dirs.exists() or not list(user_dirs.iterdir())  # no staging folder left behind
    with pytest.raises(ModelError, match="download failed"):
        model_catalog.install_package(f"{base}/missing.zip", catalog=[])


def test_catalogue_name_resolves_url_and_checksum(tmp_path, user_dirs, http_root):
    www, base = http_root
    archive = _zip(_make_package(tmp_path / "src" / "cat-model", name="cat-model"), www / "cat.zip")
    catalog = [model_catalog.CatalogEntry("cat-model", "Cat", "detector", "d", "url", url=f"{base}/cat.zip",
                                          sha256=sha256_of(archive), bytes=archive.stat().st_size),
               model_catalog.CatalogEntry("by-command", "C", "detector", "d", "command",
                                          command="prostate-cad models fetch-published")]
    assert model_catalog.install_package("cat-model", catalog=catalog).name == "cat-model"
    with pytest.raises(ModelError, match="fetch-published"):
        model_catalog.install_package("by-command", catalog=catalog)
    rows = {r["name"]: r for r in model_catalog.list_rows(catalog)}
    assert rows["cat-model"]["status"] == "installed" and rows["by-command"]["status"] == "available"


def test_install_from_folder_rejects_a_tampered_weight_file(tmp_path, user_dirs):
    src = _make_package(tmp_path / "src" / "tiny-detector")
    (src / "weights.bin").write_bytes(b"tampered")
    with pytest.raises(ModelError, match="sha256"):
        model_catalog.install_package(str(src), catalog=[])
    assert not (user_dirs / "tiny-detector").exists()


def test_archive_with_unsafe_member_is_refused(tmp_path, user_dirs):
    archive = tmp_path / "evil.zip"
    with zipfile.ZipFile(archive, "w") as zf:
        zf.writestr("../../escaped.txt", "x")
    with pytest.raises(ModelError, match="unsafe path"):
        model_catalog.install_package(str(archive), catalog=[])
    assert not (tmp_path / "escaped.txt").exists()


def test_bundled_catalogue_is_valid_and_cli_lists_and_installs(tmp_path, user_dirs, capsys):
    entries = model_catalog.load_catalog()
    assert entries and all(e.source in ("url", "command") for e in entries)
    archive = _zip(_make_package(tmp_path / "src" / "tiny-detector"), tmp_path / "tiny.zip")
    assert cli.main(["models", "install", str(archive), "--sha256", sha256_of(archive)]) == 0
    assert "Intended use: Demo trained on synthetic data" in capsys.readouterr().out
    assert cli.main(["models", "list", "--json"]) == 0
    rows = json.loads(capsys.readouterr().out)
    assert any(r["name"] == "tiny-detector" and r["status"] == "installed" for r in rows)
    assert cli.main(["models", "install", str(archive), "--sha256", "0" * 64]) == 2
    assert "fails its sha256 check" in capsys.readouterr().err


def test_device_choice_reports_what_was_found():
    devices, _ = device.detect_devices()
    assert devices[0].torch_name == "cpu"
    assert device.resolve_device("cpu").torch_name == "cpu"
    import torch
    expected = "cuda:0" if torch.cuda.is_available() else ("mps" if torch.backends.mps.is_available() else "cpu")
    assert device.resolve_device("auto").torch_name == expected
    if expected == "cpu":
        with pytest.raises(ParameterError, match="no GPU"):
            device.resolve_device("gpu")
        assert "no GPU found" in device.describe_devices()
    with pytest.raises(ParameterError, match="--device"):
        device.resolve_device("tpu")
