"""Unpack or copy a model package that may come from anyone (.zip, .tar, .tar.gz/.tgz, a folder).

Every member is checked before anything is written: only regular files and folders (no
symbolic or hard links, devices or pipes), a relative path that stays inside the target,
at most MAX_MEMBERS members, MAX_FILE_BYTES per file and MAX_TOTAL_BYTES in all (the
paper's ensemble of 25 Retina U-Net checkpoints is about 0.6 GB). A truncated, damaged or
non-archive file, or a member breaking a rule, is a ModelError naming the archive.
"""

from __future__ import annotations

import lzma
import os
import shutil
import stat
import tarfile
import zipfile
import zlib
from pathlib import Path
from typing import IO, Callable, Iterator, Optional

from ..errors import ModelError
from .package import relative_path_problem

MAX_MEMBERS = 1000
MAX_FILE_BYTES = 2 * 2**30
MAX_TOTAL_BYTES = 4 * 2**30
ARCHIVE_SUFFIXES = (".zip", ".tar.gz", ".tgz", ".tar")
# Errors the zip/tar readers raise for a truncated, damaged or foreign file.
_READ_ERRORS = (zipfile.BadZipFile, zipfile.LargeZipFile, tarfile.TarError, EOFError, zlib.error, lzma.LZMAError,
                RuntimeError, NotImplementedError, ValueError)


def _gb(n: int) -> str:
    return f"{n / 2**30:.3g} GB" if n >= 2**30 else f"{n / 2**20:.3g} MB"


def limits_text() -> str:
    return (f"at most {MAX_MEMBERS} members, {_gb(MAX_FILE_BYTES)} per file and {_gb(MAX_TOTAL_BYTES)} in all")


def member_path(source: Path | str, name: str) -> Optional[str]:
    """The '/'-separated path a member unpacks to ('./' prefixes and a folder's trailing '/'
    dropped), None for the archive's own top folder; ModelError when it would leave the target."""
    parts = name.split("/")
    while len(parts) > 1 and parts[0] == ".":
        parts.pop(0)
    if parts and parts[-1] == "" and len(parts) > 1:
        parts.pop()
    if parts in ([], ["."]):
        return None
    relative = "/".join(parts)
    problem = relative_path_problem(relative)
    if problem:
        raise ModelError(f"{source}: unsafe path {name!r} in the archive: it {problem}; every member must stay "
                         "inside the package folder.")
    return relative


class _Budget:
    """Counts members and bytes against the limits, naming the archive when one is passed."""

    def __init__(self, source: Path | str):
        self.source, self.members, self.total = source, 0, 0
        self.seen: set[str] = set()

    def add(self, relative: str, size: int) -> None:
        self.members += 1
        if self.members > MAX_MEMBERS:
            raise ModelError(f"{self.source}: holds more than {MAX_MEMBERS} members; a model package has "
                             f"{limits_text()}.")
        if relative in self.seen:
            raise ModelError(f"{self.source}: holds {relative} twice.")
        self.seen.add(relative)
        if size > MAX_FILE_BYTES:
            raise ModelError(f"{self.source}: {relative} unpacks to {_gb(size)}, more than the {_gb(MAX_FILE_BYTES)} "
                             "allowed per file of a model package.")
        self.total += size
        if self.total > MAX_TOTAL_BYTES:
            raise ModelError(f"{self.source}: unpacks to more than {_gb(MAX_TOTAL_BYTES)}, the most a model package "
                             "may hold.")


def _refuse_kind(source: Path | str, name: str, kind: str) -> None:
    raise ModelError(f"{source}: member {name!r} is {kind}; a model package may hold only files and folders.")


def _zip_members(archive: Path, zf: zipfile.ZipFile) -> Iterator[tuple[zipfile.ZipInfo, Optional[str]]]:
    budget = _Budget(archive)
    for info in zf.infolist():
        kind = stat.S_IFMT(info.external_attr >> 16)  # 0 when the archiver stored no Unix file type
        if kind == stat.S_IFLNK:
            _refuse_kind(archive, info.filename, "a symbolic link")
        if kind not in (0, stat.S_IFREG, stat.S_IFDIR):
            _refuse_kind(archive, info.filename, "a device, pipe or socket")
        if info.flag_bits & 0x1:
            raise ModelError(f"{archive}: member {info.filename!r} is encrypted; model packages are not.")
        relative = member_path(archive, info.filename)
        if relative is not None:
            budget.add(relative, 0 if info.is_dir() else info.file_size)
        yield info, relative


def _tar_members(archive: Path, tf: tarfile.TarFile) -> Iterator[tuple[tarfile.TarInfo, Optional[str]]]:
    budget = _Budget(archive)
    while (info := tf.next()) is not None:  # header by header: a huge member is refused before it is read
        if info.issym() or info.islnk():
            _refuse_kind(archive, info.name, "a symbolic link" if info.issym() else "a hard link")
        if not (info.isreg() or info.isdir()):
            _refuse_kind(archive, info.name, "a device, pipe or socket")
        relative = member_path(archive, info.name)
        if relative is not None:
            budget.add(relative, info.size if info.isreg() else 0)
        yield info, relative


def _write(archive: Path, into: Path, relative: str, source: Callable[[], IO[bytes]], size: int) -> None:
    """Copy one member; a read error reaches `unpack` (a damaged archive), a write error is named here."""
    target = into / relative
    try:
        target.parent.mkdir(parents=True, exist_ok=True)
        out = open(target, "xb")
    except OSError as exc:
        raise ModelError(f"{archive}: cannot unpack {relative} into {into} ({exc.strerror or exc}).") from None
    with out, source() as src:
        written = 0
        while block := src.read(1 << 20):
            written += len(block)
            if written > size:  # the readers stop at the declared size; never write past it
                raise ModelError(f"{archive}: {relative} holds more data than its header declares.")
            try:
                out.write(block)
            except OSError as exc:
                raise ModelError(f"{archive}: cannot unpack {relative} into {into} "
                                 f"({exc.strerror or exc}).") from None


def _mkdir(archive: Path, into: Path, relative: str) -> None:
    try:
        (into / relative).mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise ModelError(f"{archive}: cannot unpack the folder {relative} into {into} ({exc.strerror or exc}).") from None


def unpack(archive: str | os.PathLike, into: str | os.PathLike) -> None:
    """Unpack a .zip or .tar(.gz) into the empty folder `into`, member by member after its checks."""
    archive, into = Path(archive), Path(into)
    is_zip = archive.name.lower().endswith(".zip")
    kind = ".zip" if is_zip else ".tar/.tar.gz"
    try:
        if is_zip:
            with zipfile.ZipFile(archive) as zf:
                for info, relative in list(_zip_members(archive, zf)):
                    if relative is None or info.is_dir():
                        if relative:
                            _mkdir(archive, into, relative)
                        continue
                    _write(archive, into, relative, lambda info=info: zf.open(info), info.file_size)
        else:
            with tarfile.open(archive) as tf:
                for info, relative in list(_tar_members(archive, tf)):
                    if relative is None or info.isdir():
                        if relative:
                            _mkdir(archive, into, relative)
                        continue
                    _write(archive, into, relative, lambda info=info: tf.extractfile(info), info.size)
    except ModelError:
        raise
    except _READ_ERRORS as exc:
        reason = (str(exc).splitlines() or [""])[0].rstrip(": ")
        raise ModelError(f"{archive}: not a readable {kind} archive ({type(exc).__name__}"
                         + (f": {reason}" if reason else "") + "); the file is truncated, damaged or not an archive.") from None
    except OSError as exc:  # reading the archive itself (gzip errors are OSErrors too)
        raise ModelError(f"{archive}: not a readable {kind} archive ({exc.strerror or exc}); the file is "
                         "truncated, damaged or not an archive.") from None


def copy_folder(folder: str | os.PathLike, into: str | os.PathLike) -> None:
    """Copy a package folder to the new folder `into` under the same rules as an archive: links
    may point only inside the folder (their content is copied), no devices or pipes, the same limits."""
    folder, into = Path(folder), Path(into)
    inside = folder.resolve()
    budget = _Budget(folder)
    try:
        for path in sorted(folder.rglob("*")):
            relative = path.relative_to(folder).as_posix()
            if path.is_symlink() and (path.is_dir() or not path.resolve().is_relative_to(inside)):
                raise ModelError(f"{folder}: {relative} is a link to {os.readlink(path)}; a package folder may "
                                 "link only to files inside it.")
            if path.is_dir():
                continue
            if not path.is_file():
                _refuse_kind(folder, relative, "a device, pipe or socket")
            budget.add(relative, path.stat().st_size)
        shutil.copytree(folder, into)
    except OSError as exc:
        raise ModelError(f"{folder}: cannot copy the package folder ({exc.strerror or exc}).") from None
