"""Write outputs all or nothing, never over a user's files unasked, one writer at a time.

`staged_output_dir(out)` yields a staging folder beside `out` (`.<name>.partial-*`); only
when the block finishes without an exception is the staging folder published as `out`
with one rename. So `out` holds either what it held before or the whole new output,
never a mix, whatever fails (an exception, a full disk, SIGTERM: see `cancellation`).

- `out` missing or empty: the staging folder is renamed onto it.
- `out` not empty: refused in one sentence (`OutputError`, exit status 2) unless
  `overwrite`; then the old folder is renamed aside, the new one renamed in, and the old
  one deleted (renamed back if the second rename fails).
- `keep_other_files=True` is for writers that add a few files to a folder the user owns
  (grown lesions beside a case's images): the other files stay; a file of the same name
  is replaced only with `overwrite` (moved aside first and restored if publishing fails).
- `out` naming a file, or a folder that cannot be written, is refused before any work.

While it writes, a lock file `.<name>.lock` beside `out` (created exclusively, holding the
writer's process id) makes a second writer to the same folder stop with one sentence; a
lock whose process has ended is taken over. A command takes the lock and checks the
target before its work starts with `output_claim(out, overwrite)`; the library's writers
inside it then find the claim and stage into the same target.

`atomic_file(path)` does the same for one file: a temporary file renamed onto `path`.
"""

from __future__ import annotations

import contextlib
import errno
import os
import secrets
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator, Optional, Sequence

from .cancellation import deferred, raise_if_cancelled
from .errors import CadError


class OutputError(CadError):
    """An output folder cannot be written: a file in the way, no permission, a user's files, another writer."""


@dataclass
class _Claim:
    overwrite: bool
    keep_other_files: bool


_claims: dict[Path, _Claim] = {}  # target -> the claim a command holds on it (with its lock)


def _target(out: str | os.PathLike) -> Path:
    """The folder itself: a symbolic link is followed, so the renames act on what it names."""
    return Path(os.path.realpath(os.fspath(out)))


def _reason(exc: OSError) -> str:
    return (exc.strerror or str(exc)).lower()


def _check(target: Path, overwrite: bool, keep_other_files: bool, names: Sequence[str] = ()) -> None:
    """Refuse, in one sentence, a target this writer must not or cannot write."""
    if target.exists() and not target.is_dir():
        raise OutputError(f"The output {target} is a file, not a folder; name a folder with --out.")
    ancestor = target.parent
    while not ancestor.exists():
        ancestor = ancestor.parent
    if not ancestor.is_dir():
        raise OutputError(f"The output folder {target} cannot be created: {ancestor} is a file.")
    if not os.access(ancestor, os.W_OK | os.X_OK):
        raise OutputError(f"The output folder {target} cannot be written: no permission to write in {ancestor}.")
    if not target.is_dir() or overwrite:
        return
    try:
        present = sorted(p.name for p in target.iterdir())
    except OSError as exc:
        raise OutputError(f"The output folder {target} cannot be read: {_reason(exc)}.") from None
    if keep_other_files:
        clashes = [n for n in names if n in present]
        if clashes:
            raise OutputError(f"The output folder {target} already holds {', '.join(clashes)}; "
                              f"add --overwrite to replace them (its other files stay).")
    elif present:
        raise OutputError(f"The output folder {target} is not empty ({len(present)} entries, e.g. {present[0]}); "
                          f"add --overwrite to replace its contents, or choose another folder.")


# --- lock -------------------------------------------------------------------------------

def _lock_path(target: Path) -> Path:
    return target.parent / f".{target.name}.lock"


def _pid_alive(pid: int) -> bool:
    if pid <= 0:
        return False
    if os.name == "nt":  # os.kill(pid, 0) would send CTRL_C_EVENT there
        return _windows_pid_alive(pid)
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True  # someone else's live process
    return True


def _windows_pid_alive(pid: int) -> bool:
    import ctypes

    kernel32 = ctypes.windll.kernel32  # type: ignore[attr-defined]
    handle = kernel32.OpenProcess(0x1000, False, pid)  # PROCESS_QUERY_LIMITED_INFORMATION
    if not handle:
        return kernel32.GetLastError() == 5  # access denied: it exists
    try:
        code = ctypes.c_ulong()
        return bool(kernel32.GetExitCodeProcess(handle, ctypes.byref(code))) and code.value == 259  # STILL_ACTIVE
    finally:
        kernel32.CloseHandle(handle)


def _holder(lock: Path) -> Optional[int]:
    try:
        return int(lock.read_text(encoding="ascii").strip() or "0")
    except FileNotFoundError:
        return None
    except (OSError, ValueError):
        return 0


def _create_lock(lock: Path) -> bool:
    try:
        fd = os.open(lock, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
    except FileExistsError:
        return False
    with os.fdopen(fd, "w", encoding="ascii") as handle:
        handle.write(f"{os.getpid()}\n")
    return True


def _acquire_lock(target: Path) -> Path:
    lock = _lock_path(target)
    for _ in range(3):
        try:
            if _create_lock(lock):
                return lock
        except OSError as exc:
            raise OutputError(f"The output folder {target} cannot be written: {_reason(exc)}.") from None
        pid = _holder(lock)
        if pid is None:
            continue  # released meanwhile
        if pid and _pid_alive(pid):
            if pid == os.getpid():
                raise OutputError(f"The output folder {target} is already being written by this process.")
            raise OutputError(f"The output folder {target} is being written by another process (pid {pid}, "
                              f"lock {lock}); wait for it to finish or choose another folder.")
        # A lock left by a process that ended (killed, power cut): take it over. Move it
        # aside first, so that of two writers taking it over at once only one succeeds.
        aside = lock.with_name(f"{lock.name}.stale-{os.getpid()}-{secrets.token_hex(4)}")
        try:
            os.rename(lock, aside)
        except FileNotFoundError:
            continue
        if _holder(aside) == pid:
            aside.unlink(missing_ok=True)
        else:  # someone else's fresh lock: put it back
            with contextlib.suppress(OSError):
                os.link(aside, lock)
            aside.unlink(missing_ok=True)
    raise OutputError(f"The output folder {target} is being written by another process (lock {lock}).")


def _release_lock(lock: Path) -> None:
    if _holder(lock) == os.getpid():
        lock.unlink(missing_ok=True)


# --- claim, stage, publish ---------------------------------------------------------------

def _created_parents(target: Path) -> list[Path]:
    """Create target's missing parents; returns those created, deepest first."""
    missing = []
    parent = target.parent
    while not parent.exists():
        missing.append(parent)
        parent = parent.parent
    try:
        target.parent.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise OutputError(f"The output folder {target} cannot be created: {_reason(exc)}.") from None
    return missing


def _remove_empty(folders: list[Path]) -> None:
    for folder in folders:
        with contextlib.suppress(OSError):
            folder.rmdir()


@contextlib.contextmanager
def output_claim(out: str | os.PathLike, overwrite: bool = False, keep_other_files: bool = False,
                 names: Sequence[str] = ()) -> Iterator[Path]:
    """Check the target and lock it for the whole block, before any work: a command wraps
    its run in this so that a refusal comes at once. `names`: the files a
    `keep_other_files` writer will add (checked for clashes now)."""
    target = _target(out)
    _check(target, overwrite, keep_other_files, names)
    created = _created_parents(target)
    published = False
    lock = _acquire_lock(target)
    _claims[target] = _Claim(overwrite, keep_other_files)
    try:
        yield target
        published = target.exists()
    finally:
        _claims.pop(target, None)
        _release_lock(lock)
        if not published:
            _remove_empty(created)


@contextlib.contextmanager
def staged_output_dir(out_dir: str | os.PathLike, overwrite: Optional[bool] = None,
                      keep_other_files: Optional[bool] = None) -> Iterator[Path]:
    """Yield a staging folder; publish it as `out_dir` when the block succeeds (module doc).
    Unset `overwrite`/`keep_other_files` come from the command's `output_claim` on the same
    folder, else False."""
    target = _target(out_dir)
    claim = _claims.get(target)
    overwrite = bool(claim.overwrite if overwrite is None and claim else overwrite)
    keep = bool(claim.keep_other_files if keep_other_files is None and claim else keep_other_files)
    with contextlib.ExitStack() as stack:
        if claim is None:
            stack.enter_context(output_claim(target, overwrite, keep))
        else:
            _check(target, overwrite, keep)
        stage = None
        try:
            try:
                with deferred():  # a signal right after mkdtemp must not leave the folder behind
                    stage = Path(tempfile.mkdtemp(prefix=f".{target.name}.partial-", dir=target.parent))
                os.chmod(stage, 0o777 & ~_umask())  # mkdtemp makes 0700; give the folder the user's usual mode
            except OSError as exc:
                raise OutputError(f"The output folder {target} cannot be written: {_reason(exc)}.") from None
            try:
                yield stage
            except OSError as exc:
                if _is_output_fault(exc):  # e.g. a full disk while writing the outputs
                    raise _fail(target, exc) from None
                raise
            raise_if_cancelled()  # a cancel the writer's code did not pass on publishes nothing
            if keep:
                try:
                    names = [p.name for p in stage.iterdir()]
                except OSError as exc:
                    raise _fail(target, exc) from None
                _check(target, overwrite, keep, names)
                _publish_files(stage, target)
            else:
                _check(target, overwrite, keep)
                _publish_folder(stage, target)
        finally:
            if stage is not None:
                shutil.rmtree(stage, ignore_errors=True)


_WRITE_FAULTS = {errno.ENOSPC, errno.EROFS, errno.EFBIG, errno.EIO, getattr(errno, "EDQUOT", errno.ENOSPC)}


def _is_output_fault(exc: OSError) -> bool:
    """A fault of the disk being written (full, read-only, quota), not of the writer's inputs."""
    return exc.errno in _WRITE_FAULTS


def _aside(target: Path, what: str) -> Path:
    return target.parent / f".{target.name}.{what}-{os.getpid()}-{secrets.token_hex(4)}"


def _fail(target: Path, exc: OSError) -> OutputError:
    return OutputError(f"The output folder {target} could not be written ({_reason(exc)}); "
                       f"its previous contents are unchanged.")


def _publish_folder(stage: Path, target: Path) -> None:
    """stage -> target with one rename; a non-empty target is renamed aside first and deleted after."""
    old = None
    with deferred():
        try:
            if target.is_dir() and any(target.iterdir()):
                old = _aside(target, "old")
                os.rename(target, old)
            os.rename(stage, target)
        except OSError as exc:
            if old is not None and not target.exists():
                os.rename(old, target)
            raise _fail(target, exc) from None
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)


def _publish_files(stage: Path, target: Path) -> None:
    """Move the staged entries into target, keeping its other files; all or none of them."""
    if not target.is_dir() or not any(target.iterdir()):
        _publish_folder(stage, target)
        return
    backup = _aside(target, "old")
    moved_aside: list[str] = []
    moved_in: list[str] = []
    names = sorted(p.name for p in stage.iterdir())
    with deferred():
        try:
            backup.mkdir()
            for name in names:
                if os.path.lexists(target / name):
                    os.rename(target / name, backup / name)
                    moved_aside.append(name)
            for name in names:
                os.rename(stage / name, target / name)
                moved_in.append(name)
        except OSError as exc:
            for name in moved_in:
                with contextlib.suppress(OSError):
                    os.rename(target / name, stage / name)
            for name in moved_aside:
                with contextlib.suppress(OSError):
                    os.rename(backup / name, target / name)
            shutil.rmtree(backup, ignore_errors=True)
            raise _fail(target, exc) from None
    shutil.rmtree(backup, ignore_errors=True)


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


@contextlib.contextmanager
def atomic_file(path: str | os.PathLike, mode: str = "w") -> Iterator:
    """Open a temporary file beside `path`; rename it onto `path` only on success."""
    target = Path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{target.name}.", dir=target.parent)
    os.close(fd)
    os.chmod(tmp, 0o666 & ~_umask())  # mkstemp makes 0600; give the file the user's usual mode
    try:
        with open(tmp, mode) as handle:
            yield handle
        os.replace(tmp, target)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise
