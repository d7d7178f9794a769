"""SIGTERM and SIGINT stop a command at once (cancellation.py): a real `prostate-cad register
--workers 2` is signalled while its registration worker processes run; within 2 s no process
it started remains, it exits with 128 + signal and one line on stderr, and its output folder
and the folder around it hold what they held before (no staging folder, no lock)."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

psutil = pytest.importorskip("psutil")

pytestmark = pytest.mark.skipif(os.name != "posix", reason="POSIX signals")


def _command(repo_dir: Path, out: Path, workers: int, preset: str) -> list[str]:
    script = Path(sys.executable).with_name("prostate-cad")
    head = [str(script)] if script.is_file() else [sys.executable, "-m", "ProstateLesionCADLib"]
    return head + ["register", str(repo_dir / "Resources" / "Sample" / "ProstateX-0000"), "--out", str(out),
                   "--overwrite", "--preset", preset, "--workers", str(workers)]


def _workers(root) -> list:
    try:
        return [p for p in root.children(recursive=True) if "spawn_main" in " ".join(p.cmdline())]
    except psutil.Error:
        return []


def _running(process) -> bool:
    try:
        return process.is_running() and process.status() != psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return False


@pytest.mark.parametrize("signum, own_group, workers, preset",
                         [(signal.SIGTERM, False, 2, "fast"), (signal.SIGINT, True, 2, "fast"),
                          (signal.SIGTERM, False, 1, "fast"), (signal.SIGINT, False, 1, "released")],
                         ids=["SIGTERM-to-the-process", "SIGINT-to-a-group-leader", "SIGTERM-in-process-starts",
                              "SIGINT-in-process-released-starts"])
def test_a_signal_stops_register_and_its_workers_at_once(tmp_path, repo_dir, signum, own_group, workers, preset):
    """workers=1 runs the starts in the command's own process: ITK's optimiser is stopped from
    its iteration callback (both registration methods)."""
    out = tmp_path / "registration"
    out.mkdir()
    (out / "earlier.txt").write_text("an earlier run")  # prior contents, replaced only on success
    (tmp_path / "neighbour.txt").write_text("not ours")
    proc = subprocess.Popen(_command(repo_dir, out, workers, preset), stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True, start_new_session=own_group)
    lines: list[str] = []  # stderr: progress lines, then the one error sentence
    reader = threading.Thread(target=lambda: lines.extend(proc.stderr), daemon=True)
    reader.start()
    try:
        root = psutil.Process(proc.pid)
        deadline = time.monotonic() + 120
        while len(_workers(root)) < (workers if workers > 1 else 0) or not any("process(es)" in x for x in lines):
            assert proc.poll() is None, "".join(lines)
            assert time.monotonic() < deadline, "the registration starts never began"
            time.sleep(0.05)
        time.sleep(0.5)  # the starts are running
        tree = [root, *root.children(recursive=True)]  # workers and multiprocessing's resource tracker
        assert (tmp_path / ".registration.lock").read_text().strip() == str(proc.pid)
        sent = time.monotonic()
        proc.send_signal(signum)
        while any(_running(p) for p in tree):
            assert time.monotonic() - sent < 2.0, f"still running 2 s after {signum.name}: " \
                                                  f"{[p for p in tree if _running(p)]}"
            time.sleep(0.02)
        assert proc.wait(5) == 128 + signum
        reader.join(5)
    finally:
        if proc.poll() is None:
            os.kill(proc.pid, signal.SIGKILL)
            proc.wait()
    assert [line for line in lines if not line.startswith("PROGRESS ")] == [f"error: cancelled by {signum.name}.\n"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["neighbour.txt", "registration"]
    assert sorted(p.name for p in out.iterdir()) == ["earlier.txt"]
    assert (out / "earlier.txt").read_text() == "an earlier run"


_SIGNAL_IN_A_FINALISER = r"""
import argparse, gc, os, signal
from multiprocessing import util
from ProstateLesionCADLib import cli

class Queue:  # stands for a stopped pool's queue, finalised by the garbage collector
    pass

def run(args):
    queue = Queue()
    util.Finalize(queue, lambda: [os.kill(os.getpid(), signal.SIGTERM)] + [None] * 1000)
    del queue  # the signal's handler runs inside the finaliser, where Python drops what it raises
    gc.collect()
    raise RuntimeError("a process pool was broken by the stop")

raise SystemExit(cli._run(run, argparse.Namespace()))
"""


def test_a_signal_landing_in_a_finaliser_still_ends_as_one_cancelled_line():
    """A signal handled while the garbage collector runs a finaliser raises `Cancelled` where
    Python can only print and drop it, and what follows (a pool broken by the stopped workers)
    fails in its own way: the command still ends cancelled, with its one line and no traceback."""
    proc = subprocess.run([sys.executable, "-c", _SIGNAL_IN_A_FINALISER], capture_output=True, text=True,
                          timeout=60, start_new_session=True)
    assert (proc.returncode, proc.stderr) == (128 + signal.SIGTERM, "error: cancelled by SIGTERM.\n")


def test_a_cancelled_bench_stops_the_workers_of_its_measuring_child(tmp_path, repo_dir):
    """`prostate-cad bench` runs each stage in a measuring child process; the registration stage
    starts worker processes of its own there. SIGTERM to the bench must end them too, not leave
    them computing with no parent."""
    script = Path(sys.executable).with_name("prostate-cad")
    head = [str(script)] if script.is_file() else [sys.executable, "-m", "ProstateLesionCADLib"]
    env = dict(os.environ, PROSTATE_CAD_BENCH_REGISTRATION_PRESETS="fast")
    proc = subprocess.Popen(head + ["bench", "--only", "registration", "--out", str(tmp_path / "bench")],
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True, env=env)
    lines: list[str] = []
    reader = threading.Thread(target=lambda: lines.extend(proc.stderr), daemon=True)
    reader.start()
    try:
        root = psutil.Process(proc.pid)
        deadline = time.monotonic() + 300
        while True:  # the measuring child, then its registration workers below it
            assert proc.poll() is None, "".join(lines)
            assert time.monotonic() < deadline, "the registration workers never started"
            grandchildren = [p for child in root.children() for p in _workers(child)]
            if len(grandchildren) >= 2:
                break
            time.sleep(0.1)
        time.sleep(0.5)
        tree = [root, *root.children(recursive=True)]
        sent = time.monotonic()
        proc.send_signal(signal.SIGTERM)
        while any(_running(p) for p in tree):
            assert time.monotonic() - sent < 3.0, f"still running 3 s after SIGTERM: " \
                                                  f"{[p.cmdline()[-1:] for p in tree if _running(p)]}"
            time.sleep(0.02)
        assert proc.wait(5) == 128 + signal.SIGTERM
        reader.join(5)
    finally:
        if proc.poll() is None:
            os.kill(proc.pid, signal.SIGKILL)
            proc.wait()
        for p in psutil.process_iter():  # never leave stray workers behind, whatever failed
            with contextlib.suppress(psutil.Error):
                if "spawn_main" in " ".join(p.cmdline()) and p.ppid() == 1 and str(repo_dir) in " ".join(p.cmdline()):
                    p.kill()
    assert [line for line in lines if not line.startswith("PROGRESS ")] == ["error: cancelled by SIGTERM.\n"]
