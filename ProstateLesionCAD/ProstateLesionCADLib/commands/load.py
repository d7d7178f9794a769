"""prostate-cad load: show which series/files a study provides for each role."""

from __future__ import annotations

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


def parse_choices(items: list[str]) -> dict[str, str]:
    from ..errors import ParameterError

    choose: dict[str, str] = {}
    for item in items:
        role, sep, series = item.partition("=")
        if not sep or not role.strip() or not series.strip():
            raise ParameterError(f"--choose {item!r}: expected ROLE=SERIES, e.g. ADC=9.")
        choose[role.strip()] = series.strip()
    return choose


def run(args) -> int:
    from ..study.loading import load_case, role_lines, unused_lines
    from ..progress import ConsoleProgress, sub_progress

    progress = ConsoleProgress()
    choose = parse_choices(args.choose)
    case = load_case(args.path, choose or None, sub_progress(progress, 0.0, 0.8 if args.export else 1.0),
                     ktrans=args.ktrans)
    print(f"case {case.case_id}")
    for line in role_lines(case):
        print(line)
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
