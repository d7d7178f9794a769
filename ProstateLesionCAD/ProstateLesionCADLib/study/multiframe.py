"""Enhanced MR and Legacy Converted Enhanced MR objects as one classic-looking header per frame.

A multi-frame object keeps what classic files store per image in functional groups: the
shared group (the same for every frame) and one per-frame group per frame. Each group item
holds macros (PlanePositionSequence, PlaneOrientationSequence, PixelMeasuresSequence,
PixelValueTransformationSequence, MRDiffusionSequence, FrameContentSequence, the
Unassigned Shared/Per-frame Converted Attributes of legacy conversions, a vendor's
private per-frame sequences...) whose single item carries the very attributes a classic
image has at its top level (ImagePositionPatient, PixelSpacing, RescaleSlope,
DiffusionBValue, private b-value tags...). `frame_datasets` lays them over the object's
top-level attributes (per-frame over shared), so the header rules for classic images read
each frame as they read a file; Enhanced-only attributes get their classic meaning:

- FrameType (MR Image Frame Type) -> ImageType
- EffectiveEchoTime (MR Echo) -> EchoTime; PulseSequenceName -> SequenceName
- EchoPulseSequence SPIN/GRADIENT/BOTH (+ EchoPlanarPulseSequence) -> ScanningSequence SE/GR/EP
- FrameAcquisitionDateTime (Frame Content) -> AcquisitionDate/AcquisitionTime
- TemporalPositionIndex (Frame Content) -> TemporalPositionIdentifier
- TemporalPositionTimeOffset (Temporal Position, seconds) -> TriggerTime (ms)
- the frame's number in the object -> InstanceNumber when no converted one is given
"""

from __future__ import annotations

from typing import Optional

from pydicom.dataset import Dataset

from .diffusion_tags import number, text

PER_FRAME = (0x5200, 0x9230)
SHARED = (0x5200, 0x9229)
_PIXEL_DATA = {(0x7FE0, 0x0010), (0x7FE0, 0x0008), (0x7FE0, 0x0009)}
_CONVERTED_PER_FRAME = (0x0020, 0x9171)  # Unassigned Per-frame Converted Attributes


def is_multiframe(ds) -> bool:
    return (number(ds.get("NumberOfFrames")) or 1) > 1 or ds.get(PER_FRAME) is not None


def has_functional_groups(ds) -> bool:
    per_frame = ds.get(PER_FRAME)
    return per_frame is not None and len(per_frame.value) > 0


def _lay_over(target: Dataset, group_item: Dataset) -> None:
    """Copy the attributes of every macro in one functional-group item onto `target`."""
    for macro in group_item:
        if macro.VR == "SQ":
            for item in macro.value[:1]:
                for element in item:
                    target[element.tag] = element
        else:
            target[macro.tag] = macro


def _value(ds: Dataset, tag: tuple[int, int]):
    element = ds.get(tag)
    return element.value if element is not None else None


def _set(flat: Dataset, keyword: str, value) -> None:
    """A new element: the frames share the elements laid over them, so none is changed in place."""
    if keyword in flat:
        del flat[keyword]
    setattr(flat, keyword, value)


def _classic_names(flat: Dataset, index: int, converted_instance: bool) -> None:
    frame_type = _value(flat, (0x0008, 0x9007))
    if frame_type:
        _set(flat, "ImageType", list(frame_type))
    if "EchoTime" not in flat and _value(flat, (0x0018, 0x9082)) is not None:
        _set(flat, "EchoTime", _value(flat, (0x0018, 0x9082)))
    if "SequenceName" not in flat and _value(flat, (0x0018, 0x9005)):
        _set(flat, "SequenceName", text(_value(flat, (0x0018, 0x9005))))
    if "ScanningSequence" not in flat:
        kinds = {"SPIN": ["SE"], "GRADIENT": ["GR"], "BOTH": ["SE", "GR"]}.get(
            text(_value(flat, (0x0018, 0x9008))).upper(), [])
        if text(_value(flat, (0x0018, 0x9018))).upper() == "YES":  # EchoPlanarPulseSequence
            kinds = kinds + ["EP"]
        if kinds:
            _set(flat, "ScanningSequence", kinds if len(kinds) > 1 else kinds[0])
    acquired = text(_value(flat, (0x0018, 0x9074)))
    if len(acquired) >= 14:
        _set(flat, "AcquisitionDate", acquired[:8])
        _set(flat, "AcquisitionTime", acquired[8:].split("+")[0].split("-")[0])
    temporal = number(_value(flat, (0x0020, 0x9128)))
    if "TemporalPositionIdentifier" not in flat and temporal is not None:
        _set(flat, "TemporalPositionIdentifier", int(temporal))
    offset = number(_value(flat, (0x0020, 0x930D)))
    if "TriggerTime" not in flat and offset is not None:
        _set(flat, "TriggerTime", f"{offset * 1000.0:.3f}")
    if not converted_instance:
        _set(flat, "InstanceNumber", index + 1)


def frame_datasets(ds) -> Optional[list[Dataset]]:
    """One dataset per frame with the classic attributes of that frame; None when the object
    has no per-frame functional groups (its frames' positions are then unknown)."""
    if not has_functional_groups(ds):
        return None
    base = Dataset()
    for element in ds:
        if element.tag not in (PER_FRAME, SHARED) and element.tag not in _PIXEL_DATA:
            base[element.tag] = element
    shared = ds.get(SHARED)
    if shared is not None and len(shared.value):
        _lay_over(base, shared.value[0])
    frames = []
    for index, item in enumerate(ds[PER_FRAME].value):
        flat = Dataset()
        flat.update(base)
        _lay_over(flat, item)
        converted = item.get(_CONVERTED_PER_FRAME)
        converted_instance = converted is not None and any("InstanceNumber" in i for i in converted.value)
        _classic_names(flat, index, converted_instance)
        frames.append(flat)
    return frames
