"""Bench: Retina U-Net detector inference per case — the shipped demo model (the whole
`pipeline.run_pipeline` on a phantom) and the paper-size network (exp0 topology, random weights, 25
ensemble members on a 160x160x24 input); time, peak memory, their ratio, share per stage."""

from __future__ import annotations

import tempfile
import time
from pathlib import Path

from ._measure import measure, table

TITLE = "Lesion detector (Retina U-Net)"


def _demo_case(out_dir: str) -> dict:
    import torch

    from ...models.package import find_model
    from ...pipeline import run_pipeline
    from ..detector_model import DEMO_NAME, demo_phantom

    t0 = time.perf_counter()
    phantom = demo_phantom(424242, case_id="BenchPhantom")
    timings = {"phantom (not part of detect)": time.perf_counter() - t0}
    pkg = find_model(DEMO_NAME, task="detector")
    # the phantom's own zones and prostate, ADC/DWI as generated: no segmentation, no registration
    result = run_pipeline(phantom.case, pkg, out_dir, register_preset=None, device="auto")
    timings.update({stage: t for stage, t in result.timings.items() if stage != "detection"})
    timings.update(result.detector_output.timings)  # the detection stage, step by step
    return {"timings": timings, "members": len(pkg.card["ensemble"]["members"]),
            "detections": len(result.detections.detections), "threads": torch.get_num_threads()}


def _paper_size(n_members: int) -> dict:
    import numpy as np
    import torch

    from ...detection.retina_unet.inference import RetinaUNetDetector
    from ...detection.retina_unet.network import RetinaUNet, make_config

    cfg = make_config()
    torch.manual_seed(0)
    state = RetinaUNet(cfg).state_dict()
    members = [({"fold": i // 5, "rank": i % 5, "epoch": i}, state) for i in range(n_members)]
    det = RetinaUNetDetector.from_states("exp0-random", cfg, members, "auto")  # in memory, no package on disk
    x = np.random.default_rng(0).normal(size=(8, 160, 160, 24)).astype(np.float32)
    out = det.predict(x)
    return {"timings": out.timings, "members": n_members, "detections": len(out.boxes),
            "threads": torch.get_num_threads()}


def _member_forward(repeats: int = 3) -> dict:
    """One paper-size member's forward pass, median of `repeats`: the full network (the
    reference, as the detector ran it before), and its inference form with the box regressor
    at no anchor (random weights: nothing reaches the score threshold) and at every anchor
    (the most a trained member can need)."""
    import numpy as np
    import torch

    from ...detection.retina_unet.inference import cpu_threads_for_torch
    from ...detection.retina_unet.inference_network import InferenceNetwork
    from ...detection.retina_unet.network import RetinaUNet, feature_shapes, make_config

    cpu_threads_for_torch()
    cfg = make_config()
    torch.manual_seed(0)
    net = RetinaUNet(cfg).eval()
    x = torch.from_numpy(np.random.default_rng(0).normal(size=(1, 8, 160, 160, 24)).astype(np.float32))
    every = torch.arange(sum(y * xx * z for y, xx, z in feature_shapes(cfg)) * cfg["n_anchors_per_pos"])
    runs = {"full network": lambda: net(x),
            "inference form, deltas at no anchor": lambda: InferenceNetwork(net)(x, 0.25, torch.arange(0)),
            "inference form, deltas at every anchor": lambda: InferenceNetwork(net)(x, 0.25, every)}
    seconds = {}
    with torch.inference_mode():
        for name, run in runs.items():
            run()  # warm-up
            times = []
            for _ in range(repeats):
                t = time.perf_counter()
                run()
                times.append(time.perf_counter() - t)
            seconds[name] = float(np.median(times))
    return seconds


def _shares(timings: dict) -> str:
    total = sum(v for k, v in timings.items() if "not part" not in k)
    return ", ".join(f"{k} {100 * v / total:.0f}%" for k, v in sorted(timings.items(), key=lambda kv: -kv[1])
                     if "not part" not in k and total > 0)


def run(out_dir, progress) -> str:
    rows, notes = [], []
    progress(0.0, "detector: demo model on a phantom")
    with tempfile.TemporaryDirectory() as tmp:
        demo = measure(_demo_case, str(Path(tmp) / "demo"))
    progress(0.3, "detector: paper-size network, 25 members")
    paper = measure(_paper_size, 25)
    progress(0.8, "detector: one paper-size member's forward pass")
    member = measure(_member_forward)
    for label, m in (("demo model (phantom, whole pipeline)", demo), ("paper-size exp0, random weights", paper)):
        if m["error"]:
            rows.append({"model": label, "seconds per case": "error", "peak MB": "", "members": "",
                         "share per stage": m["error"]})
            continue
        r = m["result"]
        rows.append({"model": label, "seconds per case": f"{m['seconds']:.1f}", "peak MB": f"{m['peak_mb']:.0f}",
                     "members": r["members"], "share per stage": _shares(r["timings"])})
    if not demo["error"] and not paper["error"]:
        notes.append(f"Paper-size / demo time ratio: {paper['seconds'] / demo['seconds']:.1f}x; "
                     f"peak memory ratio: {paper['peak_mb'] / demo['peak_mb']:.1f}x.")
    notes.append("The paper-size run uses the exp0 topology (5.64 M parameters, 8x160x160x24 input) with one set of "
                 "random weights loaded 25 times (load + forward + decoding per member, then weighted box clustering); "
                 "random weights give no box above 0.25, so decoding/WBC time is a lower bound and the box "
                 "regressor runs at no anchor (`inference_network`); the next line gives its cost at every anchor.")
    if member["error"]:
        notes.append(f"One member's forward pass: {member['error']}")
    else:
        notes.append("One paper-size member's forward pass (median of 3, s): " + "; ".join(
            f"{k} {v:.3f}" for k, v in member["result"].items()) + ".")
    progress(1.0, "detector bench done")
    return table(rows, ["model", "seconds per case", "peak MB", "members", "share per stage"]) + "\n" + "\n".join(notes)
