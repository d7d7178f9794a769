"""FocalNet (Cao et al., IEEE TMI 2019): a 2D CNN on T2 + ADC slices that jointly detects
prostate cancer and predicts its Gleason score through an ordinal encoding, trained with
an ordinal focal loss and the mutual finding loss.

Modules: `ordinal` (labels <-> 5-bit vectors, GGG mapping), `losses` (Eq. 1-4), `network`
(DeepLab-style residual CNN), `preprocessing` (Sec. II-D1/2), `training` (loop, augmentation),
`inference` (Sec. II-E2 localisation, detections JSON + probability map), `package` (model
package) and `phantom_data` (phantom training and test data). The command line lives in
`commands/` (`prostate-cad train focalnet`, the FocalNet path of `prostate-cad detect`). The voxel-level
ROC of Sec. II-E4 is `evaluation/voxel_roc.py` (`prostate-cad evaluate --voxel-roc`).
"""
