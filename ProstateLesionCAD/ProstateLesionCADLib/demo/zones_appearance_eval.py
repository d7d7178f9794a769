"""Zones models trained on default, realistic or mixed phantom T2 (phantoms/t2_appearance.py), measured.

For each model package (name or folder): prostate / CG / PZ Dice of the full cascade as shipped
(CNN-1 gland, CNN-2, one_piece_cg, posterior_lateral_pz) on held-out phantoms of *both* T2
appearances (`case_seed(first_seed, i)`, a set no demo model was trained on; the same anatomies
for both appearances), and on real T2 studies the zones.json split QC (`zones.qc.check_zone_split`:
CG islands, slices with the CG in pieces, PZ share behind the gland's centroid, CG roughness) of
the default backend (TAPS gland + CNN-2), for CNN-2's raw split and after the post-processing.
No labelled real zones are at hand: the real-study figures are shape checks, not accuracy.
Run it as `python -m ProstateLesionCADLib.commands.eval_zones_appearance [--models M...] [--n N]
[--first-seed S] [--real T2...]` (T2: image files or DICOM series folders).
"""

from __future__ import annotations

import numpy as np
import SimpleITK as sitk

from ..phantoms.generate import APPEARANCES


def phantom_dice(nets, appearance: str, n: int, first_seed: int) -> dict:
    """Mean prostate / CG / PZ Dice of the shipped cascade on n held-out phantoms of one appearance."""
    from ..phantoms.generate import case_seed, make_phantom
    from ..zones.cascade import run_cascade
    from ..zones.postprocess import dice

    scores = {"prostate": [], "cg": [], "pz": []}
    for i in range(n):
        ph = make_phantom(case_seed(first_seed, i), with_dce=False, with_ktrans=False, appearance=appearance)
        truth = sitk.GetArrayFromImage(ph.case.zones)
        out = run_cascade(nets, ph.case.t2)
        scores["prostate"].append(dice(out.prostate, truth > 0))
        scores["cg"].append(dice(out.zones == 1, truth == 1))
        scores["pz"].append(dice(out.zones == 2, truth == 2))
    return {k: round(float(np.mean(v)), 4) for k, v in scores.items()} | {"n": n}


def raw_cg(nets, t2: sitk.Image, prostate: np.ndarray) -> np.ndarray:
    """CNN-2's central gland inside a given gland, before any post-processing (T2 grid)."""
    from ..orientation import array_onto_grid, to_canonical
    from ..zones.cascade import cnn2_central_gland

    canonical = to_canonical(t2)
    gland = sitk.GetImageFromArray(prostate.astype(np.uint8))
    gland.CopyInformation(t2)
    cg = cnn2_central_gland(nets, canonical, sitk.GetArrayFromImage(to_canonical(gland)) > 0)
    return array_onto_grid(cg, canonical, t2)


def _split_qc(cg: np.ndarray, prostate: np.ndarray, t2: sitk.Image) -> dict:
    from ..zones.qc import check_zone_split, voxel_volume_cm3
    from .zones_postprocess_eval import _zones_image

    qc = check_zone_split(_zones_image(cg, prostate, t2))
    qc["cg_cm3"] = round(float(cg.sum()) * voxel_volume_cm3(t2), 2)
    return qc


def real_qc(nets, t2: sitk.Image, prostate: np.ndarray) -> dict:
    """Split QC on a real T2 with a given gland: CNN-2's raw split, and the shipped cascade's."""
    from ..zones.cascade import run_cascade

    gland = sitk.GetImageFromArray(prostate.astype(np.uint8))
    gland.CopyInformation(t2)
    shipped = run_cascade(nets, t2, prostate=gland)
    raw = raw_cg(nets, t2, prostate)
    return {"raw": _split_qc(raw, prostate, t2), "shipped": _split_qc(shipped.zones == 1, prostate, t2),
            "_cg": shipped.zones == 1}


def measure(models: list[str], n: int = 8, first_seed: int = 9901, real_t2: tuple[str, ...] = ()) -> dict:
    """Phantom Dice (both appearances) and real-study split QC per model; the TAPS gland of each
    real study is computed once and shared, so the models differ only in their CG."""
    from ..resources import sample_case_dir
    from ..zones.cascade import load_cascade
    from ..zones.postprocess import dice
    from ..zones.taps_gland import segment_gland
    from .zones_postprocess_eval import _read_t2

    studies = {"ProstateX-0000": str(sample_case_dir() / "t2.nrrd"), **{str(p): str(p) for p in real_t2}}
    real = {}
    for name, path in studies.items():
        t2 = _read_t2(path)
        real[name] = (t2, sitk.GetArrayFromImage(segment_gland(t2).mask) > 0)
    result: dict = {}
    first_cg: dict = {}
    for model in models:
        nets = load_cascade(model)
        entry = {f"phantoms_{look}": phantom_dice(nets, look, n, first_seed) for look in APPEARANCES}
        for name, (t2, prostate) in real.items():
            qc = real_qc(nets, t2, prostate)
            cg = qc.pop("_cg")
            first_cg.setdefault(name, cg)
            qc["cg_dice_vs_first_model"] = round(dice(cg, first_cg[name]), 4)
            entry[name] = qc
        result[model] = entry
    return result
