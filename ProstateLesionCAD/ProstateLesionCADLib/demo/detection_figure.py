"""The demo's figure of the detections: a T2 slice with the lesion probability and the boxes."""

from __future__ import annotations

import numpy as np
import SimpleITK as sitk


def draw_detections(t2: sitk.Image, prob: sitk.Image, dcase, path, title: str) -> None:
    """T2 slice through the best detection (or the middle) with the probability map and boxes."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.patches import Rectangle

    arr = sitk.GetArrayFromImage(t2)
    p = sitk.GetArrayFromImage(prob)
    k = arr.shape[0] // 2
    if dcase.detections:
        k = int(round(t2.TransformPhysicalPointToContinuousIndex(dcase.detections[0].center_lps)[2]))
        k = min(max(k, 0), arr.shape[0] - 1)
    lo, hi = np.percentile(arr[k], [1, 99])
    fig, ax = plt.subplots(figsize=(5, 5.4))
    ax.imshow(arr[k], cmap="gray", vmin=lo, vmax=hi)
    ax.imshow(np.ma.masked_less(p[k], 0.05), cmap="autumn", alpha=0.45, vmin=0, vmax=1)
    colours = {0: "lime", 1: "yellow", 2: "orange", 3: "red"}
    for d in dcase.detections[:5]:
        a = np.array(t2.TransformPhysicalPointToContinuousIndex(d.box_lps[0]))
        b = np.array(t2.TransformPhysicalPointToContinuousIndex(d.box_lps[1]))
        x0, y0 = min(a[0], b[0]), min(a[1], b[1])
        ax.add_patch(Rectangle((x0, y0), abs(b[0] - a[0]), abs(b[1] - a[1]), fill=False,
                               color=colours.get(d.ggg, "red"), lw=1.5))
        ax.text(x0, y0 - 2, f"GGG{d.ggg} {d.score:.2f}", color=colours.get(d.ggg, "red"), fontsize=7)
    ax.set_title(title, fontsize=8)
    ax.axis("off")
    fig.tight_layout()
    fig.savefig(path, dpi=90)
    plt.close(fig)
