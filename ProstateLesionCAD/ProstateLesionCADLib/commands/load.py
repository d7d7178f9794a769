"""prostate-cad load: show which series/files a study provides for each role."""

from __future__ import annotations

from typing import TYPE_CHECKING, Optional

from ._output_args import add_overwrite_argument, writes_output

if TYPE_CHECKING:
    from ..study.case import Case, SeriesInfo

HELP = ("Load a study (DICOM folder, folder with case.json, or case .json) and print one line per role; "
        "optionally export it as NRRD files + case.json.")


def add_arguments(parser) -> None:
    parser.add_argument("path", help="DICOM folder (any depth), folder holding case.json, or a case .json file")
    parser.add_argument("--choose", action="append", default=[], metavar="ROLE=SERIES",
                        help="use this series (number or SeriesInstanceUID) for ROLE instead of the automatic pick; "
                             "ROLE is T2, ADC, DCE, DWI, DWI:<b>, DWI_COMPUTED or DWI_COMPUTED:<b>; repeatable")
    parser.add_argument("--ktrans", default=None, metavar="FILE", help="Ktrans map (NRRD/NIfTI/MHA) for the KTRANS role")
    parser.add_argument("--export", default=None, metavar="DIR",
                        help="write the loaded case as compressed NRRD per role + case.json into DIR")
    add_overwrite_argument(parser)


def parse_choices(items: list[str]) -> dict[str, str]:
    from ..errors import ParameterError

    choose: dict[str, str] = {}
    for item in items:
        role, sep, series = item.partition("=")
        if not sep or not role.strip() or not series.strip():
            raise ParameterError(f"--choose {item!r}: expected ROLE=SERIES, e.g. ADC=9.")
        choose[role.strip()] = series.strip()
    return choose


def _source(info: Optional[SeriesInfo]) -> str:
    if info is None:
        return ""
    if info.series_number is not None:
        return f"series {info.series_number} '{info.description}'"
    return info.description


def _grid(image) -> tuple[str, str]:
    size = "x".join(str(v) for v in image.GetSize())
    spacing = "x".join(f"{round(v, 3):g}" for v in image.GetSpacing())
    return size, f"{spacing} mm"


def role_lines(case: Case) -> list[str]:
    """One line per role: role, b-value or time-point count, size, spacing, source series."""
    from ..study.dicom_roles import format_b

    used = {u.role: u for u in case.used}
    rows: list[tuple[str, str, object, str]] = [("T2", "-", case.t2, _source(used.get("T2")))]
    if case.adc is not None:
        rows.append(("ADC", "-", case.adc, _source(used.get("ADC"))))
    for b, img in sorted(case.dwi.items()):
        rows.append(("DWI", f"b={format_b(b)}", img, _source(used.get(f"DWI:{format_b(b)}"))))
    for b, img in sorted(case.dwi_computed.items()):
        rows.append(("DWI_COMPUTED", f"b={format_b(b)}", img, _source(used.get(f"DWI_COMPUTED:{format_b(b)}"))))
    if case.ktrans is not None:
        rows.append(("KTRANS", "-", case.ktrans, _source(used.get("KTRANS"))))
    if case.dce:
        dce = [u for u in case.used if u.role == "DCE"]
        source = _source(dce[0]) if dce else ""
        numbers = [u.series_number for u in dce if u.series_number is not None]
        if len(dce) > 1 and numbers:
            source = f"series {min(numbers)}-{max(numbers)} '{dce[0].description}' ..."
        if case.dce_times:
            source += f" ({case.dce_times[0]:.1f}-{case.dce_times[-1]:.1f} s)"
        rows.append(("DCE", f"{len(case.dce)} time points", case.dce[0], source))
    for name in ("prostate", "zones"):
        mask = getattr(case, name)
        if mask is not None:
            rows.append((name, "-", mask, "mask"))
    lines = []
    for role, what, image, source in rows:
        size, spacing = _grid(image)
        lines.append(f"{role:<13} {what:<15} {size:<12} {spacing:<18} {source}".rstrip())
    return lines


def unused_lines(case: Case) -> list[str]:
    """One line per series the study holds but no role uses, with the reason."""
    lines = []
    for u in case.unused:
        number = f"series {u.series_number}" if u.series_number is not None else "series"
        lines.append(f"{number} '{u.description}': {u.reason}")
    return lines


@writes_output("export")
def run(args) -> int:
    from ..study.loading import load_case
    from ..progress import ConsoleProgress, sub_progress

    progress = ConsoleProgress()
    choose = parse_choices(args.choose)
    case = load_case(args.path, choose or None, sub_progress(progress, 0.0, 0.8 if args.export else 1.0),
                     ktrans=args.ktrans)
    print(f"case {case.case_id}")
    for line in role_lines(case):
        print(line)
    for note in case.notes:  # e.g. an ADC map converted from other units
        print(f"note: {note}")
    extra = unused_lines(case)
    if extra:
        print("unused:")
        for line in extra:
            print(f"  {line}")
    if args.export:
        from ..study.case_json import write_case_files

        json_path = write_case_files(case, args.export, sub_progress(progress, 0.8, 1.0))
        print(f"exported to {json_path}")
    return 0
