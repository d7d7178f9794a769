"""The process runner both panels drive with a QTimer, and the self-tests' preconditions (Qt-free)."""

from __future__ import annotations

import os
import sys
import time
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "ProstateLesionCAD"))

from ProstateLesionCADSlicer import background_process  # noqa: E402
from ProstateLesionCADSlicer.background_process import ProcessRunner, StepTimeout  # noqa: E402
from ProstateLesionCADSlicer.self_test_checks import StepUnavailable, require_models, require_steps  # noqa: E402

SCRIPT = """
import pathlib, sys, time
print("PROGRESS 50.0 half way", flush=True)
if sys.argv[1] == "hang":
    time.sleep(60)
if sys.argv[1] == "fail":
    print("error: the T2 has no slices.", file=sys.stderr, flush=True)
    sys.exit(2)
pathlib.Path("out").mkdir()
pathlib.Path("out", "result.txt").write_text("done")
print("note: a demo model was used", flush=True)
print("PROGRESS 100.0 finished", flush=True)
"""


def _prepare(mode, seen=None):
    def prepare(work: Path):
        if seen is not None:
            seen.append(work)
        (work / "input.txt").write_text("written by the panel's logic")
        return [sys.executable, "-c", SCRIPT, mode]
    return prepare


def _poll_until_finished(runner, timeout=30.0):
    deadline, updates = time.monotonic() + timeout, []
    while time.monotonic() < deadline:
        update = runner.poll()
        updates.append(update)
        if update.finished:
            return update, updates
        time.sleep(0.02)
    pytest.fail("the step did not finish")


def test_a_step_runs_in_its_own_folder_and_reports_progress_notes_and_outputs():
    runner = ProcessRunner(python_path=[])
    assert runner.poll() is None and not runner.running
    folders = []
    process = runner.start("zones", _prepare("ok", folders))
    assert runner.running and runner.step == "zones" and process.work_dir == folders[0]
    assert (folders[0] / "input.txt").is_file()  # prepare() wrote the inputs into the step's folder
    with pytest.raises(RuntimeError, match="zones step is still running"):
        runner.start("detection", _prepare("ok"))
    update, updates = _poll_until_finished(runner)
    assert not runner.running and runner.poll() is None  # a finished step leaves the runner
    assert update.state == background_process.SUCCEEDED and update.step == "zones"
    assert (update.percent, update.message, update.status_text()) == (100.0, "finished", "finished")
    assert (update.out_dir / "result.txt").read_text() == "done" and update.out_dir == folders[0] / "out"
    assert update.notes() == ["a demo model was used"]
    assert all(not u.finished for u in updates[:-1])
    update.cleanup()
    assert not folders[0].exists()


def test_failure_cancel_and_a_failing_prepare_leave_nothing_behind(tmp_path):
    runner = ProcessRunner(python_path=[])
    runner.start("detection", _prepare("fail"))
    update, _ = _poll_until_finished(runner)
    assert update.state == background_process.FAILED and update.error == "the T2 has no slices."
    assert update.status_text() == "Failed." and update.percent == 50.0
    update.cleanup()
    runner.start("registration", _prepare("hang"))
    deadline = time.monotonic() + 30
    while (runner.poll().percent or 0) < 50 and time.monotonic() < deadline:
        time.sleep(0.02)
    runner.cancel()
    update, _ = _poll_until_finished(runner)
    assert update.state == background_process.CANCELLED
    assert update.status_text() == "Cancelled; the scene is unchanged."
    update.cleanup()
    folders = []

    def bad_prepare(work):
        folders.append(work)
        raise ValueError("Select a T2 volume first.")

    with pytest.raises(ValueError, match="Select a T2"):
        runner.start("zones", bad_prepare)
    assert not runner.running and not folders[0].exists()


def test_wait_gives_up_after_its_timeout_and_cancels_the_step():
    runner = ProcessRunner(python_path=[])
    process = runner.start("zones", _prepare("hang"))
    started = time.monotonic()
    with pytest.raises(StepTimeout, match="zones step did not finish within 1 s"):
        runner.wait(timeout=1.0, interval=0.05)
    assert time.monotonic() - started < 20
    assert not runner.running and process.state == background_process.CANCELLED and not process.work_dir.exists()
    runner.start("zones", _prepare("ok"))
    update = runner.wait(timeout=30)
    assert update.state == background_process.SUCCEEDED
    update.cleanup()
    with pytest.raises(RuntimeError, match="No step is running"):
        runner.wait(timeout=1)


def test_the_runner_puts_the_library_on_the_childs_python_path():
    import ProstateLesionCADLib

    paths = background_process.library_search_path()
    assert paths == [str(Path(ProstateLesionCADLib.__file__).resolve().parents[1])]


def test_self_test_preconditions_fail_naming_what_is_missing():
    offered = {"registration": (True, "ok"), "zones": (True, "ok"),
               "detection": (False, "Not available: this version of the library offers no detection step.")}
    require_steps(offered, ["registration", "zones"])  # all there: no error
    with pytest.raises(StepUnavailable, match="detection .Not available: this version"):
        require_steps(offered, ["registration", "zones", "detection"])
    with pytest.raises(AssertionError, match="grow .not a step of this panel"):  # a failure, not a skip
        require_steps(offered, ["grow"])
    assert require_models(("demo",), "detection") == ["demo"]
    with pytest.raises(StepUnavailable, match="installed detection model, and none is installed"):
        require_models([], "detection")


def test_the_child_gets_slicers_startup_environment(monkeypatch):
    """In Slicer the child starts from the environment Slicer was started in; elsewhere from this one's."""
    import types

    monkeypatch.setenv("PROSTATE_CAD_ENV_PROBE", "this process")
    assert background_process.startup_environment()["PROSTATE_CAD_ENV_PROBE"] == "this process"
    fake = types.ModuleType("slicer")
    fake.app = object()
    fake.util = types.SimpleNamespace(startupEnvironment=lambda: {"PATH": os.environ["PATH"], "ONLY": "startup"})
    monkeypatch.setitem(sys.modules, "slicer", fake)
    process = background_process.BackgroundProcess([sys.executable, "-c", "print('x')"])
    assert process.env["ONLY"] == "startup" and "PROSTATE_CAD_ENV_PROBE" not in process.env
    process.cleanup()


def _running(proc) -> bool:
    import psutil

    try:
        return proc.is_running() and proc.status() != psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return False


def _group_members(pgid: int) -> list:
    import psutil

    members = []
    for proc in psutil.process_iter():
        try:
            if os.getpgid(proc.pid) == pgid and proc.status() != psutil.STATUS_ZOMBIE:
                members.append(proc)
        except (ProcessLookupError, psutil.Error):
            pass
    return members


def test_cancel_stops_a_real_registration_with_its_workers_within_2_s(tmp_path):
    """`prostate-cad register --workers 2` on the sample: cancel returns at once, the launcher,
    the workers and every other descendant are gone within 2 s, the output folder holds
    nothing, and the scene is as it was."""
    psutil = pytest.importorskip("psutil", reason="psutil is a dev dependency")
    slicer = pytest.importorskip("slicer", reason="the slicer-core wheel is a dev dependency")
    from ProstateLesionCADLib.resources import sample_case_dir
    from ProstateLesionCADSlicer.cad_logic import CadLogic

    scene = slicer.vtkMRMLScene()
    cad = CadLogic(scene)
    cad.load_study(str(sample_case_dir()))
    nodes_before = scene.GetNumberOfNodes()
    runner = ProcessRunner()
    # PythonSlicer's stand-in: a launcher that starts Python and waits, so the tree is
    # launcher -> Python -> workers, and the launcher alone dies at once on SIGTERM
    launcher = [sys.executable, "-c", "import subprocess, sys; sys.exit(subprocess.call(sys.argv[1:]))"]

    def prepare(work):
        argv = cad.step_command("registration", work, python=sys.executable)
        return [*launcher, *argv, "--workers", "2"]

    process = runner.start("registration", prepare)
    root = psutil.Process(process._process.pid)
    deadline, workers = time.monotonic() + 120, []
    while time.monotonic() < deadline:
        update = runner.poll()
        assert not update.finished, update.log
        workers = [p for p in root.children(recursive=True) if "spawn_main" in " ".join(p.cmdline())]
        if any("process(es)" in line for line in update.log) and len(workers) >= 2:
            break
        time.sleep(0.1)
    assert len(workers) >= 2, "the registration never started its worker processes"
    tree = [root, *root.children(recursive=True)]
    started = time.monotonic()
    runner.cancel()
    assert time.monotonic() - started < 0.1  # cancel itself never waits
    update = runner.poll()
    while not update.finished:
        assert time.monotonic() - started < 2.0, "the process tree was still running 2 s after cancel"
        time.sleep(0.02)
        update = runner.poll()
    assert update.state == background_process.CANCELLED
    assert update.status_text() == "Cancelled; the scene is unchanged."
    running = [p for p in tree if _running(p)]  # a killed orphan may stay a zombie until init reaps it
    assert not running, f"still running after cancel: {running}"
    if os.name != "nt":
        assert not _group_members(root.pid)
    out = update.out_dir
    assert not out.exists() or not any(out.iterdir())
    assert not [p.name for p in out.parent.iterdir() if p.name.startswith(f".{out.name}.partial")]
    assert scene.GetNumberOfNodes() == nodes_before and cad.params.registration_transform is None
    update.cleanup()
    assert not out.parent.exists()


def test_the_device_probe_lists_devices_in_a_child_process():
    probe = background_process.start_device_probe(sys.executable)
    try:
        result = probe.wait(120)
        assert result.state == background_process.SUCCEEDED, probe.log
        assert [line for line in probe.log if line.strip()][-1].startswith("CPU (")
    finally:
        probe.cleanup()
    assert not probe.work_dir.exists()


STUBBORN = """
import signal, subprocess, sys, time
signal.signal(signal.SIGTERM, signal.SIG_IGN)
if sys.argv[1] == "parent":
    child = subprocess.Popen([sys.executable, "-c", sys.argv[2], "child"])  # this script again
    print(f"CHILD {child.pid}", flush=True)
print("PROGRESS 10.0 ignoring SIGTERM", flush=True)
time.sleep(60)
"""


@pytest.mark.skipif(os.name == "nt", reason="SIGTERM is a POSIX signal; Windows ends the tree at once")
def test_a_tree_that_ignores_the_request_to_end_is_killed_within_2_s():
    psutil = pytest.importorskip("psutil", reason="psutil is a dev dependency")
    runner = ProcessRunner(python_path=[])
    process = runner.start("zones", lambda work: [sys.executable, "-c", STUBBORN, "parent", STUBBORN])
    deadline, child = time.monotonic() + 30, None
    while child is None and time.monotonic() < deadline:
        update = runner.poll()
        child = next((int(line.split()[1]) for line in update.log if line.startswith("CHILD ")), None)
        time.sleep(0.02)
    while (runner.poll().percent or 0) < 10 and time.monotonic() < deadline:
        time.sleep(0.02)
    tree = [psutil.Process(process._process.pid), psutil.Process(child)]
    started = time.monotonic()
    runner.cancel()
    assert time.monotonic() - started < 0.1
    update = runner.poll()
    while not update.finished:
        assert time.monotonic() - started < 2.0, "SIGTERM was ignored and nothing killed the tree"
        time.sleep(0.02)
        update = runner.poll()
    assert update.state == background_process.CANCELLED
    assert time.monotonic() - started >= background_process.KILL_AFTER_S  # it really needed the kill
    assert not [p for p in tree if _running(p)]
    update.cleanup()
