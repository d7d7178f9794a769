"""A `prostate-cad demo` step: detect lesions on the pre-processed sample with the shipped
demo model and draw them over T2 (for `demo.default_steps`, wired by the demo's owner:
`DemoStep("detect lesions (demo model)", demo_detect_step, 2.0)` after "pre-process")."""

from __future__ import annotations

import numpy as np
import SimpleITK as sitk

from ..formats import DetectionSet, write_detections


def demo_detect_step(state, progress) -> None:
    from ..models.package import find_model
    from .detector_model import DEMO_NAME
    from ..detection.retina_unet.detect import DETECTIONS_FILE, PROBABILITY_FILE, detect_preprocessed

    pkg = find_model(DEMO_NAME, task="detector")
    progress(0.0, f"detecting lesions with {pkg.name} (a DEMO model trained on phantoms)")
    dcase, seg, geometry, messages, _ = detect_preprocessed(state.preprocessed, pkg, progress=progress)
    folder = state.out / "detections"
    folder.mkdir(parents=True, exist_ok=True)
    prob = geometry.to_t2(seg, "linear", layout="yxz")
    sitk.WriteImage(sitk.Cast(prob, sitk.sitkFloat32), str(folder / PROBABILITY_FILE), True)
    dcase.probability_map = folder / PROBABILITY_FILE
    write_detections(DetectionSet([dcase], model={"name": pkg.name, "version": pkg.version,
                                                  "intended_use": pkg.card["intended_use"]}), folder / DETECTIONS_FILE)
    png = folder / "lesions-over-t2.png"
    draw_detections(state.case.t2, prob, dcase, png, f"{pkg.name}: DEMO MODEL trained on synthetic phantoms")
    state.outputs += [f"detections/{DETECTIONS_FILE}", f"detections/{PROBABILITY_FILE}", "detections/lesions-over-t2.png"]
    state.results["detections"] = dcase
    state.results["detection_messages"] = messages
    progress(1.0, f"{len(dcase.detections)} detections (demo model)")


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
