"""The authors' published ProstateX Retina U-Net: download, verify, import.

`fetch_published()` downloads the 25 `params.pth` checkpoints (5 folds x top-5 epochs,
MDT_ProstateX/experiments/exp0/fold_*/*_best_checkpoint/params.pth) from the authors' GitHub repository as raw files, verifies each one
against its git blob id (SHA-1 of b"blob <size>\\0" + content), keeps verified files in a
per-user cache (a cached file that still verifies is not downloaded again) and converts
them with `mdt_import.import_mdt`, ranked by PUBLISHED_RANKING. If the repository serves a
Git LFS pointer instead of the content, the pointer is verified by its blob id and the
content is then fetched from the LFS media URL and verified by the pointer's sha256.

The base URL is configurable (tests serve files from 127.0.0.1). Light imports only (torch
comes with mdt_import, inside `fetch_published`): the command line reads DEFAULT_BASE_URL
from here to build its argument parser.
"""

from __future__ import annotations

import hashlib
import os
import re
import urllib.parse
import urllib.request
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Optional

from ...errors import ModelError
from ...models.catalog import fetch_url
from ...progress import silent, sub_progress
from ...resources import user_models_dir

REPOSITORY = "OscarPellicer/prostate_lesion_detection"
COMMIT = "51bd300b45391d7bd1731b7f38a1d4ab3e21829c"
EXPERIMENT = "MDT_ProstateX/experiments/exp0"
DEFAULT_BASE_URL = f"https://raw.githubusercontent.com/{REPOSITORY}/{COMMIT}/"
DEFAULT_LFS_BASE_URL = f"https://media.githubusercontent.com/media/{REPOSITORY}/{COMMIT}/"

# (fold, rank in fold, epoch, git blob id of params.pth), read from the repository at COMMIT.
PUBLISHED_CHECKPOINTS: list[tuple[int, int, int, str]] = [
    (0, 0, 36, "f78bc4abfeb13a6f6f25d35efe8ec51d2c53b62d"),
    (0, 1, 59, "a86b8ecb12b10adaec85a28b032b11bcedf30d07"),
    (0, 2, 31, "fbb27869a70e7a3eac0db3cb39bfb0962c4bca56"),
    (0, 3, 26, "c200a5a8fa0f9826c964083b86b7a0d071d1e568"),
    (0, 4, 33, "533103ed3addee52f542fb9b60d912a0cc149bed"),
    (1, 0, 79, "f2b69c1823f5ee58d6a2d906bd4b3abf8829769e"),
    (1, 1, 51, "83cbe39cd2f2965ae1caa9f2145125f23319e9af"),
    (1, 2, 26, "3b9dc78a13b12412cecfde1dc67128963d7dc9ae"),
    (1, 3, 96, "981073a327073d675d6141910b5ca045ec1c2dca"),
    (1, 4, 28, "9d9638824ccdeb10815d7d8b6aa8bb6a202eb1c5"),
    (2, 0, 20, "c72e30be0079ac8c6fcaf3ce40d77297573c43e0"),
    (2, 1, 38, "c71db2e10ea882f076ab069cf54dce7aa0764662"),
    (2, 2, 77, "778cf5a0d4fca7b10ce77b9b5122855513f3a0b0"),
    (2, 3, 110, "ee9237a6da5bd907bc3e7ab8a95b1c3dbbb28aed"),
    (2, 4, 36, "f5f960ce90972e0dbc4992073cd904cf888cfd53"),
    (3, 0, 31, "ca389eb31da6f30680c884d6f510f239273c6d4f"),
    (3, 1, 32, "f9b7107db216d00c690ad2fa2c68ef80dcd77de2"),
    (3, 2, 61, "9ab3eae19463846ad84a6445f59f66ebf9a9e281"),
    (3, 3, 29, "ac1e4c41c90c9040a8175625505328e0bdf8d0ce"),
    (3, 4, 86, "6f29db751e76b84052258c3d097109ff3a1f5e9e"),
    (4, 0, 48, "5e75256b977e2547e1159e2acd40c3912d0ecae6"),
    (4, 1, 39, "fdc8b70d2c9763f3e5c7883104113654813bd712"),
    (4, 2, 35, "fc0349bdd720d2e37f3ba205e040046f859ae1ff"),
    (4, 3, 31, "c6c16098977f643ff95147a66b7ac2c39913e166"),
    (4, 4, 52, "1a38e57f72c25bd970d6962bd261adeef3e22b26"),
]
# fold -> its published epochs, best first (the order find_checkpoints gives them without an epoch_ranking.npy)
PUBLISHED_RANKING: dict[int, list[int]] = {
    f: [e for (ff, _, e, _) in sorted(PUBLISHED_CHECKPOINTS) if ff == f] for f in range(5)}


@dataclass(frozen=True)
class RemoteFile:
    path: str  # path inside the repository
    blob_id: str


def published_files() -> list[RemoteFile]:
    return [RemoteFile(f"{EXPERIMENT}/fold_{f}/{e}_best_checkpoint/params.pth", blob)
            for f, _, e, blob in PUBLISHED_CHECKPOINTS]


def git_blob_id(path: str | os.PathLike) -> str:
    """SHA-1 of b"blob <size>\\0" + content, the id git gives a file."""
    size = os.path.getsize(path)
    digest = hashlib.sha1(f"blob {size}\0".encode())
    with open(path, "rb") as handle:
        while block := handle.read(1 << 20):
            digest.update(block)
    return digest.hexdigest()


def default_cache_dir() -> Path:
    """Per-user download cache, beside the per-user model folder."""
    return user_models_dir().parent / "downloads" / "pellicer2022-exp0"


def _fetch(url: str, target: Path, progress: Callable[[float, str], None], label: str, timeout: float) -> None:
    """Download to `target`; a failed, cut short or oversized download leaves nothing there."""
    fetch_url(url, target, progress, label, timeout=timeout)


_LFS = re.compile(rb"^version https://git-lfs.github.com/spec/v1\s+oid sha256:([0-9a-f]{64})\s+size (\d+)\s*$")


def download_verified(remote: RemoteFile, base_url: str, cache: Path, lfs_base_url: Optional[str] = None,
                      progress: Optional[Callable[[float, str], None]] = None, timeout: float = 120.0) -> Path:
    """Download one repository file into `cache` (same relative path) and verify its blob id.

    A file that fails verification is deleted and raises ModelError naming it.
    """
    progress = progress or silent
    target = cache / remote.path
    label = remote.path.split(f"{EXPERIMENT}/")[-1]
    if target.is_file() and git_blob_id(target) == remote.blob_id:
        progress(1.0, f"{label}: verified copy in the cache")
        return target
    url = urllib.parse.urljoin(base_url if base_url.endswith("/") else base_url + "/", remote.path)
    _fetch(url, target, progress, label, timeout)
    actual = git_blob_id(target)
    if actual != remote.blob_id:
        target.unlink()
        raise ModelError(f"{url}: the downloaded file fails its git blob check (expected {remote.blob_id}, "
                         f"got {actual}); it is corrupt or was changed, and was deleted.")
    head = target.read_bytes()[:300] if target.stat().st_size < 300 else b""
    lfs = _LFS.match(head) if head else None
    if lfs:  # the repository stores the checkpoint with Git LFS: fetch the content it points to
        sha256, size = lfs.group(1).decode(), int(lfs.group(2))
        media = urllib.parse.urljoin(lfs_base_url or DEFAULT_LFS_BASE_URL, remote.path)
        _fetch(media, target, progress, label, timeout)
        digest = hashlib.sha256(target.read_bytes()).hexdigest()
        if digest != sha256 or target.stat().st_size != size:
            target.unlink()
            raise ModelError(f"{media}: the Git LFS content fails its sha256 check (expected {sha256}, got {digest}); "
                             "it was deleted.")
    progress(1.0, f"{label}: verified")
    return target


def fetch_published(out: Optional[str | os.PathLike] = None, base_url: str = DEFAULT_BASE_URL,
                    cache_dir: Optional[str | os.PathLike] = None, files: Optional[list[RemoteFile]] = None,
                    config: Optional[dict[str, Any]] = None, lfs_base_url: Optional[str] = None,
                    progress: Optional[Callable[[float, str], None]] = None):
    """Download + verify every checkpoint, then import them as a model package at `out`.

    `files` and `config` default to the 25 published exp0 checkpoints and network; tests
    pass their own. Nothing is written to `out` unless every file verified and converted.
    """
    from .mdt_import import PUBLISHED_PACKAGE_NAME, import_mdt

    progress = progress or silent
    cache = Path(cache_dir) if cache_dir else default_cache_dir()
    files = files if files is not None else published_files()
    for i, remote in enumerate(files):
        download_verified(remote, base_url, cache, lfs_base_url,
                          sub_progress(progress, 0.8 * i / len(files), 0.8 * (i + 1) / len(files)))
    out = Path(out) if out else user_models_dir() / PUBLISHED_PACKAGE_NAME
    return import_mdt(cache / EXPERIMENT, out, config=config, ranking=PUBLISHED_RANKING,
                      progress=sub_progress(progress, 0.8, 1.0))

