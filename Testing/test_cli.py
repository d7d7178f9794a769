"""The shape of the command line: one explicit VERBS table in cli.py, every parser in
commands/, sub-verbs as tables of functions, and parsers that build without heavy imports."""

from __future__ import annotations

import argparse
import ast
import importlib
import pkgutil
import re
import subprocess
import sys
from pathlib import Path

import pytest

from ProstateLesionCADLib import cli, commands
from ProstateLesionCADLib.commands import _subverbs, models, train

LIB = Path(cli.__file__).resolve().parent
EXPECTED_VERBS = ["bench", "demo", "detect", "evaluate", "export", "grow", "load", "models", "phantoms", "preprocess",
                  "register", "train", "zones"]
PARSER_CALLS = {"add_argument", "add_argument_group", "add_mutually_exclusive_group", "add_subparsers", "add_parser",
                "parse_args", "parse_known_args"}


def _command_modules() -> dict[str, bool]:
    """Module name in commands/ -> whether it is a helper (leading underscore)."""
    return {m.name: m.name.startswith("_") for m in pkgutil.iter_modules(commands.__path__)}


def _subparsers(parser: argparse.ArgumentParser) -> dict[str, argparse.ArgumentParser]:
    actions = [a for a in parser._actions if isinstance(a, argparse._SubParsersAction)]
    return dict(actions[0].choices) if actions else {}


def test_verbs_table_is_explicit_and_complete():
    assert list(cli.VERBS) == EXPECTED_VERBS
    tools = set(cli.DEVELOPER_TOOLS)
    for name, helper in _command_modules().items():
        module = importlib.import_module(f"{commands.__name__}.{name}")
        if helper:
            assert module not in cli.VERBS.values(), f"helper {name} is listed as a verb"
            continue
        is_verb = module in cli.VERBS.values()
        assert is_verb != (name in tools), f"commands/{name}.py must be a verb or a developer tool (not both, not neither)"
        assert isinstance(module.HELP, str) and module.HELP.strip()
        assert callable(module.add_arguments) and callable(module.run)
    for verb, module in cli.VERBS.items():
        assert module.__name__ == f"{commands.__name__}.{verb}"
    for name, what in cli.DEVELOPER_TOOLS.items():
        assert not _command_modules()[name] and name not in cli.VERBS and what.strip()


def test_verbs_and_sub_verbs_are_not_discovered_or_imported_by_name():
    for path in (LIB / "cli.py", LIB / "commands" / "_subverbs.py", LIB / "commands" / "models.py",
                 LIB / "commands" / "train.py"):
        tree = ast.parse(path.read_text(encoding="utf-8"))
        imported = {a.name for n in ast.walk(tree) if isinstance(n, ast.Import) for a in n.names}
        imported |= {n.module for n in ast.walk(tree) if isinstance(n, ast.ImportFrom) and n.module}
        assert not imported & {"importlib", "pkgutil"}, f"{path.name} imports {imported & {'importlib', 'pkgutil'}}"
        calls = {n.func.id for n in ast.walk(tree) if isinstance(n, ast.Call) and isinstance(n.func, ast.Name)}
        assert not calls & {"__import__", "getattr"}, f"{path.name} looks functions up by name"


def test_help_lists_exactly_the_verbs():
    proc = subprocess.run([sys.executable, "-m", "ProstateLesionCADLib", "--help"], capture_output=True, text=True,
                          timeout=60)
    assert proc.returncode == 0, proc.stderr
    listed = re.findall(r"^    (\S+)\s", proc.stdout, flags=re.MULTILINE)
    assert listed == EXPECTED_VERBS
    assert sorted(_subparsers(cli.build_parser())) == EXPECTED_VERBS


def test_parsers_build_without_heavy_imports():
    """`--help` stays instant: building every parser imports no numerical or imaging library."""
    code = ("import sys\nfrom ProstateLesionCADLib import cli\ncli.build_parser()\n"
            "print(sorted(m for m in ('torch', 'numpy', 'SimpleITK', 'scipy', 'monai', 'pydicom', 'onnxruntime') "
            "if m in sys.modules))")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == "[]"


def test_every_verb_and_sub_verb_builds_and_runs_its_module(capsys):
    parser = cli.build_parser()
    verbs = _subparsers(parser)
    for verb, module in cli.VERBS.items():
        sub = verbs[verb]
        assert sub.get_default("_run") is module.run and sub.description == module.HELP
        assert sub.format_help().startswith(f"usage: prostate-cad {verb}")
    tables = {"models": models.SUBVERBS, "train": train.SUBVERBS}
    assert sorted(v for v, sub in verbs.items() if _subparsers(sub)) == sorted(tables)
    for verb, table in tables.items():
        assert all(isinstance(entry, _subverbs.SubVerb) for entry in table)
        subs = _subparsers(verbs[verb])
        assert list(subs) == [entry.name for entry in table]
        for entry in table:
            assert entry.add_arguments.__module__.startswith(commands.__name__ + ".")
            assert entry.run.__module__.startswith(commands.__name__ + ".")
            assert subs[entry.name].get_default("_subverb_run") is entry.run
            assert subs[entry.name].description == entry.help
            assert subs[entry.name].format_help().startswith(f"usage: prostate-cad {verb} {entry.name}")
        with pytest.raises(SystemExit) as exc:  # a verb with sub-verbs needs one
            cli.main([verb])
        assert exc.value.code == 2
        assert "<sub-verb>" in capsys.readouterr().err
    assert sorted(_subparsers(verbs["models"])) == ["fetch-published", "import-mdt", "install", "list"]
    assert sorted(_subparsers(verbs["train"])) == ["detector", "focalnet", "zones"]


def test_developer_tools_build_their_own_parser(capsys):
    for name in cli.DEVELOPER_TOOLS:
        module = importlib.import_module(f"{commands.__name__}.{name}")
        with pytest.raises(SystemExit) as exc:
            cli.run_tool(module, ["--help"])
        assert exc.value.code == 0
        out = capsys.readouterr().out
        assert out.startswith(f"usage: python -m {module.__name__}") and "--out" in out


def _parser_code(path: Path) -> list[str]:
    """What in a source file imports argparse or builds/uses an argument parser."""
    found = []
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import) and any(a.name.split(".")[0] == "argparse" for a in node.names):
            found.append(f"line {node.lineno}: import argparse")
        elif isinstance(node, ast.ImportFrom) and not node.level and (node.module or "").split(".")[0] == "argparse":
            found.append(f"line {node.lineno}: from argparse import ...")
        elif isinstance(node, ast.Attribute) and node.attr in PARSER_CALLS:
            found.append(f"line {node.lineno}: .{node.attr}")
    return found


def test_only_the_command_line_holds_argument_parsers():
    interface = {LIB / "cli.py"} | set((LIB / "commands").rglob("*.py"))
    wrong = [f"{path.relative_to(LIB)} {what}" for path in sorted(LIB.rglob("*.py")) if path not in interface
             for what in _parser_code(path)]
    assert not wrong, "argument parsing outside cli.py and commands/:\n" + "\n".join(wrong)
    assert _parser_code(LIB / "cli.py") and _parser_code(LIB / "commands" / "_subverbs.py")  # the walker sees them


def test_bench_runs_the_explicit_benchmark_list(tmp_path):
    from ProstateLesionCADLib.demo import benchmarks

    found = sorted(m.name for m in pkgutil.iter_modules(benchmarks.__path__) if not m.name.startswith("_"))
    assert sorted(benchmarks.BENCHMARKS) == found
    for name in benchmarks.BENCHMARKS:
        module = importlib.import_module(f"{benchmarks.__name__}.{name}")
        assert module.TITLE.strip() and callable(module.run)
    assert "pkgutil" not in (LIB / "commands" / "bench.py").read_text(encoding="utf-8")
    assert cli.main(["bench", "--out", str(tmp_path), "--only", "no-such-benchmark"]) == 0
    assert (tmp_path / "REPORT.md").read_text(encoding="utf-8").strip() == "# ProstateLesionCAD benchmark report"
