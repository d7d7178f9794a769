"""Stop a command at once on SIGTERM or SIGINT, with its worker processes, leaving nothing half-written.

`handling_signals()` (around every command of the command line) makes both signals do the
same thing: first stop every worker process this process started through `multiprocessing`
(registration starts, data-loader workers, a benchmark's measuring child) and, when this
process leads its own process group (a terminal job), send the group SIGTERM; then raise
`Cancelled` in the main thread. `Cancelled` is a BaseException, so `except Exception`
blocks do not swallow it and every `finally` on the way out runs: the staging folders and
locks of `output_files` are removed there. The command line turns it into one line on
stderr and exit status 128 + signal number (130 for SIGINT, 143 for SIGTERM). A second
signal while the first unwinds is ignored, so the clean-up is not cut short (SIGKILL still
ends everything).

`deferred()` lets a few lines that must not be split finish first (publishing an output
folder with two renames); a signal that arrives meanwhile
stops the workers at once and raises `Cancelled` right after the block.

The Slicer panel starts each command in a process group of its own and cancels the whole
group (ProstateLesionCADSlicer/process_tree.py); in a terminal, Ctrl-C reaches the whole
foreground group. Worker processes therefore ignore SIGINT (`ignore_interrupt`, their
initialiser) and end by the SIGTERM their parent sends, silently.
"""

from __future__ import annotations

import contextlib
import multiprocessing
import os
import signal
import sys
import threading
from typing import Iterator, Sequence

SIGNALS = tuple(s for s in (getattr(signal, "SIGTERM", None), getattr(signal, "SIGINT", None)) if s is not None)
JOIN_S = 1.0  # how long stopped workers get to end before they are killed


class Cancelled(BaseException):
    """The command was asked to stop by a signal."""

    def __init__(self, signum: int):
        self.signum = int(signum)
        super().__init__(f"cancelled by {signal.Signals(self.signum).name}")

    @property
    def exit_status(self) -> int:
        return 128 + self.signum


_state: dict = {"cancelling": False, "deferring": 0, "pending": None, "signal": None, "quiet": 0,
                "teardown": False, "restore_hook": None}


def stop_workers(join_s: float = JOIN_S) -> None:
    """Terminate this process's children: the live ones multiprocessing lists (killed if they
    linger) and, on Linux, any other child, such as a worker still being sent its start-up
    data (which would otherwise print a traceback when the data stops halfway)."""
    for pid in _child_pids():
        with contextlib.suppress(OSError):
            os.kill(pid, signal.SIGTERM)
    stop_processes(multiprocessing.active_children(), join_s)


def _child_pids() -> list[int]:
    """Process ids whose parent is this process (Linux /proc; elsewhere none)."""
    me, found = os.getpid(), []
    try:
        entries = os.listdir("/proc")
    except OSError:
        return found
    for entry in entries:
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat", "rb") as handle:
                stat = handle.read()
        except OSError:
            continue
        fields = stat[stat.rfind(b")") + 2:].split()  # after "pid (name) ": state, ppid, ...
        if len(fields) > 1 and fields[1] == str(me).encode():
            found.append(int(entry))
    return found


def stop_processes(children: Sequence, join_s: float = JOIN_S) -> None:
    """Terminate these multiprocessing processes, killing those still alive after `join_s`."""
    for child in children:
        with contextlib.suppress(Exception):
            child.terminate()
    for child in children:
        with contextlib.suppress(Exception):
            child.join(join_s)
            if child.is_alive():
                child.kill()
                child.join(join_s)


def _stop_own_group() -> None:
    """When this process leads its process group (a terminal job, a Slicer step), SIGTERM the
    group: it reaches descendants multiprocessing does not list yet (a worker being started)."""
    if hasattr(os, "killpg") and os.getpgrp() == os.getpid():
        with contextlib.suppress(OSError):
            os.killpg(os.getpid(), signal.SIGTERM)  # this process ignores it: already cancelling


def _handler(signum, frame) -> None:
    if _state["cancelling"]:
        return  # already unwinding: let the clean-up finish
    _state.update(cancelling=True, signal=signum, teardown=True)
    stop_workers()
    _stop_own_group()
    if _state["deferring"]:
        _state["pending"] = signum  # raised when the deferred block ends
        return
    if _state["quiet"]:
        return  # raise_if_cancelled() raises it after the block
    raise Cancelled(signum)


@contextlib.contextmanager
def handling_signals() -> Iterator[None]:
    """While the block runs, SIGTERM and SIGINT cancel this process (main thread only; elsewhere,
    nothing changes); the previous handlers come back afterwards."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    _state.update(cancelling=False, pending=None, signal=None)
    previous = {signum: signal.signal(signum, _handler) for signum in SIGNALS}
    previous_hook = sys.unraisablehook
    sys.unraisablehook = _unraisable_hook(previous_hook)
    try:
        yield
    except Cancelled:
        raise
    except BaseException:
        # After a signal, whatever else goes wrong on the way out is its consequence (a pool
        # whose workers were stopped reports itself broken): the command was cancelled.
        if _state["signal"] is not None:
            raise Cancelled(_state["signal"]) from None
        raise
    finally:
        for signum, handler in previous.items():
            signal.signal(signum, handler)
        _state.update(cancelling=False, pending=None, signal=None)
        if _state["teardown"]:
            _state["restore_hook"] = previous_hook  # end_helpers() restores it after its own clean-up
        else:
            sys.unraisablehook = previous_hook


def _unraisable_hook(previous):
    """Python drops an exception raised where nothing can catch it (a finaliser run by the
    garbage collector, a weakref callback) and prints it. A signal can land in such code: its
    `Cancelled` is dropped there, but the signal is remembered and the command still ends as
    cancelled (`handling_signals`), so nothing is printed. After a cancel, the finalisers of
    the stopped workers' queues and pipes fail the same way and are not printed either."""

    def hook(unraisable) -> None:
        if isinstance(unraisable.exc_value, Cancelled) or _state["signal"] is not None or _state["teardown"]:
            return
        previous(unraisable)

    return hook


@contextlib.contextmanager
def quiet_signals() -> Iterator[None]:
    """Around a call into C++ code that runs Python callbacks and would print and drop an
    exception raised in them (an ITK registration's iteration event): a signal stops the
    workers and is remembered; call `raise_if_cancelled()` after the block."""
    _state["quiet"] += 1
    try:
        yield
    finally:
        _state["quiet"] -= 1


def cancelled() -> bool:
    """Whether a signal asked this process to stop (for code that must stop a C++ loop itself)."""
    return _state["signal"] is not None


def start_quiet_resource_tracker() -> None:
    """Start multiprocessing's resource tracker (before a process pool) with its output going
    nowhere: after a cancel it would print warnings about the semaphores of the stopped pool
    after the command's one line, and hold the command's output pipe open after it ended."""
    from multiprocessing import resource_tracker

    tracker = getattr(resource_tracker, "_resource_tracker", None)
    if tracker is None or getattr(tracker, "_fd", None) is not None or not hasattr(os, "dup2"):
        return
    saved = []
    try:
        for stream in (sys.stdout, sys.stderr):
            with contextlib.suppress(Exception):
                stream.flush()
        devnull = os.open(os.devnull, os.O_WRONLY)
        for fd in (1, 2):
            saved.append((fd, os.dup(fd)))
            os.dup2(devnull, fd)
        os.close(devnull)
        tracker.ensure_running()
    except OSError:
        pass
    finally:
        for fd, copy in saved:
            os.dup2(copy, fd)
            os.close(copy)


def end_helpers() -> None:
    """After a cancel: end multiprocessing's resource tracker now, not only once this process
    has exited, so that when the command ends every process it started has ended."""
    import gc
    from multiprocessing import resource_tracker

    try:
        gc.collect()  # the stopped pool's queues unregister their semaphores first
        stop = getattr(getattr(resource_tracker, "_resource_tracker", None), "_stop", None)
        if stop is not None:
            with contextlib.suppress(Exception):
                stop()
    finally:
        hook = _state["restore_hook"]
        _state.update(teardown=False, restore_hook=None)
        if hook is not None:
            sys.unraisablehook = hook


def exit_now(status: int) -> None:
    """End this process at once after a cancel (its clean-up done): no interpreter teardown
    (thread pools, module finalisers), which can take a noticeable time after a large run."""
    for stream in (sys.stdout, sys.stderr):
        with contextlib.suppress(Exception):
            stream.flush()
    os._exit(status)


@contextlib.contextmanager
def stopping_own_workers() -> Iterator[None]:
    """For a child process that may start workers of its own (a benchmark's measuring child
    running a registration): the SIGTERM its parent sends when cancelled stops those workers
    too, then ends this process quietly with 128 + the signal. Without it the child would die
    at once and leave its workers computing, orphaned."""
    try:
        with handling_signals():
            yield
    except Cancelled as exc:
        end_helpers()
        exit_now(exc.exit_status)


def raise_if_cancelled() -> None:
    """Raise `Cancelled` if a signal came: after a `quiet_signals()` block, and before anything
    is published (whatever code a signal interrupted, nothing appears after a cancel)."""
    if _state["signal"] is not None:
        raise Cancelled(_state["signal"])


def ignore_interrupt() -> None:
    """For a worker process: leave SIGINT to the parent, which stops the workers itself."""
    if hasattr(signal, "SIGINT"):
        signal.signal(signal.SIGINT, signal.SIG_IGN)


@contextlib.contextmanager
def deferred() -> Iterator[None]:
    """Let the block finish before a signal cancels: the workers still stop at once, but
    `Cancelled` is raised when the block ends. Only for short blocks that cannot wait on a
    child process (publishing a folder with two renames): a blocked pipe write would never end."""
    _state["deferring"] += 1
    try:
        yield
    finally:
        _state["deferring"] -= 1
        if not _state["deferring"] and _state["pending"] is not None:
            signum, _state["pending"] = _state["pending"], None
            raise Cancelled(signum)
