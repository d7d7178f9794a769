"""Zonal segmentation of the prostate (prostate, central gland CG, peripheral zone PZ).

The gland comes from the pretrained TAPS network (`taps_gland`) or from CNN-1 of the
cascade (`cascade`, `unet_dense_residual`); CNN-2 gives the CG inside it and PZ is the
rest (`postprocess`). `segment.segment_zones` is the entry point; `qc` checks a gland,
`training` trains a cascade. Light to import: the constants below feed parsers and panels.
"""

BACKENDS = ("taps", "cascade")  # where the prostate gland comes from
DEMO_MODEL = "zones-demo-cascade"  # the bundled cascade package (phantom-trained CG/PZ split)
PZ_SHELL_MM = 16.0  # PZ kept within this depth of the gland surface (postprocess.posterior_lateral_pz)
ANTERIOR_BAND = 0.0  # anterior midline band given to the CG, share of its half-width; 0 = off (same function)
