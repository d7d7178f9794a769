"""Bench: synthetic phantom generation and writing (NRRD, DICOM), plus a picture of one phantom."""

from __future__ import annotations

import tempfile
import time
from pathlib import Path

from ._measure import measure, table

TITLE = "Synthetic phantoms"


def _generate(n: int, **kw) -> str:
    from ...phantoms.generate import make_phantom

    start, cpu = time.perf_counter(), time.process_time()
    for seed in range(n):
        make_phantom(seed, **kw)
    return f"{(time.perf_counter() - start) / n:.2f} s wall, {(time.process_time() - cpu) / n:.2f} s CPU per case"


def _write(fmt: str) -> str:
    from ...phantoms.generate import make_phantom, write_phantom

    phantom = make_phantom(4)
    with tempfile.TemporaryDirectory() as tmp:
        start = time.perf_counter()
        out = write_phantom(phantom, Path(tmp) / "case", fmt)
        seconds = time.perf_counter() - start
        files = [p for p in out.rglob("*") if p.is_file()]
        size_mb = sum(p.stat().st_size for p in files) / 1e6
    return f"{seconds:.2f} s, {len(files)} files, {size_mb:.1f} MB"


def _picture(path: str) -> str:
    """One phantom: every sequence on the T2 grid through its largest lesion, with the masks."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np
    import SimpleITK as sitk

    from ...phantoms.generate import make_phantom

    p = make_phantom(4)
    c = p.case

    def on_t2(img):
        return sitk.GetArrayFromImage(sitk.Resample(img, c.t2, sitk.Transform(), sitk.sitkLinear, 0.0))

    lesions = sitk.GetArrayFromImage(p.lesion_mask)
    k = int(np.argmax((lesions > 0).sum(axis=(1, 2))))
    panels = [("T2", sitk.GetArrayFromImage(c.t2)), ("ADC", on_t2(c.adc)), ("DWI b800", on_t2(c.dwi[800.0])),
              ("computed b1400", on_t2(c.dwi_computed[1400.0])), ("Ktrans", on_t2(c.ktrans)),
              ("DCE t=10", on_t2(c.dce[10])), ("zones (CG, PZ)", sitk.GetArrayFromImage(c.zones)), ("lesions", lesions)]
    fig, axes = plt.subplots(1, len(panels), figsize=(2.4 * len(panels), 2.8))
    for ax, (name, image) in zip(axes, panels):
        sl = image[k]
        ax.imshow(sl, cmap="gray", vmin=np.percentile(sl, 1), vmax=np.percentile(sl, 99.5))
        if name in ("T2", "ADC"):
            ax.contour(lesions[k] > 0, levels=[0.5], colors="r", linewidths=0.6)
        ax.set_title(name, fontsize=8)
        ax.axis("off")
    ggg = ", ".join(f"lesion {l.id}: GGG{l.ggg} {p.zone_of_lesion[l.id]}" for l in p.ground_truth.lesions)
    fig.suptitle(f"{c.case_id} (synthetic), slice {k}: {ggg}", fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=90)
    plt.close(fig)
    return path


def run(out_dir, progress) -> str:
    jobs = [
        ("generate, default (128×128×24 T2, DWI/ADC, Ktrans, 30 DCE)", _generate, (3,), {}),
        ("generate, with a 5 mm deformation", _generate, (3,), {"deformation_mm": 5.0}),
        ("generate, no DCE/Ktrans", _generate, (3,), {"with_dce": False, "with_ktrans": False}),
        ("write NRRD (one case)", _write, ("nrrd",), {}),
        ("write DICOM (one case)", _write, ("dicom",), {}),
    ]
    rows = []
    for i, (name, func, args, kw) in enumerate(jobs):
        progress(i / (len(jobs) + 1), name)
        m = measure(func, *args, **kw)
        rows.append({"stage": name, "result": m["error"] or m["result"], "seconds (child)": f"{m['seconds']:.2f}",
                     "peak MB": f"{m['peak_mb']:.0f}"})
    Path(out_dir).mkdir(parents=True, exist_ok=True)
    picture = Path(out_dir) / "phantom.png"
    measure(_picture, str(picture))
    progress(1.0, "phantoms done")
    return (table(rows, ["stage", "result", "seconds (child)", "peak MB"])
            + f"\nOne phantom, every sequence through its largest lesion: `{picture.name}`.\n")
