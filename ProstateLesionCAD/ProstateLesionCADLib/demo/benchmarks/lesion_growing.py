"""Bench: lesion growing on the real ProstateX-0000 lesion (sample) and on phantoms, with a PNG to look at."""

from __future__ import annotations

from pathlib import Path

from ._measure import measure, table

TITLE = "Lesion growing"
PROSTATEX_0000_LESION = (25.7457, 31.8707, -38.511)


def _grow_sample(png: str) -> str:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import SimpleITK as sitk

    from ...study.loading import load_case
    from ...lesions.growing import Seed, grow_lesions, growing_sequences
    from ...resources import sample_case_dir

    case = load_case(sample_case_dir())
    sequences = growing_sequences(case)
    labels, (report,) = grow_lesions(case.t2, [Seed(1, PROSTATEX_0000_LESION, 3)], sequences)
    t2 = sitk.GetArrayFromImage(case.t2)
    mask = sitk.GetArrayFromImage(labels) > 0
    high = sitk.GetArrayFromImage(sitk.Resample(sequences["DWI_HIGH"], case.t2))
    x, y, z = case.t2.TransformPhysicalPointToIndex(PROSTATEX_0000_LESION)
    fig, axes = plt.subplots(2, 3, figsize=(11, 7.5))
    for col, dz in enumerate((-1, 0, 1)):
        for row, (image, name) in enumerate(((t2, "T2"), (high, "high-b DWI"))):
            ax = axes[row, col]
            ax.imshow(image[z + dz], cmap="gray")
            ax.contour(mask[z + dz], levels=[0.5], colors="red", linewidths=1)
            ax.plot(x, y, "+", color="lime", markersize=10)
            ax.set_xlim(x - 70, x + 70)
            ax.set_ylim(y + 70, y - 70)
            ax.set_title(f"{name}, slice {z + dz}")
            ax.axis("off")
    fig.suptitle(f"ProstateX-0000, lesion grown from LPS {PROSTATEX_0000_LESION} (+): "
                 f"{report.volume_cc:.2f} cm³, sequences voting: "
                 + ", ".join(v.sequence for v in report.votes if v.status == "voted"))
    fig.tight_layout()
    fig.savefig(png, dpi=80)
    plt.close(fig)
    return f"{report.volume_cc:.2f} cm³, flags: {', '.join(report.flags) or 'none'}"


def _grow_phantoms(n: int) -> str:
    import numpy as np
    import SimpleITK as sitk

    from ...lesions.growing import Seed, grow_lesions, growing_sequences
    from ...phantoms.generate import make_phantom

    dices = []
    for s in range(n):
        ph = make_phantom(700 + s)
        seeds = [Seed(l.id, l.center_lps, l.ggg) for l in ph.ground_truth.lesions]
        if not seeds:
            continue
        labels, reports = grow_lesions(ph.case.t2, seeds, growing_sequences(ph.case, ph.deformation),
                                       ph.case.prostate, zones=ph.case.zones)
        grown, truth = sitk.GetArrayFromImage(labels), sitk.GetArrayFromImage(ph.lesion_mask)
        for r in reports:
            a, b = grown == r.label, truth == r.seed.id
            dices.append(2.0 * (a & b).sum() / (a.sum() + b.sum()))
    return f"{len(dices)} lesions, mean Dice {np.mean(dices):.3f} (min {np.min(dices):.3f})"


def run(out_dir: Path, progress) -> str:
    progress(0.0, "growing the ProstateX-0000 lesion")
    png = Path(out_dir) / "prostatex-0000-lesion.png"
    real = measure(_grow_sample, str(png))
    progress(0.4, "growing phantom lesions")
    ph = measure(_grow_phantoms, 10)
    progress(1.0, "lesion growing measured")
    rows = [{"what": "ProstateX-0000 sample (load + grow 1 lesion)", "seconds": f"{real['seconds']:.1f}",
             "peak MB": f"{real['peak_mb']:.0f}", "result": real["error"] or real["result"]},
            {"what": "10 phantoms (generate + grow)", "seconds": f"{ph['seconds']:.1f}",
             "peak MB": f"{ph['peak_mb']:.0f}", "result": ph["error"] or ph["result"]}]
    return table(rows, ["what", "seconds", "peak MB", "result"]) + f"\nPNG for a visual check: {png.name}\n"
