"""`make bench-gpu` stops with one sentence where there is no CUDA device (before installing
anything), and its report code runs on the CPU: the published tiny vectors under float32 and
bfloat16 autocast, and the ensemble's rows."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys

import pytest
import torch

from ProstateLesionCADLib.demo.benchmarks._gpu import NoCudaDevice, require_cuda, run_gpu_bench


def test_script_without_a_gpu_says_so_and_installs_nothing(repo_dir, tmp_path):
    bin_dir = tmp_path / "bin"  # a PATH without nvidia-smi, whatever this machine has
    bin_dir.mkdir()
    for tool in ("dirname", "grep"):
        os.symlink(shutil.which(tool), bin_dir / tool)
    venv = tmp_path / "venv-gpu"
    env = {"PATH": str(bin_dir), "VENV_GPU": str(venv), "OUT": str(tmp_path / "out"), "HOME": str(tmp_path)}
    done = subprocess.run(["/bin/bash", str(repo_dir / "bench" / "gpu.sh")], env=env, capture_output=True, text=True,
                          timeout=60)
    assert done.returncode == 2
    assert done.stderr.strip().count("\n") == 0 and done.stderr.startswith("error: make bench-gpu needs an NVIDIA GPU")
    assert not venv.exists() and not (tmp_path / "out").exists()


@pytest.mark.skipif(torch.cuda.is_available(), reason="this machine has a CUDA device")
def test_bench_without_cuda_fails_in_one_sentence(tmp_path):
    with pytest.raises(NoCudaDevice, match="needs a CUDA GPU"):
        require_cuda()
    done = subprocess.run([sys.executable, "-m", "ProstateLesionCADLib.commands.bench_gpu", "--out", str(tmp_path / "o")],
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 2, done.stderr
    assert done.stderr.startswith("error: make bench-gpu needs a CUDA GPU") and done.stderr.strip().count("\n") == 0
    assert "Traceback" not in done.stderr and not (tmp_path / "o").exists()


def test_report_code_on_the_cpu(tmp_path):
    report = run_gpu_bench(tmp_path, device="cpu", parts=["vectors"]).read_text(encoding="utf-8")
    assert "Device: the CPU" in report
    rows = {line.split("|")[1].strip(): line for line in report.splitlines() if line.startswith("| ")}
    assert rows["float32"].rstrip(" |").endswith("yes")  # the published vectors, through the report's own code
    # bfloat16 keeps about 3 significant digits: far outside the published 1e-5, so autocast stays a CUDA float16 choice
    assert rows["autocast bfloat16"].rstrip(" |").endswith("no")


def test_ensemble_rows_on_the_cpu(tmp_path):
    """The ensemble part as a GPU runs it, on the CPU with two members: the members one by one in
    their inference form and batched through the full network give the same lesion map."""
    report = run_gpu_bench(tmp_path, device="cpu", parts=["ensemble"], members=2).read_text(encoding="utf-8")
    rows = {line.split("|")[1].strip(): line.split("|") for line in report.splitlines() if line.startswith("| ")}
    one, batched = rows["one by one (inference form), float32"], rows["batched (full network), float32"]
    assert one[2].strip() == "1" and batched[2].strip() == "2"
    assert float(batched[5]) <= 1e-5  # max seg difference against the first row
    assert not any("autocast" in name for name in rows)  # float16 autocast rows are CUDA only
