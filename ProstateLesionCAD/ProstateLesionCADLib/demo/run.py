"""`prostate-cad demo`: run the pipeline on the embedded sample, step by step.

The demo is a list of `DemoStep`s sharing one `DemoState`. Each capability adds its
step (zonal segmentation, registration, detection, ...) with `add_step(step, before=...)`
or by editing `default_steps()`, so the demo and the README stay true as the project
grows. Every step reports progress and appends the files it wrote to `state.outputs`.
All files are written into a staged folder that replaces nothing until every step
has succeeded (`output_files.staged_output_dir`).
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Optional

from ..output_files import staged_output_dir
from ..progress import ProgressCallback, silent, sub_progress


@dataclass
class DemoState:
    """What the steps share: where to write, the case, and each step's results."""

    out: Path  # staged output folder (moved onto the user's --out at the end)
    case_dir: Path
    case: Any = None  # case.Case
    preprocessed: Any = None  # preprocessing.Preprocessed
    outputs: list[str] = field(default_factory=list)  # paths relative to `out`
    results: dict[str, Any] = field(default_factory=dict)  # free slots for later steps


@dataclass
class DemoStep:
    name: str
    run: Callable[[DemoState, ProgressCallback], None]
    weight: float = 1.0  # share of the progress bar


def _load_sample(state: DemoState, progress: ProgressCallback) -> None:
    from ..study.loading import load_case

    progress(0.0, f"loading {state.case_dir}")
    state.case = load_case(state.case_dir)
    progress(1.0, f"loaded {state.case.case_id}: {', '.join(state.case.roles_present())}")


def _register(state: DemoState, progress: ProgressCallback) -> None:
    """Multi-start ADC/DWI -> T2 registration scored in the CG and PZ just segmented; the fast
    preset (8 starts; `--registration-starts` to change) keeps the demo short."""
    from ..registration.register import register_case
    from ..registration.outputs import write_registration_outputs

    result = register_case(state.case, preset="fast", starts=state.results.get("registration_starts"),
                           progress=progress)
    files = write_registration_outputs(state.case, result, state.out / "registration")
    state.outputs += [f"registration/{name}" for name in files.values()] + ["registration/registration.json"]
    state.results["transform"] = result.transform
    progress(1.0, result.summary().splitlines()[0])


def _zones(state: DemoState, progress: ProgressCallback) -> None:
    """Pretrained TAPS gland + the demo cascade's CNN-2 for the central gland; PZ = rest."""
    import SimpleITK as sitk
    from ..zones.segment import demo_zones

    report = demo_zones(state.case.t2, state.out / "zones", backend="taps", case_id=state.case.case_id,
                        progress=progress)
    zones = sitk.ReadImage(report["files"]["zones"])
    state.case.zones = zones
    state.case.prostate = sitk.Cast(zones > 0, sitk.sitkUInt8)
    state.outputs += ["zones/zones.nrrd", "zones/zones.json", "zones/zones.png"]
    state.results["zones"] = report


def _preprocess(state: DemoState, progress: ProgressCallback) -> None:
    from ..preprocessing.preprocess import preprocess

    state.preprocessed = preprocess(state.case, dwi_adc_transform=state.results.get("transform"),
                                    progress=progress)


def _detect(state: DemoState, progress: ProgressCallback) -> None:
    from .detection_figure import demo_detect_step

    demo_detect_step(state, progress)


def _write_channels(state: DemoState, progress: ProgressCallback) -> None:
    from ..preprocessing.preprocess import save_preprocessed

    progress(0.0, "writing the pre-processed channels as NRRD")
    folder = state.out / "preprocessed"
    for path in save_preprocessed(state.preprocessed, folder):
        state.outputs.append(str(path.relative_to(state.out)))
    progress(1.0, f"wrote {len(state.preprocessed.channels)} channels to preprocessed/")


def _montage(state: DemoState, progress: ProgressCallback) -> None:
    from ..preprocessing.montage import save_montage

    progress(0.0, "drawing the channel montage")
    path = save_montage(state.preprocessed, state.case.t2, state.out / "channels-montage.png")
    state.outputs.append(str(path.relative_to(state.out)))
    progress(1.0, "wrote channels-montage.png")


def default_steps() -> list[DemoStep]:
    """The demo in order. Later capabilities insert their steps here."""
    return [
        DemoStep("load sample", _load_sample, 1.0),
        DemoStep("zonal segmentation", _zones, 6.0),
        DemoStep("registration", _register, 6.0),
        DemoStep("pre-process", _preprocess, 3.0),
        DemoStep("write channels", _write_channels, 1.0),
        DemoStep("channel montage", _montage, 1.0),
        DemoStep("detect lesions (demo model)", _detect, 2.0),
    ]


def add_step(steps: list[DemoStep], step: DemoStep, before: Optional[str] = None,
             after: Optional[str] = None) -> list[DemoStep]:
    """Insert `step` before/after the step of that name (at the end when neither is given)."""
    names = [s.name for s in steps]
    anchor = before or after
    if anchor is None:
        steps.append(step)
        return steps
    if anchor not in names:
        raise ValueError(f"no demo step named {anchor!r}; steps: {names}")
    steps.insert(names.index(anchor) + (0 if before else 1), step)
    return steps


def _write_summary(state: DemoState) -> None:
    lines = [f"ProstateLesionCAD demo on {state.case.case_id if state.case else state.case_dir}", ""]
    prep = state.preprocessed
    if prep is not None:
        g = prep.geometry
        lines += [f"crop: {'x'.join(map(str, g.crop.size))} voxels at {g.crop.spacing} mm, centred on the "
                  f"{g.center_source} at LPS ({', '.join(f'{c:.1f}' for c in g.center_lps)}) mm", "channels:"]
        lines += [f"  {i:2d} {name:<9} {prep.sources.get(name, 'missing')}" for i, name in enumerate(prep.channels)]
    lines += ["", "files:"] + [f"  {p}" for p in state.outputs + ["SUMMARY.txt"]]
    (state.out / "SUMMARY.txt").write_text("\n".join(lines) + "\n", encoding="utf-8")


def run_demo(out_dir: str | os.PathLike, case_dir: Optional[str | os.PathLike] = None,
             steps: Optional[list[DemoStep]] = None, progress: Optional[ProgressCallback] = None,
             options: Optional[dict[str, Any]] = None) -> DemoState:
    """Run the demo steps on `case_dir` (default: the embedded sample) into `out_dir`;
    `options` seed `state.results` (e.g. {"registration_starts": 2})."""
    from ..errors import CaseError
    from ..resources import sample_case_dir

    report = progress or silent
    case_path = Path(case_dir) if case_dir is not None else sample_case_dir()
    if not case_path.exists():
        if case_dir is not None:
            raise CaseError(f"The case {case_path} does not exist.")
        raise CaseError(f"The embedded sample {case_path} does not exist; reinstall the project "
                        f"or pass another case with --case.")
    steps = steps if steps is not None else default_steps()
    total = sum(s.weight for s in steps) or 1.0
    done = 0.0
    with staged_output_dir(out_dir) as stage:
        state = DemoState(out=stage, case_dir=case_path, results=dict(options or {}))
        for number, step in enumerate(steps, 1):
            start = done / total
            done += step.weight
            step_progress = sub_progress(report, start, done / total)
            prefix = f"[{number}/{len(steps)} {step.name}] "
            step.run(state, lambda f, m, sp=step_progress, px=prefix: sp(f, px + m))
        _write_summary(state)
    state.out = Path(out_dir)
    report(1.0, f"demo finished: outputs in {state.out}")
    return state
