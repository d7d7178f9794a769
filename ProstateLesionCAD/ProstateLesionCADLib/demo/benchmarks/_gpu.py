"""`make bench-gpu` (bench/gpu.sh): every stage on a CUDA device, written to
bench-output/REPORT-gpu.md — the device, the published tiny test vectors under float32 and
autocast, the paper-size 25-member ensemble one member at a time and batched (float32 and
autocast), and the whole pipeline (study folder -> detections.json) on the embedded sample
and on a phantom, with times and memory.

    python -m ProstateLesionCADLib.commands.bench_gpu --out bench-output

Zonal segmentation runs on the GPU too (the TAPS gland network with PyTorch, zones/onnx_torch.py,
and the cascade's CNN-2); registration runs on the CPU: its row shows what a GPU machine's CPU
adds to the detector's time.
"""

from __future__ import annotations

import datetime
import os
import platform
import tempfile
import time
from pathlib import Path
from typing import Sequence

from ...errors import CadError, ParameterError
from ._measure import measure, table
from .pipeline import STAGE_ORDER, run_detect

PARTS = ("vectors", "ensemble", "sample", "phantom")


class NoCudaDevice(CadError):
    """The GPU bench was started where PyTorch sees no CUDA device."""


def require_cuda() -> str:
    """The name of CUDA device 0, or NoCudaDevice in one sentence."""
    import torch

    if not torch.cuda.is_available():
        build = "a CPU-only PyTorch build" if torch.version.cuda is None else f"PyTorch built for CUDA {torch.version.cuda}"
        raise NoCudaDevice(f"make bench-gpu needs a CUDA GPU, but {build} sees none on this machine.")
    return torch.cuda.get_device_name(0)


def _device_lines(device: str) -> list[str]:
    import torch

    lines = [f"Date: {datetime.datetime.now(datetime.timezone.utc):%Y-%m-%d %H:%M} UTC; host CPU: "
             f"{platform.processor() or platform.machine()}, {os.cpu_count()} cores; torch {torch.__version__}."]
    if device.startswith("cuda"):
        props = torch.cuda.get_device_properties(0)
        lines.append(f"Device: {props.name}, {props.total_memory / 2**30:.1f} GB, compute capability "
                     f"{props.major}.{props.minor}; CUDA {torch.version.cuda}, cuDNN {torch.backends.cudnn.version()}.")
    else:
        lines.append("Device: the CPU (a check of this report's code, not a GPU figure).")
    return lines


def _reference_dir() -> Path:
    """The published network's test vectors kept in the repository (Testing/data/reference)."""
    from ...resources import resources_dir

    return resources_dir().parent / "Testing" / "data" / "reference"


def _test_vectors(device: str) -> dict:
    """Max |difference| of the tiny published network's outputs from the published vectors,
    float32 and under each autocast type, on `device`."""
    import torch

    from ...detection.retina_unet.mdt_import import convert_state_dict
    from ...detection.retina_unet.network import RetinaUNet, make_config

    mdt = _reference_dir() / "mdt_retina_unet"
    net = RetinaUNet(make_config(start_filts=4, n_blocks=[2, 2, 2, 2], n_rpn_features=16, patch_size=[64, 64, 24]))
    net.load_state_dict(convert_state_dict(torch.load(mdt / "weights_tiny.pt"), net))
    net = net.to(device).eval()
    x = torch.load(mdt / "input_tiny.pt").to(device)
    expected = torch.load(mdt / "expected_outputs_tiny.pt")
    rows = {}
    kind = "cuda" if device.startswith("cuda") else "cpu"
    for label, dtype in (("float32", None), ("autocast float16", torch.float16), ("autocast bfloat16", torch.bfloat16)):
        if dtype is torch.float16 and kind == "cpu":
            continue
        with torch.inference_mode(), torch.autocast(kind, dtype=dtype or torch.float32, enabled=dtype is not None):
            outs = net(x)
        rows[label] = max(float((o.float().cpu() - expected[k]).abs().max())
                          for o, k in zip(outs, ("class_logits", "bbox_deltas", "seg_logits")))
    return rows


def _ensemble(device: str, members: int) -> list[dict]:
    """The paper-size ensemble (random weights): one by one / batched, float32 / autocast (CUDA)."""
    import numpy as np
    import torch

    from ...detection.retina_unet.inference import RetinaUNetDetector
    from ...detection.retina_unet.network import RetinaUNet, make_config

    cfg = make_config()
    torch.manual_seed(0)
    state = RetinaUNet(cfg).state_dict()
    det = RetinaUNetDetector.from_states("exp0-random", cfg, [({"fold": i // 5, "rank": i % 5, "epoch": i}, state)
                                                               for i in range(members)], device)
    x = np.random.default_rng(0).normal(size=(8, 160, 160, 24)).astype(np.float32)
    rows, reference = [], None
    cuda = device.startswith("cuda")
    if cuda:  # CUDA start-up (context, kernels) outside the timings
        everyone, det.states = det.states, det.states[:1]
        det.predict(x)
        det.states = everyone
    # one by one: each member in its inference form (inference_network); batched: the full network
    # under torch.func.vmap. Which is faster on a GPU has not been measured: these rows tell.
    for label, per_batch, amp in (("one by one (inference form), float32", 1, None),
                                  ("one by one (inference form), autocast float16", 1, torch.float16),
                                  ("batched (full network), float32", None, None),
                                  ("batched (full network), autocast float16 (default)", None, torch.float16)):
        if amp is not None and not cuda:
            continue
        # batched on the CPU too when checking this code there (the CPU's own default is one by one)
        det.members_per_batch, det.cuda_autocast = per_batch or (None if cuda else members), amp
        if cuda:
            torch.cuda.synchronize()
            torch.cuda.reset_peak_memory_stats()
        t0 = time.perf_counter()
        out = det.predict(x)
        if cuda:
            torch.cuda.synchronize()
        seconds = time.perf_counter() - t0
        reference = reference or out
        rows.append({"run": label, "members per call": det.batch_size(), "seconds": f"{seconds:.2f}",
                     "GPU peak MB": f"{torch.cuda.max_memory_allocated() / 2**20:.0f}" if cuda else "",
                     "max seg difference": f"{float(np.abs(out.seg_mean - reference.seg_mean).max()):.2g}",
                     "boxes": len(out.boxes)})
    return rows


def _pipeline_rows(label: str, m: dict) -> list[dict]:
    if m["error"]:
        return [{"run": label, "stage": "error", "wall s": "", "CPU s": "", "peak MB": m["error"], "GPU peak MB": ""}]
    r = m["result"]
    rows = [{"run": label, "stage": s, "wall s": f"{r['stages'][s]['wall']:.1f}", "CPU s": f"{r['stages'][s]['cpu']:.1f}",
             "peak MB": "" if r["stages"][s]["peak_mb"] is None else f"{r['stages'][s]['peak_mb']:.0f}",
             "GPU peak MB": ""} for s in STAGE_ORDER]
    rows.append({"run": label, "stage": "**total**", "wall s": f"**{sum(v['wall'] for v in r['stages'].values()):.1f}**",
                 "CPU s": f"**{sum(v['cpu'] for v in r['stages'].values()):.1f}**", "peak MB": f"{m['peak_mb']:.0f}",
                 "GPU peak MB": "" if r["gpu_peak_mb"] is None else f"{r['gpu_peak_mb']:.0f}"})
    return rows


def _phantom_study(folder: Path) -> str:
    from ...demo.detector_model import demo_phantom
    from ...phantoms.generate import write_phantom

    return str(write_phantom(demo_phantom(424242, case_id="GpuBenchPhantom"), folder, fmt="nrrd"))


def run_gpu_bench(out_dir: str | os.PathLike, device: str = "cuda", parts: Sequence[str] = PARTS,
                  members: int = 25) -> Path:
    """Write out_dir/REPORT-gpu.md; device "cuda" (needs a CUDA device) or "cpu" (a check of the code)."""
    from .pipeline import study_folder

    if device.startswith("cuda"):
        require_cuda()
    elif device != "cpu":
        raise ParameterError(f"--device must be cuda, cuda:N or cpu, got {device!r}.")
    unknown = [p for p in parts if p not in PARTS]
    if unknown:
        raise ParameterError(f"--only: unknown part(s) {unknown}; choose from {', '.join(PARTS)}.")
    out = Path(out_dir)
    sections = ["# ProstateLesionCAD GPU benchmark report\n", "\n".join(_device_lines(device)) + "\n"]
    if "vectors" in parts:
        m = measure(_test_vectors, device)
        body = m["error"] or table([{"precision": k, "max abs difference": f"{v:.2g}",
                                     "within 1e-5 (published tolerance)": "yes" if v <= 1e-5 else "no"}
                                    for k, v in m["result"].items()],
                                   ["precision", "max abs difference", "within 1e-5 (published tolerance)"])
        sections.append("## Published tiny test vectors on the device\n\n" + body)
    if "ensemble" in parts:
        m = measure(_ensemble, device, members)
        body = m["error"] or table(m["result"], ["run", "members per call", "seconds", "GPU peak MB",
                                                 "max seg difference", "boxes"])
        sections.append(f"## Paper-size ensemble ({members} members, random weights, 8x160x160x24)\n\n{body}\n\n"
                        "max seg difference: against the first row.")
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        runs = []
        if "sample" in parts:
            study = study_folder()[0]
            runs += [(f"sample, {model}", study, model) for model in ("demo", "paper-size")]
        if "phantom" in parts:
            runs.append(("phantom, demo", _phantom_study(Path(tmp) / "phantom"), "demo"))
        for i, (label, study, model) in enumerate(runs):
            rows += _pipeline_rows(label, measure(run_detect, study, model, "fast", str(Path(tmp) / f"run{i}"), device))
    if rows:
        sections.append("## Pipeline: study folder -> detections.json (TAPS zones, fast registration)\n\n"
                        + table(rows, ["run", "stage", "wall s", "CPU s", "peak MB", "GPU peak MB"])
                        + "\nZones and registration run on the CPU; each run in a fresh process.")
    out.mkdir(parents=True, exist_ok=True)
    report = out / "REPORT-gpu.md"
    report.write_text("\n\n".join(s.strip() for s in sections) + "\n", encoding="utf-8")
    return report
