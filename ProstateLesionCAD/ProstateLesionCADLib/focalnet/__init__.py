"""FocalNet (Cao et al., IEEE TMI 2019): a 2D CNN on T2 + ADC slices that jointly detects
prostate cancer and predicts its Gleason score through an ordinal encoding, trained with
an ordinal focal loss and the mutual finding loss.

Modules: `ordinal` (labels <-> 5-bit vectors, GGG mapping), `losses` (Eq. 1-4),
`network` (DeepLab-style residual CNN), `preprocessing` (Sec. II-D1/2), `training`
(`prostate-cad train focalnet`), `inference` (Sec. II-E2 localisation, detections JSON),
`roc_points` lives in `evaluation/voxel_roc.py`.
"""
