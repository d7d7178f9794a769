"""Bench: training throughput (samples/s) of the Retina U-Net fold loop and the zonal cascade
with the augmented batches made in the training process (workers 0) and by DataLoader worker
processes, on tiny configurations; the figures come from the runs' own history.json."""

from __future__ import annotations

from pathlib import Path

TITLE = "Training throughput (augmentation in the training process vs DataLoader workers)"

DETECTOR_CROP = (64, 64, 16)  # y, x, z
DETECTOR_RUN = {"batch_size": 4, "batches_per_epoch": 4, "epochs": 2, "save_n_models": 1}
ZONES_RUN = {"steps": 24, "batch": 8, "patch": 64, "val_every": 12}


def _synthetic_crops(n: int, seed: int):
    """Crops of 11 channels with one bright ellipsoid each (the detector's training input)."""
    import numpy as np

    from ...detection.retina_unet.training import TrainingCase

    rng = np.random.default_rng(seed)
    y, x, z = DETECTOR_CROP
    yy, xx, zz = np.mgrid[:y, :x, :z]
    cases = []
    for i in range(n):
        image = rng.normal(0, 0.1, (11, y, x, z)).astype(np.float32)
        image[8:] = 1.0
        cy, cx, cz, ggg = int(rng.integers(8, y - 8)), int(rng.integers(8, x - 8)), int(rng.integers(3, z - 3)), i % 4
        mask = ((yy - cy) ** 2 + (xx - cx) ** 2) / 16 + (zz - cz) ** 2 / 2 <= 1
        image[:8][:, mask] += 0.5 + 0.5 * ggg
        cases.append(TrainingCase(f"B{i:02d}", image, mask.astype(np.int16), {1: ggg}))
    return cases


def detector_throughput(workers: int, out_dir: str) -> dict:
    """One fold of the tiny detector; samples/s of its last epoch (the first also starts the workers)."""
    import json

    import torch
    torch.set_num_threads(1)
    from ...detection.retina_unet.network import make_config
    from ...detection.retina_unet.train_detector import DEFAULT_CHANNELS
    from ...detection.retina_unet.training import train_fold, training_settings

    cases = _synthetic_crops(6, 3)
    cfg = make_config(start_filts=4, n_blocks=[1, 1, 1, 1], n_rpn_features=8, patch_size=list(DETECTOR_CROP),
                      n_channels=11)
    settings = training_settings(DETECTOR_RUN)
    train_fold(0, cases[:5], cases[5:], cfg, DEFAULT_CHANNELS, settings, Path(out_dir), torch.device("cpu"),
               workers=workers)
    last = json.loads((Path(out_dir) / "fold_0" / "history.json").read_text())[-1]
    return {"samples_per_s": last["samples_per_s"], "wait": last["data_wait_seconds"]}


def zones_throughput(workers: int, out_dir: str) -> dict:
    """The tiny zonal cascade on 3 phantoms; samples/s of its last epoch."""
    import json

    import torch
    torch.set_num_threads(1)
    from ...demo.zones_model import write_phantom_pairs
    from ...zones.training import train_zones

    images, labels = write_phantom_pairs(3, 9300, Path(out_dir) / "data")
    train_zones(images, labels, Path(out_dir) / "pkg", workers=workers, **ZONES_RUN)
    last = json.loads((Path(out_dir) / "pkg" / "history.json").read_text())[-1]
    return {"samples_per_s": last["samples_per_s"], "wait": last["data_wait_seconds"]}


def run(out_dir: Path, progress, worker_counts=(0, 2)) -> str:
    import tempfile

    from ._measure import measure, table

    rows = []
    stages = (("Retina U-Net fold: 11-channel 64x64x16 crops, batch 4, elastic + affine + mirror + channel drop",
               detector_throughput),
              ("zonal cascade: 3 phantoms, 2.5D 64-px patches, batch 8, affine + intensity", zones_throughput))
    total = len(stages) * len(worker_counts)
    for s, (what, func) in enumerate(stages):
        for w, workers in enumerate(worker_counts):
            progress((s * len(worker_counts) + w) / total, f"{func.__name__}, workers {workers}")
            with tempfile.TemporaryDirectory() as tmp:
                m = measure(func, workers, tmp)
            r = m["result"]
            rows.append({"training": what, "workers": f"{workers}" + (" (in the training process)" if not workers else ""),
                         "samples/s": f"{r['samples_per_s']:.1f}" if r else m["error"],
                         "waiting for data (s, last epoch)": f"{r['wait']:.2f}" if r else "",
                         "seconds": f"{m['seconds']:.1f}", "peak MB": f"{m['peak_mb']:.0f}"})
    note = ("\nOne torch thread in the training process; samples/s of the last epoch (the training steps only, "
            "validation excluded) as written in the run's history.json; peak MB is the training process alone. "
            "Workers 0 is how the batches were made before the DataLoader workers existed.\n")
    return table(rows, ["training", "workers", "samples/s", "waiting for data (s, last epoch)", "seconds",
                        "peak MB"]) + note
