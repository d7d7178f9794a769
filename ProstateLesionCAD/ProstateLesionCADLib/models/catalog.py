"""Model catalogue, downloads and installation of model packages into the per-user folder.

The catalogue (`Resources/ModelCatalog.json`, format "prostate-cad-model-catalog/1") lists
the packages a user can get besides the bundled demos: name, title, task, description,
intended use, training data and how to obtain it — `source` is "url" (with `url`,
`sha256` and `bytes` of the archive), or "command" (another `prostate-cad` command
fetches it, e.g. the authors' published checkpoints, verified file by file there).

`install_package(FILE|URL|NAME)` accepts a package folder, a .zip/.tar.gz archive of
one, an http(s) URL or a catalogue name. Downloads go to a per-user cache, resume from
there when the checksum matches, honour the standard HTTP(S)_PROXY variables (or an
explicit proxy) and show progress. The archive's sha256 is checked when known
(given by the caller or the catalogue), every weight file's sha256 from its model.json always,
and only a fully verified package is moved into place (never a half-installed one).

A package may come from anyone: a download shorter than its Content-Length, larger than an
archive may be, or not an archive at all (e.g. a web page sent with status 200) is refused
and never cached; archives are unpacked under the rules of `archives`; the package name
must be a single folder name, and only the folder of that exact name inside the models
folder is ever replaced (with `replace`).
"""

from __future__ import annotations

import hashlib
import http.client
import json
import os
import shutil
import tempfile
import urllib.parse
import urllib.request
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Optional

from ..errors import ModelError
from .archives import ARCHIVE_SUFFIXES, MAX_TOTAL_BYTES, copy_folder, unpack
from .package import ModelPackage, check_package_name, installed_packages, load_model_package, sha256_of
from ..progress import ProgressCallback, silent, sub_progress
from ..resources import bundled_models_dir, resources_dir, user_models_dir

CATALOG_FORMAT = "prostate-cad-model-catalog/1"
MAX_DOWNLOAD_BYTES = MAX_TOTAL_BYTES
# How the archive formats install accepts begin (zip, empty zip, gzip); a tar has "ustar" at 257.
_ARCHIVE_MAGIC = (b"PK\x03\x04", b"PK\x05\x06", b"\x1f\x8b")


@dataclass(frozen=True)
class CatalogEntry:
    name: str
    title: str
    task: str
    description: str
    source: str  # "url" | "command"
    intended_use: str = ""
    training_data: str = ""
    url: Optional[str] = None
    sha256: Optional[str] = None
    bytes: Optional[int] = None
    command: Optional[str] = None
    homepage: Optional[str] = None


def catalog_path() -> Path:
    return resources_dir() / "ModelCatalog.json"


def load_catalog(path: Optional[os.PathLike] = None) -> list[CatalogEntry]:
    """Read the catalogue; a malformed file is a ModelError naming the file."""
    path = Path(path) if path else catalog_path()
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        return []
    except json.JSONDecodeError as exc:
        raise ModelError(f"{path}: not valid JSON ({exc.msg} at line {exc.lineno}).") from None
    if not isinstance(data, dict) or data.get("format") != CATALOG_FORMAT:
        raise ModelError(f"{path}: unknown catalogue format; expected {CATALOG_FORMAT!r}.")
    fields = set(CatalogEntry.__dataclass_fields__)
    entries = []
    for i, item in enumerate(data.get("models", [])):
        try:
            entry = CatalogEntry(**{k: v for k, v in item.items() if k in fields})
        except TypeError as exc:
            raise ModelError(f"{path}: model #{i + 1} is incomplete ({exc}).") from None
        if entry.source == "url" and not (entry.url and entry.sha256):
            raise ModelError(f"{path}: model {entry.name!r} has source 'url' but no url/sha256.")
        entries.append(entry)
    return entries


def downloads_dir() -> Path:
    """Per-user cache of downloaded archives (beside the installed models)."""
    return user_models_dir().parent / "downloads"


def _is_url(text: str) -> bool:
    return urllib.parse.urlparse(text).scheme in ("http", "https")


def _archive_problem(head: bytes) -> Optional[str]:
    """Why a file starting with `head` is not a .zip/.tar(.gz) archive (a phrase), or None."""
    if head.startswith(_ARCHIVE_MAGIC) or head[257:262] == b"ustar":
        return None
    text = head.lstrip()[:64].lower()
    if text.startswith((b"<!doctype html", b"<html", b"<head", b"<body")) or b"<html" in head[:512].lower():
        return "is a web page (HTML), not an archive: the link may need a login or lead to a download page"
    return "is not a .zip or .tar.gz archive"


def fetch_url(url: str, target: Path, progress: Optional[ProgressCallback] = None, label: Optional[str] = None,
              expected_sha256: Optional[str] = None, expect_archive: bool = False, proxy: Optional[str] = None,
              timeout: float = 60.0) -> str:
    """Download `url` to `target` through a temporary file beside it and return its sha256.

    Nothing is left at `target` (and no older copy there is touched) when the server fails, the
    response is shorter than its Content-Length or larger than MAX_DOWNLOAD_BYTES, the sha256
    differs from `expected_sha256`, or (`expect_archive`) the content is not a .zip/.tar(.gz)."""
    progress = progress or silent
    label = label or target.name
    target.parent.mkdir(parents=True, exist_ok=True)
    handlers = [urllib.request.ProxyHandler({"http": proxy, "https": proxy})] if proxy else []
    opener = urllib.request.build_opener(*handlers)
    fd, tmp = tempfile.mkstemp(prefix=f".{target.name}.", dir=target.parent)
    digest = hashlib.sha256()
    head = b""
    try:
        with os.fdopen(fd, "wb") as out, opener.open(url, timeout=timeout) as response:
            total = int(response.headers.get("Content-Length") or 0)
            if total > MAX_DOWNLOAD_BYTES:
                raise ModelError(f"{url}: the server announces {total / 2**30:.1f} GB, more than the "
                                 f"{MAX_DOWNLOAD_BYTES / 2**30:.0f} GB a model download may be; nothing was kept.")
            done = 0
            while block := response.read(1 << 20):
                done += len(block)
                if done > MAX_DOWNLOAD_BYTES:
                    raise ModelError(f"{url}: the download exceeds {MAX_DOWNLOAD_BYTES / 2**30:.0f} GB, the most a "
                                     "model download may be; nothing was kept.")
                if len(head) < 512:
                    head += block[:512 - len(head)]
                out.write(block)
                digest.update(block)
                progress(done / total if total else 0.0,
                         f"downloading {label}: {done / 2**20:.1f}" + (f" of {total / 2**20:.1f} MB" if total else " MB"))
        if total and done != total:
            raise ModelError(f"{url}: the download ended after {done} of {total} bytes (the connection was cut); "
                             "nothing was kept, try again.")
        actual = digest.hexdigest()
        if expected_sha256 and actual != expected_sha256.lower():
            raise ModelError(f"{url}: the download fails its sha256 check (expected {expected_sha256}, got {actual}); "
                             "it was deleted.")
        problem = _archive_problem(head) if expect_archive else None
        if problem:
            raise ModelError(f"{url}: the download {problem}; nothing was kept.")
        os.replace(tmp, target)
    except (OSError, http.client.HTTPException) as exc:  # URLError and HTTPError are OSErrors
        raise ModelError(f"{url}: download failed ({getattr(exc, 'reason', None) or exc}).") from None
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)
    return actual


def download(url: str, expected_sha256: Optional[str] = None, progress: Optional[ProgressCallback] = None,
             cache_dir: Optional[os.PathLike] = None, proxy: Optional[str] = None, timeout: float = 60.0,
             expect_archive: bool = False) -> Path:
    """Download `url` into the cache (reusing a cached copy whose sha256 matches) and verify it
    (`fetch_url`: a cut, oversized or, with `expect_archive`, non-archive download is never cached)."""
    progress = progress or silent
    cache = Path(cache_dir) if cache_dir else downloads_dir()
    cache.mkdir(parents=True, exist_ok=True)
    name = Path(urllib.parse.urlparse(url).path).name or "download"
    key = (expected_sha256 or hashlib.sha256(url.encode()).hexdigest())[:16]
    target = cache / f"{key}-{name}"
    if target.is_file() and expected_sha256 and sha256_of(target) == expected_sha256.lower():
        progress(1.0, f"{name}: using the cached copy")
        return target
    fetch_url(url, target, progress, name, expected_sha256, expect_archive, proxy, timeout)
    progress(1.0, f"downloaded {name}")
    return target


def _package_root(folder: Path, source: str) -> Path:
    if (folder / "model.json").is_file():
        return folder
    found = sorted(folder.glob("*/model.json"))
    if len(found) != 1:
        raise ModelError(f"{source}: expected one model package (a folder with model.json), found {len(found)}.")
    return found[0].parent


def _move_into_place(root: Path, target_base: Path, name: str, stage: Path, replace: bool) -> Path:
    """Move the verified package `root` to target_base/name. Only that folder, and only with
    `replace`, is ever removed: it is moved into `stage` first and deleted with it."""
    check_package_name(name, str(root / "model.json"))
    target = target_base / name
    if target.is_symlink() or (target.exists() and not target.is_dir()):
        raise ModelError(f"{target} is a link or a file, not a model package folder; it was not touched.")
    if target.resolve().parent != target_base.resolve():
        raise ModelError(f"{target} does not lie directly in the models folder {target_base}; it was not touched.")
    if target.exists():
        if not replace:
            old = load_model_package(target, verify=False) if (target / "model.json").is_file() else None
            raise ModelError(f"Model '{name}' is already installed in {target}"
                             + (f" (version {old.version})" if old else "") + "; use --replace to overwrite it.")
        os.replace(target, stage / "replaced")
        try:
            os.replace(root, target)
        except OSError:
            os.replace(stage / "replaced", target)
            raise
    else:
        os.replace(root, target)
    return target


def install_package(source: str, sha256: Optional[str] = None, progress: Optional[ProgressCallback] = None,
                    models_dir: Optional[os.PathLike] = None, replace: bool = False, proxy: Optional[str] = None,
                    catalog: Optional[list[CatalogEntry]] = None) -> ModelPackage:
    """Install a package from a folder, an archive, a URL or a catalogue name; return it verified."""
    progress = progress or silent
    catalog = load_catalog() if catalog is None else catalog
    by_name = {e.name: e for e in catalog}
    if not _is_url(source) and not Path(source).exists() and source in by_name:
        entry = by_name[source]
        if entry.source != "url":
            raise ModelError(f"Model {source!r} is not downloaded by 'install'; get it with: {entry.command}.")
        source, sha256 = entry.url, sha256 or entry.sha256
    if _is_url(source):
        sha256 = sha256 or next((e.sha256 for e in catalog if e.url == source), None)
        path = download(source, sha256, sub_progress(progress, 0.0, 0.8), proxy=proxy, expect_archive=True)
    else:
        path = Path(source)
        if not path.exists():
            raise ModelError(f"{source}: no such file or folder (give a model package folder, a .zip/.tar.gz or a URL).")
        try:
            if sha256 and path.is_file() and sha256_of(path) != sha256.lower():
                raise ModelError(f"{source}: fails its sha256 check (expected {sha256}).")
        except OSError as exc:
            raise ModelError(f"{source}: cannot be read ({exc.strerror or exc}).") from None
    target_base = Path(models_dir) if models_dir else user_models_dir()
    try:
        target_base.mkdir(parents=True, exist_ok=True)
        stage = Path(tempfile.mkdtemp(prefix=".install-", dir=target_base))
    except OSError as exc:
        raise ModelError(f"{target_base}: cannot create the models folder ({exc.strerror or exc}).") from None
    try:
        if path.is_dir():
            copy_folder(path, stage / "package")
            root = stage / "package"
        elif path.name.lower().endswith(ARCHIVE_SUFFIXES):
            progress(0.8, f"unpacking {path.name}")
            (stage / "unpacked").mkdir()
            unpack(path, stage / "unpacked")
            root = _package_root(stage / "unpacked", source)
        else:
            raise ModelError(f"{source}: not a model package folder nor a .zip/.tar.gz archive.")
        progress(0.9, "verifying checksums")
        try:
            package = load_model_package(root, verify=True)
        except ModelError as exc:  # name the file as the user knows it, not its staging copy
            inner = root.relative_to(stage / ("package" if path.is_dir() else "unpacked")).as_posix()
            shown = source if inner == "." else f"{source.rstrip('/')}/{inner}"
            raise ModelError(str(exc).replace(str(root), shown)) from None
        try:
            target = _move_into_place(root, target_base, package.name, stage, replace)
        except OSError as exc:
            raise ModelError(f"{target_base}: cannot move the package '{package.name}' into place "
                             f"({exc.strerror or exc}); nothing was changed.") from None
    finally:
        shutil.rmtree(stage, ignore_errors=True)
    progress(1.0, f"installed {package.name} {package.version} in {target}")
    return load_model_package(target, verify=False)


def model_card_text(package: ModelPackage) -> str:
    """A short plain-text model card: what a user must know before trusting the output."""
    card = package.card
    lines = [f"{package.name} {package.version} ({package.task})",
             f"Intended use: {card.get('intended_use', 'not stated')}"]
    training = card.get("training_data")
    if training:
        lines.append("Training data: " + (training if isinstance(training, str) else json.dumps(training)))
    if card.get("licence") or card.get("license"):
        lines.append(f"Licence: {card.get('licence') or card.get('license')}")
    criteria = sorted((card.get("thresholds") or {}).keys())
    lines.append("Working points: " + (", ".join(criteria) if criteria else "none (no preset thresholds)"))
    return "\n".join(lines)


def list_rows(catalog: Optional[list[CatalogEntry]] = None) -> list[dict[str, Any]]:
    """Installed packages (bundled and per-user) and catalogue entries not yet installed."""
    rows = []
    bundled = bundled_models_dir().resolve()
    for pkg in installed_packages():
        where = "bundled" if pkg.root.resolve().is_relative_to(bundled) else "installed"
        rows.append({"name": pkg.name, "version": pkg.version, "task": pkg.task, "status": where,
                     "path": str(pkg.root)})
    names = {r["name"] for r in rows}
    for entry in (load_catalog() if catalog is None else catalog):
        if entry.name in names:
            continue
        how = f"prostate-cad models install {entry.name}" if entry.source == "url" else entry.command
        size = f", {entry.bytes / 2**20:.0f} MB" if entry.bytes else ""
        rows.append({"name": entry.name, "version": "", "task": entry.task, "status": "available",
                     "path": f"{how}{size}"})
    return rows

