"""3D Retina U-Net lesion detector (Pellicer-Valero et al. 2022): network, anchors, box
coding, NMS, weighted box clustering, MDT checkpoint import, training and inference."""
