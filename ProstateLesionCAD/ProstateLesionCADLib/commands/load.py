"""prostate-cad load: show which series/files a study provides for each role."""

from __future__ import annotations

from typing import TYPE_CHECKING, Optional

from ._output_args import add_overwrite_argument, writes_output

if TYPE_CHECKING:
    from ..study.case import Case, SeriesInfo

HELP = ("Load a study (DICOM folder, DICOM files, folder with case.json, or case .json) and print one line per role; "
        "optionally export it as NRRD files + case.json, or describe the picked series as JSON.")


def add_arguments(parser) -> None:
    parser.add_argument("path", nargs="*", default=[],
                        help="DICOM folder (any depth), folder holding case.json, or a case .json file; "
                             "or the DICOM files of one study")
    parser.add_argument("--files-from", default=None, metavar="LIST",
                        help="read the study's DICOM files from LIST, one path per line (e.g. the files a DICOM "
                             "database holds for the study)")
    parser.add_argument("--json", action="store_true",
                        help="print only a JSON description of the DICOM study (format prostate-cad-study-plan/1): "
                             "per role the chosen SeriesInstanceUID, its files in slice order, b-values, DCE time "
                             "points, and the rejected series with reasons; pixel data are not read")
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


def dicom_files(args) -> Optional[list[str]]:
    """The study's files when given as files (--files-from, or several/single DICOM files); None for a path."""
    from pathlib import Path

    from ..errors import ParameterError
    from ..study.dicomdir import is_dicomdir
    from ..study.series_plan import read_file_list

    if args.files_from:
        if args.path:
            raise ParameterError("Give either a study path or --files-from, not both.")
        return read_file_list(args.files_from)
    if not args.path:
        raise ParameterError("Give the study: a DICOM folder, a case.json folder or file, DICOM files, or --files-from.")
    first = Path(args.path[0])
    if len(args.path) == 1 and (first.is_dir() or first.suffix.lower() == ".json" or is_dicomdir(first)
                                or not first.exists()):
        return None
    missing = [p for p in args.path if not Path(p).is_file()]
    if missing:
        raise ParameterError(f"{missing[0]}: no such file (several paths must all be DICOM files of one study).")
    return list(args.path)


def print_plan(args, files: Optional[list[str]], choose: dict, progress) -> int:
    """--json: the picked series as one JSON line on stdout (progress goes to stderr)."""
    import json
    from pathlib import Path

    from ..errors import ParameterError
    from ..study.series_plan import describe_plan, plan_files
    from ..study.dicom_roles import plan_study

    if args.export or args.ktrans:
        raise ParameterError("--json describes the DICOM series only; run --export or --ktrans without --json.")
    if files is None:
        path = Path(args.path[0])
        if path.suffix.lower() == ".json" or (path / "case.json").is_file():
            raise ParameterError(f"{path}: --json describes DICOM series; this is a case of image files.")
        plan = plan_study(path, choose or None, progress)
    else:
        plan = plan_files(files, choose or None, progress)
    print(json.dumps(describe_plan(plan)))
    return 0


@writes_output("export")
def run(args) -> int:
    from ..study.loading import load_case
    from ..progress import ConsoleProgress, note, sub_progress

    progress = ConsoleProgress()  # on stderr, so that --json leaves stdout to the JSON
    choose = parse_choices(args.choose)
    files = dicom_files(args)
    if args.json:
        return print_plan(args, files, choose, progress)
    part = sub_progress(progress, 0.0, 0.8 if args.export else 1.0)
    if files is None:
        case = load_case(args.path[0], choose or None, part, ktrans=args.ktrans)
    else:
        from ..errors import ParameterError
        from ..study.series_plan import load_files

        if args.ktrans:
            raise ParameterError("--ktrans needs the study as a path (folder or case file), not as a list of files.")
        case = load_files(files, choose or None, part)
    print(f"case {case.case_id}")
    for line in role_lines(case):
        print(line)
    for message in case.notes:  # e.g. an ADC map converted from other units
        note(message)
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
