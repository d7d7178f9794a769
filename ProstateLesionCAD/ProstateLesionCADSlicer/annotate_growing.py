"""The Annotate section's growing in the background: seeds -> `prostate-cad grow` -> segments.

Growing one seed costs about 0.2 s of CPU (level sets on three sequences), too long for
Slicer's GUI thread, so the panel grows the way its steps run: the seeds and the images
they grow on are written as files, `prostate-cad grow` runs in a ProcessRunner, and the
lesions it wrote are read back into the seeds' segments. Three parts:

- `plan_grow` (GUI thread, cheap): which seeds to grow now (hand-edited segments are
  skipped unless forced), with each seed's position, grade and its segment's fingerprint
  as sent.
- `write_grow_inputs` (GUI thread, the step's `prepare`): T2, the high-b DWI and Ktrans as a
  case folder, the DWI's transform node as `--transform` (the command resamples the DWI
  onto T2 linearly, as AnnotateLogic.sequences does), the CAD panel's zones as `--zones`,
  the seeds as a CSV in LPS mm, lowest seed number first (where two lesions of one grow
  overlap, the lower number keeps the voxels, as the export's label map does).
- `apply_grow_result` (GUI thread): each seed's label of lesions.nrrd becomes its segment,
  with grow.json's volume and flags, unless the annotator changed the seed meanwhile:
  a seed moved or deleted, or a segment edited by hand, while the grow ran is left as it
  is now (a moved seed re-grows by itself: the panel's move handler asks for it).

`GrowQueue` is what the panel drives: one grow at a time in its own ProcessRunner, a grow
asked for while one runs waits and is merged with any other waiting request (the seeds of
both, re-checked when it starts), polled by the panel's timer.
"""

from __future__ import annotations

import dataclasses
import json
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Optional, Sequence, Union

import numpy as np
import SimpleITK as sitk

from ProstateLesionCADLib import coordinates
from ProstateLesionCADLib.errors import CadError, CaseError, FormatError, ParameterError
from ProstateLesionCADLib.lesions.growing import GrowParams, Seed

from . import mrml_volumes
from .annotate_logic import (MOVE_TOLERANCE_MM, AnnotateLogic, GrowOutcome, check_can_grow, segment_fingerprint,
                             segment_id_for)
from .background_process import CANCELLED, SUCCEEDED, ProcessRunner, StepUpdate, cli_command

STEP = "grow"
CANCELLED_MESSAGE = "Growing cancelled; the lesions are as they were."
MOVED = "moved"  # a request for the seeds that moved since they were grown, resolved when it starts
CASE_FOLDER = "case"
SEEDS_FILE = "seeds.csv"
ZONES_FILE = "zones.nrrd"
DWI_TRANSFORM_FILE = "dwi-transform.h5"
HIGH_B_MIN = 800.0  # `prostate-cad grow` grows on the highest measured (else computed) DWI with b >= 800
CASE_ID = "annotation"

PointIds = Union[None, str, Sequence[str]]  # None: every seed; MOVED; or control point IDs


@dataclass(frozen=True)
class SentSeed:
    """A seed as it was when the grow was asked for."""

    point_id: str
    number: int
    ggg: int
    position_ras: tuple[float, float, float]
    fingerprint: str  # its segment's fingerprint then ("" when it had none)


@dataclass
class GrowJob:
    seeds_node: object
    t2_node: object
    force: bool
    full: bool  # every seed: segments of deleted seeds go too
    sent: list[SentSeed] = field(default_factory=list)
    skipped_edited: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)


def plan_grow(logic: AnnotateLogic, seeds_node, t2_node, point_ids: Optional[Sequence[str]] = None,
              force: bool = False) -> GrowJob:
    """The seeds to send (default: all); hand-edited segments only with force."""
    check_can_grow(seeds_node, t2_node)
    job = GrowJob(seeds_node, t2_node, force, point_ids is None)
    seg_node = logic.segmentation_of(seeds_node)
    for pid in (logic.point_ids(seeds_node) if point_ids is None else list(point_ids)):
        edited = seg_node is not None and logic.is_edited(seg_node, pid)
        if edited and not force:
            job.skipped_edited.append(pid)
            continue
        has_segment = seg_node is not None and seg_node.GetSegmentation().GetSegment(segment_id_for(pid)) is not None
        job.sent.append(SentSeed(pid, logic.seed_number(seeds_node, pid), logic.get_ggg(seeds_node, pid),
                                 logic.position_ras(seeds_node, pid),
                                 segment_fingerprint(seg_node, segment_id_for(pid)) if has_segment else ""))
    return job


def _command_params(logic: AnnotateLogic) -> GrowParams:
    """The logic's growing parameters, of which the command takes --max-volume-cc only."""
    params = logic.grow_params
    if dataclasses.replace(GrowParams(), max_volume_cc=params.max_volume_cc) != params:
        raise ParameterError("Growing in the background takes the default growing parameters (and a maximum "
                             "volume) only, as `prostate-cad grow` does.")
    return params


def write_seeds(seeds: Sequence[SentSeed], path: Path) -> Path:
    """The seeds as `prostate-cad grow` reads them: CSV x,y,z,ggg,id in LPS mm, lowest number first."""
    lines = ["x,y,z,ggg,id"]
    for s in sorted(seeds, key=lambda s: s.number):
        x, y, z = coordinates.ras_to_lps(s.position_ras)
        lines.append(f"{x!r},{y!r},{z!r},{s.ggg},{s.number}")
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


def write_grow_inputs(logic: AnnotateLogic, job: GrowJob, work_dir) -> list[str]:
    """Write the images and seeds of a grow into work_dir; the argv of its `prostate-cad grow`."""
    from ProstateLesionCADLib.registration.register import apply_transform, read_transform
    from ProstateLesionCADLib.study.case import Case
    from ProstateLesionCADLib.study.case_json import write_case_files

    from .cad_logic import CadLogic

    work = Path(work_dir)
    params = _command_params(logic)
    cad = CadLogic(logic.scene)
    p = cad.params
    t2 = mrml_volumes.volume_node_to_image(job.t2_node)
    case = Case(case_id=CASE_ID, t2=t2)
    args: list[str] = []
    if p.dwi_high is not None:
        b = cad.b_value_of(p.dwi_high, "DWI_HIGH")
        if b >= HIGH_B_MIN:
            case.dwi[b] = mrml_volumes.volume_node_to_image(p.dwi_high)
            transform = mrml_volumes.write_world_transform(logic.scene, p.dwi_high, work / DWI_TRANSFORM_FILE)
            if transform is not None:
                args += ["--transform", str(transform)]
        else:
            job.notes.append(f"'{p.dwi_high.GetName()}' (b={b:g}) is below b{HIGH_B_MIN:g}: grown on T2 and Ktrans "
                             "only, as `prostate-cad grow` grows")
    if p.ktrans is not None:
        ktrans = mrml_volumes.volume_node_to_image(p.ktrans)
        # the command never moves Ktrans (the paper registers only DWI and ADC); one the user placed
        # under a transform node is written as the views show it
        path = mrml_volumes.write_world_transform(logic.scene, p.ktrans, work / "ktrans-transform.h5")
        case.ktrans = ktrans if path is None else apply_transform(ktrans, read_transform(path), t2, sitk.sitkLinear)
    case_json = write_case_files(case, work / CASE_FOLDER)
    zones = cad.zones_image() if p.t2 is not None and p.t2.GetID() == job.t2_node.GetID() else None
    if zones is not None:
        sitk.WriteImage(sitk.Cast(zones, sitk.sitkUInt8), str(work / ZONES_FILE))
        args += ["--zones", str(work / ZONES_FILE)]
    seeds = write_seeds(job.sent, work / SEEDS_FILE)
    return cli_command("grow", [str(case_json), "--seeds", str(seeds), "--out", str(work / "out"), "--method", "paper",
                                "--max-volume-cc", repr(float(params.max_volume_cc)), *args])


@dataclass
class _Report:
    volume_cc: float
    flags: list[str]


def _changed_meanwhile(logic: AnnotateLogic, job: GrowJob, seg_node, sent: SentSeed) -> bool:
    """Whether the annotator moved or deleted the seed, or edited its segment, while it grew."""
    if job.seeds_node.GetControlPointIndexByID(sent.point_id) < 0:
        return True
    moved = np.linalg.norm(np.subtract(logic.position_ras(job.seeds_node, sent.point_id), sent.position_ras))
    if moved > MOVE_TOLERANCE_MM:
        return True
    sid = segment_id_for(sent.point_id)
    now = segment_fingerprint(seg_node, sid) if seg_node.GetSegmentation().GetSegment(sid) is not None else ""
    return now != sent.fingerprint


def apply_grow_result(logic: AnnotateLogic, job: GrowJob, out_dir) -> GrowOutcome:
    """The lesions a finished grow wrote into the seeds' segments; seeds changed meanwhile stay as they are."""
    out = Path(out_dir) if out_dir is not None else None
    outcome = GrowOutcome(skipped_edited=list(job.skipped_edited))
    seeds_node, t2_node = job.seeds_node, job.t2_node
    if seeds_node.GetScene() is None or t2_node.GetScene() is None:  # the point list or the T2 was removed
        outcome.changed_meanwhile = [sent.point_id for sent in job.sent]
        return outcome
    seg_node = logic._ensure_segmentation(seeds_node, t2_node)
    if job.sent:
        try:
            labels = sitk.ReadImage(str(out / "lesions.nrrd"))
            summaries = {entry["id"]: entry for entry in json.loads((out / "grow.json").read_text())["lesions"]}
        except (RuntimeError, OSError, ValueError, KeyError) as exc:
            raise FormatError(f"{out}: the grow wrote no readable lesions.nrrd and grow.json ({exc}).") from None
        array = sitk.GetArrayViewFromImage(labels)
        ijk_to_ras = coordinates.image_ijk_to_ras_matrix(labels)
        for sent in job.sent:
            summary = summaries.get(sent.number)
            if summary is None:
                raise FormatError(f"{out}: grow.json has no lesion for seed {sent.number}.")
            if _changed_meanwhile(logic, job, seg_node, sent):
                outcome.changed_meanwhile.append(sent.point_id)
                continue
            mask, start = _cropped(array == summary["label"], t2_node, sent)
            seed = Seed(sent.number, coordinates.ras_to_lps(sent.position_ras), logic.get_ggg(seeds_node, sent.point_id))
            report = _Report(float(summary["volume_cc"]), list(summary["flags"]))
            logic._write_segment(seg_node, seeds_node, sent.point_id, seed, mask, start, ijk_to_ras, report)
            outcome.grown.append(sent.point_id)
            outcome.reports[sent.point_id] = report
    if job.full:
        outcome.removed = logic.remove_deleted_segments(seeds_node, job.force)
    outcome.notes = list(job.notes)
    return outcome


def _cropped(mask: np.ndarray, t2_node, sent: SentSeed) -> tuple[np.ndarray, list[int]]:
    """The mask (on the T2 grid) cut to its bounding box (array order k, j, i) and the box's start (i, j, k);
    the seed's voxel when empty (a lesion hidden under a lower-numbered one of the same grow)."""
    k, j, i = np.nonzero(mask)
    if k.size == 0:
        index = np.round(mrml_volumes.ras_to_ijk(t2_node, sent.position_ras)).astype(int)
        start = [min(max(int(index[d]), 0), mask.shape[2 - d] - 1) for d in range(3)]
        return np.zeros((1, 1, 1), bool), start
    lo, hi = (i.min(), j.min(), k.min()), (i.max(), j.max(), k.max())
    return mask[lo[2]:hi[2] + 1, lo[1]:hi[1] + 1, lo[0]:hi[0] + 1].copy(), [int(v) for v in lo]


@dataclass
class _Request:
    seeds_node: object
    t2_node: object
    every: bool = False
    moved: bool = False
    point_ids: list[str] = field(default_factory=list)
    force: bool = False

    def merged(self, later: "_Request") -> "_Request":
        """One request for the seeds of both; the later one's nodes and force."""
        ids = self.point_ids + [pid for pid in later.point_ids if pid not in self.point_ids]
        return _Request(later.seeds_node, later.t2_node, self.every or later.every, self.moved or later.moved, ids,
                        later.force)

    def point_id_list(self, logic: AnnotateLogic) -> Optional[list[str]]:
        """None for every seed, else the seeds asked for that still exist (moved ones found now)."""
        if self.every:
            return None
        alive = logic.point_ids(self.seeds_node)
        wanted = set(self.point_ids) | (set(logic.moved_seeds(self.seeds_node)) if self.moved else set())
        return [pid for pid in alive if pid in wanted]


@dataclass
class GrowUpdate:
    """One poll of the queue: progress while running; when `finished`, the outcome or the error."""

    finished: bool
    message: str = ""
    percent: Optional[float] = None
    outcome: Optional[GrowOutcome] = None
    error: str = ""
    log: list[str] = field(default_factory=list)


class GrowQueue:
    """One background grow at a time; a request while one runs waits (merged with any other waiting one)."""

    def __init__(self, logic: AnnotateLogic, runner: Optional[ProcessRunner] = None):
        self.logic = logic
        self.runner = runner or ProcessRunner()
        self._job: Optional[GrowJob] = None
        self._pending: Optional[_Request] = None

    @property
    def running(self) -> bool:
        return self._job is not None

    @property
    def waiting(self) -> bool:
        return self._pending is not None

    def request(self, seeds_node, t2_node, point_ids: PointIds = None, force: bool = False) -> Optional[GrowUpdate]:
        """Ask for a grow (None: every seed; MOVED; or control point IDs). Starts it, or queues it while
        one runs; a finished update when there was nothing to send (only removals or skipped edits)."""
        check_can_grow(seeds_node, t2_node)  # at once, not when a queued request starts
        request = _Request(seeds_node, t2_node, every=point_ids is None, moved=point_ids == MOVED,
                           point_ids=[] if point_ids is None or point_ids == MOVED else list(point_ids), force=force)
        if self.running:
            self._pending = request if self._pending is None else self._pending.merged(request)
            return None
        return self._start(request)

    def _start(self, request: _Request) -> Optional[GrowUpdate]:
        point_ids = request.point_id_list(self.logic)
        if point_ids is not None and not point_ids:
            return GrowUpdate(True, "Nothing to grow: no seed moved.", outcome=GrowOutcome())
        job = plan_grow(self.logic, request.seeds_node, request.t2_node, point_ids, request.force)
        if not job.sent:  # nothing for the command: removals and skipped edits only
            outcome = apply_grow_result(self.logic, job, None)
            return GrowUpdate(True, outcome.message(), outcome=outcome)
        self.runner.start(STEP, lambda work: write_grow_inputs(self.logic, job, work))
        self._job = job
        return None

    def poll(self) -> Optional[GrowUpdate]:
        """Progress of the running grow; its outcome once it ended (then a waiting request starts).
        None when nothing runs."""
        if self._job is None:
            return None
        update = self.runner.poll()
        if update is None or not update.finished:
            return GrowUpdate(False, update.message if update else "", update.percent if update else None)
        job, self._job = self._job, None
        try:
            result = self._finish(job, update)
        except CadError as exc:  # outputs that cannot be read back: said, nothing more written
            result = GrowUpdate(True, error=str(exc), log=update.log)
        finally:
            update.cleanup()
        pending, self._pending = self._pending, None
        if pending is not None:
            try:
                started = self._start(pending)
            except CaseError as exc:  # e.g. every seed deleted meanwhile
                started = GrowUpdate(True, error=str(exc))
            if started is not None and started.error:
                result.error = result.error or started.error
        return result

    def _finish(self, job: GrowJob, update: StepUpdate) -> GrowUpdate:
        if update.state == CANCELLED:
            return GrowUpdate(True, CANCELLED_MESSAGE, outcome=None, log=update.log)
        if update.state != SUCCEEDED:
            return GrowUpdate(True, update.status_text(), error=update.error or update.status_text(), log=update.log)
        outcome = apply_grow_result(self.logic, job, update.out_dir)
        return GrowUpdate(True, outcome.message(), 100.0, outcome, log=update.log)

    def wait(self, timeout: float, interval: float = 0.1) -> list[GrowUpdate]:
        """Poll until nothing runs or waits (scripts, self-tests); the finished updates, in order.
        TimeoutError (after stopping the grow) past `timeout` seconds."""
        deadline, finished = time.monotonic() + timeout, []
        while self.running:
            if time.monotonic() > deadline:
                self.stop()
                raise TimeoutError(f"Growing did not finish within {timeout:g} s; it was stopped.")
            update = self.poll()
            if update is not None and update.finished:
                finished.append(update)
            else:
                time.sleep(interval)
        return finished

    def cancel(self) -> None:
        """The user's Cancel: drop a waiting request and ask the running grow to end; the next
        polls report it finished with CANCELLED_MESSAGE, the segments as they were."""
        self._pending = None
        if self._job is not None:
            self.runner.cancel()

    def stop(self) -> None:
        """Cancel the running grow and drop a waiting one (the panel or the scene is closing)."""
        self._pending = None
        self._job = None
        self.runner.stop()
