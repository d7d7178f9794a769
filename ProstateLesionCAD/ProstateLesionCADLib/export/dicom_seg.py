"""A DICOM Segmentation (binary) of lesion and zone segments over the source T2 series (highdicom).

The SEG is a new series in the T2's study and frame of reference; its frames follow the
T2 instances (one per T2 slice that holds any segment), so viewers place it on the T2 and
Slicer's DICOM import (dcmqi) reads it back on the T2 grid. Each segment carries:

- SegmentLabel: the ASCII name (`Lesion 2 - GGG2 - 0.41`, `Central gland`);
- SegmentDescription: GGG, score with four decimals and detection id (zones: their source);
- TrackingID `Lesion <rank>` / `CG` / `PZ` and a TrackingUID the SR repeats;
- category, type and anatomic region codes (SNOMED CT, `ggg_palette`) and the palette colour;
- the algorithm (model name and version) that made it, as AUTOMATIC.

Content qualification is RESEARCH: the software is not a medical device.
"""

from __future__ import annotations

import warnings
from typing import Sequence

import highdicom as hd
import numpy as np
from pydicom import Dataset
from pydicom.sr.codedict import codes

from .. import __version__
from ..ggg_palette import Code
from .segments import Algorithm, Segment
from .source import DicomT2

MANUFACTURER = "ProstateLesionCAD"
CONTENT_LABEL = "PROSTATECAD"  # CS, 16 characters at most


def coded(code: Code) -> hd.sr.CodedConcept:
    return hd.sr.CodedConcept(code.value, code.scheme, code.meaning)


def _description(segment: Segment, number: int, algorithm: Algorithm, tracking_uid: str) -> hd.seg.SegmentDescription:
    red, green, blue = (round(255 * c) for c in segment.rgb)
    description = hd.seg.SegmentDescription(
        segment_number=number, segment_label=segment.name,
        segmented_property_category=coded(segment.category), segmented_property_type=coded(segment.type_code),
        algorithm_type=hd.seg.SegmentAlgorithmTypeValues.AUTOMATIC,
        algorithm_identification=hd.AlgorithmIdentificationSequence(
            name=algorithm.name, family=codes.cid7162.ArtificialIntelligence, version=algorithm.version),
        tracking_uid=tracking_uid, tracking_id=segment.tracking_id,
        anatomic_regions=[coded(segment.anatomic_region)] if segment.anatomic_region else None,
        display_color=hd.color.CIELabColor.from_rgb(red, green, blue))
    description.SegmentDescription = segment.description
    return description


def build_dicom_seg(source: DicomT2, segments: Sequence[Segment], algorithms: Sequence[Algorithm],
                    tracking_uids: Sequence[str], series_number: int, series_description: str) -> Dataset:
    """The Segmentation instance (segment n = segments[n - 1], made by algorithms[n - 1])."""
    if not segments:
        raise ValueError("a DICOM SEG needs at least one segment")
    rows, columns = int(source.datasets[0].Rows), int(source.datasets[0].Columns)
    pixels = np.zeros((source.frames, rows, columns, len(segments)), bool)
    frame_of_slice = np.asarray(source.frame_of_slice)
    for s, segment in enumerate(segments):
        (i, j, k), (nk, nj, ni) = segment.crop.lo, segment.crop.mask.shape
        pixels[frame_of_slice[k:k + nk], j:j + nj, i:i + ni, s] = segment.crop.mask
    descriptions = [_description(seg, n, alg, uid)
                    for n, (seg, alg, uid) in enumerate(zip(segments, algorithms, tracking_uids), start=1)]
    models = sorted({f"{a.name} {a.version}" for a in algorithms})
    with warnings.catch_warnings():  # the T2's patient name is copied as it is, even with a single component
        warnings.filterwarnings("ignore", message=".*unlikely to represent the intended person name")
        return hd.seg.Segmentation(
            source_images=source.datasets, pixel_array=pixels, segmentation_type=hd.seg.SegmentationTypeValues.BINARY,
            segment_descriptions=descriptions, series_instance_uid=hd.UID(), series_number=series_number,
            sop_instance_uid=hd.UID(), instance_number=1, manufacturer=MANUFACTURER,
            manufacturer_model_name="prostate-cad", software_versions=__version__, device_serial_number="none",
            content_label=CONTENT_LABEL, content_description=", ".join(models)[:64],
            series_description=series_description[:64], content_qualification="RESEARCH")
