"""Bench: FocalNet (Cao et al. 2019) — detection with the shipped demo model on a phantom,
and the cost of training steps per loss (CE, FL, FL+MFL: MFL runs the network three times)."""

from __future__ import annotations

from pathlib import Path

TITLE = "FocalNet detector (demo model inference, training step cost per loss)"


def detect_phantom(seed: int) -> str:
    import tempfile

    import torch
    torch.set_num_threads(1)
    from ...models.package import find_model
    from ...phantoms.generate import make_phantom
    from ...pipeline import run_pipeline
    phantom = make_phantom(seed, with_dce=False, with_ktrans=False)
    with tempfile.TemporaryDirectory() as tmp:
        result = run_pipeline(phantom.case, find_model("focalnet-demo", task="focalnet"), tmp, device="cpu")
    return f"{len(result.preprocessed.slices)} slices, {len(result.detections.detections)} detections"


def training_steps(loss: str, steps: int) -> str:
    import torch
    torch.set_num_threads(1)
    from ...detection.focalnet.network import FocalNetConfig
    from ...detection.focalnet.phantom_data import phantom_cases
    from ...detection.focalnet.training import TrainSettings, train
    cases = phantom_cases([4100, 4101])
    settings = TrainSettings(loss=loss, steps=steps, network=FocalNetConfig(width=8, aspp_channels=16))
    _, info = train([c.stack for c in cases], settings, device="cpu")
    return f"{info['seconds'] / steps:.3f} s/step"


def run(out_dir: Path, progress) -> str:
    from ._measure import measure, table

    rows = []
    m = measure(detect_phantom, 9200)
    rows.append({"stage": "phantom + pipeline: pre-processing, detection, outputs (demo model)",
                 "result": m["result"] or m["error"],
                 "seconds": f"{m['seconds']:.1f}", "peak MB": f"{m['peak_mb']:.0f}"})
    for i, loss in enumerate(("ce", "fl", "fl+mfl")):
        progress((i + 1) / 4, f"training steps, {loss}")
        m = measure(training_steps, loss, 20)
        rows.append({"stage": f"2 phantoms + 20 training steps ({loss}, width 8, batch 16, 32 px patches)",
                     "result": m["result"] or m["error"], "seconds": f"{m['seconds']:.1f}", "peak MB": f"{m['peak_mb']:.0f}"})
    return table(rows, ["stage", "result", "seconds", "peak MB"])
