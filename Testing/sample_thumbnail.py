"""Draw the Sample Data thumbnail of the bundled ProstateX-0000 from its T2 (developer tool).

    .venv/bin/python Testing/sample_thumbnail.py   # rewrites Resources/Sample/ProstateX-0000/thumbnail.png

The axial T2 slice through the case's ground-truth lesion, windowed to the 1st-99th
percentile of the slice, scaled to 128x128 and shown in radiological orientation
(patient's right on the image's left, anterior up). Testing/test_sample_data.py redraws it
and compares it with the committed file.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np
import SimpleITK as sitk

SIZE = 128
SAMPLE = Path(__file__).resolve().parents[1] / "Resources" / "Sample" / "ProstateX-0000"


def thumbnail_pixels(sample: Path = SAMPLE) -> np.ndarray:
    """The thumbnail as a SIZE x SIZE uint8 grey image."""
    from PIL import Image

    t2 = sitk.ReadImage(str(sample / "t2.nrrd"))
    truth = json.loads((sample / "ground-truth.json").read_text(encoding="utf-8"))
    center = truth["cases"][0]["lesions"][0]["center_lps"]
    k = t2.TransformPhysicalPointToIndex(center)[2]
    plane = sitk.GetArrayFromImage(t2)[k].astype(np.float64)  # rows: LPS y (anterior first), columns: x (right first)
    lo, hi = np.percentile(plane, (1, 99))
    grey = np.clip((plane - lo) / max(hi - lo, 1e-6), 0.0, 1.0) * 255.0
    image = Image.fromarray(np.round(grey).astype(np.uint8)).resize((SIZE, SIZE), Image.Resampling.LANCZOS)
    return np.asarray(image)


def main() -> int:
    from PIL import Image

    out = SAMPLE / "thumbnail.png"
    Image.fromarray(thumbnail_pixels()).save(out, optimize=True)
    print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
