"""The single GGG colour palette and terminology of the project (Slicer panels, PNGs, README).

Gleason grade groups as the detector predicts them (ARCHITECTURE.md): 0 = benign, 1, 2 and
3 = GGG3 or higher. Colours run from green (benign) through yellow and orange to red
(GGG3+), so severity reads at a glance (ColorBrewer "Set1"/"Set2" hues that stay
apart on a grey T2 background). Names always carry the grade too, so colour is never
the only cue.

Terminology: lesions carry SNOMED CT codes a DICOM SEG / Slicer terminology can
store: category "Morphologically altered structure" (SCT 49755003); type "Lesion"
(SCT 52988006) for a benign finding and "Neoplasm" (SCT 108369006) for GGG >= 1;
anatomic region "Prostate" (SCT 41216001). Zones: category "Anatomical Structure"
(SCT 123037004, as in Slicer's General Anatomy list), types "Transition zone of the
prostate" (SCT 399384005; the central gland CG has no code of its own, the transition zone
is the closest standard term) and "Peripheral zone of the prostate" (SCT 279706003).

Names: the panels use `lesion_name` ('Lesion 2 · GGG2 · 0.41'); files whose text is ASCII
(DICOM's default character repertoire, NRRD headers) use `lesion_name(..., ascii_only=True)`
('Lesion 2 - GGG2 - 0.41'). Zone segments keep the Zonal Segmentation panel's names.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Code:
    scheme: str  # coding scheme designator, e.g. "SCT" (SNOMED CT)
    value: str
    meaning: str


@dataclass(frozen=True)
class GGGClass:
    ggg: int
    name: str  # short label used in segment names ("GGG2")
    description: str
    rgb: tuple[float, float, float]  # 0..1
    type_code: Code

    @property
    def hex(self) -> str:
        return "#" + "".join(f"{round(255 * c):02x}" for c in self.rgb)

    @property
    def rgb255(self) -> tuple[int, int, int]:
        return tuple(round(255 * c) for c in self.rgb)  # type: ignore[return-value]


CATEGORY = Code("SCT", "49755003", "Morphologically altered structure")
LESION = Code("SCT", "52988006", "Lesion")
NEOPLASM = Code("SCT", "108369006", "Neoplasm")
PROSTATE = Code("SCT", "41216001", "Prostate")
ANATOMICAL_STRUCTURE = Code("SCT", "123037004", "Anatomical Structure")
TRANSITION_ZONE = Code("SCT", "399384005", "Transition zone of the prostate")
PERIPHERAL_ZONE = Code("SCT", "279706003", "Peripheral zone of the prostate")

PALETTE: dict[int, GGGClass] = {
    0: GGGClass(0, "GGG0", "benign (no clinically significant cancer)", (0.302, 0.686, 0.290), LESION),
    1: GGGClass(1, "GGG1", "Gleason 3+3", (1.000, 0.851, 0.184), NEOPLASM),
    2: GGGClass(2, "GGG2", "Gleason 3+4", (1.000, 0.498, 0.000), NEOPLASM),
    3: GGGClass(3, "GGG3+", "Gleason 4+3 or higher", (0.894, 0.102, 0.110), NEOPLASM),
}


def ggg_class(ggg: int) -> GGGClass:
    """Palette entry of a predicted grade group (4 and 5 count as GGG3+)."""
    g = int(ggg)
    if g < 0:
        raise ValueError(f"GGG must be 0..5, got {g}.")
    return PALETTE[min(g, 3)]


@dataclass(frozen=True)
class ZoneClass:
    label: int  # value in zones.nrrd
    name: str  # segment name, as the Zonal Segmentation panel shows it
    abbreviation: str
    rgb: tuple[float, float, float]  # 0..1
    type_code: Code


ZONES: dict[int, ZoneClass] = {
    1: ZoneClass(1, "Central gland", "CG", (0.50, 0.68, 0.85), TRANSITION_ZONE),
    2: ZoneClass(2, "Peripheral zone", "PZ", (0.85, 0.70, 0.50), PERIPHERAL_ZONE),
}


CRITERIA = (1, 2, 3)  # the significance criteria GGG>=k the panels and evaluation offer


def criterion_name(k: int) -> str:
    """'GGG>=k', the key model packages and evaluation reports use for a criterion."""
    return f"GGG>={int(k)}"


def meets_criterion(ggg: int, k: int) -> bool:
    """Whether a grade group counts under criterion GGG>=k (a detection's prediction or a lesion's truth)."""
    return int(ggg) >= int(k)


def lesion_name(rank: int, ggg: int, score: float, ascii_only: bool = False) -> str:
    """The name a radiologist reads, e.g. 'Lesion 2 · GGG2 · 0.41' ('Lesion 2 - GGG2 - 0.41' in ASCII)."""
    separator = " - " if ascii_only else " · "
    return separator.join((f"Lesion {rank}", ggg_class(ggg).name, f"{score:.2f}"))
