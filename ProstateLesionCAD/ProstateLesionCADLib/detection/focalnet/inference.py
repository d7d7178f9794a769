"""FocalNet inference and lesion localisation (Cao et al. 2019, Sec. II-E2).

"For each case, we find 2D local maxima from the detection output of the slices. The
trade-off between detection sensitivity and false detections is controlled by thresholding
on the detection probabilities of the local maxima." The detection output is the first
ordinal channel (P(lesion)). Each local maximum above `threshold` becomes a detection:
centre = the pixel centre on the FocalNet grid (LPS mm, in the slice's plane), score = its
P(lesion), GGG = the decoded ordinal class at that pixel mapped by `ordinal.class_to_ggg`,
at least GGG1 (a local maximum of the detection channel is a lesion candidate even when its
probability is below 0.5), class_scores = `ordinal.ggg_class_scores`.

Because the maxima are 2D, a lesion spanning several slices gives one detection per slice
(the paper's evaluation counts every one of them as a true positive, see evaluation/froc.py).
`merge_mm > 0` optionally keeps, among maxima closer than merge_mm in 3D, only the highest
(one marker per lesion in the Slicer view); the default 0 is the paper's behaviour.

Working point: `prostate-cad detect` writes only the maxima at or above the package's working
point (`working_point`: by default the GGG>=1 `max_sensitivity` threshold of the package's
`thresholds`, chosen on held-out or out-of-fold predictions: the detection score is P(lesion),
i.e. GGG>=1, and max_sensitivity keeps every held-out lesion the detector found, the high-
sensitivity end the paper reports, Tables II-III); `all_candidates` (`detect --all`) writes
every local maximum above the localisation threshold, as the paper's FROC sweeps them.
A package trained with `--folds` holds one network per fold (`ensemble.members`); their
P(lesion) maps are averaged, as the Retina U-Net package averages its fold members.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Optional, Sequence

import numpy as np
import SimpleITK as sitk
import torch
from skimage.feature import peak_local_max

from ...errors import ModelError
from ...evaluation.roc import POSITIVE_TOLERANCE
from ...formats import Detection, DetectionCase
from ...models.package import ModelPackage
from ...progress import ProgressCallback, silent
from ..outputs import DetectorOutput
from . import ordinal
from .preprocessing import FOV_MM, SliceStack, prepare_case
from .training import WEIGHTS_FILE, load_weights, pick_device

DEFAULT_THRESHOLD = 0.05
DEFAULT_MIN_DISTANCE_MM = 5.0


@dataclass
class Peak:
    z: int
    y: int
    x: int
    score: float


def predict_stack(model: torch.nn.Module | Sequence[torch.nn.Module], stack: SliceStack, device: str = "auto",
                  batch: int = 16) -> np.ndarray:
    """(z, 5, y, x) sigmoid outputs on the stack's grid (the mean over several networks);
    slices outside `stack.slices` are 0."""
    models = [model] if isinstance(model, torch.nn.Module) else list(model)
    dev = pick_device(device)
    x = stack.inputs()
    out = np.zeros((stack.t2.shape[0], ordinal.N_BITS) + stack.t2.shape[1:], np.float32)
    if len(x) == 0:
        return out
    total = np.zeros((len(x), ordinal.N_BITS) + stack.t2.shape[1:], np.float32)
    with torch.no_grad():
        for net in models:
            net = net.to(dev).eval()
            for i in range(0, len(x), batch):
                total[i:i + batch] += torch.sigmoid(net(torch.from_numpy(x[i:i + batch]).to(dev))).cpu().numpy()
    out[stack.slices] = total / len(models)
    return out


def local_maxima(detection: np.ndarray, threshold: float, min_distance_px: int,
                 slices: Optional[np.ndarray] = None) -> list[Peak]:
    """2D local maxima of a (z, y, x) detection map, slice by slice, with value > threshold."""
    peaks = []
    for z in (range(detection.shape[0]) if slices is None else slices):
        plane = detection[z]
        if plane.max() <= threshold:
            continue
        coords = peak_local_max(plane, min_distance=max(1, int(min_distance_px)), threshold_abs=threshold,
                                exclude_border=False)
        peaks.extend(Peak(int(z), int(y), int(x), float(plane[y, x])) for y, x in coords if plane[y, x] > threshold)
    return sorted(peaks, key=lambda p: -p.score)


def merge_peaks(points: np.ndarray, scores: np.ndarray, merge_mm: float) -> np.ndarray:
    """Indices kept by a greedy 3D non-maximum suppression at radius merge_mm."""
    order = np.argsort(-scores, kind="stable")
    kept: list[int] = []
    for i in order:
        if all(np.linalg.norm(points[i] - points[j]) >= merge_mm for j in kept):
            kept.append(int(i))
    return np.asarray(kept, dtype=int)


def near_prostate(stack: SliceStack, margin_mm: float) -> Optional[np.ndarray]:
    """The prostate mask on the stack's grid grown in-plane by margin_mm (None without a mask)."""
    if stack.prostate is None or not stack.prostate.any():
        return None
    from scipy.ndimage import binary_dilation
    radius = int(round(margin_mm / stack.grid.GetSpacing()[0]))
    yy, xx = np.mgrid[-radius:radius + 1, -radius:radius + 1]
    disk = (yy ** 2 + xx ** 2 <= radius ** 2)[None]
    return binary_dilation(stack.prostate > 0, structure=disk) if radius > 0 else stack.prostate > 0


def detections_from_output(prob: np.ndarray, stack: SliceStack, threshold: float = DEFAULT_THRESHOLD,
                           min_distance_mm: float = DEFAULT_MIN_DISTANCE_MM, merge_mm: float = 0.0,
                           prostate_margin_mm: Optional[float] = None) -> DetectionCase:
    """Localised points of one case (module docstring) as a `DetectionCase`.

    prostate_margin_mm: when set and the case has a prostate mask, maxima farther than this
    outside the gland are dropped (the paper instead relies on its 80 mm prostate crop)."""
    spacing = stack.grid.GetSpacing()[0]
    peaks = local_maxima(prob[:, 0], threshold, round(min_distance_mm / spacing), stack.slices)
    allowed = near_prostate(stack, prostate_margin_mm) if prostate_margin_mm is not None else None
    if allowed is not None:
        peaks = [p for p in peaks if allowed[p.z, p.y, p.x]]
    points = np.array([stack.grid.TransformContinuousIndexToPhysicalPoint((float(p.x), float(p.y), float(p.z)))
                       for p in peaks]).reshape(-1, 3)
    if merge_mm > 0 and peaks:
        keep = merge_peaks(points, np.array([p.score for p in peaks]), merge_mm)
        peaks, points = [peaks[i] for i in keep], points[keep]
    dets = []
    for i, (p, point) in enumerate(zip(peaks, points)):
        bits = prob[p.z, :, p.y, p.x]
        cls = max(1, int(ordinal.decode_probabilities(bits)))
        dets.append(Detection(id=i + 1, ggg=int(ordinal.class_to_ggg(cls)), score=p.score,
                              center_lps=tuple(float(v) for v in point),
                              class_scores=ordinal.ggg_class_scores(bits)))
    return DetectionCase(stack.case_id, dets)


def probability_image(prob: np.ndarray, stack: SliceStack) -> sitk.Image:
    """The detection channel P(lesion) as an image on the FocalNet grid."""
    img = sitk.GetImageFromArray(prob[:, 0].astype(np.float32))
    img.CopyInformation(stack.grid)
    return img


WORKING_POINT = {"criterion": "GGG>=1", "name": "max_sensitivity"}


def working_point(card: dict) -> Optional[tuple[str, float]]:
    """(description, threshold) of a FocalNet card's working point (module docstring); None
    when its thresholds block lacks it. `localisation.working_point` may name another one."""
    chosen = (card.get("localisation") or {}).get("working_point") or WORKING_POINT
    value = ((card.get("thresholds") or {}).get(chosen.get("criterion")) or {}).get(chosen.get("name"))
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return None
    return f"{chosen['criterion']} {chosen['name']}", float(value)


@dataclass
class FocalNetModel:
    """A loaded FocalNet package: network(s) + pre-processing and localisation parameters."""

    network: torch.nn.Module
    size: int
    fov_mm: float
    threshold: float
    min_distance_mm: float
    prostate_margin_mm: Optional[float] = None
    name: str = "focalnet"
    version: str = "1"
    members: tuple = ()  # every fold's network of a cross-validated package (network = the first)
    working_point: Optional[tuple[str, float]] = None

    @classmethod
    def from_package(cls, pkg: ModelPackage) -> "FocalNetModel":
        if pkg.task != "focalnet":
            raise ModelError(f"Model '{pkg.name}' is a {pkg.task!r} model, not a 'focalnet' model.")
        card = pkg.card
        files = [m["file"] for m in (card.get("ensemble") or {}).get("members", [])] or [WEIGHTS_FILE]
        networks = tuple(load_weights(pkg.file(f)) for f in files)
        loc = card.get("localisation", {})
        return cls(networks[0], int(card["input"]["size"]), float(card["input"].get("fov_mm", FOV_MM)),
                   float(loc.get("threshold", DEFAULT_THRESHOLD)),
                   float(loc.get("min_distance_mm", DEFAULT_MIN_DISTANCE_MM)), loc.get("prostate_margin_mm"),
                   pkg.name, pkg.version, networks, working_point(card))

    def predict(self, stack: SliceStack, device: str = "auto") -> np.ndarray:
        """The (z, 5, y, x) outputs of the package: the mean over its fold members."""
        return predict_stack(list(self.members) or self.network, stack, device)

    def working_threshold(self) -> Optional[float]:
        """The localisation threshold that keeps exactly the maxima with score > t - 1e-4 (the
        decision rule of every working point); None without a working point."""
        if self.working_point is None:
            return None
        return max(self.threshold, self.working_point[1] - POSITIVE_TOLERANCE)

    def prepare(self, case, prostate=None, transform=None) -> SliceStack:
        """The network's input slices, cut from the case in the canonical voxel order
        (prepare_case reorients): the same stack whatever the voxel order of the files."""
        return prepare_case(case, self.size, self.fov_mm, prostate=prostate, transform=transform)

    def localise(self, prob: np.ndarray, stack: SliceStack, threshold: Optional[float] = None,
                 merge_mm: float = 0.0) -> DetectionCase:
        """Detections from the network output with this package's localisation parameters."""
        return detections_from_output(prob, stack, self.threshold if threshold is None else threshold,
                                      self.min_distance_mm, merge_mm, self.prostate_margin_mm)

    def detect(self, case, prostate: Optional[sitk.Image] = None, transform: Optional[sitk.Transform] = None,
               device: str = "auto", threshold: Optional[float] = None, merge_mm: float = 0.0
               ) -> tuple[DetectionCase, np.ndarray, SliceStack]:
        stack = self.prepare(case, prostate, transform)
        prob = self.predict(stack, device)
        return self.localise(prob, stack, threshold, merge_mm), prob, stack


def detect_stack(model: FocalNetModel, stack: SliceStack, device: str = "auto", threshold: Optional[float] = None,
                 merge_mm: float = 0.0, progress: Optional[ProgressCallback] = None,
                 all_candidates: bool = True) -> DetectorOutput:
    """Run a loaded FocalNet on a prepared case: detections (LPS) and P(lesion) on the FocalNet grid.
    `all_candidates=False` keeps only the maxima at or above the package's working point
    (unless `threshold` is given)."""
    progress = progress or silent
    progress(0.0, f"FocalNet: inference on {len(stack.slices)} slices")
    t0 = time.perf_counter()
    prob = model.predict(stack, device)
    t1 = time.perf_counter()
    messages = []
    if threshold is None and not all_candidates:
        threshold = model.working_threshold()
        if threshold is None:
            messages.append(f"model {model.name} has no working point (thresholds GGG>=1); every local maximum "
                            "is written")
    dcase = model.localise(prob, stack, threshold, merge_mm)
    if threshold is not None and not all_candidates and model.working_point is not None:
        every = len(model.localise(prob, stack, None, merge_mm).detections)
        messages.append(f"{len(dcase.detections)} of {every} local maxima at or above the working point "
                        f"({model.working_point[0]}, {model.working_point[1]:.4g}); --all writes every one")
    t2 = time.perf_counter()
    progress(1.0, f"FocalNet: {len(dcase.detections)} local maxima")
    return DetectorOutput(dcase, probability_image(prob, stack), messages,
                          {"network": t1 - t0, "localisation": t2 - t1})
