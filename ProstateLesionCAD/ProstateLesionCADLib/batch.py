"""Detection over many cases: find the cases, run the one pipeline on each, keep going.

`discover_cases(sources)` turns what the user named into cases. A source is one case (a DICOM
folder of one study, a folder with case.json, a case .json file, a DICOMDIR) or a collection
that CASE_SOURCES recognises: a PI-CAI archive (every study of it), a list file (one case path
per line) or a folder of studies (each subfolder one case). A new kind of collection (e.g. an archive in another layout) is one
`CaseSource` in CASE_SOURCES, tried before the others.

`detect_cases(cases, package, out_root, ...)` runs `pipeline.run_pipeline` on each case into
out_root/<case name>/ with the detector loaded once. A case whose outputs are complete there
already (`is_finished`) is skipped, so a stopped batch resumes where it stopped; a case that
fails is recorded with its one-sentence error and the batch goes on. Nothing of a case is
kept in memory after it is written, so memory stays flat over a cohort. At the end
out_root/detections.json lists every finished case (one file for `prostate-cad evaluate`).
"""

from __future__ import annotations

import gc
import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Optional, Sequence

from .detection.outputs import DETECTIONS_FILE
from .errors import CadError, FormatError, ParameterError
from .formats import DetectionSet
from .models.package import ModelPackage
from .output_files import output_claim
from .pipeline import load_detector, run_pipeline
from .progress import ProgressCallback, silent, sub_progress
from .study.case import Case
from .study.picai_archive import is_picai_archive, list_cases
from .zones import ANTERIOR_BAND, PZ_SHELL_MM

DONE, SKIPPED, FAILED = "done", "skipped", "failed"


@dataclass
class BatchCase:
    """One case of a batch: its name (the output subfolder) and how to load it."""

    name: str
    source: Path
    load: Optional[Callable[[ProgressCallback], Case]] = None  # default: study.loading.load_case(source)

    def load_case(self, progress: ProgressCallback) -> Case:
        if self.load is not None:
            return self.load(progress)
        from .study.loading import load_case

        return load_case(self.source, progress=progress)


@dataclass(frozen=True)
class CaseSource:
    """A kind of collection of cases: `recognises(path)` and `cases(path)` (in a stable order)."""

    name: str
    recognises: Callable[[Path], bool]
    cases: Callable[[Path], list[BatchCase]]


def _case_name(path: Path) -> str:
    """The output subfolder of a case path: a case .json file is named after its folder
    when it is called case.json, else after its own stem."""
    if path.is_file() and path.suffix.lower() == ".json":
        return path.parent.name if path.name.lower() == "case.json" else path.stem
    if path.is_file():  # a DICOMDIR: named after the medium's folder
        return path.parent.name
    return path.name


def _is_list_file(path: Path) -> bool:
    from .study.dicomdir import is_dicomdir

    return path.is_file() and path.suffix.lower() != ".json" and not is_dicomdir(path)


def _list_file_cases(path: Path) -> list[BatchCase]:
    """One case path per line (relative to the list file); blank lines and # comments skipped."""
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise FormatError(f"{path}: cannot read the list of cases ({exc}).") from None
    cases = []
    for line in text.splitlines():
        entry = line.strip()
        if not entry or entry.startswith("#"):
            continue
        case_path = Path(entry) if Path(entry).is_absolute() else path.parent / entry
        cases.append(BatchCase(_case_name(case_path), case_path))
    if not cases:
        raise FormatError(f"{path}: the list of cases names no case (one case path per line).")
    return cases


def _first_dicom_study(folder: Path) -> Optional[str]:
    """The StudyInstanceUID of the first DICOM file found under `folder` (None: no DICOM)."""
    import pydicom
    from pydicom.errors import InvalidDicomError

    for root, dirs, files in os.walk(folder):
        dirs.sort()
        for name in sorted(files):
            try:
                ds = pydicom.dcmread(os.path.join(root, name), stop_before_pixels=True,
                                     specific_tags=["StudyInstanceUID"])
            except (InvalidDicomError, OSError, ValueError, EOFError):
                continue
            uid = str(ds.get("StudyInstanceUID", "") or "")
            if uid:
                return uid
    return None


def _subfolders(path: Path) -> list[Path]:
    return sorted(p for p in path.iterdir() if p.is_dir() and not p.name.startswith("."))


def _is_study_folder(path: Path) -> bool:
    """A folder of studies: no case.json of its own, and its subfolders are cases of their own
    (some hold case.json, or their DICOM files belong to more than one study). The series
    subfolders of one DICOM study share one StudyInstanceUID, so a study stays one case."""
    if not path.is_dir() or (path / "case.json").is_file():
        return False
    subfolders = _subfolders(path)
    if any((p / "case.json").is_file() for p in subfolders):
        return True
    studies = {uid for uid in map(_first_dicom_study, subfolders) if uid}
    return len(studies) > 1


def _study_folder_cases(path: Path) -> list[BatchCase]:
    cases = []
    for sub in _subfolders(path):
        if (sub / "case.json").is_file() or any(p.is_file() for p in sub.rglob("*")):
            cases.append(BatchCase(sub.name, sub))
    return cases


def _picai_cases(path: Path) -> list[BatchCase]:
    return [BatchCase(reference.name, reference) for reference in list_cases(path)]


# Collections, tried in order; a path none of them recognises is one case.
CASE_SOURCES: list[CaseSource] = [
    CaseSource("PI-CAI archive", is_picai_archive, _picai_cases),
    CaseSource("list file", _is_list_file, _list_file_cases),
    CaseSource("folder of studies", _is_study_folder, _study_folder_cases),
]


def case_source(path: str | os.PathLike) -> Optional[CaseSource]:
    """The collection kind `path` is, or None when it is one case."""
    path = Path(path)
    return next((source for source in CASE_SOURCES if source.recognises(path)), None)


def is_single_case(sources: Sequence[str | os.PathLike]) -> bool:
    """True when the user named exactly one case (its outputs go straight into --out); a path
    that does not exist counts as one case, so loading it says what is wrong."""
    return len(sources) == 1 and (not Path(sources[0]).exists() or case_source(sources[0]) is None)


def discover_cases(sources: Sequence[str | os.PathLike]) -> list[BatchCase]:
    """Every case the sources name, in the order given; ParameterError when there is none, a
    source does not exist, or two cases would write into the same output folder."""
    cases: list[BatchCase] = []
    for source in map(Path, sources):
        if not source.exists():
            raise ParameterError(f"{source}: no such case, folder of studies or list file.")
        kind = case_source(source)
        cases += kind.cases(source) if kind else [BatchCase(_case_name(source), source)]
    if not cases:
        raise ParameterError(f"{', '.join(map(str, sources))}: no case found.")
    seen: dict[str, Path] = {}
    for case in cases:
        if case.name in seen:
            raise ParameterError(f"Cases {seen[case.name]} and {case.source} would both write to the output "
                                 f"folder '{case.name}': rename one of them.")
        seen[case.name] = case.source
    return cases


def finished_detections(out_dir: str | os.PathLike) -> Optional[DetectionSet]:
    """The case's detections when its outputs are complete: detections.json reads as valid and
    the probability map it names exists (the writer stages both, so a stopped run leaves
    neither); None otherwise. The one read of a finished case's file in a batch."""
    from .formats import read_detections

    path = Path(out_dir) / DETECTIONS_FILE
    if not path.is_file():
        return None
    try:
        found = read_detections(path)
    except CadError:
        return None
    finished = (len(found.cases) == 1 and found.cases[0].probability_map is not None
                and Path(found.cases[0].probability_map).is_file())
    return found if finished else None


def is_finished(out_dir: str | os.PathLike) -> bool:
    """A case's outputs are complete (see `finished_detections`)."""
    return finished_detections(out_dir) is not None


@dataclass
class CaseOutcome:
    """How one case of a batch ended."""

    case: str
    status: str  # done | skipped (finished before) | failed
    detections: Optional[int] = None
    seconds: float = 0.0
    error: str = ""  # the one-sentence reason when failed
    out_dir: str = ""
    notes: list[str] = field(default_factory=list)

    def as_dict(self) -> dict[str, Any]:
        return {"case": self.case, "status": self.status, "detections": self.detections,
                "seconds": round(self.seconds, 2), "error": self.error, "out": self.out_dir, "notes": self.notes}


@dataclass
class BatchReport:
    outcomes: list[CaseOutcome]
    model: dict[str, str] = field(default_factory=dict)

    @property
    def failed(self) -> list[CaseOutcome]:
        return [o for o in self.outcomes if o.status == FAILED]

    def as_dict(self) -> dict[str, Any]:
        counts = {status: sum(o.status == status for o in self.outcomes) for status in (DONE, SKIPPED, FAILED)}
        return {"format": "prostate-cad-batch/1", "model": self.model, "counts": counts,
                "cases": [o.as_dict() for o in self.outcomes]}

    def table(self) -> str:
        """The per-case table: case, status, detections, seconds, error."""
        head = ("case", "status", "detections", "seconds", "error")
        rows = [(o.case, o.status, "" if o.detections is None else str(o.detections), f"{o.seconds:.1f}", o.error)
                for o in self.outcomes]
        widths = [max(len(r[i]) for r in [head, *rows]) for i in range(4)]
        lines = ["  ".join(cell.ljust(width) for cell, width in zip(row[:4], widths)) + "  " + row[4]
                 for row in [head, *rows]]
        done, skipped = sum(o.status == DONE for o in self.outcomes), sum(o.status == SKIPPED for o in self.outcomes)
        lines.append(f"{len(self.outcomes)} cases: {done} done, {skipped} skipped (finished before), "
                     f"{len(self.failed)} failed")
        return "\n".join(line.rstrip() for line in lines) + "\n"


def _error_sentence(exc: BaseException) -> str:
    if isinstance(exc, CadError):
        return str(exc)
    text = str(exc).strip().splitlines()
    return f"{type(exc).__name__}: {text[-1] if text else 'no message'}"[:300]


def detect_cases(cases: Sequence[BatchCase], package: ModelPackage, out_root: str | os.PathLike, *,
                 register_preset: Optional[str] = "paper", zones_backend: str = "taps", drop: Sequence[str] = (),
                 tta: bool = False, device: str = "auto", image_format: str = "nrrd", overwrite: bool = False,
                 progress: Optional[ProgressCallback] = None,
                 on_case: Optional[Callable[[CaseOutcome], None]] = None, all_candidates: bool = False,
                 pz_shell_mm: Optional[float] = PZ_SHELL_MM, pz_anterior_band: float = ANTERIOR_BAND) -> BatchReport:
    """Run the pipeline on every case into out_root/<case name>/; see the module docstring.

    `overwrite`: finished cases run again too, each case folder replaced as a whole.
    `on_case(outcome)` is called as each case ends (e.g. to print its notes at once).
    The detector is loaded on the first case that needs it; a package that cannot be loaded
    stops the batch (every case would fail the same way).
    """
    progress = progress or silent
    out_root = Path(out_root)
    detector = None
    outcomes: list[CaseOutcome] = []
    skipped_sets: dict[str, DetectionSet] = {}
    n = len(cases)
    for i, item in enumerate(cases):
        def report(fraction: float, message: str, i=i, item=item) -> None:
            progress((i + max(0.0, min(1.0, fraction))) / n, f"case {i + 1}/{n} {item.name}: {message}")

        out = out_root / item.name
        start = time.perf_counter()
        found = None if overwrite else finished_detections(out)
        if found is not None:
            outcome = CaseOutcome(item.name, SKIPPED, len(found.cases[0].detections), 0.0, out_dir=str(out))
            skipped_sets[item.name] = found  # kept for the cohort's file: read once
            report(1.0, "finished before, skipped")
        else:
            if detector is None:
                detector = load_detector(package, device)
            try:
                case = item.load_case(sub_progress(report, 0.0, 0.1))
                # <out>/<case>/ is the batch's own: a folder that is not finished (damaged, or an
                # earlier run's) is replaced; finished ones were skipped unless `overwrite`
                with output_claim(out, overwrite=True):
                    result = run_pipeline(case, package, out, register_preset=register_preset,
                                          zones_backend=zones_backend, drop=drop, tta=tta, device=device,
                                          detector=detector, progress=sub_progress(report, 0.1, 1.0),
                                          image_format=image_format, all_candidates=all_candidates,
                                          pz_shell_mm=pz_shell_mm, pz_anterior_band=pz_anterior_band)
                outcome = CaseOutcome(item.name, DONE, len(result.detections.detections),
                                      time.perf_counter() - start, out_dir=str(out), notes=list(result.messages))
            except Exception as exc:  # any failure of one case is recorded and the batch goes on
                outcome = CaseOutcome(item.name, FAILED, None, time.perf_counter() - start, _error_sentence(exc),
                                      out_dir=str(out))
                report(1.0, "failed")
            finally:
                case = result = None  # noqa: F841 — release the case's images before the next one
                gc.collect()
        outcomes.append(outcome)
        if on_case is not None:
            on_case(outcome)
    write_cohort_detections(out_root, [skipped_sets.get(o.case) or out_root / o.case
                                       for o in outcomes if o.status != FAILED])
    return BatchReport(outcomes, {"name": package.name, "version": package.version})


def write_cohort_detections(out_root: Path, cases: Sequence[Path | DetectionSet]) -> Optional[Path]:
    """out_root/detections.json: the cases' own detections.json files joined into one (their
    probability maps referenced where they are); a case is its output folder, or its detections
    when they were read already. None when no case finished."""
    from .formats import read_detections, write_detections

    if not cases:
        return None
    sets = [c if isinstance(c, DetectionSet) else read_detections(Path(c) / DETECTIONS_FILE) for c in cases]
    path = out_root / DETECTIONS_FILE
    write_detections(DetectionSet([c for s in sets for c in s.cases], model=sets[0].model), path)
    return path
