"""The detector's input (main paper, "Data pre-processing"): which image feeds each channel
(`channels`), the crop box around the prostate (`crop_geometry`), the 11-channel stack and
its files (`preprocess`) and a picture of it (`montage`)."""
