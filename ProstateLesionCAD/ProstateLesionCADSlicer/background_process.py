"""Run a `prostate-cad` verb as a child process of Slicer's Python, without blocking the GUI.

Qt-free (tested in plain Python). `BackgroundProcess` is one child: it starts the process
with stdout and stderr piped into one stream (the CLI writes results to stdout and its
`PROGRESS`, `note:` and `error:` lines to stderr; one pipe keeps them in the order written),
and a reader thread queues the lines; `poll()` turns `PROGRESS <pct> <msg>` lines into
(percent, message) and reports when the process ended, with the CLI's one-sentence error
on failure; `cancel()` asks the child and every process
it started to end and returns at once: the polls that follow kill what still runs
KILL_AFTER_S later (process_tree.py), so the panel never waits on a cancel. The child runs
in Slicer's startup environment (`startup_environment()`), as Slicer itself starts
processes, not in the environment Slicer modified for its own Python.
`ProcessRunner` is what both panels drive: one step at a time, in its
own temporary folder, polled by the panel's QTimer (or waited for, with a timeout, by the
self-tests). The caller reads results only after success, so a cancelled or failed run
leaves the scene as it was; `StepUpdate.cleanup()` removes the folder.
"""

from __future__ import annotations

import os
import queue
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Optional, Sequence

from ProstateLesionCADLib.progress import parse_progress_line

from . import process_tree

RUNNING, SUCCEEDED, FAILED, CANCELLED = "running", "succeeded", "failed", "cancelled"
POLL_MS = 200  # how often a panel's QTimer polls its ProcessRunner
KILL_AFTER_S = 1.0  # a cancelled process tree still running this long after the request is killed


def python_executable() -> str:
    """Slicer's Python launcher when running inside Slicer, else this interpreter."""
    return shutil.which("PythonSlicer") or sys.executable


def startup_environment() -> dict:
    """The environment Slicer was started in (without the launcher's additions) when running in
    Slicer, else this process's own; PythonSlicer sets up its own paths from it."""
    try:
        import slicer
    except ImportError:
        return dict(os.environ)
    if getattr(slicer, "app", None) is None:  # the slicer-core wheel: no application
        return dict(os.environ)
    return dict(slicer.util.startupEnvironment())


def library_search_path() -> list[str]:
    """Folders that must be on the child's PYTHONPATH for `import ProstateLesionCADLib` etc."""
    import importlib

    package = importlib.import_module("ProstateLesionCADLib")
    paths = []
    for folder in package.__path__:
        parent = str(Path(folder).resolve().parent)
        if parent not in paths:
            paths.append(parent)
    return paths


def cli_command(verb: str, arguments: Sequence[str], python: Optional[str] = None) -> list[str]:
    """argv running `prostate-cad <verb> <arguments>` through the library's module entry point."""
    return [python or python_executable(), "-m", "ProstateLesionCADLib", verb, *map(str, arguments)]


DEVICE_PROBE = "from ProstateLesionCADLib.device import describe_devices; print(describe_devices())"


def start_device_probe(python: Optional[str] = None) -> "BackgroundProcess":
    """A started child printing the compute devices found: it imports torch, so that Slicer's own
    process never does. Its last output line is the answer once it has SUCCEEDED."""
    process = BackgroundProcess([python or python_executable(), "-c", DEVICE_PROBE],
                                extra_python_path=library_search_path())
    process.start()
    return process


@dataclass
class PollResult:
    state: str
    percent: Optional[float] = None  # last PROGRESS percentage seen, if any
    message: str = ""
    new_lines: list[str] = field(default_factory=list)
    error: str = ""  # the CLI's error sentence when state == FAILED


class BackgroundProcess:
    """One child process; `start()`, then `poll()` until its state is no longer RUNNING."""

    def __init__(self, argv: Sequence[str], env: Optional[dict] = None, extra_python_path: Sequence[str] = (),
                 work_dir: Optional[Path] = None):
        self.argv = list(argv)
        self.env = dict(startup_environment() if env is None else env)
        if extra_python_path:
            existing = self.env.get("PYTHONPATH", "")
            self.env["PYTHONPATH"] = os.pathsep.join([*extra_python_path, *([existing] if existing else [])])
        self.env.setdefault("PYTHONUNBUFFERED", "1")
        self.work_dir = Path(work_dir) if work_dir else Path(tempfile.mkdtemp(prefix="ProstateLesionCAD-"))
        self.log: list[str] = []
        self.percent: Optional[float] = None
        self.message = ""
        self._lines: "queue.Queue[Optional[str]]" = queue.Queue()
        self._process: Optional[subprocess.Popen] = None
        self._cancelled = False
        self._kill_at: Optional[float] = None  # when a cancelled tree still running gets killed
        self._finished = False
        self._state = RUNNING

    def start(self) -> None:
        # stderr joins stdout: progress, notes and errors arrive there, interleaved with results as written
        self._process = subprocess.Popen(self.argv, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, env=self.env,
                                         cwd=str(self.work_dir), text=True, encoding="utf-8", errors="replace",
                                         bufsize=1, **process_tree.popen_options())
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self) -> None:
        assert self._process is not None and self._process.stdout is not None
        for line in self._process.stdout:
            self._lines.put(line.rstrip("\n"))
        self._lines.put(None)  # end of output

    def poll(self) -> PollResult:
        new = []
        while True:
            try:
                line = self._lines.get_nowait()
            except queue.Empty:
                break
            if line is None:
                self._finished = True
                break
            new.append(line)
            parsed = parse_progress_line(line)
            if parsed:
                self.percent, self.message = parsed
        self.log.extend(new)
        if self._state == RUNNING and self._process is not None:
            if self._finished:
                if self._cancelled:
                    process_tree.kill(self._process)  # a descendant that closed its output and lingers
                code = self._process.wait()
                self._state = CANCELLED if self._cancelled else (SUCCEEDED if code == 0 else FAILED)
            elif self._kill_at is not None and time.monotonic() >= self._kill_at:
                process_tree.kill(self._process)  # cannot be ignored: once is enough
                self._kill_at = None
        return PollResult(self._state, self.percent, self.message, new, self.error() if self._state == FAILED else "")

    def wait(self, timeout: Optional[float] = None, interval: float = 0.05) -> PollResult:
        """Poll until the process ends (scripts and tests; the panel polls with its timer instead);
        subprocess.TimeoutExpired after `timeout` seconds."""
        deadline = None if timeout is None else time.monotonic() + timeout
        result = self.poll()
        while result.state == RUNNING:
            if deadline is not None and time.monotonic() > deadline:
                raise subprocess.TimeoutExpired(self.argv, timeout)
            time.sleep(interval)
            result = self.poll()
        return result

    def error(self) -> str:
        errors = [line[len("error: "):] for line in self.log if line.startswith("error: ")]
        if errors:
            return errors[-1]
        code = self._process.returncode if self._process else None
        tail = next((line for line in reversed(self.log) if line.strip()), "")
        return f"the command ended with status {code}" + (f": {tail}" if tail else ".")

    def cancel(self, kill_after: float = KILL_AFTER_S) -> None:
        """Ask the process and all it started to end; returns at once. The polls that follow
        kill whatever still runs `kill_after` seconds later."""
        if self._process is None or self._state != RUNNING or self._cancelled:
            return
        self._cancelled = True
        process_tree.terminate(self._process)
        self._kill_at = time.monotonic() + kill_after

    @property
    def state(self) -> str:
        return self._state

    def cleanup(self) -> None:
        shutil.rmtree(self.work_dir, ignore_errors=True)


CANCELLED_TEXT = "Cancelled; the scene is unchanged."
FAILED_TEXT = "Failed."


class StepTimeout(TimeoutError):
    """A step waited for (self-tests, scripts) did not end in time; it was cancelled."""


@dataclass
class StepUpdate:
    """What a panel shows after one poll of its step; when `finished`, what the step left."""

    step: str
    state: str
    percent: Optional[float]
    message: str
    error: str
    process: BackgroundProcess

    @property
    def finished(self) -> bool:
        return self.state != RUNNING

    @property
    def out_dir(self) -> Path:
        """Where the step writes its outputs (the argv's --out)."""
        return self.process.work_dir / "out"

    @property
    def log(self) -> list[str]:
        return self.process.log

    def notes(self) -> list[str]:
        """The command's `note: ` lines (e.g. a channel left blank, a demo model)."""
        return [line[len("note: "):] for line in self.process.log if line.startswith("note: ")]

    def status_text(self) -> str:
        """The status line: the progress message while running, then how the step ended."""
        if self.state == CANCELLED:
            return CANCELLED_TEXT
        if self.state == FAILED:
            return FAILED_TEXT
        return self.message

    def cleanup(self) -> None:
        self.process.cleanup()


class ProcessRunner:
    """One background step at a time for a panel, in its own temporary folder.

    `start(step, prepare)` makes the folder, lets `prepare(folder)` write the inputs there
    and return the argv, and starts it; the panel's timer calls `poll()` until the update
    it returns is `finished`, then reads `update.out_dir` and calls `update.cleanup()`.
    """

    def __init__(self, python_path: Optional[Sequence[str]] = None):
        self._python_path = python_path
        self._process: Optional[BackgroundProcess] = None
        self.step = ""

    @property
    def running(self) -> bool:
        return self._process is not None

    def start(self, step: str, prepare: Callable[[Path], Sequence[str]]) -> BackgroundProcess:
        if self._process is not None:
            raise RuntimeError(f"The {self.step} step is still running: wait for it or cancel it.")
        work = Path(tempfile.mkdtemp(prefix=f"ProstateLesionCAD-{step}-"))
        try:
            argv = list(prepare(work))
            python_path = library_search_path() if self._python_path is None else list(self._python_path)
            process = BackgroundProcess(argv, extra_python_path=python_path, work_dir=work)
            process.start()
        except BaseException:
            shutil.rmtree(work, ignore_errors=True)
            raise
        self._process, self.step = process, step
        return process

    def poll(self) -> Optional[StepUpdate]:
        """The step's progress; None when no step runs. A finished step leaves the runner."""
        process = self._process
        if process is None:
            return None
        result = process.poll()
        if result.state != RUNNING:
            self._process = None
        return StepUpdate(self.step, result.state, result.percent, result.message, result.error, process)

    def cancel(self) -> None:
        if self._process is not None:
            self._process.cancel()

    def stop(self) -> None:
        """Cancel the running step and remove its folder (the panel is closing)."""
        process, self._process = self._process, None
        if process is not None:
            process.cancel()
            try:
                process.wait(KILL_AFTER_S + 2.0)
            except subprocess.TimeoutExpired:
                pass  # killed already; its folder goes all the same
            process.cleanup()

    def wait(self, timeout: float, interval: float = 0.2) -> StepUpdate:
        """Block until the step ends; StepTimeout (after cancelling it) if it runs longer than `timeout` seconds."""
        if self._process is None:
            raise RuntimeError("No step is running.")
        step, deadline = self.step, time.monotonic() + timeout
        while True:
            update = self.poll()
            if update.finished:
                return update
            if time.monotonic() > deadline:
                self.stop()
                raise StepTimeout(f"The {step} step did not finish within {timeout:g} s; it was cancelled.")
            time.sleep(interval)
