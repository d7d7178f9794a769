"""Compute device choice for inference and training: auto, CPU or GPU, saying what was found.

torch is imported lazily so the Slicer panel can list devices (and say that PyTorch is
missing) without loading it at start-up.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Optional

from .errors import ParameterError

CHOICES = ("auto", "cpu", "gpu")


@dataclass(frozen=True)
class Device:
    torch_name: str  # "cpu", "cuda:0", "mps"
    label: str  # what a user reads in the panel


def _cpu_device() -> Device:
    return Device("cpu", f"CPU ({os.cpu_count() or 1} cores)")


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


def resolve_device(choice: str = "auto") -> Device:
    """'auto' -> first GPU if any, else CPU; 'gpu' without a GPU is a ParameterError."""
    choice = (choice or "auto").lower()
    if choice not in CHOICES and not choice.startswith("cuda"):
        raise ParameterError(f"--device must be one of {', '.join(CHOICES)}, got {choice!r}.")
    if choice == "cpu":
        return _cpu_device()
    devices, note = detect_devices()
    gpus = [d for d in devices if d.torch_name != "cpu"]
    if choice.startswith("cuda"):
        match = [d for d in gpus if d.torch_name == choice]
        if not match:
            raise ParameterError(f"--device {choice}: no such GPU (found: {describe_devices()}).")
        return match[0]
    if gpus:
        return gpus[0]
    if choice == "gpu":
        raise ParameterError(f"--device gpu was requested but no GPU is usable here ({describe_devices()}).")
    return devices[0]
