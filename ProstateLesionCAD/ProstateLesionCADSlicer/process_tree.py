"""Start a child in its own process group and stop it with everything it started.

A step runs as Slicer's `PythonSlicer` launcher, which starts the real Python, which may
start registration worker processes. Stopping only the launcher would leave the others
running with the output pipe open. So the child gets a process group of its own
(POSIX: a new session; Windows: a new process group) and stopping reaches the whole group:
on Linux and macOS the group is signalled (SIGTERM, then SIGKILL), on Windows
`taskkill /T /F` ends the process and its descendants. Nothing here waits: the signals
are sent and the caller keeps polling. Standard library only (Slicer ships no psutil).
"""

from __future__ import annotations

import os
import signal
import subprocess

WINDOWS = os.name == "nt"


def popen_options() -> dict:
    """Keyword arguments for subprocess.Popen giving the child a process group of its own."""
    if WINDOWS:
        return {"creationflags": subprocess.CREATE_NEW_PROCESS_GROUP | subprocess.CREATE_NO_WINDOW}
    return {"start_new_session": True}


def _signal_group(process: subprocess.Popen, signum: int) -> None:
    try:
        # The child leads its group (start_new_session), so its pid is the group's id; the
        # group outlives the launcher until the caller reaps it, so the id cannot be reused.
        os.killpg(process.pid, signum)
    except (ProcessLookupError, PermissionError):
        pass  # the whole group has already ended


def _taskkill(process: subprocess.Popen) -> None:
    try:
        subprocess.Popen(["taskkill", "/T", "/F", "/PID", str(process.pid)], stdout=subprocess.DEVNULL,
                         stderr=subprocess.DEVNULL, creationflags=subprocess.CREATE_NO_WINDOW)
    except OSError:
        process.kill()


def terminate(process: subprocess.Popen) -> None:
    """Ask the child and all its descendants to end (Windows has no gentle way: they are ended)."""
    if WINDOWS:
        _taskkill(process)
    else:
        _signal_group(process, signal.SIGTERM)


def kill(process: subprocess.Popen) -> None:
    """End the child and all its descendants now."""
    if WINDOWS:
        _taskkill(process)
    else:
        _signal_group(process, signal.SIGKILL)
