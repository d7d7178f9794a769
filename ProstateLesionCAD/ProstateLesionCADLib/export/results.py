"""`export_results`: a finished run's detections and/or zones -> DICOM SEG, DICOM SR, .seg.nrrd.

Which case of a detections file: `case_id` when given, else the study's own id. A file whose
cases do not include the study's id is refused unless `case_id` names the case, so one
patient's lesions never land in another patient's study by accident.

Formats: `dicom-seg`, `dicom-sr` (it refers to the SEG, so the SEG is written with it) and
`seg-nrrd`; none named means every format the case allows (no DICOM for an image-file
case, said in a note). Files are staged and appear together in the output folder, beside
whatever it already holds (it may be the detection run's own folder).
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterable, Optional

from ..errors import CaseError, FormatError, ParameterError
from ..formats import DetectionCase, DetectionSet, load_json_object, read_detections
from ..image_files import read_image_file
from ..output_files import staged_output_dir
from ..progress import ProgressCallback, silent
from .segments import Algorithm, Segment, lesion_segments, zone_segments
from .source import ExportSource, find_source

SEG_FILE = "segmentation.dcm"
SR_FILE = "measurement-report.dcm"
SEG_NRRD_FILE = "segmentation.seg.nrrd"
FORMATS = ("dicom-seg", "dicom-sr", "seg-nrrd")
FILES = {"dicom-seg": SEG_FILE, "dicom-sr": SR_FILE, "seg-nrrd": SEG_NRRD_FILE}
ZONES_FORMAT = "prostate-cad-zones/1"


@dataclass
class ExportResult:
    case_id: str
    files: dict[str, Path]  # format -> written file
    segments: list[Segment]
    messages: list[str] = field(default_factory=list)


def choose_formats(wanted: Optional[Iterable[str]], source: ExportSource) -> tuple[list[str], list[str]]:
    """(formats to write, notes); CaseError when DICOM is asked for a case without DICOM."""
    wanted = list(wanted or [])
    unknown = [f for f in wanted if f not in FORMATS]
    if unknown:
        raise ParameterError(f"Unknown export format {unknown[0]!r}; use {', '.join(FORMATS)}.")
    notes = []
    if not wanted:
        wanted = list(FORMATS) if source.dicom is not None else ["seg-nrrd"]
        if source.dicom is None:
            notes.append(f"no DICOM SEG or SR: {source.no_dicom}")
    elif source.dicom is None and any(f.startswith("dicom") for f in wanted):
        raise CaseError(source.no_dicom)
    if "dicom-sr" in wanted and "dicom-seg" not in wanted:
        wanted.append("dicom-seg")
        notes.append("the DICOM SR refers to the segments of a DICOM SEG, so the SEG is written with it")
    return [f for f in FORMATS if f in wanted], notes


def detection_case(dset: DetectionSet, path: Path, study_id: str, case_id: Optional[str]) -> DetectionCase:
    by_case = dset.by_case()
    if case_id is not None:
        if case_id not in by_case:
            raise ParameterError(f"{path} has no case {case_id!r}; it holds {', '.join(sorted(by_case)) or 'no cases'}.")
        return by_case[case_id]
    if study_id in by_case:
        return by_case[study_id]
    raise CaseError(f"{path} holds {', '.join(repr(c) for c in sorted(by_case)) or 'no cases'}, not the study's "
                    f"{study_id!r}; pass --case-id to export one of them onto this study anyway.")


def zones_algorithm(zones_path: Path) -> Algorithm:
    """The zones model named in zones.json beside the label map, when there is one."""
    meta_path = zones_path.parent / "zones.json"
    if meta_path.is_file():
        try:
            meta = load_json_object(meta_path)
        except FormatError:
            meta = {}
        if meta.get("format") == ZONES_FORMAT:
            models = meta.get("models") if isinstance(meta.get("models"), dict) else {}
            model = models.get("central_gland") or models.get("prostate") or {}
            if isinstance(model, dict) and model.get("name"):
                return Algorithm(str(model["name"]), str(model.get("version", "")) or "unknown")
            if meta.get("backend"):
                return Algorithm(f"prostate-cad zones {meta['backend']}", "unknown")
    return Algorithm("prostate-cad zones", "unknown")


def _what(segments: list[Segment]) -> str:
    kinds = [k for k, present in (("lesions", any(s.lesion for s in segments)),
                                   ("zones", any(s.zone for s in segments))) if present]
    return " and ".join(kinds)


def export_results(case_path: str | os.PathLike, out_dir: str | os.PathLike,
                   detections: Optional[str | os.PathLike] = None, zones: Optional[str | os.PathLike] = None,
                   formats: Optional[Iterable[str]] = None, case_id: Optional[str] = None, min_score: float = 0.0,
                   progress: Optional[ProgressCallback] = None) -> ExportResult:
    """Write the standard files of a run on the case at `case_path` into `out_dir`."""
    progress = progress or silent
    if detections is None and zones is None:
        raise ParameterError("Nothing to export: give a detections file, a zones label map, or both.")
    if not 0.0 <= float(min_score) <= 1.0:
        raise ParameterError(f"The minimum score must lie in 0..1, got {min_score}.")
    progress(0.0, "reading the study's T2 headers")
    source = find_source(case_path)
    wanted, messages = choose_formats(formats, source)
    grid = source.t2_grid
    zones_image = read_image_file(zones, "zones image", label=True, max_label=2) if zones is not None else None

    segments: list[Segment] = []
    algorithms: list[Algorithm] = []
    if detections is not None:
        path = Path(detections)
        dset = read_detections(path)
        case = detection_case(dset, path, source.case_id, case_id)
        probability = None
        if case.probability_map is not None:
            probability = read_image_file(case.probability_map, f"probability map of case {case.case_id!r}")
        progress(0.2, "lesion masks")
        lesions = lesion_segments(case, grid, probability, zones_image, min_score)
        model = dset.model or {}
        detector = Algorithm(str(model.get("name") or "prostate-cad detector"), str(model.get("version") or "unknown"))
        segments += lesions
        algorithms += [detector] * len(lesions)
        left_out = len(case.detections) - len(lesions)
        if left_out:
            messages.append(f"{left_out} of {len(case.detections)} detections left out "
                            f"(score below {min_score:g} or box outside the T2 grid)")
    if zones_image is not None:
        zones_model = zones_algorithm(Path(zones))  # type: ignore[arg-type]
        zone_list = zone_segments(zones_image, grid, zones_model.name)
        segments += zone_list
        algorithms += [zones_model] * len(zone_list)
        if not zone_list:
            messages.append(f"{zones}: neither CG (1) nor PZ (2) voxels on the T2 grid, so no zone segments")
    if not segments:
        raise CaseError("Nothing to export: no lesion (detections scoring at least the minimum score) "
                        "and no zone voxels on the T2 grid.")

    files: dict[str, Path] = {}
    what = _what(segments)
    with staged_output_dir(out_dir) as stage:
        if "seg-nrrd" in wanted:
            from .seg_nrrd import write_seg_nrrd

            progress(0.4, "writing the .seg.nrrd")
            write_seg_nrrd(stage / SEG_NRRD_FILE, grid, segments)
        if "dicom-seg" in wanted:
            import highdicom as hd

            from .dicom_seg import build_dicom_seg

            assert source.dicom is not None
            progress(0.6, "writing the DICOM SEG")
            tracking_uids = [str(hd.UID()) for _ in segments]
            number = source.dicom.next_series_number
            seg = build_dicom_seg(source.dicom, segments, algorithms, tracking_uids, number,
                                  f"CAD {what} (prostate-cad)")
            seg.save_as(stage / SEG_FILE)
            if "dicom-sr" in wanted:
                from .dicom_sr import build_dicom_sr

                progress(0.8, "writing the DICOM SR")
                sr = build_dicom_sr(source.dicom, seg, segments, algorithms, tracking_uids, number + 1,
                                    f"CAD {what} measurements (prostate-cad)")
                sr.save_as(stage / SR_FILE)
    for name in wanted:
        files[name] = Path(out_dir) / FILES[name]
    progress(1.0, "export done")
    return ExportResult(source.case_id, files, segments, messages)
