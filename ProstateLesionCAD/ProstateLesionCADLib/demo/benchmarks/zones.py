"""Bench: zonal segmentation per backend on the embedded ProstateX-0000 sample (time, peak memory)."""

from __future__ import annotations

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


def _gland_only(t2_path: str, layout: str) -> dict:
    import SimpleITK as sitk

    from ...zones.taps_gland import segment_gland

    result = segment_gland(sitk.ReadImage(t2_path), layout=layout)
    return {"volume": result.qc.volume_cm3, "windows": f"{result.windows_run}/{result.windows_total}"}


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
    for i, layout in enumerate(("cover",)):
        progress(0.6, f"bench: TAPS gland only, {layout} window layout")
        m = measure(_gland_only, t2_path, layout)
        r = m["result"] or {}
        rows.append({"stage": f"TAPS gland only, {layout} windows", "seconds": f"{m['seconds']:.1f}",
                     "peak MB": f"{m['peak_mb']:.0f}",
                     "note": m["error"] or f"{r['volume']:.1f} cm³, windows run {r['windows']}"})
    progress(1.0, "bench: zones done")
    return ("Each stage in a fresh process. `cascade`: both CNNs of the bundled demo model (trained on phantoms; on "
            "real MRI its output is not meaningful, timing only). `taps`: the pretrained TAPS gland network "
            "(onnxruntime) + CNN-2 for the central gland. The `cover` layout runs fewer windows but agrees less "
            "with the taps package (Dice 0.962 on ProstateX-0000), so it is not the default. Contours: "
            "`<backend>/zones.png`.\n\n" + table(rows, ["stage", "seconds", "peak MB", "note"]))
