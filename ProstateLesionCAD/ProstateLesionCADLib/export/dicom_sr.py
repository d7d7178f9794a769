"""A Comprehensive 3D SR measurement report (TID 1500) over a DICOM SEG (highdicom).

One volumetric measurement group (TID 1411) per segment of the SEG, referencing that
segment and the T2 series it was made on, with the SEG's tracking identifier and UID:

- finding type: the segment's type (Lesion / Neoplasm / transition or peripheral zone),
  finding site: the prostate, and for a lesion the zone holding most of its voxels;
- Volume (SCT 118565006) in cm3 by the sum of segmented voxels (DCM 126030);
- lesions also: the detector's score (no units) and the predicted Gleason grade group
  (a qualitative evaluation).

A TID 1411 group may not hold coordinates, so each lesion has a second group (TID 1501,
same tracking identifier and UID): the detection, whose score is inferred from its
centre, a 3D point (DCM 111010 "Center") in the T2's frame of reference, with the GGG.

The score and the predicted GGG have no standard codes that say exactly this (a detector's
class score is not a probability of cancer), so they use the project's own coding scheme
99PLCAD, declared in the SR's Coding Scheme Identification Sequence as DICOM asks of
private schemes. Completion COMPLETE, verification UNVERIFIED, content qualification RESEARCH.
"""

from __future__ import annotations

import warnings
from typing import Sequence

import highdicom as hd
import numpy as np
from pydicom import Dataset
from pydicom.sr.codedict import codes

from .. import __version__
from ..ggg_palette import PERIPHERAL_ZONE, PROSTATE, TRANSITION_ZONE
from .dicom_seg import MANUFACTURER, coded
from .segments import Algorithm, Segment
from .source import DicomT2

LOCAL_SCHEME = "99PLCAD"
SCORE = hd.sr.CodedConcept("SCORE", LOCAL_SCHEME, "Detection score")
PREDICTED_GGG = hd.sr.CodedConcept("GGG", LOCAL_SCHEME, "Predicted Gleason grade group")
ZONE_SITES = {"CG": TRANSITION_ZONE, "PZ": PERIPHERAL_ZONE}


def ggg_value(segment: Segment) -> hd.sr.CodedConcept:
    cls = segment.lesion.ggg_class  # type: ignore[union-attr]
    return hd.sr.CodedConcept(cls.name, LOCAL_SCHEME, f"{cls.name} ({cls.description})")


def _groups(segment: Segment, number: int, seg: Dataset, source: DicomT2, algorithm: Algorithm,
            tracking_uid: str) -> list:
    """The segment's volumetric group and, for a lesion, its detection group."""
    algorithm_id = hd.sr.AlgorithmIdentification(name=algorithm.name, version=algorithm.version)
    tracking = hd.sr.TrackingIdentifier(uid=tracking_uid, identifier=segment.tracking_id)
    volume = hd.sr.Measurement(name=codes.SCT.Volume, value=round(segment.volume_cm3, 6),
                               unit=codes.UCUM.CubicCentimeter, method=codes.DCM.SumOfSegmentedVoxelMethodForVolume,
                               algorithm_id=algorithm_id)
    sites = [hd.sr.FindingSite(coded(PROSTATE))]
    lesion = segment.lesion
    if lesion is not None and lesion.zone in ZONE_SITES:
        sites.append(hd.sr.FindingSite(coded(ZONE_SITES[lesion.zone])))
    common = dict(finding_type=coded(segment.type_code), algorithm_id=algorithm_id, finding_sites=sites)
    if lesion is None:
        measurements, evaluations = [volume], None
    else:
        measurements = [volume, hd.sr.Measurement(name=SCORE, value=round(lesion.score, 6), unit=codes.UCUM.NoUnits,
                                                  algorithm_id=algorithm_id)]
        evaluations = [hd.sr.QualitativeEvaluation(name=PREDICTED_GGG, value=ggg_value(segment))]
    groups: list = [hd.sr.VolumetricROIMeasurementsAndQualitativeEvaluations(
        tracking_identifier=tracking,
        referenced_segment=hd.sr.ReferencedSegment(
            sop_class_uid=seg.SOPClassUID, sop_instance_uid=seg.SOPInstanceUID, segment_number=number,
            source_series=hd.sr.SourceSeriesForSegmentation(source.series_uid)),
        measurements=measurements, qualitative_evaluations=evaluations, **common)]
    if lesion is not None:
        centre = hd.sr.CoordinatesForMeasurement3D(
            graphic_type=hd.sr.GraphicTypeValues3D.POINT, graphic_data=np.array([lesion.center_lps], float),
            frame_of_reference_uid=source.frame_of_reference_uid, purpose=codes.DCM.Center)
        groups.append(hd.sr.MeasurementsAndQualitativeEvaluations(
            tracking_identifier=tracking,
            measurements=[hd.sr.Measurement(name=SCORE, value=round(lesion.score, 6), unit=codes.UCUM.NoUnits,
                                            algorithm_id=algorithm_id, referenced_coordinates=[centre])],
            qualitative_evaluations=[hd.sr.QualitativeEvaluation(name=PREDICTED_GGG, value=ggg_value(segment))],
            **common))
    return groups


def build_dicom_sr(source: DicomT2, seg: Dataset, segments: Sequence[Segment], algorithms: Sequence[Algorithm],
                   tracking_uids: Sequence[str], series_number: int, series_description: str) -> Dataset:
    """The measurement report on `seg`, whose segment n is segments[n - 1]."""
    groups = [group for n, (segment, algorithm, uid) in enumerate(zip(segments, algorithms, tracking_uids), start=1)
              for group in _groups(segment, n, seg, source, algorithm, uid)]
    observer = hd.sr.ObserverContext(
        observer_type=codes.DCM.Device,
        observer_identifying_attributes=hd.sr.DeviceObserverIdentifyingAttributes(
            uid=hd.UID(), name="prostate-cad", manufacturer_name=MANUFACTURER, model_name=f"prostate-cad {__version__}"))
    report = hd.sr.MeasurementReport(
        observation_context=hd.sr.ObservationContext(observer_device_context=observer),
        procedure_reported=codes.SCT.MultiparametricMRIOfProstate, imaging_measurements=groups)
    scheme = hd.coding_schemes.CodingSchemeIdentificationItem(
        designator=LOCAL_SCHEME, name="ProstateLesionCAD local codes", responsible_organization=MANUFACTURER)
    with warnings.catch_warnings():  # the T2's patient name is copied as it is, even with a single component
        warnings.filterwarnings("ignore", message=".*unlikely to represent the intended person name")
        return hd.sr.Comprehensive3DSR(
            evidence=[seg, *source.datasets], content=report[0], series_instance_uid=hd.UID(),
            series_number=series_number, sop_instance_uid=hd.UID(), instance_number=1, manufacturer=MANUFACTURER,
            is_complete=True, is_final=False, is_verified=False, series_description=series_description[:64],
            content_qualification="RESEARCH", coding_schemes=[scheme])
