"""Results in the field's standard files: DICOM SEG, DICOM SR (TID 1500) and Slicer .seg.nrrd.

`export_results` (in `results.py`) turns a finished run (detections.json with its
probability map, and/or a zones label map) into standard files on the case's T2 grid:

- `segmentation.dcm`: a DICOM Segmentation (binary, highdicom), one segment per lesion
  (GGG in its label, score in its description, SNOMED CT codes of `ggg_palette`) and one
  per zone (CG, PZ), a new series in the source study that references the T2 instances;
- `measurement-report.dcm`: a Comprehensive 3D SR measurement report (TID 1500), one
  volumetric measurement group per segment of the SEG (volume; for a lesion also its
  predicted GGG, score and centre);
- `segmentation.seg.nrrd`: the same segments for 3D Slicer (slicerio), with the panels'
  colours, terminology and lesion tags.

Lesion voxels come from `lesions.masks.detection_mask` with the run's probability map,
exactly as the Slicer panel draws them (`segments.py`), so all three files and the panel
show the same voxels. All segment names are ASCII.

The DICOM files need the DICOM T2 they refer to: a study given as image files (NRRD,
NIfTI, MHA) gets the .seg.nrrd and one sentence saying why there is no DICOM (`source.py`).
"""

from .results import ExportResult, export_results

__all__ = ["ExportResult", "export_results"]
