"""Model packages from anyone, through the real command line (`prostate-cad models install`,
`detect`, `zones`): a name that is not a single folder name, files a loader would open that
are unlisted, outside the package (by '..', an absolute path or a link) or unverified,
pickles that are not plain weights, truncated weights, unsafe or damaged archives and
downloads cut short or answered by a web page. Each must end with exit status 2, one
sentence naming the file and the problem, no traceback, and every file outside the models
folder (and the models folder's earlier contents) untouched."""

from __future__ import annotations

import argparse
import gzip
import hashlib
import http.server
import io
import json
import os
import shutil
import stat
import struct
import subprocess
import sys
import tarfile
import threading
import zipfile
from pathlib import Path

import numpy as np
import pytest
import SimpleITK as sitk
import torch

from ProstateLesionCADLib import cli
from ProstateLesionCADLib.errors import ModelError
from ProstateLesionCADLib.models import archives, catalog
from ProstateLesionCADLib.models.package import (MODEL_FORMAT, ModelPackage, find_model, installed_packages,
                                                 load_model_package, loaded_files, sha256_of, write_model_card)
from ProstateLesionCADLib.progress import parse_progress_line
from ProstateLesionCADLib.resources import bundled_models_dir

DETECTOR, FOCALNET, CASCADE = "demo-retina-unet-phantoms", "focalnet-demo", "zones-demo-cascade"


# -- helpers ---------------------------------------------------------------------------------

def snapshot(root: Path) -> dict[str, str]:
    """Every file, link and folder under `root` with its content hash (or link target)."""
    found = {}
    for path in sorted(root.rglob("*")):
        key = path.relative_to(root).as_posix()
        if path.is_symlink():
            found[key] = "link:" + os.readlink(path)
        elif path.is_file():
            found[key] = hashlib.sha256(path.read_bytes()).hexdigest()
        else:
            found[key] = "dir"
    return found


def one_sentence(err: str, *needles: str) -> str:
    """The error sentence on stderr (progress lines before it are left aside)."""
    text = "\n".join(line for line in err.strip().splitlines() if not parse_progress_line(line))
    assert "Traceback" not in err and "weights_only" not in err, err
    assert "\n" not in text and text.startswith("error: ") and text.endswith("."), err
    for needle in needles:
        assert needle in text, (needle, text)
    return text


def run(capsys, *argv) -> tuple[int, str]:
    """`prostate-cad ARGV` in this process (any exception other than a user error fails the test)."""
    capsys.readouterr()
    code = cli.main([str(a) for a in argv])
    return code, capsys.readouterr().err


def run_process(*argv, models: Path) -> tuple[int, str]:
    """`prostate-cad ARGV` as its own process, as a user runs it."""
    env = dict(os.environ, PROSTATE_CAD_MODELS=str(models))
    done = subprocess.run([sys.executable, "-m", "ProstateLesionCADLib", *map(str, argv)], capture_output=True,
                          text=True, env=env, timeout=600)
    return done.returncode, done.stderr


def write_card(root: Path, card: dict) -> Path:
    """model.json exactly as given (no checks): what a hostile author can write."""
    root.mkdir(parents=True, exist_ok=True)
    (root / "model.json").write_text(json.dumps({"format": MODEL_FORMAT, **card}))
    return root


def tiny_package(root: Path, name="tiny", version="1", **extra) -> Path:
    root.mkdir(parents=True)
    (root / "weights.bin").write_bytes(bytes(range(256)) * 16)
    card = {"name": name, "version": version, "task": "detector", "intended_use": "test only",
            "files": [{"path": "weights.bin", "sha256": sha256_of(root / "weights.bin"), "bytes": 4096}], **extra}
    return write_card(root, card)


def copy_bundled(name: str, to: Path) -> tuple[Path, dict]:
    shutil.copytree(bundled_models_dir() / name, to)
    return to, json.loads((to / "model.json").read_text())


def single_network_focalnet(to: Path) -> tuple[Path, dict]:
    """The bundled FocalNet (one network per fold) cut down to its first fold's network, stored as
    `train focalnet` without --folds stores one: `focalnet.pt`, no ensemble (really trained weights)."""
    root, card = copy_bundled(FOCALNET, to)
    member = card.pop("ensemble")["members"][0]["file"]
    (root / member).rename(root / "focalnet.pt")
    shutil.rmtree(root / "members")
    write_model_card(root, card, ["focalnet.pt"])
    return root, json.loads((root / "model.json").read_text())


@pytest.fixture
def world(tmp_path, monkeypatch):
    """A user's home: a models folder holding one package, and folders a bad name could reach."""
    home = tmp_path / "home"
    models = home / "models"
    monkeypatch.setenv("PROSTATE_CAD_MODELS", str(models))
    catalog.install_package(str(tiny_package(tmp_path / "keep-src", name="keep-me")), catalog=[])
    (home / "victim").mkdir()
    (home / "victim" / "thesis.txt").write_text("years of work")
    (tmp_path / "x").mkdir()
    (tmp_path / "x" / "data.txt").write_text("other data")
    return argparse.Namespace(root=tmp_path, home=home, models=models)


@pytest.fixture
def t2_file(tmp_path):
    rng = np.random.default_rng(0)
    image = sitk.GetImageFromArray(rng.uniform(0, 500, (10, 48, 48)).astype(np.float32))
    image.SetSpacing((1.0, 1.0, 3.0))
    path = tmp_path / "t2.nrrd"
    sitk.WriteImage(image, str(path))
    return path


@pytest.fixture(scope="module")
def phantom_case(tmp_path_factory):
    from ProstateLesionCADLib.demo.detector_model import demo_phantom
    from ProstateLesionCADLib.phantoms.generate import write_phantom

    phantom = demo_phantom(9001, case_id="Untrusted-9001")
    return write_phantom(phantom, tmp_path_factory.mktemp("case") / phantom.case.case_id)


def detect_args(case: Path, model: Path, out: Path) -> list:
    return ["detect", case, "--model", model, "--out", out, "--device", "cpu", "--no-register",
            "--zones", case / "zones.nrrd", "--prostate", case / "prostate.nrrd"]


# -- package names -----------------------------------------------------------------------------

BAD_NAMES = ["../victim", "../../x", "ABSOLUTE", ".", "..", "", "   ", "a/b", "a\\b", "tab\tname", "x" * 101,
             ".hidden", "con", 5, None, ["list"]]


@pytest.mark.parametrize("name", BAD_NAMES, ids=[repr(n)[:20] for n in BAD_NAMES])
def test_package_name_must_be_one_folder_name(world, capsys, name):
    if name == "ABSOLUTE":
        name = str(world.root / "x")
    src = tiny_package(world.root / "src", name=name)
    before = snapshot(world.root)
    code, err = run(capsys, "models", "install", src, "--replace")
    assert code == 2
    one_sentence(err, str(src / "model.json"), "package name")
    assert snapshot(world.root) == before  # nothing written, moved or deleted anywhere
    # the same package found by its folder (e.g. detect --model FOLDER) is refused as well
    with pytest.raises(ModelError, match="package name"):
        find_model(str(src))


def test_bad_name_in_an_archive_names_the_archive(world, capsys):
    src = tiny_package(world.root / "src" / "pkg", name="../victim")
    archive = world.root / "evil.zip"
    with zipfile.ZipFile(archive, "w") as zf:
        for f in sorted(src.iterdir()):
            zf.write(f, f"pkg/{f.name}")
    before = snapshot(world.root)
    code, err = run_process("models", "install", archive, "--replace", models=world.models)
    assert code == 2
    one_sentence(err, f"{archive}/pkg/model.json", "'../victim'", "package name")
    assert snapshot(world.root) == before


def test_replace_touches_only_the_folder_of_that_exact_name(world, capsys):
    code, _ = run(capsys, "models", "install", tiny_package(world.root / "v1", version="1"))
    assert code == 0
    v2 = tiny_package(world.root / "v2", version="2")
    code, err = run(capsys, "models", "install", v2)
    assert code == 2
    one_sentence(err, "already installed", "version 1", "--replace")
    victim = snapshot(world.home / "victim")
    assert run(capsys, "models", "install", v2, "--replace")[0] == 0
    assert load_model_package(world.models / "tiny").version == "2"
    assert sorted(p.name for p in world.models.iterdir()) == ["keep-me", "tiny"]  # no staging folder left
    assert snapshot(world.home / "victim") == victim
    # the package's folder is a link elsewhere: neither the link nor what it points to is touched
    shutil.rmtree(world.models / "tiny")
    (world.models / "tiny").symlink_to(world.home / "victim", target_is_directory=True)
    before = snapshot(world.root)
    code, err = run(capsys, "models", "install", v2, "--replace")
    assert code == 2
    one_sentence(err, str(world.models / "tiny"), "is a link")
    assert snapshot(world.root) == before


# -- model.json: files and the files loaders open ------------------------------------------------

def _bad_files(tmp: Path) -> list:
    outside = tmp / "outside.bin"
    outside.write_bytes(b"secret")
    good = hashlib.sha256(bytes(range(256)) * 16).hexdigest()
    return [
        ("weights.bin", "'files' must be a list"),
        (["weights.bin"], "files[0] must be an object"),
        ([{"path": str(outside), "sha256": sha256_of(outside)}], "is an absolute path"),
        ([{"path": "../outside.bin", "sha256": sha256_of(outside)}], "leads out of its folder"),
        ([{"path": "C:/Windows/win.ini", "sha256": good}], "is an absolute path"),
        ([{"path": "a\\..\\..\\b", "sha256": good}], "contains '\\'"),
        ([{"path": 5, "sha256": good}], "is not text"),
        ([{"path": "weights.bin"}], "no valid sha256"),
        ([{"path": "weights.bin", "sha256": "abc"}], "no valid sha256"),
        ([{"path": "weights.bin", "sha256": good, "bytes": -1}], "'bytes'"),
        ([{"path": "weights.bin", "sha256": good, "bytes": "4096"}], "'bytes'"),
        ([{"path": "weights.bin", "sha256": good}] * 2, "twice"),
    ]


@pytest.mark.parametrize("case", range(12))
def test_malformed_files_entries(world, capsys, case):
    files, message = _bad_files(world.root)[case]
    src = tiny_package(world.root / "src")
    card = json.loads((src / "model.json").read_text())
    write_card(src, dict(card, files=files))
    before = snapshot(world.root)
    code, err = run(capsys, "models", "install", src)
    assert code == 2
    one_sentence(err, str(src / "model.json"), message)
    assert snapshot(world.root) == before


@pytest.mark.parametrize("content", [b"[1, 2]", b"\xff\xfe not utf-8", b'{"format": "prostate-cad-model/1"', b""])
def test_unreadable_model_json(world, capsys, content):
    src = tiny_package(world.root / "src")
    (src / "model.json").write_bytes(content)
    code, err = run(capsys, "models", "install", src)
    assert code == 2
    one_sentence(err, str(src / "model.json"))


def _member_outside(tmp: Path):
    root, card = copy_bundled(DETECTOR, tmp / "pkg")
    shutil.copyfile(root / card["ensemble"]["members"][0]["file"], tmp / "outside.pt")
    card["ensemble"]["members"][0]["file"] = "../outside.pt"
    return root, card, "ensemble.members[0].file '../outside.pt' leads out of its folder"


def _member_absolute(tmp: Path):
    root, card = copy_bundled(DETECTOR, tmp / "pkg")
    shutil.copyfile(root / card["ensemble"]["members"][0]["file"], tmp / "outside.pt")
    absolute = str(tmp / "outside.pt")
    card["ensemble"]["members"][0]["file"] = absolute
    card["files"][0] = dict(card["files"][0], path=absolute)  # listed too, with its true sha256
    return root, card, "is an absolute path"


def _member_unlisted(tmp: Path):
    root, card = copy_bundled(DETECTOR, tmp / "pkg")
    shutil.copyfile(root / card["ensemble"]["members"][0]["file"], root / "members" / "extra.pt")
    card["ensemble"]["members"][0]["file"] = "members/extra.pt"
    return root, card, "ensemble.members[0].file 'members/extra.pt' is not listed in 'files'"


def _cascade_outside(tmp: Path):
    root, card = copy_bundled(CASCADE, tmp / "pkg")
    shutil.copyfile(root / "cnn1.pt", tmp / "cnn1.pt")
    card["architecture"]["cnn1_weights"] = "../cnn1.pt"
    return root, card, "architecture.cnn1_weights '../cnn1.pt' leads out of its folder"


def _cascade_unlisted(tmp: Path):
    root, card = copy_bundled(CASCADE, tmp / "pkg")
    shutil.copyfile(root / "cnn2.pt", root / "spare.pt")
    card["architecture"]["cnn2_weights"] = "spare.pt"
    return root, card, "architecture.cnn2_weights 'spare.pt' is not listed"


def _cascade_default_unlisted(tmp: Path):
    root, card = copy_bundled(CASCADE, tmp / "pkg")
    del card["architecture"]["cnn1_weights"]
    card["files"] = [f for f in card["files"] if f["path"] != "cnn1.pt"]
    return root, card, "architecture.cnn1_weights 'cnn1.pt' is not listed"


def _focalnet_unlisted(tmp: Path):
    root, card = single_network_focalnet(tmp / "pkg")
    card["files"] = []
    return root, card, "the FocalNet weights 'focalnet.pt' is not listed"


def _focalnet_member_unlisted(tmp: Path):
    root, card = copy_bundled(FOCALNET, tmp / "pkg")
    card["files"] = [f for f in card["files"] if f["path"] != "members/fold2.pt"]
    return root, card, "ensemble.members[2].file 'members/fold2.pt' is not listed"


LOADER_CASES = {"member outside": (_member_outside, "detect"), "member absolute": (_member_absolute, "detect"),
                "member unlisted": (_member_unlisted, "detect"), "cascade outside": (_cascade_outside, "zones"),
                "cascade unlisted": (_cascade_unlisted, "zones"),
                "cascade default unlisted": (_cascade_default_unlisted, "zones"),
                "focalnet unlisted": (_focalnet_unlisted, "detect"),
                "focalnet member unlisted": (_focalnet_member_unlisted, "detect")}


@pytest.mark.parametrize("which", LOADER_CASES)
def test_files_a_loader_opens_must_be_listed_and_inside(world, capsys, t2_file, which):
    make, verb = LOADER_CASES[which]
    root, card, message = make(world.root)
    write_card(root, card)
    before = snapshot(world.root)
    code, err = run(capsys, "models", "install", root)
    assert code == 2
    one_sentence(err, str(root / "model.json"), message)
    if verb == "detect":  # the folder given to detect: refused before the case is even read
        code, err = run(capsys, "detect", world.root / "no-case", "--model", root, "--out", world.root / "out")
    else:
        code, err = run(capsys, "zones", t2_file, "--backend", "cascade", "--model", root, "--out",
                        world.root / "out")
    assert code == 2
    one_sentence(err, str(root / "model.json"), message)
    assert snapshot(world.root) == before


def test_a_loader_never_opens_an_unlisted_file_of_a_package_object(tmp_path):
    """Packages assembled in code (training, merging) go through the same gate."""
    from ProstateLesionCADLib.detection.retina_unet.ensemble import read_member

    root, card = copy_bundled(DETECTOR, tmp_path / "pkg")
    pkg = ModelPackage(root, card)
    shutil.copyfile(root / card["ensemble"]["members"][0]["file"], tmp_path / "outside.pt")
    for bad, message in (("../outside.pt", "leads out of"), (str(tmp_path / "outside.pt"), "absolute"),
                         ("model.json", "not listed")):
        with pytest.raises(ModelError, match=message):
            read_member(pkg, {"file": bad})
    assert read_member(pkg, card["ensemble"]["members"][0])  # listed and verified


def test_a_link_out_of_the_package_is_refused_even_with_the_right_sha256(world, capsys, t2_file):
    root, _ = copy_bundled(CASCADE, world.root / "pkg")
    shutil.move(root / "cnn1.pt", world.root / "cnn1.pt")
    (root / "cnn1.pt").symlink_to(world.root / "cnn1.pt")
    before = snapshot(world.root)
    code, err = run_process("zones", t2_file, "--backend", "cascade", "--model", root, "--out", world.root / "out",
                            models=world.models)
    assert code == 2
    one_sentence(err, "cnn1.pt leads outside the package")
    code, err = run(capsys, "models", "install", root)
    assert code == 2
    one_sentence(err, f"{root}: cnn1.pt is a link to {world.root / 'cnn1.pt'}")
    assert snapshot(world.root) == before


# -- weights: not plain tensors, truncated ------------------------------------------------------

def _rewrite(root: Path, name: str, data: bytes) -> None:
    """Replace one weight file and re-list every file with its new sha256 (a consistent package)."""
    (root / name).write_bytes(data)
    card = json.loads((root / "model.json").read_text())
    write_model_card(root, card, [f["path"] for f in card["files"]])


def _pickled_object() -> bytes:
    buffer = io.BytesIO()
    torch.save({"weight": torch.zeros(2), "extra": argparse.Namespace(run="anything")}, buffer)
    return buffer.getvalue()


def test_cascade_weights_not_plain_or_truncated(world, capsys, t2_file):
    root, _ = copy_bundled(CASCADE, world.root / "pkg")
    _rewrite(root, "cnn1.pt", _pickled_object())
    code, err = run_process("zones", t2_file, "--backend", "cascade", "--model", root, "--out", world.root / "o1",
                            models=world.models)
    assert code == 2
    one_sentence(err, "weight file cnn1.pt cannot be loaded: it holds Python objects besides tensors")
    root2, _ = copy_bundled(CASCADE, world.root / "pkg2")
    _rewrite(root2, "cnn2.pt", (root2 / "cnn2.pt").read_bytes()[:5000])
    code, err = run(capsys, "zones", t2_file, "--backend", "cascade", "--model", root2, "--out", world.root / "o2")
    assert code == 2
    one_sentence(err, "weight file cnn2.pt cannot be loaded", "truncated or corrupt")
    assert not (world.root / "o1").exists() and not (world.root / "o2").exists()


def test_detector_and_focalnet_weights_not_plain_or_truncated(world, capsys, phantom_case):
    det, card = copy_bundled(DETECTOR, world.root / "det")
    member = card["ensemble"]["members"][3]["file"]
    _rewrite(det, member, (det / member).read_bytes()[:-4000])
    code, err = run(capsys, *detect_args(phantom_case, det, world.root / "o1"))
    assert code == 2
    one_sentence(err, f"weight file {member} cannot be loaded", "truncated or corrupt")
    det2, card2 = copy_bundled(DETECTOR, world.root / "det2")
    _rewrite(det2, card2["ensemble"]["members"][0]["file"], _pickled_object())
    code, err = run(capsys, *detect_args(phantom_case, det2, world.root / "o2"))
    assert code == 2
    one_sentence(err, "holds Python objects besides tensors")
    buffer = io.BytesIO()
    torch.save({"weights": torch.zeros(3)}, buffer)  # plain tensors, but not this network's
    _rewrite(det2, card2["ensemble"]["members"][0]["file"], buffer.getvalue())
    code, err = run(capsys, *detect_args(phantom_case, det2, world.root / "o2"))
    assert code == 2
    one_sentence(err, "does not fit the network of its model.json")
    foc, _ = single_network_focalnet(world.root / "foc")
    _rewrite(foc, "focalnet.pt", _pickled_object())
    code, err = run(capsys, *detect_args(phantom_case, foc, world.root / "o3"))
    assert code == 2
    one_sentence(err, "focalnet.pt cannot be loaded: it holds Python objects besides tensors")
    foc2, _ = single_network_focalnet(world.root / "foc2")
    _rewrite(foc2, "focalnet.pt", (foc2 / "focalnet.pt").read_bytes()[:3000])
    code, err = run(capsys, *detect_args(phantom_case, foc2, world.root / "o4"))
    assert code == 2
    one_sentence(err, "focalnet.pt cannot be loaded", "truncated or corrupt")
    buffer = io.BytesIO()
    torch.save({"weights": torch.zeros(3)}, buffer)  # plain tensors, but not a FocalNet
    _rewrite(foc2, "focalnet.pt", buffer.getvalue())
    code, err = run(capsys, *detect_args(phantom_case, foc2, world.root / "o5"))
    assert code == 2
    one_sentence(err, "focalnet.pt cannot be loaded", "no FocalNet config")
    # a package trained with --folds: each fold network is checked the same way
    foc3, card3 = copy_bundled(FOCALNET, world.root / "foc3")
    member = card3["ensemble"]["members"][3]["file"]
    weights = (foc3 / member).read_bytes()
    _rewrite(foc3, member, _pickled_object())
    code, err = run(capsys, *detect_args(phantom_case, foc3, world.root / "o6"))
    assert code == 2
    one_sentence(err, f"{member} cannot be loaded: it holds Python objects besides tensors")
    _rewrite(foc3, member, weights[:3000])
    code, err = run(capsys, *detect_args(phantom_case, foc3, world.root / "o7"))
    assert code == 2
    one_sentence(err, f"{member} cannot be loaded", "truncated or corrupt")
    assert not any((world.root / f"o{i}").exists() for i in range(1, 8))


def test_a_file_changed_after_listing_is_caught_by_size_and_sha256(tmp_path):
    root, card = copy_bundled(CASCADE, tmp_path / "pkg")
    (root / "cnn2.pt").write_bytes((root / "cnn2.pt").read_bytes()[:100])
    with pytest.raises(ModelError, match=r"cnn2.pt fails its sha256 check: it has 100 bytes"):
        load_model_package(root)


# -- archives -----------------------------------------------------------------------------------

def _zip_of(entries: list[tuple], path: Path) -> Path:
    """entries: (name, data) or (ZipInfo, data)."""
    with zipfile.ZipFile(path, "w") as zf:
        for name, data in entries:
            zf.writestr(name, data)
    return path


def _tar_of(members: list[tuple[tarfile.TarInfo, bytes]], path: Path, mode="w:gz") -> Path:
    with tarfile.open(path, mode) as tf:
        for info, data in members:
            info.size = len(data) if info.isreg() else 0
            tf.addfile(info, io.BytesIO(data) if info.isreg() else None)
    return path


def _tinfo(name: str, kind=tarfile.REGTYPE, link="") -> tarfile.TarInfo:
    info = tarfile.TarInfo(name)
    info.type, info.linkname, info.mode = kind, link, 0o644
    return info


def _forge_zip_sizes(path: Path, size: int) -> Path:
    """Let every member of a stored zip claim `size` bytes in the central directory."""
    data = bytearray(path.read_bytes())
    at = data.find(b"PK\x01\x02")
    while at >= 0:
        data[at + 24:at + 28] = struct.pack("<I", size)
        at = data.find(b"PK\x01\x02", at + 4)
    path.write_bytes(bytes(data))
    return path


def _symlink_zip(path: Path) -> Path:
    info = zipfile.ZipInfo("pkg/weights.bin")
    info.external_attr = (stat.S_IFLNK | 0o777) << 16
    with zipfile.ZipFile(path, "w") as zf:
        zf.writestr("pkg/model.json", "{}")
        zf.writestr(info, "/etc/passwd")
    return path


def _forged_tar_size(path: Path) -> Path:
    """A tar.gz whose one member's header claims 3 GB (the data is not there)."""
    info = _tinfo("pkg/weights.bin")
    info.size = 3 * 2**30
    path.write_bytes(gzip.compress(info.tobuf(tarfile.GNU_FORMAT) + bytes(1024)))
    return path


def _file(path: Path, data: bytes) -> Path:
    path.write_bytes(data)
    return path


def _cut(path: Path) -> Path:
    data = path.read_bytes()
    path.write_bytes(data[:len(data) // 2])
    return path


def _package_zip(tmp: Path, path: Path) -> Path:
    src = tiny_package(tmp / "zsrc" / "pkg")
    return _zip_of([(f"pkg/{f.name}", f.read_bytes()) for f in sorted(src.iterdir())], path)


def _package_tgz(tmp: Path, path: Path) -> Path:
    src = tiny_package(tmp / "tsrc" / "pkg")
    with tarfile.open(path, "w:gz") as tf:
        tf.add(src, arcname="pkg")
    return path


ARCHIVES = {
    "zip ../": (lambda t, p: _zip_of([("../../escaped.txt", "x")], p), "unsafe path '../../escaped.txt'"),
    "zip absolute": (lambda t, p: _zip_of([("/tmp/abs.txt", "x")], p), "unsafe path '/tmp/abs.txt'"),
    "zip drive": (lambda t, p: _zip_of([("C:/x.txt", "x")], p), "is an absolute path"),
    "zip backslash": (lambda t, p: _zip_of([("pkg\\..\\..\\x.txt", "x")], p), "contains '\\'"),
    "zip symlink": (lambda t, p: _symlink_zip(p), "'pkg/weights.bin' is a symbolic link"),
    "zip too many": (lambda t, p: _zip_of([(f"pkg/f{i}", "") for i in range(archives.MAX_MEMBERS + 1)], p),
                     f"holds more than {archives.MAX_MEMBERS} members"),
    "zip big file": (lambda t, p: _forge_zip_sizes(_zip_of([("pkg/w.bin", "x")], p), 3 * 2**30),
                     "pkg/w.bin unpacks to 3 GB, more than the 2 GB allowed per file"),
    "zip big total": (lambda t, p: _forge_zip_sizes(_zip_of([(f"pkg/w{i}.bin", "x") for i in range(3)], p),
                                                    2**31 - 2**20), "unpacks to more than 4 GB"),
    "zip truncated": (lambda t, p: _cut(_package_zip(t, p)), "not a readable .zip archive"),
    "zip not an archive": (lambda t, p: _file(p, b"<html>sorry</html>"), "not a readable .zip archive"),
    "zip empty file": (lambda t, p: _file(p, b""), "not a readable .zip archive"),
    "tar ../": (lambda t, p: _tar_of([(_tinfo("../escaped.txt"), b"x")], p), "unsafe path '../escaped.txt'"),
    "tar absolute": (lambda t, p: _tar_of([(_tinfo("/tmp/abs.txt"), b"x")], p), "unsafe path '/tmp/abs.txt'"),
    "tar symlink": (lambda t, p: _tar_of([(_tinfo("pkg/w.bin", tarfile.SYMTYPE, "/etc/passwd"), b"")], p),
                    "'pkg/w.bin' is a symbolic link"),
    "tar hardlink": (lambda t, p: _tar_of([(_tinfo("pkg/w.bin", tarfile.LNKTYPE, "/etc/passwd"), b"")], p),
                     "'pkg/w.bin' is a hard link"),
    "tar device": (lambda t, p: _tar_of([(_tinfo("pkg/dev", tarfile.CHRTYPE), b"")], p), "is a device"),
    "tar fifo": (lambda t, p: _tar_of([(_tinfo("pkg/fifo", tarfile.FIFOTYPE), b"")], p), "is a device, pipe"),
    "tar big file": (lambda t, p: _forged_tar_size(p), "pkg/weights.bin unpacks to 3 GB"),
    "tar truncated": (lambda t, p: _cut(_package_tgz(t, p)), "not a readable .tar/.tar.gz archive"),
    "tar not an archive": (lambda t, p: _file(p, b"just text"), "not a readable .tar/.tar.gz archive"),
}


@pytest.mark.parametrize("which", ARCHIVES)
def test_unsafe_or_damaged_archives(world, capsys, which):
    make, message = ARCHIVES[which]
    archive = make(world.root, world.root / ("evil.zip" if which.startswith("zip") else "evil.tar.gz"))
    before = snapshot(world.root)
    code, err = run(capsys, "models", "install", archive)
    assert code == 2
    one_sentence(err, str(archive), message)
    assert snapshot(world.root) == before
    assert not (world.root / "escaped.txt").exists() and not Path("/tmp/abs.txt").exists()


def test_archives_as_archivers_write_them_install(world, capsys):
    """'./' prefixes, folder entries, the bundled packages: all install and verify."""
    det = bundled_models_dir() / DETECTOR
    tgz = world.root / "det.tar.gz"
    with tarfile.open(tgz, "w:gz") as tf:
        tf.add(det, arcname=".")  # ./model.json, ./members/...
    assert run(capsys, "models", "install", tgz)[0] == 0
    zipped = world.root / "cascade.zip"
    with zipfile.ZipFile(zipped, "w", zipfile.ZIP_DEFLATED) as zf:
        for path in sorted((bundled_models_dir() / CASCADE).rglob("*")):
            zf.write(path, f"{CASCADE}/{path.relative_to(bundled_models_dir() / CASCADE)}")
        zf.writestr(f"{CASCADE}/notes/", "")
    assert run(capsys, "models", "install", zipped)[0] == 0
    assert run(capsys, "models", "install", bundled_models_dir() / FOCALNET)[0] == 0
    for name in (DETECTOR, CASCADE, FOCALNET):
        assert snapshot(world.models / name).items() >= {
            k: v for k, v in snapshot(bundled_models_dir() / name).items() if v != "dir"}.items()
        load_model_package(world.models / name, verify=True)


# -- downloads ----------------------------------------------------------------------------------

@pytest.fixture
def server(tmp_path):
    """127.0.0.1 server: /pkg.zip a real package; /short.zip and /huge.zip announce more bytes than
    they send; /page.zip a web page with status 200."""
    package = _package_zip(tmp_path / "served", tmp_path / "pkg.zip")
    body = package.read_bytes()
    routes = {"/pkg.zip": (body, len(body), "application/zip"),
              "/short.zip": (body[:len(body) // 2], len(body), "application/zip"),
              "/huge.zip": (body, 5 * 2**30, "application/zip"),
              "/page.zip": (b"<!DOCTYPE html>\n<html><body>Please sign in</body></html>", None, "text/html")}

    class Handler(http.server.BaseHTTPRequestHandler):
        def log_message(self, *args):
            pass

        def do_GET(self):
            if self.path not in routes:
                self.send_error(404)
                return
            data, length, kind = routes[self.path]
            self.send_response(200)
            self.send_header("Content-Type", kind)
            self.send_header("Content-Length", str(len(data) if length is None else length))
            self.end_headers()
            self.wfile.write(data)

    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=httpd.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{httpd.server_address[1]}", sha256_of(package)
    httpd.shutdown()
    httpd.server_close()


@pytest.mark.parametrize("route, message", [
    ("/short.zip", "the download ended after"),
    ("/huge.zip", "the server announces 5.0 GB"),
    ("/page.zip", "is a web page (HTML), not an archive"),
])
def test_downloads_cut_short_or_not_an_archive_are_not_kept(world, capsys, server, route, message):
    base, _ = server
    before = snapshot(world.root)
    code, err = run(capsys, "models", "install", base + route)
    assert code == 2
    one_sentence(err, base + route, message)
    after = snapshot(world.root)
    assert {k: v for k, v in after.items() if k != "home/downloads"} == before  # at most an empty cache folder
    assert not list(catalog.downloads_dir().glob("*")) if catalog.downloads_dir().exists() else True
    assert run(capsys, "models", "install", base + "/pkg.zip")[0] == 0  # the server itself works


def test_fetch_published_refuses_a_cut_download(tmp_path, server):
    from ProstateLesionCADLib.detection.retina_unet.published import RemoteFile, download_verified, git_blob_id

    base, _ = server
    (tmp_path / "pkg-copy.zip").write_bytes((tmp_path / "pkg.zip").read_bytes())
    remote = RemoteFile("short.zip", git_blob_id(tmp_path / "pkg-copy.zip"))
    with pytest.raises(ModelError, match="the download ended after"):
        download_verified(remote, base, tmp_path / "cache")
    assert not (tmp_path / "cache" / "short.zip").exists() and not list((tmp_path / "cache").glob(".*"))


# -- the bundled packages ---------------------------------------------------------------------

def test_bundled_packages_open_exactly_the_files_they_list(monkeypatch, capsys):
    """loaded_files (checked at install and load) names what the loaders really open."""
    from ProstateLesionCADLib.detection.focalnet.inference import FocalNetModel
    from ProstateLesionCADLib.detection.retina_unet.ensemble import members, read_member
    from ProstateLesionCADLib.zones.cascade import load_cascade

    opened: list[tuple[str, str]] = []
    original = ModelPackage.file
    monkeypatch.setattr(ModelPackage, "file", lambda self, rel: opened.append((self.name, rel)) or original(self, rel))
    load_cascade(CASCADE, device="cpu")
    FocalNetModel.from_package(find_model(FOCALNET))
    det = find_model(DETECTOR)
    for member in members(det):
        read_member(det, member)
    bundled = [p for p in installed_packages() if p.root.parent == bundled_models_dir()]
    assert sorted(p.name for p in bundled) == sorted((CASCADE, DETECTOR, FOCALNET))
    for pkg in bundled:
        expected = {path for _, path in loaded_files(pkg.card, "x")}
        assert {rel for name, rel in opened if name == pkg.name} == expected
        assert expected <= {f["path"] for f in pkg.card["files"]}
    assert cli.main(["models", "list", "--json"]) == 0
    rows = {r["name"]: r["status"] for r in json.loads(capsys.readouterr().out)}
    assert all(rows[name] == "bundled" for name in (CASCADE, DETECTOR, FOCALNET))


def test_writers_refuse_a_card_that_install_would_refuse(tmp_path):
    (tmp_path / "w.pt").write_bytes(b"x")
    with pytest.raises(ModelError, match="package name"):
        write_model_card(tmp_path, {"name": "a/b", "version": "1", "task": "zones", "intended_use": "t",
                                    "architecture": {"cnn1_weights": "w.pt", "cnn2_weights": "w.pt"}}, ["w.pt"])
    with pytest.raises(ModelError, match="not listed"):
        write_model_card(tmp_path, {"name": "ok", "version": "1", "task": "detector", "intended_use": "t",
                                    "ensemble": {"members": [{"file": "other.pt"}]}}, ["w.pt"])
    assert not (tmp_path / "model.json").exists()
