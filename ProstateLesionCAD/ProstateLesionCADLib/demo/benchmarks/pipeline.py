"""Bench: the whole pipeline as `prostate-cad detect` runs it — a study folder ->
detections.json (TAPS gland + CG split; the panel's `fast` registration and the command
line's 50-start `paper` one) — for the demo
ensemble and for a paper-size 25-member ensemble (exp0 topology, random weights): wall time,
CPU time and peak memory per stage and in total.

The study is the ProstateX-0000 DICOM study of ../shared when present (the same study as the
embedded sample), else the embedded sample (NRRD + case.json). Options (environment):
PROSTATE_CAD_BENCH_PIPELINE_PRESETS  registration presets, default "fast,paper"
PROSTATE_CAD_BENCH_PIPELINE_MODELS   "demo,paper-size" (default) or one of them
PROSTATE_CAD_BENCH_PIPELINE_STUDY    another study folder (DICOM or case folder)
"""

from __future__ import annotations

import json
import os
import resource
import tempfile
import threading
import time
from pathlib import Path
from typing import Any, Callable

from ._measure import measure, table

TITLE = "Pipeline: study folder -> detections.json (panel defaults)"
PAPER_SIZE_MEMBERS = 25
STAGE_ORDER = ("study", "model", "zones", "registration", "preprocessing", "detection", "outputs")


def _cpu_seconds() -> float:
    """CPU of this process and of its finished children (registration workers)."""
    own = resource.getrusage(resource.RUSAGE_SELF)
    kids = resource.getrusage(resource.RUSAGE_CHILDREN)
    return own.ru_utime + own.ru_stime + kids.ru_utime + kids.ru_stime


class _MemorySampler:
    """Largest resident memory of this process plus its child processes, per stage (sampled
    every 50 ms: worker processes have their own memory, which ru_maxrss does not add up)."""

    def __init__(self):
        import psutil

        self._proc = psutil.Process()
        self._peak = 0.0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, daemon=True)
        self._thread.start()

    def _rss_mb(self) -> float:
        total = self._proc.memory_info().rss
        for child in self._proc.children(recursive=True):
            try:
                total += child.memory_info().rss
            except Exception:  # a worker that ended between listing and reading
                pass
        return total / 2**20

    def _loop(self) -> None:
        while not self._stop.wait(0.05):
            self._peak = max(self._peak, self._rss_mb())

    def take_peak(self) -> float:
        """The peak since the last call (at least the memory now)."""
        peak, self._peak = max(self._peak, self._rss_mb()), 0.0
        return peak

    def close(self) -> None:
        self._stop.set()
        self._thread.join()


def _timed(stages: dict, name: str, sampler, work: Callable[[], Any]) -> Any:
    if sampler is not None:
        sampler.take_peak()
    w0, c0 = time.perf_counter(), _cpu_seconds()
    result = work()
    stages[name] = {"wall": time.perf_counter() - w0, "cpu": _cpu_seconds() - c0,
                    "peak_mb": sampler.take_peak() if sampler is not None else None}
    return result


def write_paper_size_package(folder: str | Path, members: int = PAPER_SIZE_MEMBERS) -> Path:
    """A detector package of the published exp0 topology and card with one set of random
    weights listed `members` times (every member is read and verified from disk, as with
    the published checkpoints)."""
    import torch

    from ...detection.retina_unet.mdt_import import published_card
    from ...detection.retina_unet.network import RetinaUNet, make_config
    from ...models.package import sha256_of

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    torch.manual_seed(0)
    weights = folder / "random-exp0.pt"
    torch.save(RetinaUNet(make_config()).state_dict(), weights)
    card = published_card([{"file": weights.name, "fold": i // 5, "rank": i % 5, "epoch": i}
                           for i in range(members)])
    card.update(format="prostate-cad-model/1", name="bench-paper-size-random", version="0",
                intended_use="Benchmark only: random weights of the paper's network size.")
    card["files"] = [{"path": weights.name, "sha256": sha256_of(weights), "bytes": weights.stat().st_size}]
    (folder / "model.json").write_text(json.dumps(card, indent=1), encoding="utf-8")
    return folder


def run_detect(study: str, model: str, preset: str, out_dir: str, device: str = "auto") -> dict:
    """One `prostate-cad detect` run with per-stage wall, CPU and peak memory (in a fresh process).
    model: "demo" or "paper-size"; study: a folder `load_case` reads."""
    import torch

    from ...demo.detector_model import DEMO_NAME
    from ...models.package import find_model
    from ...pipeline import Pipeline, check_options
    from ...study.loading import load_case

    try:
        sampler = _MemorySampler()
    except ImportError:  # psutil is a dev extra; without it only the total peak is known
        sampler = None
    stages: dict[str, dict] = {}
    try:
        case = _timed(stages, "study", sampler, lambda: load_case(study))

        def load_model():
            if model == "demo":
                pkg = find_model(DEMO_NAME, task="detector")
            else:
                pkg = find_model(str(write_paper_size_package(Path(out_dir) / "paper-size-package")), task="detector")
            return pkg, check_options(pkg).load(pkg, device)

        pkg, detector = _timed(stages, "model", sampler, load_model)
        # what run_pipeline does, one stage at a time so each can be measured
        pipeline = Pipeline(case, pkg, register_preset=preset, zones_backend="taps", device=device,
                            detector=detector)
        _timed(stages, "zones", sampler, pipeline.segment_zones)
        _timed(stages, "registration", sampler, pipeline.register)
        _timed(stages, "preprocessing", sampler, pipeline.preprocess)
        result = _timed(stages, "detection", sampler, pipeline.detect)
        _timed(stages, "outputs", sampler, lambda: pipeline.write(Path(out_dir) / "detections"))
    finally:
        if sampler is not None:
            sampler.close()
    gpu_mb = torch.cuda.max_memory_allocated() / 2**20 if torch.cuda.is_available() else None
    return {"stages": stages, "members": len(pkg.card["ensemble"]["members"]), "gpu_peak_mb": gpu_mb,
            "detections": len(result.detections.detections), "threads": torch.get_num_threads(),
            "detector steps": result.detector_output.timings}


def study_folder() -> tuple[str, str]:
    """The study the bench runs on and its label."""
    from ...resources import resources_dir, sample_case_dir

    given = os.environ.get("PROSTATE_CAD_BENCH_PIPELINE_STUDY")
    if given:
        return given, f"{given}"
    shared = Path(os.environ.get("PROSTATE_CAD_SHARED", resources_dir().parent.parent / "shared"))
    dicom = shared / "data" / "prostatex" / "ProstateX-0000"
    if dicom.is_dir():
        return str(dicom), "ProstateX-0000 DICOM study (the embedded sample's study)"
    return str(sample_case_dir()), "embedded ProstateX-0000 sample (NRRD + case.json; no DICOM study found)"


def _configurations() -> list[tuple[str, str]]:
    from ...errors import ParameterError
    from ...registration.multistart import PRESETS

    presets = [p.strip() for p in os.environ.get("PROSTATE_CAD_BENCH_PIPELINE_PRESETS", "fast,paper").split(",") if p.strip()]
    models = [m.strip() for m in os.environ.get("PROSTATE_CAD_BENCH_PIPELINE_MODELS", "demo,paper-size").split(",")
              if m.strip()]
    bad = [m for m in models if m not in ("demo", "paper-size")]
    if bad:
        raise ParameterError(f"PROSTATE_CAD_BENCH_PIPELINE_MODELS: unknown {bad} (choose demo, paper-size).")
    if any(p not in PRESETS for p in presets):
        raise ParameterError(f"PROSTATE_CAD_BENCH_PIPELINE_PRESETS: choose from {', '.join(PRESETS)}, got {presets}.")
    return [(m, p) for p in presets for m in models]


def _load() -> str:
    one, five, _ = os.getloadavg()
    return f"load average {one:.1f} (1 min), {five:.1f} (5 min) on {os.cpu_count()} cores"


def run(out_dir, progress) -> str:
    study, label = study_folder()
    configurations = _configurations()
    rows, notes = [], [f"Study: {label}. Load before the runs: {_load()}."]
    for i, (model, preset) in enumerate(configurations):
        name = f"{model} ensemble, {preset} registration"
        progress(i / len(configurations), f"pipeline: {name}")
        with tempfile.TemporaryDirectory() as tmp:
            m = measure(run_detect, study, model, preset, tmp)
        if m["error"]:
            rows.append({"run": name, "stage": "error", "wall s": "", "CPU s": "", "peak MB": m["error"]})
            continue
        r = m["result"]
        for stage in STAGE_ORDER:
            s = r["stages"][stage]
            rows.append({"run": name, "stage": stage, "wall s": f"{s['wall']:.1f}", "CPU s": f"{s['cpu']:.1f}",
                         "peak MB": "" if s["peak_mb"] is None else f"{s['peak_mb']:.0f}"})
        total_wall = sum(s["wall"] for s in r["stages"].values())
        total_cpu = sum(s["cpu"] for s in r["stages"].values())
        rows.append({"run": name, "stage": "**total**", "wall s": f"**{total_wall:.1f}**",
                     "CPU s": f"**{total_cpu:.1f}**", "peak MB": f"**{m['peak_mb']:.0f}** (process)"})
        steps = ", ".join(f"{k} {v:.1f} s" for k, v in r["detector steps"].items())
        notes.append(f"{name}: {r['members']} members, {r['detections']} detections, {r['threads']} torch "
                     f"threads; detection steps: {steps}.")
    notes.append(f"Load after the runs: {_load()}.")
    notes.append("Each run in a fresh process, stage by stage as `pipeline.run_pipeline` runs them "
                 "(`study`: load_case; `model`: the package read and the detector built). CPU s counts the "
                 "registration worker processes too; peak MB per stage is the sampled resident memory of the "
                 "process and its workers, the total is the process's own peak (ru_maxrss). The paper-size "
                 "ensemble is one set of random exp0 weights listed 25 times (the sample has no Ktrans: that "
                 "channel stays blank, as with the published model). Fewer runs: "
                 "PROSTATE_CAD_BENCH_PIPELINE_PRESETS=fast leaves out the paper's 50-start registration.")
    progress(1.0, "pipeline bench done")
    return table(rows, ["run", "stage", "wall s", "CPU s", "peak MB"]) + "\n" + "\n\n".join(notes) + "\n"
