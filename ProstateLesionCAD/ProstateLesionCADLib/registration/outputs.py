"""Files of a registration run: transform.h5, registered ADC/DWI, checkerboard.png, registration.json.

Shared by `prostate-cad register` and the demo so both write the same set of files.
"""

from __future__ import annotations

import json
from pathlib import Path

from ..study.case import Case


def write_registration_outputs(case: Case, result, folder: Path) -> dict[str, str]:
    """Write the outputs of `result` (a RegistrationResult) for `case` into `folder`
    (the caller stages it); returns the file names by role."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from ..image_files import write_image_file
    from .register import apply_to_case, checkerboard, identity_transform, write_transform

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    registered = apply_to_case(case, result.transform)
    write_transform(result.transform, folder / "transform.h5")
    files = {"transform": "transform.h5"}
    if registered.adc is not None:
        write_image_file(registered.adc, folder / "adc.nrrd")
        files["ADC"] = "adc.nrrd"
        fig, ax = plt.subplots(1, 2, figsize=(10, 5))
        ax[0].imshow(checkerboard(case.t2, case.adc, identity_transform()), cmap="gray")
        ax[0].set_title("T2 / ADC before")
        ax[1].imshow(checkerboard(case.t2, case.adc, result.transform), cmap="gray")
        ax[1].set_title("T2 / ADC after" + (" (identity kept)" if result.identity_kept else ""))
        for a in ax:
            a.axis("off")
        fig.tight_layout()
        fig.savefig(folder / "checkerboard.png", dpi=80)
        plt.close(fig)
        files["checkerboard"] = "checkerboard.png"
    for kind, images in (("dwi", registered.dwi), ("dwi-computed", registered.dwi_computed)):
        for b, image in images.items():
            name = f"{kind}-b{b:g}.nrrd"
            write_image_file(image, folder / name)
            files[f"{kind.upper().replace('-', '_')}:{b:g}"] = name
    report = result.as_dict()
    report["case_id"] = case.case_id
    report["files"] = files
    (folder / "registration.json").write_text(json.dumps(report, indent=2), encoding="utf-8")
    return files
