"""A DICOM SEG read back from its file and drawn over the T2 images it refers to.

Nothing here comes from the run that wrote the SEG: the segments' pixels, labels and colours
are what highdicom reads from the SEG file, and each SEG frame is laid over the T2 instance
(or multi-frame T2 frame) its DerivationImageSequence names, read with pydicom from the study
folder. If the SEG referred to the wrong T2 image or held shifted voxels, the figure would
show it. Used by the demo (`prostate-cad demo --dicom DIR`: dicom/seg-over-t2.png) and the
README; run alone as

    python -m ProstateLesionCADLib.commands.seg_figure SEG.dcm --t2 STUDY_FOLDER --out OUT.png
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Optional, Sequence

import numpy as np

from ..errors import CaseError, FormatError
from ..ggg_palette import CATEGORY


@dataclass
class SegSegment:
    number: int  # SegmentNumber
    label: str  # SegmentLabel
    rgb: tuple[float, float, float]  # RecommendedDisplayCIELabValue as RGB 0..1 (grey when absent)
    lesion: bool  # category "Morphologically altered structure" (zones are anatomical structures)


@dataclass
class SegSlice:
    """One T2 image the SEG refers to, with the SEG's masks on its pixel grid."""

    sop_instance_uid: str
    frame: Optional[int]  # 1-based frame of a multi-frame T2, None for a single-frame image
    position: float  # along the slice normal (mm), for ordering
    instance_number: Optional[int]  # the T2 image's InstanceNumber (for a frame: the object's)
    t2: np.ndarray  # (rows, columns) T2 pixel values
    masks: dict[int, np.ndarray] = field(default_factory=dict)  # segment number -> bool (rows, columns)


@dataclass
class SegOverlay:
    series_description: str
    segments: dict[int, SegSegment]
    slices: list[SegSlice]  # every T2 image some SEG frame refers to, in slice order


def _referenced_frames(seg) -> list[tuple[str, Optional[int]]]:
    """(SOP instance UID, frame number or None) of the T2 image each SEG frame derives from."""
    found: dict[tuple[str, Optional[int]], None] = {}
    for item in seg.PerFrameFunctionalGroupsSequence:
        for derivation in getattr(item, "DerivationImageSequence", []):
            for source in getattr(derivation, "SourceImageSequence", []):
                frame = getattr(source, "ReferencedFrameNumber", None)
                found[(str(source.ReferencedSOPInstanceUID), None if frame is None else int(frame))] = None
    return list(found)


def _t2_instances(folder: Path, uids: set[str]):
    """The pydicom datasets (with pixels) of the referenced instances found under `folder`."""
    import pydicom
    from pydicom.errors import InvalidDicomError

    found = {}
    for root, _dirs, files in os.walk(folder):
        for name in sorted(files):
            path = os.path.join(root, name)
            try:
                head = pydicom.dcmread(path, stop_before_pixels=True, specific_tags=["SOPInstanceUID"])
            except (InvalidDicomError, OSError, ValueError, EOFError):
                continue
            uid = str(head.get("SOPInstanceUID", ""))
            if uid in uids and uid not in found:
                found[uid] = pydicom.dcmread(path)
    missing = uids - set(found)
    if missing:
        raise CaseError(f"{folder}: {len(missing)} of the {len(uids)} T2 images the SEG refers to are not there "
                        f"(e.g. SOP Instance UID {sorted(missing)[0]}); give the study the SEG was made for.")
    return found


def _position(ds, frame: Optional[int]) -> float:
    """Distance of the image plane from the origin along its normal (mm)."""
    if frame is None:
        orientation, position = ds.ImageOrientationPatient, ds.ImagePositionPatient
    else:
        item = ds.PerFrameFunctionalGroupsSequence[frame - 1]
        shared = ds.SharedFunctionalGroupsSequence[0]
        plane = getattr(item, "PlaneOrientationSequence", None) or shared.PlaneOrientationSequence
        orientation = plane[0].ImageOrientationPatient
        position = item.PlanePositionSequence[0].ImagePositionPatient
    row, column = np.reshape(np.asarray(orientation, float), (2, 3))
    return float(np.dot(np.cross(row, column), np.asarray(position, float)))


def read_seg_over_t2(seg_path: str | os.PathLike, t2_folder: str | os.PathLike) -> SegOverlay:
    """The SEG's segments (highdicom) on each T2 image it refers to (pydicom, found in `t2_folder`)."""
    import highdicom as hd

    try:
        seg = hd.seg.segread(seg_path)
    except Exception as exc:  # highdicom raises several kinds for a file that is not a SEG
        raise FormatError(f"{seg_path}: not a readable DICOM Segmentation ({exc}).") from None
    segments = {}
    for number in seg.segment_numbers:
        d = seg.get_segment_description(number)
        lab = getattr(d, "RecommendedDisplayCIELabValue", None)
        rgb = tuple(c / 255 for c in hd.color.CIELabColor.from_dicom_value(lab).to_rgb()) if lab else (0.6, 0.6, 0.6)
        segments[number] = SegSegment(number, str(d.segment_label), rgb,  # type: ignore[arg-type]
                                      d.segmented_property_category.value == CATEGORY.value)
    numbers = list(segments)
    references = _referenced_frames(seg)
    datasets = _t2_instances(Path(t2_folder), {uid for uid, _ in references})
    slices = []
    for uid, frame in references:
        ds = datasets[uid]
        if frame is None:
            pixels = seg.get_pixels_by_source_instance([uid], segment_numbers=numbers)[0]
            t2 = ds.pixel_array
        else:
            pixels = seg.get_pixels_by_source_frame(uid, source_frame_numbers=[frame], segment_numbers=numbers)[0]
            t2 = ds.pixel_array[frame - 1] if int(getattr(ds, "NumberOfFrames", 1) or 1) > 1 else ds.pixel_array
        masks = {n: pixels[..., s] > 0 for s, n in enumerate(numbers)}
        number = getattr(ds, "InstanceNumber", None)
        slices.append(SegSlice(uid, frame, _position(ds, frame), None if number is None else int(number),
                               np.asarray(t2, float), masks))
    slices.sort(key=lambda s: s.position)
    return SegOverlay(str(getattr(seg, "SeriesDescription", "") or ""), segments, slices)


def drawn_segments(overlay: SegOverlay, lesions: int = 5) -> list[int]:
    """The segments a figure draws: the first `lesions` lesion segments (the SEG lists them by
    rank, highest score first) and every zone segment."""
    numbers = [n for n, s in overlay.segments.items() if s.lesion][:lesions]
    return numbers + [n for n, s in overlay.segments.items() if not s.lesion]


def overlay_rgba(image: SegSlice, segments: dict[int, SegSegment], numbers: Optional[Sequence[int]] = None,
                 alpha: float = 0.45) -> np.ndarray:
    """The colour layer drawn over the T2: each lesion segment's pixels (of `numbers`, default
    all) in its SEG colour (later segments on top), transparent elsewhere."""
    layer = np.zeros(image.t2.shape + (4,), float)
    for number, mask in image.masks.items():
        if segments[number].lesion and (numbers is None or number in numbers):
            layer[mask] = (*segments[number].rgb, alpha)
    return layer


def shown_slices(overlay: SegOverlay, numbers: Sequence[int], panels: int = 3) -> list[SegSlice]:
    """Up to `panels` T2 images: the one holding most of each lesion segment of `numbers` in turn
    (distinct images, slice order); without lesions the image with most zone pixels."""
    chosen: list[SegSlice] = []
    for number in (n for n in numbers if overlay.segments[n].lesion):
        best = max(overlay.slices, key=lambda s: int(s.masks[number].sum()))
        if best.masks[number].any() and best not in chosen:
            chosen.append(best)
        if len(chosen) == panels:
            break
    if not chosen and overlay.slices:
        chosen = [max(overlay.slices, key=lambda s: sum(int(s.masks[n].sum()) for n in numbers))]
    return sorted(chosen, key=lambda s: s.position)


def _view(images: Sequence[SegSlice], numbers: Sequence[int], margin: float = 0.35) -> tuple[slice, slice]:
    """A square window around every drawn segment pixel of the shown images (the whole image without any)."""
    union = np.zeros(images[0].t2.shape, bool)
    for image in images:
        for number in numbers:
            union |= image.masks[number]
    if not union.any():
        return slice(None), slice(None)
    rows, columns = np.nonzero(union)
    centre = ((rows.min() + rows.max()) / 2, (columns.min() + columns.max()) / 2)
    half = max(rows.max() - rows.min(), columns.max() - columns.min(), 40) * (0.5 + margin)
    cut = [slice(max(0, int(c - half)), min(n, int(c + half) + 1)) for c, n in zip(centre, union.shape)]
    return cut[0], cut[1]


def draw_seg_over_t2(overlay: SegOverlay, path: str | os.PathLike, title: str, panels: int = 3,
                     lesions: int = 5) -> list[SegSlice]:
    """Write the figure: the `lesions` highest-ranked lesion segments filled and outlined in their
    SEG colours, zone segments outlined, over the shown T2 images; returns the images shown."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.lines import Line2D

    numbers = drawn_segments(overlay, lesions)
    images = shown_slices(overlay, numbers, panels)
    if not images:
        raise CaseError("The SEG refers to no T2 image, so there is nothing to draw.")
    rows, columns = _view(images, numbers)
    handles = [Line2D([], [], color=overlay.segments[n].rgb, lw=4 if overlay.segments[n].lesion else 1.5,
                      ls="-" if overlay.segments[n].lesion else "--", label=overlay.segments[n].label)
               for n in numbers if any(i.masks[n].any() for i in images)]
    legend_rows = -(-len(handles) // 3)
    fig, axes = plt.subplots(1, len(images), figsize=(3.6 * len(images), 3.7 + 0.22 * legend_rows), squeeze=False)
    for ax, image in zip(axes[0], images):
        t2 = image.t2[rows, columns]
        lo, hi = np.percentile(t2, [1, 99.5])
        ax.imshow(t2, cmap="gray", vmin=lo, vmax=hi, interpolation="nearest")
        ax.imshow(overlay_rgba(image, overlay.segments, numbers)[rows, columns], interpolation="nearest")
        for number in numbers:
            mask = image.masks[number][rows, columns]
            if mask.any():
                segment = overlay.segments[number]
                ax.contour(mask.astype(float), levels=[0.5], colors=[segment.rgb],
                           linewidths=1.2 if segment.lesion else 0.8, linestyles="solid" if segment.lesion else "dashed")
        where = f"instance {image.instance_number}" if image.instance_number is not None else "image"
        where += f", frame {image.frame}" if image.frame is not None else ""
        ax.set_title(f"T2 {where} (slice at {image.position:.1f} mm)", fontsize=7)
        ax.axis("off")
    if handles:
        fig.legend(handles=handles, loc="lower center", ncol=min(3, len(handles)), fontsize=7, frameon=False)
    total = sum(1 for s in overlay.segments.values() if s.lesion)
    drawn = sum(1 for n in numbers if overlay.segments[n].lesion)
    if drawn < total:
        title += f"\n{drawn} highest-scoring of its {total} lesion segments shown"
    fig.suptitle(title, fontsize=8)
    height = fig.get_size_inches()[1]
    fig.tight_layout(rect=(0, (0.22 * legend_rows + 0.15) / height if handles else 0, 1, 1 - 0.45 / height))
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return images
