"""The zonal cascade: CNN-1 T2 → prostate, CNN-2 T2 + prostate → CG, PZ = prostate − CG.

Main paper, methods "Automated prostate zonal segmentation" (after Zhu et al.): two
dense-residual U-Nets in cascade. CNN-1 can be replaced by the pretrained TAPS gland
network (taps_backend.py); CNN-2 then still gives the CG inside that gland.

Working grid: in-plane spacing `spacing_xy` (1 mm), the T2's own slices (2.5D, see
unet_dense_residual.py), intensities scaled by (I − p1) / (p99 − p1) (ARCHITECTURE.md).
Probabilities are mapped back to the T2 grid by linear interpolation and thresholded
at 0.5 there, so masks follow the T2's own voxels.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Optional

import numpy as np
import SimpleITK as sitk

from ..errors import ModelError
from ..image_files import check_grid_size
from ..models.package import ModelPackage, find_model
from ..orientation import array_onto_grid, to_canonical
from ..progress import ProgressCallback, silent
from . import DEMO_MODEL
from .postprocess import ANTERIOR_BAND, PZ_SHELL_MM, clean_gland, one_piece_cg, posterior_lateral_pz, zones_from_masks

ARCHITECTURE = "dense-residual-unet-2.5d"
DEFAULT_SPACING_XY = 1.0
SLICES = 3  # the slice and its two neighbours


def working_grid(t2: sitk.Image, spacing_xy: float) -> sitk.Image:
    """Same slices and direction as `t2`, in-plane resampled to `spacing_xy` over the same extent."""
    size = np.array(t2.GetSize(), dtype=float)
    spacing = np.array(t2.GetSpacing(), dtype=float)
    new_spacing = np.array([spacing_xy, spacing_xy, spacing[2]])
    new_size = [int(np.ceil(size[0] * spacing[0] / spacing_xy)), int(np.ceil(size[1] * spacing[1] / spacing_xy)),
                int(size[2])]
    check_grid_size(new_size, new_spacing, f"cascade's {spacing_xy:g} mm working grid of the T2")
    direction = np.array(t2.GetDirection()).reshape(3, 3)
    # Keep the outer corner of the first voxel fixed: origin moves by half the spacing change.
    origin = np.array(t2.GetOrigin()) + direction @ ((new_spacing - spacing) / 2.0 * np.array([1, 1, 0]))
    ref = sitk.Image(new_size, sitk.sitkFloat32)
    ref.SetSpacing(tuple(new_spacing))
    ref.SetOrigin(tuple(origin))
    ref.SetDirection(t2.GetDirection())
    return ref


def resample(image: sitk.Image, reference: sitk.Image, interpolator=sitk.sitkLinear, default: float = 0.0) -> sitk.Image:
    return sitk.Resample(sitk.Cast(image, sitk.sitkFloat32), reference, sitk.Transform(), interpolator, default,
                         sitk.sitkFloat32)


def normalise(arr: np.ndarray) -> np.ndarray:
    """(I − p1) / (p99 − p1), ARCHITECTURE.md and main paper Eq. (1)."""
    p1, p99 = np.percentile(arr, [1, 99])
    return ((arr - p1) / max(float(p99 - p1), 1e-6)).astype(np.float32)


def stack_slices(vol_zyx: np.ndarray) -> np.ndarray:
    """(Z, H, W) → (Z, 3, H, W): each slice with its neighbours, edges repeated."""
    padded = np.concatenate([vol_zyx[:1], vol_zyx, vol_zyx[-1:]], axis=0)
    return np.stack([padded[:-2], padded[1:-1], padded[2:]], axis=1)


@dataclass
class CascadeNets:
    """The two networks of a zones model package, ready for inference."""

    cnn1: object  # DenseResidualUNet
    cnn2: object
    spacing_xy: float
    package: Optional[ModelPackage] = None
    device: str = "cpu"
    card: dict = field(default_factory=dict)


def build_net(in_channels: int, arch: dict):
    from .unet_dense_residual import DenseResidualUNet

    return DenseResidualUNet(in_channels, 1, tuple(arch.get("widths", (12, 24, 48))),
                             int(arch.get("layers_per_block", 2)))


def load_cascade(model: str | Path = DEMO_MODEL, device: Optional[str] = None) -> CascadeNets:
    """Load a 'zones' model package (name or folder), checksums verified; ModelError when unusable."""
    import torch

    package = find_model(str(model), task="zones")
    arch = package.card.get("architecture") or {}
    if arch.get("name") != ARCHITECTURE:
        raise ModelError(f"Model '{package.name}' has architecture {arch.get('name')!r}; "
                         f"this version reads {ARCHITECTURE!r}.")
    device = device or ("cuda" if torch.cuda.is_available() else "cpu")
    nets = []
    for key, in_ch in (("cnn1", SLICES), ("cnn2", 2 * SLICES)):
        relative = arch.get(f"{key}_weights", f"{key}.pt")
        state = package.load_weights(relative)  # listed, inside the package, sha256 verified, tensors only
        net = build_net(in_ch, arch)
        try:
            net.load_state_dict(state)
        except Exception as exc:  # missing keys, shapes or a non-dict all mean the same to a user
            raise ModelError(f"Model '{package.name}': weight file {relative} cannot be loaded "
                             f"({type(exc).__name__}); the file is from another architecture.") from None
        nets.append(net.to(device).eval())
    return CascadeNets(nets[0], nets[1], float(arch.get("spacing_xy", DEFAULT_SPACING_XY)), package, device,
                       package.card)


def predict_volume(net, channels: list[np.ndarray], device: str = "cpu", batch: int = 4) -> np.ndarray:
    """Run a 2.5D net over every slice; `channels` are (Z, H, W) volumes stacked 3 slices each."""
    import torch

    x = np.concatenate([stack_slices(c) for c in channels], axis=1)  # (Z, C, H, W)
    div = net.divisor
    h, w = x.shape[2:]
    ph, pw = (-h) % div, (-w) % div
    x = np.pad(x, ((0, 0), (0, 0), (0, ph), (0, pw)))
    out = np.zeros((x.shape[0], h, w), dtype=np.float32)
    with torch.inference_mode():
        for i in range(0, x.shape[0], batch):
            logits = net(torch.from_numpy(x[i:i + batch]).to(device))
            out[i:i + batch] = torch.sigmoid(logits[:, 0, :h, :w]).cpu().numpy()
    return out


def to_t2_grid(prob_zyx: np.ndarray, grid: sitk.Image, t2: sitk.Image) -> np.ndarray:
    img = sitk.GetImageFromArray(prob_zyx.astype(np.float32))
    img.CopyInformation(grid)
    return sitk.GetArrayFromImage(resample(img, t2))


@dataclass
class CascadeOutput:
    prostate: np.ndarray  # bool, T2 grid (z, y, x)
    cg: np.ndarray
    zones: np.ndarray  # uint8, 1 = CG, 2 = PZ


def run_cascade(nets: CascadeNets, t2: sitk.Image, prostate: Optional[sitk.Image] = None,
                progress: Optional[ProgressCallback] = None,
                pz_shell_mm: Optional[float] = PZ_SHELL_MM, pz_anterior_band: float = ANTERIOR_BAND) -> CascadeOutput:
    """CNN-1 (unless `prostate` is given, e.g. from the TAPS backend), CNN-2, PZ = prostate − CG.

    The CG is post-processed into one body (postprocess.one_piece_cg), then the PZ is restricted
    to the gland's posterior-lateral shell of `pz_shell_mm` (postprocess.posterior_lateral_pz, with
    `pz_anterior_band`; None skips that step). The networks see the T2 in the canonical voxel
    order (orientation.py); the masks are returned on the T2's own grid."""
    progress = progress or silent
    user_t2, t2 = t2, to_canonical(t2)
    if prostate is not None:
        prostate = to_canonical(prostate)
    out = _run_canonical(nets, t2, prostate, progress, pz_shell_mm, pz_anterior_band)
    return CascadeOutput(*(array_onto_grid(a, t2, user_t2) for a in (out.prostate, out.cg, out.zones)))


def cnn2_central_gland(nets: CascadeNets, t2: sitk.Image, prostate_t2: np.ndarray, grid: Optional[sitk.Image] = None,
                       image: Optional[np.ndarray] = None) -> np.ndarray:
    """CNN-2's central gland inside `prostate_t2` (bool, T2 grid), before any post-processing; `t2` in
    the canonical voxel order. `grid`, `image`: the working grid and normalised T2 when already made."""
    if grid is None or image is None:
        grid = working_grid(t2, nets.spacing_xy)
        image = normalise(sitk.GetArrayFromImage(resample(t2, grid)))
    pimg = sitk.GetImageFromArray(prostate_t2.astype(np.float32))
    pimg.CopyInformation(t2)
    prostate_grid = (sitk.GetArrayFromImage(resample(pimg, grid)) > 0.5).astype(np.float32)
    c = predict_volume(nets.cnn2, [image, prostate_grid], nets.device)
    return (to_t2_grid(c, grid, t2) > 0.5) & prostate_t2


def _run_canonical(nets: CascadeNets, t2: sitk.Image, prostate: Optional[sitk.Image],
                   progress: ProgressCallback, pz_shell_mm: Optional[float],
                   pz_anterior_band: float) -> CascadeOutput:
    grid = working_grid(t2, nets.spacing_xy)
    image = normalise(sitk.GetArrayFromImage(resample(t2, grid)))
    if prostate is None:
        progress(0.1, "cascade: CNN-1 (prostate)")
        p = predict_volume(nets.cnn1, [image], nets.device)
        prostate_t2 = clean_gland(to_t2_grid(p, grid, t2) > 0.5)
    else:
        prostate_t2 = sitk.GetArrayFromImage(prostate) > 0
    if not prostate_t2.any():
        return CascadeOutput(prostate_t2, prostate_t2.copy(), np.zeros(prostate_t2.shape, np.uint8))
    progress(0.5, "cascade: CNN-2 (central gland)")
    cg = cnn2_central_gland(nets, t2, prostate_t2, grid, image)
    if cg.any():
        cg = one_piece_cg(cg, prostate_t2)
        if pz_shell_mm is not None:
            cg = posterior_lateral_pz(cg, prostate_t2, t2, shell_mm=pz_shell_mm, anterior_band=pz_anterior_band)
    progress(1.0, "cascade: done")
    return CascadeOutput(prostate_t2, cg, zones_from_masks(prostate_t2, cg))
