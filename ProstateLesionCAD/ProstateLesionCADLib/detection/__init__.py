"""Lesion detectors: the 3D Retina U-Net of Pellicer-Valero et al. 2022 (`retina_unet`) and
the 2D FocalNet of Cao et al. 2019 (`focalnet`)."""
