"""A PNG montage of the pre-processed channels (cf. the paper's Fig. 3) with the crop box
drawn on the original T2 slice, so a reader can check at a glance what the detector sees."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Optional

import numpy as np
import SimpleITK as sitk

from ..orientation import to_canonical
from .preprocess import Preprocessed


def crop_box_on_t2(prep: Preprocessed) -> tuple[np.ndarray, np.ndarray]:
    """The crop's outer boundary as a T2 continuous-index box (x, y, z) [min, max]."""
    size = np.asarray(prep.geometry.crop.size, float)
    return prep.geometry.box_crop_to_t2(-0.5 * np.ones(3), size - 0.5)


def save_montage(prep: Preprocessed, t2: Optional[sitk.Image], path: str | os.PathLike,
                 slice_index: Optional[int] = None, dpi: int = 80) -> Path:
    """Write all channels at one crop slice (default: the middle one) in a 3×4 grid; the
    12th panel is the T2 slice of the original grid through the crop centre with the crop
    box in yellow. Draws on an Agg canvas without pyplot (no display, no global state)."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure
    from matplotlib.patches import Rectangle

    z = prep.array.shape[1] // 2 if slice_index is None else int(slice_index)
    fig = Figure(figsize=(12, 9.5))
    FigureCanvasAgg(fig)
    axes = fig.subplots(3, 4)
    for ax, name in zip(axes.flat, prep.channels):
        data = prep.channel(name)[z]
        is_mask = name in ("PROSTATE", "CG", "PZ")
        ax.imshow(data, cmap="gray", vmin=0.0, vmax=1.0 if is_mask else max(1.0, float(np.percentile(data, 99.5))),
                  interpolation="nearest")
        source = prep.sources.get(name, "missing")
        ax.set_title(f"{name}\n{source}" if source != "missing" else f"{name}\n(missing: zeros)", fontsize=8)
        ax.axis("off")
    ax = axes.flat[len(prep.channels)] if len(prep.channels) < axes.size else None
    if ax is not None and t2 is not None:
        t2 = to_canonical(t2)  # the voxel order the crop geometry was placed in
        lo, hi = crop_box_on_t2(prep)
        center = prep.geometry.t2.lps_to_index(prep.geometry.grid_center_lps())
        k = int(np.clip(np.round(center[2]), 0, t2.GetSize()[2] - 1))
        plane = sitk.GetArrayViewFromImage(t2)[k]
        ax.imshow(plane, cmap="gray", vmin=float(np.percentile(plane, 1)), vmax=float(np.percentile(plane, 99.5)))
        ax.add_patch(Rectangle((lo[0], lo[1]), hi[0] - lo[0], hi[1] - lo[1], fill=False, edgecolor="yellow", lw=1.5))
        ax.plot([center[0]], [center[1]], "+", color="yellow")
        ax.set_title(f"T2 slice {k} (original grid)\ncrop box, centre from {prep.geometry.center_source}", fontsize=8)
        ax.axis("off")
    for extra in list(axes.flat)[len(prep.channels) + (1 if t2 is not None else 0):]:
        extra.axis("off")
    fig.suptitle(f"{prep.case_id}: pre-processed channels, crop slice {z} of {prep.array.shape[1]} "
                 f"(160x160x24 at 0.5x0.5x3 mm)", fontsize=10)
    fig.tight_layout()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=dpi)
    return path
