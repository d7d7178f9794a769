"""Registration bench: every preset against no registration and against the authors' own
transforms, on ProstateX-0000 and ProstateX-0218, and the target registration error (TRE) on
phantoms with a known deformation.

The authors' transforms are the ones they chose for these two studies (file
`ProstateX_transforms.zip` of OscarPellicer/prostate_lesion_detection; copies and their frame in
`../shared/reference/prostatex_transforms/`). Their frame is the detector's crop as a plain
array image (corner at 0 mm, identity direction, axes = T2 columns, rows, slices), mapped here
to LPS with the crop geometry of `prostate-cad preprocess` centred on our prostate mask.

Criterion, the paper's kind ("the correlation coefficient between the spatial gradient of the
T2 sequence and the spatial gradient of the registered ADC map"), the same for every candidate
and independent of every preset's own selection score: Pearson correlation of the T2 and
registered-ADC gradient magnitudes (Gaussian, 1 mm) over the prostate dilated by 3 mm, on the
T2 grid. Prostate and zones come from the bundled zones pipeline (TAPS gland, demo cascade
split) and every preset is given them, as `prostate-cad detect` does
(PROSTATE_CAD_BENCH_REGISTRATION_ZONES=0: the presets get no mask, as `prostate-cad register`
on a bare study; the criterion still uses the prostate).

Yardstick, so that a preset's cost reads against a widely used registration tool: in the same measured process as the presets, right after them, one itk-elastix
registration of the same pair the presets get — fixed = the case's T2, moving = its ADC map, both as
loaded by `load_case` (raw intensities, own grids; no mask, no initial transform) — with elastix's
own default "bspline" parameter map at 3 resolutions, unchanged (BSpline, Mattes MI + bending
energy, adaptive stochastic gradient descent, 2048 random samples; `_elastix`). Its wall and CPU
seconds (registration only) are the unit of the ratio table: each preset's wall (whole
`register_case`) and CPU (sum over its starts) divided by elastix's. Its transform is scored with
the same criterion, as one more candidate row. itk-elastix is a benchmark-only extra
(`pip install -e '.[bench]'`, which `make bench` runs); without it the report says so in one
sentence and the rest of the bench runs as before.

Cost (2 cores): zones about 25 s (ProstateX-0000) and 2 min (ProstateX-0218, with its 70 DCE
series to load); fast (8 starts) about 10 s, released about 2 min and paper (50 starts) about 1
min per study on an idle machine. Environment: PROSTATE_CAD_BENCH_REGISTRATION_PRESETS (default "fast,released,paper"),
PROSTATE_CAD_BENCH_REGISTRATION_PAPER_STARTS (default: the preset's 50),
PROSTATE_CAD_BENCH_REGISTRATION_PHANTOMS (default 6) and ..._PHANTOM_STARTS (default 8 for every
preset, to keep the phantom part within minutes).
"""

from __future__ import annotations

import os
import time
from pathlib import Path

TITLE = "Registration (ADC/DWI → T2): presets, the authors' transforms, itk-elastix, phantom TRE"
ELASTIX = "itk-elastix (default bspline map, 3 levels)"
STUDIES = ("ProstateX-0000", "ProstateX-0218")
CRITERION_SIGMA_MM = 1.0
CRITERION_MARGIN_MM = 3.0
PHANTOM_DEFORMATION_MM = 8.0


def _shared() -> Path:
    return Path(os.environ.get("PROSTATE_CAD_SHARED", Path(__file__).resolve().parents[5] / "shared"))


def _study_dir(name: str) -> Path:
    from ...resources import sample_case_dir

    candidates = [_shared() / "data" / "prostatex" / name]
    if name == "ProstateX-0000":
        candidates.append(sample_case_dir())
    for path in candidates:
        if path.is_dir():
            return path
    raise FileNotFoundError(f"study {name} not found (looked in {', '.join(map(str, candidates))})")


def _presets() -> list[str]:
    from ...registration.multistart import PRESETS

    names = [p.strip() for p in os.environ.get("PROSTATE_CAD_BENCH_REGISTRATION_PRESETS",
                                               "fast,released,paper").split(",") if p.strip()]
    unknown = [p for p in names if p not in PRESETS]
    if unknown:
        raise ValueError(f"unknown registration preset(s) {unknown}; choose from {list(PRESETS)}")
    return names


def _starts(preset: str):
    value = os.environ.get("PROSTATE_CAD_BENCH_REGISTRATION_PAPER_STARTS") if preset == "paper" else None
    return int(value) if value else None


def gradient_criterion(t2, adc, transform, prostate) -> float:
    """Correlation of the T2 and registered-ADC gradient magnitudes over the prostate + 3 mm (T2 grid)."""
    import numpy as np
    import SimpleITK as sitk

    registered = sitk.Resample(sitk.Cast(adc, sitk.sitkFloat32), t2, transform, sitk.sitkLinear, 0.0,
                               sitk.sitkFloat32)
    fixed = sitk.GradientMagnitudeRecursiveGaussian(sitk.Cast(t2, sitk.sitkFloat32), CRITERION_SIGMA_MM)
    moving = sitk.GradientMagnitudeRecursiveGaussian(registered, CRITERION_SIGMA_MM)
    gland = sitk.Resample(prostate, t2, sitk.Transform(), sitk.sitkNearestNeighbor, 0, sitk.sitkUInt8)
    distance = sitk.SignedMaurerDistanceMap(gland, insideIsPositive=False, squaredDistance=False,
                                            useImageSpacing=True)
    region = sitk.GetArrayFromImage(distance) <= CRITERION_MARGIN_MM
    return float(np.corrcoef(sitk.GetArrayFromImage(fixed)[region], sitk.GetArrayFromImage(moving)[region])[0, 1])


def authors_transform(path: Path, geometry):
    """The authors' transform (their crop frame) as an LPS resampling transform: A ∘ T ∘ A⁻¹,
    with A(p) = crop origin + direction · (p − half a voxel)."""
    import numpy as np
    import SimpleITK as sitk

    theirs = sitk.ReadTransform(str(path))
    direction = np.asarray(geometry.crop.direction, float).reshape(3, 3)
    spacing = np.asarray(geometry.crop.spacing, float)
    frame = sitk.AffineTransform(3)
    frame.SetMatrix(direction.ravel().tolist())
    frame.SetTranslation((np.asarray(geometry.crop.origin, float) - direction @ (spacing / 2.0)).tolist())
    return sitk.CompositeTransform([frame, theirs, frame.GetInverse()])  # the last one added acts first


def elastix_candidate(t2, adc, prostate) -> tuple[dict | None, str | None]:
    """One itk-elastix registration of adc → t2 as a candidate row (with its timing), or, without
    the extra, no row and the one-sentence note that says how to install it."""
    from . import _elastix

    if not _elastix.elastix_available():
        return None, _elastix.missing_sentence("the ratio of each preset to one itk-elastix registration")
    try:
        run = _elastix.register_bspline(t2, adc)
    except RuntimeError as exc:  # elastix's own failure (ITK raises RuntimeError): the presets' rows stay
        return None, f"itk-elastix failed on this study ({exc}), so there is no ratio to it."
    return {"candidate": ELASTIX, "transform": run.transform, "elastix": True,
            "criterion": gradient_criterion(t2, adc, run.transform, prostate),
            "cpu_s": run.cpu_s, "wall_s": run.wall_s, "threads": run.threads, "version": run.version}, None


def _chosen(result) -> str:
    """Which start won, and for a mixed multi-start which variant it ran."""
    if result.identity_kept:
        return "identity"
    text = f"start {result.chosen_start}"
    if result.settings is not None and result.settings.start_variants:
        text += f" (variant {result.starts[result.chosen_start].variant})"
    return text


def _study(path: str, reference: str, presets: list[str], starts: dict, png: str, give_zones: bool = True) -> dict:
    """Runs in a child process (measured): zones, then every candidate on the criterion."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import SimpleITK as sitk

    from ...preprocessing.preprocess import crop_geometry_for
    from ...registration.register import checkerboard, identity_transform, register_case
    from ...study.loading import load_case
    from ...zones.segment import segment_zones

    case = load_case(path)
    began = time.perf_counter()
    zones = segment_zones(case.t2, case_id=case.case_id).zones
    zones_s = time.perf_counter() - began
    prostate = sitk.Cast(zones > 0, sitk.sitkUInt8)
    case.zones = zones if give_zones else None
    rows = [{"candidate": "identity", "criterion": gradient_criterion(case.t2, case.adc, identity_transform(),
                                                                      prostate), "transform": identity_transform()}]
    if Path(reference).is_file():
        transform = authors_transform(Path(reference), crop_geometry_for(case, prostate=prostate))
        rows.append({"candidate": "authors' transform", "transform": transform,
                     "criterion": gradient_criterion(case.t2, case.adc, transform, prostate)})
    for preset in presets:
        began = time.perf_counter()
        result = register_case(case, preset=preset, starts=starts.get(preset))
        rows.append({"candidate": f"preset {preset}", "transform": result.transform,
                     "criterion": gradient_criterion(case.t2, case.adc, result.transform, prostate),
                     "starts": len(result.starts), "workers": int(result.timings["workers"]),
                     "chosen": _chosen(result),
                     "score": f"{result.identity_score.total:.4f} → {result.chosen_score.total:.4f}",
                     "cpu_s": result.timings["starts_cpu"], "wall_s": time.perf_counter() - began})
    elastix_row, elastix_note = elastix_candidate(case.t2, case.adc, prostate)
    if elastix_row is not None:
        rows.append(elastix_row)
    fig, axes = plt.subplots(1, len(rows), figsize=(4 * len(rows), 4.3))
    for ax, row in zip(axes, rows):
        ax.imshow(checkerboard(case.t2, case.adc, row["transform"]), cmap="gray")
        ax.set_title(f"{row['candidate']}\n{row['criterion']:.3f}", fontsize=9)
        ax.axis("off")
    fig.suptitle(f"{case.case_id}: T2 / ADC checkerboard (criterion under each title)")
    fig.tight_layout(rect=(0, 0, 1, 0.92))
    fig.savefig(png, dpi=70)
    plt.close(fig)
    for row in rows:
        del row["transform"]
    return {"case": case.case_id, "zones_s": zones_s, "rows": rows, "elastix_note": elastix_note}


def _phantoms(presets: list[str], n: int, starts: int) -> dict:
    """Mean and worst TRE (lesion centres and gland surface) per preset, phantoms 0..n-1."""
    import numpy as np
    import SimpleITK as sitk
    from scipy.ndimage import binary_erosion

    from ...phantoms.generate import make_phantom
    from ...registration.register import identity_transform, register_case

    def tre(transform, truth, points) -> float:
        return float(np.mean([np.linalg.norm(np.subtract(transform.TransformPoint(p), truth.TransformPoint(p)))
                              for p in map(tuple, points)]))

    out = {name: [] for name in ["identity"] + presets}
    kept = {name: 0 for name in presets}
    chosen = {name: [] for name in presets}
    cpu = {name: 0.0 for name in presets}
    for seed in range(n):
        phantom = make_phantom(seed, deformation_mm=PHANTOM_DEFORMATION_MM, with_dce=False, with_ktrans=False)
        gland = sitk.GetArrayFromImage(phantom.case.prostate) > 0
        surface = np.argwhere(gland & ~binary_erosion(gland))[::5]
        points = [phantom.case.prostate.TransformIndexToPhysicalPoint([int(i) for i in zyx[::-1]]) for zyx in surface]
        points = np.array(points + [tuple(lesion.center_lps) for lesion in phantom.ground_truth.lesions])
        out["identity"].append(tre(identity_transform(), phantom.deformation, points))
        for name in presets:
            result = register_case(phantom.case, preset=name, starts=starts, seed=0)
            out[name].append(tre(result.transform, phantom.deformation, points))
            kept[name] += int(result.identity_kept)
            chosen[name].append(_chosen(result))
            cpu[name] += result.timings["starts_cpu"]
    return {"tre": out, "identity_kept": kept, "cpu_s": cpu, "chosen": chosen}


def run(out_dir, progress) -> str:
    from ._measure import measure, table

    presets = _presets()
    starts = {p: _starts(p) for p in presets}
    n_phantoms = int(os.environ.get("PROSTATE_CAD_BENCH_REGISTRATION_PHANTOMS", "6"))
    phantom_starts = int(os.environ.get("PROSTATE_CAD_BENCH_REGISTRATION_PHANTOM_STARTS", "8"))
    give_zones = os.environ.get("PROSTATE_CAD_BENCH_REGISTRATION_ZONES", "1") != "0"
    out_dir = Path(out_dir)
    studies, notes = [], []
    for i, name in enumerate(STUDIES):
        progress(i / (len(STUDIES) + 1), f"registration bench: {name} ({', '.join(presets)})")
        png = out_dir / f"checkerboards-{name}.png"
        reference = _shared() / "reference" / "prostatex_transforms" / f"{name}.tfm"
        m = measure(_study, str(_study_dir(name)), str(reference), presets, starts, str(png), give_zones)
        if m["error"]:
            notes.append(f"{name}: {m['error']}")
            continue
        studies.append((m["result"], m["peak_mb"], png.name))
    progress(len(STUDIES) / (len(STUDIES) + 1), f"registration bench: TRE on {n_phantoms} phantoms")
    ph = measure(_phantoms, presets, n_phantoms, phantom_starts)
    progress(1.0, "registration bench done")

    candidates = ["identity", "authors' transform"] + [f"preset {p}" for p in presets] + [ELASTIX]
    rows = []
    for candidate in candidates:
        row = {"candidate": candidate}
        for result, _, _ in studies:
            found = next((r for r in result["rows"] if r["candidate"] == candidate), None)
            if found is None:
                row[result["case"]] = "not available"
                continue
            cell = f"{found['criterion']:.3f}"
            if "starts" in found:
                cell += (f" ({found['starts']} starts, {found['chosen']}, score {found['score']}, "
                         f"{found['cpu_s']:.0f} CPU s, {found['cpu_s'] / max(1, found['starts']):.1f} per start, "
                         f"{found['wall_s']:.0f} s on {found['workers']} processes)")
            elif found.get("elastix"):
                cell += (f" (itk-elastix {found['version']}: {found['cpu_s']:.1f} CPU s, {found['wall_s']:.1f} s on "
                         f"{found['threads']} threads)")
            row[result["case"]] = cell
        rows.append(row)
    text = ("Criterion: correlation of the T2 and registered-ADC gradient magnitudes (Gaussian "
            f"{CRITERION_SIGMA_MM:g} mm) over the prostate + {CRITERION_MARGIN_MM:g} mm, higher is better; each "
            "preset's own selection score (identity → chosen) in brackets. The presets were "
            + ("given the zones" if give_zones else "given no mask") + ". Zones from the bundled pipeline: "
            + ", ".join(f"{r['case']} {r['zones_s']:.0f} s (peak {mb:.0f} MB, checkerboards in {png})"
                        for r, mb, png in studies) + ".\n\n"
            + table(rows, ["candidate"] + [r["case"] for r, _, _ in studies]))
    text += _ratio_text(studies, presets)
    if ph["error"]:
        notes.append(f"phantoms: {ph['error']}")
    else:
        r = ph["result"]
        tre_rows = [{"candidate": name, "mean TRE mm": f"{sum(v) / len(v):.2f}",
                     "worst TRE mm": f"{max(v):.2f}",
                     "identity kept": "" if name == "identity" else f"{r['identity_kept'][name]} of {len(v)}",
                     "CPU s": "" if name == "identity" else f"{r['cpu_s'][name]:.0f}",
                     "CPU s per start": "" if name == "identity" else f"{r['cpu_s'][name] / (len(v) * phantom_starts):.2f}",
                     "chosen": "" if name == "identity" else "; ".join(r["chosen"][name])}
                    for name, v in r["tre"].items()]
        text += (f"\nTRE on {n_phantoms} phantoms (seeds 0–{n_phantoms - 1}, known {PHANTOM_DEFORMATION_MM:g} mm "
                 f"deformation; lesion centres and gland surface points), {phantom_starts} starts per preset:\n\n"
                 + table(tre_rows, ["candidate", "mean TRE mm", "worst TRE mm", "identity kept", "CPU s",
                                   "CPU s per start", "chosen"]))
    if notes:
        text += "\n" + "\n".join(f"- {n}" for n in notes) + "\n"
    return text


def _ratio_text(studies, presets: list[str]) -> str:
    """Each preset's wall and CPU time as a multiple of the one itk-elastix registration of the
    same study in the same process, or the sentence saying why there is none."""
    from ._measure import table

    rows, missing = [], set()
    for result, _, _ in studies:
        elastix = next((r for r in result["rows"] if r.get("elastix")), None)
        if elastix is None:
            if result.get("elastix_note"):
                missing.add(result["elastix_note"])
            continue
        for preset in presets:
            found = next((r for r in result["rows"] if r["candidate"] == f"preset {preset}"), None)
            if found is None:
                continue
            rows.append({"study": result["case"], "preset": preset,
                         "wall s (preset / elastix)": f"{found['wall_s']:.1f} / {elastix['wall_s']:.1f}",
                         "wall ratio": f"{found['wall_s'] / elastix['wall_s']:.1f}×",
                         "CPU s (preset / elastix)": f"{found['cpu_s']:.1f} / {elastix['cpu_s']:.1f}",
                         "CPU ratio": f"{found['cpu_s'] / elastix['cpu_s']:.1f}×",
                         "criterion (preset / elastix)": f"{found['criterion']:.3f} / {elastix['criterion']:.3f}"})
    if not rows:
        return "\n" + " ".join(sorted(missing)) + "\n" if missing else ""
    return ("\nRatio to one itk-elastix registration of the same T2/ADC pair in the same process (elastix's "
            "default bspline map, 3 levels, no mask; registration time only). Preset wall: the whole "
            "`register_case`; preset CPU: the sum over its starts (worker processes); elastix CPU: its "
            "threads.\n\n"
            + table(rows, ["study", "preset", "wall s (preset / elastix)", "wall ratio", "CPU s (preset / elastix)",
                           "CPU ratio", "criterion (preset / elastix)"]))
