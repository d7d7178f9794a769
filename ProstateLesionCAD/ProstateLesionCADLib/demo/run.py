"""`prostate-cad demo`: the detection pipeline on the embedded sample, step by step.

The demo is a list of `DemoStep`s sharing one `DemoState`. The zones, registration,
pre-processing and detection steps run the stages of one `pipeline.Pipeline` (the demo
detector, the fast registration preset) and write each stage's files; the others load the
sample and draw figures. `add_step(step, before=...)` inserts a step. Every step reports
progress and appends the files it wrote to `state.outputs`. All files are written into a
staged folder that replaces nothing until every step has succeeded
(`output_files.staged_output_dir`); an earlier demo's folder is replaced only with
`overwrite` (`prostate-cad demo --overwrite`).
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
    """What the steps share: where to write, the case, the pipeline run and its products."""

    out: Path  # staged output folder (moved onto the user's --out at the end)
    case_dir: Path
    case: Any = None  # study.case.Case
    pipeline: Any = None  # pipeline.Pipeline, made by the first step that needs it
    preprocessed: Any = None  # preprocessing.Preprocessed
    outputs: list[str] = field(default_factory=list)  # paths relative to `out`
    results: dict[str, Any] = field(default_factory=dict)  # options (registration_starts) and step results


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
    if state.results.get("dicom") is not None:
        _check_dicom_study(state)


def _check_dicom_study(state: DemoState) -> None:
    """The DICOM study given for the SEG is the case's own patient (said now, not after the run)."""
    from ..errors import CaseError
    from ..export.source import find_source

    study = find_source(state.results["dicom"])
    if study.dicom is None:
        raise CaseError(f"{state.results['dicom']}: not a DICOM study ({study.no_dicom})")
    if study.case_id != state.case.case_id:
        raise CaseError(f"The DICOM study {state.results['dicom']} is of {study.case_id!r}, not of the case "
                        f"{state.case.case_id!r}; give the case's own DICOM study.")


def _pipeline(state: DemoState):
    """The demo's pipeline run: the demo detector; registration with the fast preset (8 starts,
    `--registration-starts` to change) keeps the demo short."""
    if state.pipeline is None:
        from ..models.package import find_model
        from ..pipeline import Pipeline
        from .detector_model import DEMO_NAME

        state.pipeline = Pipeline(state.case, find_model(DEMO_NAME, task="detector"), register_preset="fast",
                                  registration_starts=state.results.get("registration_starts"), zones_backend="taps")
    return state.pipeline


def _zones(state: DemoState, progress: ProgressCallback) -> None:
    """Pretrained TAPS gland + the demo cascade's CNN-2 for the central gland; PZ = rest."""
    from ..zones.segment import contour_png, write_outputs

    result = _pipeline(state).segment_zones(progress)
    if result.zones_result is None:
        progress(1.0, "the case has zones: segmentation skipped")
        return
    folder = state.out / "zones"
    write_outputs(result.zones_result, folder)
    contour_png(state.case.t2, result.zones, folder / "zones.png",
                f"{state.case.case_id} zones (taps): CG blue, PZ orange, prostate dotted")
    state.outputs += ["zones/zones.nrrd", "zones/zones.json", "zones/zones.png"]
    state.results["zones"] = result.zones_result.report


def _register(state: DemoState, progress: ProgressCallback) -> None:
    """Multi-start ADC/DWI -> T2 registration scored in the CG and PZ just segmented."""
    from ..registration.outputs import write_registration_outputs

    result = _pipeline(state).register(progress)
    if result.registration is None:
        progress(1.0, "the case has no ADC map: registration skipped")
        return
    files = write_registration_outputs(state.case, result.registration, state.out / "registration")
    state.outputs += [f"registration/{name}" for name in files.values()] + ["registration/registration.json"]
    progress(1.0, result.registration.summary().splitlines()[0])


def _preprocess(state: DemoState, progress: ProgressCallback) -> None:
    state.preprocessed = _pipeline(state).preprocess(progress).preprocessed


def _detect(state: DemoState, progress: ProgressCallback) -> None:
    from ..detection.outputs import DETECTIONS_FILE, PROBABILITY_FILE
    from .detection_figure import draw_detections

    pipeline = _pipeline(state)
    name = pipeline.result.model.name
    progress(0.0, f"detecting lesions with {name} (a DEMO model trained on phantoms)")
    result = pipeline.detect(progress)
    folder = state.out / "detections"
    pipeline.write(folder)
    draw_detections(state.case.t2, result.probability, result.detections, folder / "lesions-over-t2.png",
                    f"{name}: DEMO MODEL trained on synthetic phantoms")
    state.outputs += [f"detections/{DETECTIONS_FILE}", f"detections/{PROBABILITY_FILE}", "detections/lesions-over-t2.png"]
    state.results["detections"] = result.detections
    state.results["detection_messages"] = result.detector_output.messages
    progress(1.0, f"{len(result.detections.detections)} detections (demo model)")


def _dicom_seg(state: DemoState, progress: ProgressCallback) -> None:
    """The detections and zones as a DICOM SEG and SR over the study's DICOM T2 (`state.results["dicom"]`,
    the study the case came from), then the SEG read back from its file and drawn over the T2
    images it refers to: the figure shows what a DICOM viewer gets, not our own masks."""
    from ..detection.outputs import DETECTIONS_FILE
    from ..export.results import SEG_FILE, SR_FILE, export_results
    from .dicom_seg_figure import draw_seg_over_t2, read_seg_over_t2

    study = Path(state.results["dicom"])
    zones = state.out / "zones" / "zones.nrrd"
    folder = state.out / "dicom"
    result = export_results(study, folder, detections=state.out / "detections" / DETECTIONS_FILE,
                            zones=zones if zones.is_file() else None, formats=["dicom-seg", "dicom-sr"],
                            progress=sub_progress(progress, 0.0, 0.6))
    progress(0.7, f"reading {SEG_FILE} back over the T2 images it refers to")
    overlay = read_seg_over_t2(folder / SEG_FILE, study)
    model = state.pipeline.result.model.name if state.pipeline is not None else "the detector"
    draw_seg_over_t2(overlay, folder / "seg-over-t2.png",
                     f"DICOM SEG of {model} (DEMO MODEL) and the zones, read back with highdicom over the DICOM T2")
    state.outputs += [f"dicom/{SEG_FILE}", f"dicom/{SR_FILE}", "dicom/seg-over-t2.png"]
    lesions = sum(1 for s in overlay.segments.values() if s.lesion)
    progress(1.0, f"{SEG_FILE}: {lesions} lesions, {len(overlay.segments) - lesions} zones over "
                  f"{len(overlay.slices)} T2 images of {result.case_id}")


def dicom_step() -> DemoStep:
    """The demo's DICOM step (run_demo adds it when it has a DICOM study for the case)."""
    return DemoStep("DICOM SEG over T2", _dicom_seg, 1.0)


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
    """The demo in order."""
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
             options: Optional[dict[str, Any]] = None, overwrite: Optional[bool] = None) -> DemoState:
    """Run the demo steps on `case_dir` (default: the embedded sample) into `out_dir`;
    `options` seed `state.results` (e.g. {"registration_starts": 2}; {"dicom": DIR}, the DICOM
    study of the case, adds the DICOM SEG step; a DICOM case folder is its own). A non-empty
    `out_dir` is replaced only with `overwrite` (unset: as the command's --overwrite says)."""
    from ..errors import CaseError
    from ..resources import sample_case_dir

    report = progress or silent
    case_path = Path(case_dir) if case_dir is not None else sample_case_dir()
    if not case_path.exists():
        if case_dir is not None:
            raise CaseError(f"The case {case_path} does not exist.")
        raise CaseError(f"The embedded sample {case_path} does not exist; reinstall the project "
                        f"or pass another case with --case.")
    options = dict(options or {})
    if options.get("dicom") is None and case_path.is_dir() and not (case_path / "case.json").is_file():
        options["dicom"] = case_path  # a DICOM study folder
    if steps is None:
        steps = default_steps() + ([dicom_step()] if options.get("dicom") is not None else [])
    total = sum(s.weight for s in steps) or 1.0
    done = 0.0
    with staged_output_dir(out_dir, overwrite) as stage:
        state = DemoState(out=stage, case_dir=case_path, results=options)
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
