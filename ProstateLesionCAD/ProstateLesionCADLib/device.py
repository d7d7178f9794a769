"""Compute device choice for inference and training: auto, cpu or cuda, saying what was found.

The names are those of PyTorch and of every `--device` option: "auto" (the first GPU,
else the CPU), "cpu", "cuda" (the first GPU: a CUDA device, or Apple's Metal device on a
Mac) and "cuda:N" (CUDA device N). "gpu" is read as "cuda". The Slicer panel shows
"cuda" as "GPU".

torch is imported lazily so the Slicer panel can list devices (and say that PyTorch is
missing) without loading it at start-up.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Optional

from .errors import ParameterError

CHOICES = ("auto", "cpu", "cuda")
SYNONYMS = {"gpu": "cuda"}


@dataclass(frozen=True)
class Device:
    torch_name: str  # "cpu", "cuda:0", "mps"
    label: str  # what a user reads in the panel


def _cpu_device() -> Device:
    return Device("cpu", f"CPU ({os.cpu_count() or 1} cores)")


def usable_cores() -> int:
    """The cores this process may run on: its CPU affinity, capped by a cgroup (container)
    CPU quota when one is set."""
    try:
        cores = len(os.sched_getaffinity(0))
    except AttributeError:  # macOS, Windows
        cores = os.cpu_count() or 1
    try:
        quota, period = open("/sys/fs/cgroup/cpu.max", encoding="ascii").read().split()[:2]
        if quota != "max":
            cores = min(cores, max(1, int(-(-int(quota) // int(period)))))
    except (OSError, ValueError):
        pass
    return max(1, cores)


def detect_devices() -> tuple[list[Device], Optional[str]]:
    """All usable devices (CPU first) and a note when PyTorch itself is unavailable."""
    devices = [_cpu_device()]
    try:
        import torch
    except ImportError:
        return devices, "PyTorch is not installed: only the CPU can be listed."
    if torch.cuda.is_available():
        for i in range(torch.cuda.device_count()):
            props = torch.cuda.get_device_properties(i)
            devices.append(Device(f"cuda:{i}", f"GPU {i}: {props.name} ({props.total_memory / 2**30:.1f} GB)"))
    mps = getattr(torch.backends, "mps", None)
    if mps is not None and mps.is_available():
        devices.append(Device("mps", "Apple GPU (Metal)"))
    return devices, None


def describe_devices() -> str:
    """One line for the panel / CLI, e.g. 'CPU (2 cores); no GPU found'."""
    devices, note = detect_devices()
    gpus = [d.label for d in devices if d.torch_name != "cpu"]
    text = devices[0].label + ("; " + "; ".join(gpus) if gpus else "; no GPU found")
    return text + (f" ({note})" if note else "")


def canonical_name(choice: Optional[str]) -> str:
    """The device name as CHOICES spell it ('' or None -> 'auto', 'GPU' -> 'cuda')."""
    name = (choice or "auto").strip().lower()
    return SYNONYMS.get(name, name)


def resolve_device(choice: str = "auto") -> Device:
    """'auto' -> first GPU if any, else CPU; 'cuda' (or 'gpu') without a GPU is a ParameterError."""
    requested = (choice or "auto").strip()
    name = canonical_name(choice)
    if name not in CHOICES and not name.startswith("cuda:"):
        raise ParameterError(f"--device must be one of {', '.join(CHOICES)}, got {requested!r}.")
    if name == "cpu":
        return _cpu_device()
    devices, note = detect_devices()
    gpus = [d for d in devices if d.torch_name != "cpu"]
    if name.startswith("cuda:"):
        match = [d for d in gpus if d.torch_name == name]
        if not match:
            raise ParameterError(f"--device {requested}: no such GPU (found: {describe_devices()}).")
        return match[0]
    if gpus:
        return gpus[0]
    if name == "cuda":
        raise ParameterError(f"--device {requested} was requested but no GPU is usable here ({describe_devices()}).")
    return devices[0]
