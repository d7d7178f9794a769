"""Prostate, central gland and peripheral zone of one T2: the step behind `prostate-cad zones`.

Main paper, methods "Automated prostate zonal segmentation": prostate from CNN-1, CG from
CNN-2 given T2 + prostate, PZ = prostate − CG. Backends for CNN-1:

- "taps" (default): the pretrained TAPS gland network (taps_backend.py), trained on real
  MRI; CNN-2 of the chosen zones model then splits it into CG and PZ;
- "cascade": both CNNs from the zones model package.

Outputs (write_outputs): zones.nrrd on the T2 grid (1 = CG, 2 = PZ, prostate = union)
and zones.json (volumes per zone, models used, QC flags).
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Optional

import numpy as np
import SimpleITK as sitk

from ..errors import ParameterError
from ..orientation import onto_grid, to_canonical
from ..progress import ProgressCallback, silent, sub_progress
from . import BACKENDS

from .cascade import DEMO_MODEL, load_cascade, run_cascade
from .postprocess import ANTERIOR_BAND, CG_LABEL, PZ_LABEL, PZ_SHELL_MM, check_pz_restriction
from .qc import check_gland, check_zone_split, voxel_volume_cm3

ZONES_FORMAT = "prostate-cad-zones/1"
DEMO_WARNING = ("The central-gland/peripheral-zone split comes from a demo model trained on synthetic "
                "phantoms only: on real MRI it is not validated — review and correct it.")


@dataclass
class ZonesResult:
    zones: sitk.Image  # UInt8 on the T2 grid, 1 = CG, 2 = PZ
    report: dict = field(default_factory=dict)

    def mask(self, which: str) -> np.ndarray:
        z = sitk.GetArrayFromImage(self.zones)
        return {"prostate": z > 0, "cg": z == CG_LABEL, "pz": z == PZ_LABEL}[which]


def _model_entry(card: dict) -> dict:
    return {k: card.get(k) for k in ("name", "version", "intended_use", "training_data") if card.get(k) is not None}


def segment_zones(t2: sitk.Image, backend: str = "taps", model: str | os.PathLike = DEMO_MODEL,
                  case_id: str = "", progress: Optional[ProgressCallback] = None,
                  gland_model_path: Optional[Path] = None,
                  pz_shell_mm: Optional[float] = PZ_SHELL_MM, pz_anterior_band: float = ANTERIOR_BAND) -> ZonesResult:
    """Zonal label map of `t2` (LPS SimpleITK image, any voxel order) on its own grid, with its
    report (volumes, models, QC flags, post-processing). `pz_shell_mm`, `pz_anterior_band`: the PZ
    restriction to the posterior-lateral shell (postprocess.posterior_lateral_pz); None skips it."""
    from .taps_gland import check_t2, segment_gland

    progress = progress or silent
    if backend not in BACKENDS:
        raise ParameterError(f"--backend must be one of {', '.join(BACKENDS)}, got {backend!r}.")
    check_t2(t2)
    check_pz_restriction(pz_shell_mm, pz_anterior_band)  # before the slow networks
    # Every network below sees the canonical voxel order; zones.nrrd goes back onto the T2's grid.
    user_t2, t2 = t2, to_canonical(t2)
    nets = load_cascade(model)  # fail early on a bad model, before the slow gland network
    models = {}
    if backend == "taps":
        gland = segment_gland(t2, gland_model_path, sub_progress(progress, 0.0, 0.85))
        models["prostate"] = gland.model
        out = run_cascade(nets, t2, prostate=gland.mask, progress=sub_progress(progress, 0.85, 1.0),
                          pz_shell_mm=pz_shell_mm, pz_anterior_band=pz_anterior_band)
    else:
        out = run_cascade(nets, t2, progress=sub_progress(progress, 0.0, 1.0), pz_shell_mm=pz_shell_mm,
                          pz_anterior_band=pz_anterior_band)
        models["prostate"] = {"backend": "cascade", **_model_entry(nets.card), "network": "CNN-1"}
    models["central_gland"] = {"backend": "cascade", **_model_entry(nets.card), "network": "CNN-2"}
    zones = sitk.GetImageFromArray(out.zones)
    zones.CopyInformation(t2)
    prostate_img = sitk.GetImageFromArray(out.prostate.astype(np.uint8))
    prostate_img.CopyInformation(t2)
    qc = check_gland(prostate_img)  # raises CaseError when empty
    v = voxel_volume_cm3(t2)
    volumes = {"prostate": float(out.prostate.sum() * v), "central_gland": float((out.zones == CG_LABEL).sum() * v),
               "peripheral_zone": float((out.zones == PZ_LABEL).sum() * v)}
    flags = list(qc.flags)
    cg_fraction = volumes["central_gland"] / volumes["prostate"]
    if volumes["central_gland"] == 0:
        flags.append("no central gland was found inside the prostate")
    elif volumes["peripheral_zone"] == 0:
        flags.append("no peripheral zone is left: the central gland fills the prostate")
    elif not 0.1 <= cg_fraction <= 0.9:
        flags.append(f"the central gland is {100 * cg_fraction:.0f}% of the prostate (expected 10–90%)")
    split = check_zone_split(zones)  # a fragmented CG/PZ split is flagged, not silently kept
    flags += split.pop("flags")
    synthetic = "synthetic" in str(nets.card.get("intended_use", "")).lower()
    report = {
        "format": ZONES_FORMAT, "case_id": case_id, "backend": backend, "label_map": "zones.nrrd",
        "labels": {str(CG_LABEL): "central gland", str(PZ_LABEL): "peripheral zone"},
        "volumes_cm3": {k: round(val, 2) for k, val in volumes.items()},
        "models": models,
        "postprocessing": {"one_piece_cg": True,
                           "posterior_lateral_pz": None if pz_shell_mm is None else
                           {"shell_mm": float(pz_shell_mm), "anterior_band": float(pz_anterior_band)}},
        "qc": {"ok": not flags, "flags": flags, "zone_split": split},
        "warnings": [DEMO_WARNING] if synthetic else [],
    }
    zones = onto_grid(zones, user_t2)
    progress(1.0, f"zones: prostate {volumes['prostate']:.1f} cm³, CG {volumes['central_gland']:.1f} cm³, "
                  f"PZ {volumes['peripheral_zone']:.1f} cm³")
    return ZonesResult(zones, report)


def write_outputs(result: ZonesResult, out_dir: str | os.PathLike, image_format: str = "nrrd") -> dict[str, Path]:
    """zones.nrrd (.nii.gz, .mha: `image_format`) + zones.json naming it, into out_dir (callers
    stage the folder; see staged_output_dir)."""
    from ..image_files import with_format, write_image_file

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    name = with_format("zones.nrrd", image_format)
    paths = {"zones": out / name, "report": out / "zones.json"}
    write_image_file(result.zones, paths["zones"], pixel_type=sitk.sitkUInt8)
    report = dict(result.report, label_map=name)
    paths["report"].write_text(json.dumps(report, indent=1, ensure_ascii=False), encoding="utf-8")
    return paths


def contour_png(t2: sitk.Image, zones: sitk.Image, path: str | os.PathLike, title: str = "",
                n_slices: int = 4) -> Path:
    """A PNG of the slices through the gland with CG (blue) and PZ (orange) contours."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    img = sitk.GetArrayFromImage(t2).astype(np.float32)
    z = sitk.GetArrayFromImage(zones)
    occupied = np.flatnonzero((z > 0).reshape(z.shape[0], -1).any(axis=1))
    picks = (np.linspace(occupied[0], occupied[-1], n_slices + 2)[1:-1].round().astype(int)
             if occupied.size else np.linspace(0, z.shape[0] - 1, n_slices).round().astype(int))
    lo, hi = np.percentile(img, [1, 99.5])
    sx, sy = t2.GetSpacing()[:2]
    fig, axes = plt.subplots(1, len(picks), figsize=(3.2 * len(picks), 3.4))
    for ax, k in zip(np.atleast_1d(axes), picks):
        ax.imshow(img[k], cmap="gray", vmin=lo, vmax=hi, aspect=sy / sx)
        for label, colour in ((CG_LABEL, "#3d8bff"), (PZ_LABEL, "#ff9a3d")):
            if (z[k] == label).any():
                ax.contour(z[k] == label, levels=[0.5], colors=[colour], linewidths=1.2)
        if (z[k] > 0).any():
            ax.contour(z[k] > 0, levels=[0.5], colors=["#ffe14d"], linewidths=0.8, linestyles="dotted")
        ax.set_title(f"slice {k}", fontsize=9)
        ax.axis("off")
    fig.suptitle(title or "zones: CG blue, PZ orange, prostate dotted", fontsize=10)
    fig.tight_layout()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=90)
    plt.close(fig)
    return path
