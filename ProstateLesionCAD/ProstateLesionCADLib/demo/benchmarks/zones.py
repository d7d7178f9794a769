"""Bench: zonal segmentation per backend on the embedded ProstateX-0000 sample (time, peak memory),
and our TAPS gland stage against the `taps` package's own run of the same T2.

The taps package (lavlab-taps, `taps.segment`: its MONAI pipeline around the same ONNX file) is
given the sample's T2 as a NIfTI file (written before its clock starts) and runs on the CPU with
`exact=True`; our stage (`zones.taps_gland.segment_gland`, default window layout) is given the
same T2. Each in a fresh process; the ratio divides our call's wall time by the package's (both
including loading the ONNX model, not the Python imports), and the Dice compares the two masks on
the T2 grid. The package's imports need MONAI (a dependency) and nibabel (dev and `bench` extras;
lavlab-taps itself is installed --no-deps, see Makefile); without them the section says so in
one sentence.
"""

from __future__ import annotations

import importlib.util
import time
from pathlib import Path

from ._measure import measure, table

TITLE = "Zonal segmentation (embedded ProstateX-0000 sample)"


def _zones(t2_path: str, backend: str, out_dir: str) -> dict:
    import SimpleITK as sitk

    from ...zones.segment import contour_png, segment_zones, write_outputs

    t2 = sitk.ReadImage(t2_path)
    result = segment_zones(t2, backend=backend, case_id="ProstateX-0000")
    write_outputs(result, out_dir)
    contour_png(t2, result.zones, Path(out_dir) / "zones.png", f"ProstateX-0000 zones ({backend})")
    return {"volumes": result.report["volumes_cm3"], "flags": result.report["qc"]["flags"]}


def _gland_only(t2_path: str, layout: str, mask_path: str | None = None, engine: str = "auto",
                precision: str = "auto") -> dict:
    import SimpleITK as sitk

    from ...zones.taps_gland import open_session, segment_gland

    t2 = sitk.ReadImage(t2_path)
    wall, cpu = time.perf_counter(), time.process_time()
    result = segment_gland(t2, layout=layout, session=open_session(engine=engine, precision=precision))
    wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
    if mask_path:
        sitk.WriteImage(result.mask, mask_path, True)
    return {"volume": result.qc.volume_cm3, "windows": f"{result.windows_run}/{result.windows_total}",
            "call_s": wall, "cpu_s": cpu, "engine": result.model["engine"]}


# The gland network's other engines, each against the default one's mask (zones/onnx_torch.py)
OTHER_ENGINES = (("onnxruntime", "auto"), ("pytorch", "float32"))


def _other_engines(t2_path: str, out_dir: Path, default_mask: str) -> list[dict]:
    rows = []
    for engine, precision in OTHER_ENGINES:
        mask = str(out_dir / f"gland-{engine}-{precision}.nrrd")
        m = measure(_gland_only, t2_path, "taps", mask, engine, precision)
        r = m["result"] or {}
        rows.append({"stage": f"TAPS gland only, {r.get('engine', engine)}", "seconds": f"{m['seconds']:.1f}",
                     "peak MB": f"{m['peak_mb']:.0f}",
                     "note": m["error"] or (f"{r['volume']:.1f} cm³; call {r['call_s']:.1f} s, {r['cpu_s']:.1f} CPU s; "
                                           f"Dice to the default engine's mask {mask_dice(mask, default_mask):.5f}")})
    return rows


TAPS_PACKAGE_MODULES = ("taps", "monai", "nibabel")


def taps_package_missing() -> str | None:
    """The sentence to report when the taps package cannot run here, else None (nothing imported)."""
    missing = [m for m in TAPS_PACKAGE_MODULES if importlib.util.find_spec(m) is None]
    if not missing:
        return None
    return (f"The taps package's own run is not measured: {', '.join(missing)} not installed (`pip install -e "
            "'.[bench]'` and `pip install --no-deps lavlab-taps`).")


def _taps_package(t2_path: str, work_dir: str, mask_path: str) -> dict:
    """The taps package's own inference of the T2 (CPU); its mask written on the T2 grid."""
    import numpy as np
    import SimpleITK as sitk
    from taps import segment

    t2 = sitk.ReadImage(t2_path)
    nifti = Path(work_dir) / "t2.nii.gz"
    sitk.WriteImage(t2, str(nifti))
    wall, cpu = time.perf_counter(), time.process_time()
    written = segment(nifti, Path(work_dir) / "taps-mask.nii.gz", None, device="cpu", exact=True)
    wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
    mask = sitk.ReadImage(str(written))
    nifti.unlink()  # a copy of the sample's T2: not worth keeping in the report folder
    # the NIfTI round trip keeps the voxels; put the mask back on the exact T2 grid
    mask = sitk.Resample(mask, t2, sitk.Transform(), sitk.sitkNearestNeighbor, 0, sitk.sitkUInt8)
    sitk.WriteImage(mask, mask_path, True)
    volume = float(np.count_nonzero(sitk.GetArrayViewFromImage(mask))) * float(np.prod(t2.GetSpacing())) / 1000.0
    return {"call_s": wall, "cpu_s": cpu, "volume": volume}


def mask_dice(path_a: str, path_b: str) -> float:
    import SimpleITK as sitk

    from ...zones.postprocess import dice

    return float(dice(sitk.GetArrayFromImage(sitk.ReadImage(path_a)) > 0,
                      sitk.GetArrayFromImage(sitk.ReadImage(path_b)) > 0))


def _versus_taps_package(t2_path: str, out_dir: Path, progress) -> tuple[list[dict], str]:
    """Our gland stage and the taps package's own run: rows and the ratio/Dice sentence."""
    ours_mask, theirs_mask = str(out_dir / "gland-ours.nrrd"), str(out_dir / "gland-taps-package.nrrd")
    progress(0.7, "bench: TAPS gland only, default window layout")
    ours = measure(_gland_only, t2_path, "taps", ours_mask)
    r = ours["result"] or {}
    rows = [{"stage": f"TAPS gland only, taps windows (ours, default: {r.get('engine', '?')})",
             "seconds": f"{ours['seconds']:.1f}", "peak MB": f"{ours['peak_mb']:.0f}",
             "note": ours["error"] or (f"{r['volume']:.1f} cm³, windows run {r['windows']}; call {r['call_s']:.1f} s, "
                                       f"{r['cpu_s']:.1f} CPU s")}]
    if not ours["error"]:
        progress(0.75, "bench: TAPS gland only, the other engines")
        rows += _other_engines(t2_path, out_dir, ours_mask)
    missing = taps_package_missing()
    if missing:
        return rows, missing
    progress(0.85, "bench: the taps package's own run")
    work = out_dir / "taps-package"
    work.mkdir(parents=True, exist_ok=True)
    theirs = measure(_taps_package, t2_path, str(work), theirs_mask)
    t = theirs["result"] or {}
    rows.append({"stage": "taps package's own run (taps.segment, CPU)", "seconds": f"{theirs['seconds']:.1f}",
                 "peak MB": f"{theirs['peak_mb']:.0f}",
                 "note": theirs["error"] or f"{t['volume']:.1f} cm³; call {t['call_s']:.1f} s, {t['cpu_s']:.1f} CPU s"})
    if ours["error"] or theirs["error"]:
        return rows, "No ratio to the taps package: one of the two runs failed (see the table)."
    return rows, (f"Our gland stage against the taps package's own run of the same T2: {r['call_s']:.1f} s / "
                  f"{t['call_s']:.1f} s = {r['call_s'] / t['call_s']:.2f}× its wall time "
                  f"({r['cpu_s'] / t['cpu_s']:.2f}× its CPU time; whole measured processes, imports included: "
                  f"{ours['seconds']:.1f} s / {theirs['seconds']:.1f} s); Dice of the two masks "
                  f"{mask_dice(ours_mask, theirs_mask):.4f}.")


def run(out_dir, progress) -> str:
    from ...resources import sample_case_dir

    t2_path = str(Path(sample_case_dir()) / "t2.nrrd")
    rows = []
    for i, backend in enumerate(("cascade", "taps")):
        progress(i / 4, f"bench: zones with the {backend} backend")
        m = measure(_zones, t2_path, backend, str(Path(out_dir) / backend))
        r = m["result"] or {}
        v = r.get("volumes", {})
        note = m["error"] or (f"prostate {v['prostate']:.1f} cm³, CG {v['central_gland']:.1f}, PZ {v['peripheral_zone']:.1f}"
                              + (f"; QC: {'; '.join(r['flags'])}" if r["flags"] else ""))
        rows.append({"stage": f"zones, prostate from {backend}", "seconds": f"{m['seconds']:.1f}",
                     "peak MB": f"{m['peak_mb']:.0f}", "note": note})
    # the default `taps` layout is measured against the taps package below
    progress(0.6, "bench: TAPS gland only, cover window layout")
    m = measure(_gland_only, t2_path, "cover")
    r = m["result"] or {}
    rows.append({"stage": "TAPS gland only, cover windows", "seconds": f"{m['seconds']:.1f}",
                 "peak MB": f"{m['peak_mb']:.0f}",
                 "note": m["error"] or f"{r['volume']:.1f} cm³, windows run {r['windows']}"})
    versus_rows, versus = _versus_taps_package(t2_path, Path(out_dir), progress)
    rows += versus_rows
    progress(1.0, "bench: zones done")
    return ("Each stage in a fresh process. `cascade`: both CNNs of the bundled demo model (trained on phantoms; on "
            "real MRI its output is not meaningful, timing only). `taps`: the pretrained TAPS gland network "
            "(its default engine, named in its row) + CNN-2 for the central gland. The `cover` layout runs fewer windows but agrees less "
            "with the taps package (Dice 0.962 on ProstateX-0000), so it is not the default. Contours: "
            "`<backend>/zones.png`.\n\n" + table(rows, ["stage", "seconds", "peak MB", "note"]) + "\n" + versus + "\n")
