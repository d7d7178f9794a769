"""What the posterior-lateral PZ step (`zones.postprocess.posterior_lateral_pz`) does, measured.

Held-out phantoms (`case_seed(first_seed, i)`, a set the demo zones model never saw): CG and PZ
Dice of the demo cascade with one_piece_cg only and with the step after it, for the shipped
setting (the shell) and for the anterior bands the default was chosen against (up to all the
anterior PZ on the CG's slices); also the share of the phantoms' *true* PZ each would move. On the
embedded ProstateX-0000 sample (no labelled zones exist): the zones.json split QC (CG islands,
PZ share behind the gland's centroid, CG roughness) before and after, default backend (TAPS). Run it
as `python -m ProstateLesionCADLib.demo.zones_postprocess_eval [N_PHANTOMS FIRST_SEED [T2...]]` (T2: more
real T2 images or DICOM series folders, e.g. ProstateX-0218's).
"""

from __future__ import annotations

import json
import sys

import numpy as np
import SimpleITK as sitk

from ..zones.postprocess import PZ_SHELL_MM

# name -> posterior_lateral_pz keywords; None = one_piece_cg only (the cascade before the step)
VARIANTS = {"one_piece_cg only": None,
            f"shell {PZ_SHELL_MM:g} mm (shipped default)": dict(shell_mm=PZ_SHELL_MM, anterior_band=0.0),
            "shell + anterior band 0.3": dict(shell_mm=PZ_SHELL_MM, anterior_band=0.3),
            "shell + anterior band 0.5": dict(shell_mm=PZ_SHELL_MM, anterior_band=0.5),
            "shell + anterior band 0.8": dict(shell_mm=PZ_SHELL_MM, anterior_band=0.8),
            "shell + anterior band 1.0": dict(shell_mm=PZ_SHELL_MM, anterior_band=1.0),
            "shell + all anterior PZ on CG slices": dict(shell_mm=PZ_SHELL_MM, anterior_band=float("inf"))}


def _apply(cg, prostate, image, kw):
    from ..zones.postprocess import posterior_lateral_pz

    return cg if kw is None else posterior_lateral_pz(cg, prostate, image, **kw)


def _zones_image(cg, prostate, ref):
    from ..zones.postprocess import zones_from_masks

    img = sitk.GetImageFromArray(zones_from_masks(prostate, cg))
    img.CopyInformation(ref)
    return img


def phantom_dice(n_phantoms: int = 8, first_seed: int = 9901) -> dict:
    from ..phantoms.generate import case_seed, make_phantom
    from ..zones.cascade import load_cascade, run_cascade
    from ..zones.postprocess import dice

    nets = load_cascade()
    scores = {name: {"cg": [], "pz": [], "true_zones_changed": []} for name in VARIANTS}
    for i in range(n_phantoms):
        ph = make_phantom(case_seed(first_seed, i), with_dce=False, with_ktrans=False)
        t2, truth = ph.case.t2, sitk.GetArrayFromImage(ph.case.zones)
        out = run_cascade(nets, t2, pz_shell_mm=None)
        for name, kw in VARIANTS.items():
            cg = _apply(out.cg, out.prostate, t2, kw)
            scores[name]["cg"].append(dice(cg, truth == 1))
            scores[name]["pz"].append(dice(out.prostate & ~cg, truth == 2))
            true_cg = _apply(truth == 1, truth > 0, t2, kw)
            scores[name]["true_zones_changed"].append(int((true_cg != (truth == 1)).sum()) / int((truth == 2).sum()))
    return {name: {k: round(float(np.mean(v)), 4) for k, v in s.items()} | {"n": n_phantoms}
            for name, s in scores.items()}


def _read_t2(path: str) -> sitk.Image:
    """A T2 image file, or a folder holding one DICOM series."""
    from pathlib import Path

    if Path(path).is_dir():
        reader = sitk.ImageSeriesReader()
        reader.SetFileNames(reader.GetGDCMSeriesFileNames(str(path)))
        return reader.Execute()
    return sitk.ReadImage(str(path))


def real_qc(t2_path: str) -> dict:
    """Split QC of the default backend (TAPS gland + the demo CNN-2) on a real T2, per variant."""
    from ..zones.cascade import load_cascade, run_cascade
    from ..zones.qc import check_zone_split
    from ..zones.taps_gland import segment_gland

    t2 = _read_t2(t2_path)
    out = run_cascade(load_cascade(), t2, prostate=segment_gland(t2).mask, pz_shell_mm=None)
    result = {}
    for name, kw in VARIANTS.items():
        cg = _apply(out.cg, out.prostate, t2, kw)
        qc = check_zone_split(_zones_image(cg, out.prostate, t2))
        qc["cg_voxels"] = int(cg.sum())
        qc["pz_voxels"] = int((out.prostate & ~cg).sum())
        result[name] = qc
    return result


def measure(n_phantoms: int = 8, first_seed: int = 9901, real_t2: tuple[str, ...] = ()) -> dict:
    """Phantom Dice per variant, and the split QC on the embedded ProstateX-0000 T2 and on each of
    `real_t2` (T2 image files or DICOM series folders)."""
    from ..resources import sample_case_dir

    return {"held_out_phantoms": phantom_dice(n_phantoms, first_seed),
            "ProstateX-0000": real_qc(str(sample_case_dir() / "t2.nrrd")),
            **{str(path): real_qc(path) for path in real_t2}}


if __name__ == "__main__":
    numbers = [int(a) for a in sys.argv[1:3]]
    print(json.dumps(measure(*numbers, real_t2=tuple(sys.argv[3:])), indent=1, ensure_ascii=False))
