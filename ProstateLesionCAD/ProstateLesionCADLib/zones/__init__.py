"""Zonal segmentation of the prostate (prostate, central gland, peripheral zone); no Slicer imports."""
