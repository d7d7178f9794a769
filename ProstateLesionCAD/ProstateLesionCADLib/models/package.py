"""Model packages (ARCHITECTURE.md): a folder with `model.json` and weight files with sha256.

model.json keys: format ("prostate-cad-model/1"), name, version, task ("detector",
"zones", "focalnet", ...), architecture {name, hyper-parameters}, channels, spacing,
crop_size, class_names, thresholds {"GGG>=k": {"max_sensitivity": t, "balanced": t,
"computed_on": "..."}}, training_data, intended_use, licence, files [{path, sha256,
bytes}]. Each task reads the extra keys it needs; this module knows the envelope and the
keys that name files a loader opens (`loaded_files`).

A package may come from anyone, so nothing in model.json is trusted: the name must be a
single folder name (install uses it as one), every file a loader opens must be listed in
`files`, lie inside the package (also after following links) and match its sha256, and
weights are unpickled as tensors only. `ModelPackage.file` is the one way a loader gets a
path; `ModelPackage.load_weights` the one way it reads PyTorch weights.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
from dataclasses import dataclass, field
from pathlib import Path, PureWindowsPath
from typing import Any, Optional

from ..errors import ModelError
from ..output_files import atomic_file
from ..resources import bundled_models_dir, user_models_dir

MODEL_FORMAT = "prostate-cad-model/1"
REQUIRED_KEYS = ("name", "version", "task", "intended_use", "files")
NAME_MAX_LENGTH = 100
PATH_MAX_LENGTH = 400
# Characters no file system of the three platforms accepts in a name, plus the separators.
_FORBIDDEN_CHARACTERS = set('<>:"/\\|?*')
_WINDOWS_DEVICES = {"CON", "PRN", "AUX", "NUL", *(f"COM{i}" for i in range(1, 10)), *(f"LPT{i}" for i in range(1, 10))}
_SHA256 = re.compile(r"^[0-9a-fA-F]{64}$")
# Files a task's loader opens under a fixed name when model.json does not name them
# (zones cascade: architecture.cnn1_weights / cnn2_weights; FocalNet: its weights file).
DEFAULT_LOADED_FILES = {"zones": {"architecture.cnn1_weights": "cnn1.pt", "architecture.cnn2_weights": "cnn2.pt"},
                        "focalnet": {"the FocalNet weights": "focalnet.pt"}}


def _control_character(text: str) -> bool:
    return any(ord(c) < 32 or ord(c) == 127 for c in text)


def name_problem(name: Any) -> Optional[str]:
    """Why `name` cannot be a package's folder name (a phrase), or None when it can."""
    if not isinstance(name, str):
        return f"is not text but {type(name).__name__}"
    if not name.strip():
        return "is empty"
    if len(name) > NAME_MAX_LENGTH:
        return f"is longer than {NAME_MAX_LENGTH} characters"
    if _control_character(name):
        return "contains a control character"
    bad = sorted(set(name) & _FORBIDDEN_CHARACTERS)
    if bad:
        return "contains " + ", ".join(repr(c) for c in bad)
    if name in (".", ".."):
        return "names a folder itself, not a package folder"
    if name.startswith("."):
        return "starts with '.'"
    if name != name.strip() or name.endswith("."):
        return "begins or ends with a space or ends with '.'"
    if name.split(".")[0].upper() in _WINDOWS_DEVICES:
        return "is a reserved device name on Windows"
    return None


def check_package_name(name: Any, where: str) -> str:
    """`name` when it is a single safe folder name; otherwise ModelError naming `where`."""
    problem = name_problem(name)
    if problem:
        raise ModelError(f"{where}: the package name {name!r} {problem}; a package name must be a single folder "
                         "name (no '/', '\\', '..' or control characters, at most "
                         f"{NAME_MAX_LENGTH} characters).")
    return name


def relative_path_problem(value: Any) -> Optional[str]:
    """Why `value` is not a relative path of '/'-separated names inside a folder (a phrase), or None."""
    if not isinstance(value, str):
        return f"is not text but {type(value).__name__}"
    if not value:
        return "is empty"
    if len(value) > PATH_MAX_LENGTH:
        return f"is longer than {PATH_MAX_LENGTH} characters"
    if _control_character(value):
        return "contains a control character"
    if "\\" in value:
        return "contains '\\' (folders are separated by '/')"
    if value.startswith("/") or PureWindowsPath(value).drive:
        return "is an absolute path"
    parts = value.split("/")
    if ".." in parts:
        return "leads out of its folder ('..')"
    if not parts or any(p in ("", ".") for p in parts):
        return "has an empty or '.' part"
    for part in parts:
        bad = sorted(set(part) & _FORBIDDEN_CHARACTERS)
        if bad:
            return "contains " + ", ".join(repr(c) for c in bad)
    return None


def sha256_of(path: str | os.PathLike, chunk: int = 1 << 20) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        while block := handle.read(chunk):
            digest.update(block)
    return digest.hexdigest()


def _listed_files(card: dict[str, Any], where: str) -> dict[str, dict[str, Any]]:
    """`files` of a card as {path: entry}, each entry checked: a relative path inside the
    package, a sha256 of 64 hex digits, an optional non-negative byte count, no path twice."""
    files = card.get("files")
    if not isinstance(files, list):
        raise ModelError(f"{where}: 'files' must be a list of {{path, sha256, bytes}} entries, "
                         f"not a {type(files).__name__}.")
    listed: dict[str, dict[str, Any]] = {}
    for i, entry in enumerate(files):
        if not isinstance(entry, dict):
            raise ModelError(f"{where}: files[{i}] must be an object with 'path' and 'sha256', "
                             f"not a {type(entry).__name__}.")
        path = entry.get("path")
        problem = relative_path_problem(path)
        if problem:
            raise ModelError(f"{where}: files[{i}].path {path!r} {problem}; every file must lie inside the package.")
        digest = entry.get("sha256")
        if not isinstance(digest, str) or not _SHA256.match(digest):
            raise ModelError(f"{where}: files[{i}] ({path}) has no valid sha256 (64 hexadecimal digits): {digest!r}.")
        size = entry.get("bytes")
        if size is not None and (isinstance(size, bool) or not isinstance(size, int) or size < 0):
            raise ModelError(f"{where}: files[{i}] ({path}) has 'bytes' {size!r}; it must be a whole number >= 0.")
        if path in listed:
            raise ModelError(f"{where}: files lists {path} twice.")
        listed[path] = entry
    return listed


def loaded_files(card: dict[str, Any], where: str, defaults: bool = True) -> list[tuple[str, str]]:
    """(key in model.json, path) of every file a task's loader opens: ensemble members
    (`ensemble.members[].file`), `architecture.*_weights`, and (`defaults`, unless the card lists
    ensemble members, as a FocalNet trained with --folds does) the fixed names of DEFAULT_LOADED_FILES.
    A malformed entry is a ModelError naming `where`."""
    found: list[tuple[str, Any]] = []
    ensemble = card.get("ensemble")
    if ensemble is not None:
        members = ensemble.get("members", []) if isinstance(ensemble, dict) else None
        if not isinstance(members, list):
            raise ModelError(f"{where}: 'ensemble' must be an object whose 'members' is a list.")
        for i, member in enumerate(members):
            if not isinstance(member, dict):
                raise ModelError(f"{where}: ensemble.members[{i}] must be an object with a 'file'.")
            found.append((f"ensemble.members[{i}].file", member.get("file")))
    arch = card.get("architecture")
    if isinstance(arch, dict):
        found += [(f"architecture.{key}", value) for key, value in arch.items() if key.endswith("_weights")]
    named = {key for key, _ in found}
    if defaults and not any(key.startswith("ensemble.") for key in named):  # an ensemble names its weights
        found += [(key, name) for key, name in DEFAULT_LOADED_FILES.get(card.get("task"), {}).items()
                  if key not in named]
    for key, value in found:
        problem = relative_path_problem(value)
        if problem:
            raise ModelError(f"{where}: {key} {value!r} {problem}; a package may only load files inside it.")
    return found


def _check_loaded_files_listed(card: dict[str, Any], where: str, defaults: bool) -> None:
    listed = _listed_files(card, where)
    for key, path in loaded_files(card, where, defaults):
        if path not in listed:
            raise ModelError(f"{where}: {key} {path!r} is not listed in 'files' with a sha256; "
                             "a package may only load files it lists and verifies.")


def check_card(card: Any, where: str) -> None:
    """Everything about model.json that can be checked without reading the files: the
    envelope, the name (a single folder name), `files`, and that every file model.json names
    for a loader is listed there with a sha256 (the fixed default names are checked by
    `ModelPackage.verify`, so that a package can be listed before it is complete)."""
    if not isinstance(card, dict) or card.get("format") != MODEL_FORMAT:
        raise ModelError(f"{where}: unknown model format {card.get('format') if isinstance(card, dict) else None!r}; "
                         f"expected {MODEL_FORMAT!r}.")
    missing = [k for k in REQUIRED_KEYS if k not in card]
    if missing:
        raise ModelError(f"{where}: missing keys {', '.join(missing)}.")
    check_package_name(card["name"], where)
    version = card["version"]
    if isinstance(version, bool) or not isinstance(version, (str, int, float)) or not str(version).strip():
        raise ModelError(f"{where}: 'version' must be text or a number, not {version!r}.")
    if not isinstance(card["task"], str) or not card["task"]:
        raise ModelError(f"{where}: 'task' must be text (e.g. 'detector'), not {card['task']!r}.")
    _check_loaded_files_listed(card, where, defaults=False)


def _torch_load(path: Path, label: str, map_location: str = "cpu") -> Any:
    import torch

    try:
        return torch.load(path, map_location=map_location, weights_only=True)
    except Exception as exc:  # torch raises many types for damaged files
        if "Weights only load failed" in str(exc):
            raise ModelError(f"{label} cannot be loaded: it holds Python objects besides tensors, and only plain "
                             "weights are ever unpickled.") from None
        raise ModelError(f"{label} cannot be loaded ({type(exc).__name__}); the file is truncated or corrupt.") from None


def read_weights(path: str | os.PathLike, map_location: str = "cpu") -> Any:
    """PyTorch weights (tensors only) from a file a caller has checked, e.g. by `ModelPackage.file`;
    a damaged file or one holding other Python objects is a ModelError naming it."""
    path = Path(path)
    return _torch_load(path, f"Weight file {path}", map_location)


@dataclass
class ModelPackage:
    root: Path
    card: dict[str, Any]
    _verified: set = field(default_factory=set, init=False, repr=False, compare=False)

    @property
    def name(self) -> str:
        return self.card["name"]

    @property
    def version(self) -> str:
        return str(self.card["version"])

    @property
    def task(self) -> str:
        return self.card["task"]

    @property
    def card_path(self) -> Path:
        return self.root / "model.json"

    def _listed(self) -> dict[str, dict[str, Any]]:
        return _listed_files(self.card, str(self.card_path))

    def _inside(self, relative: str) -> Path:
        """root/relative, refused when it (or a link on the way) leads outside the package."""
        path = self.root / relative
        if not path.resolve().is_relative_to(self.root.resolve()):
            raise ModelError(f"Model '{self.name}': {relative} leads outside the package (through a link).")
        return path

    def _verify_entry(self, entry: dict[str, Any]) -> None:
        relative = entry["path"]
        path = self._inside(relative)
        if not path.is_file():
            raise ModelError(f"Model '{self.name}': weight file {path} is missing.")
        size, expected = path.stat().st_size, entry["sha256"].lower()
        if entry.get("bytes") is not None and size != entry["bytes"]:
            raise ModelError(f"Model '{self.name}': {relative} fails its sha256 check: it has {size} bytes where "
                             f"model.json lists {entry['bytes']}; the file is truncated or was replaced.")
        actual = sha256_of(path)
        if actual != expected:
            raise ModelError(f"Model '{self.name}': {path.name} fails its sha256 check "
                             f"(expected {expected}, got {actual}); the file is corrupt or was replaced.")
        self._verified.add(relative)

    def file(self, relative: str) -> Path:
        """The path of a file a loader opens: refused unless it is listed in `files`, lies inside
        the package and matches its sha256 (checked once per package object)."""
        problem = relative_path_problem(relative)
        if problem:
            raise ModelError(f"Model '{self.name}': the file name {relative!r} {problem}; "
                             "a package may only load files inside it.")
        entry = self._listed().get(relative)
        if entry is None:
            raise ModelError(f"Model '{self.name}': {relative} is not listed in the files of {self.card_path} "
                             "with a sha256; a package may only load files it lists and verifies.")
        if relative not in self._verified:
            self._verify_entry(entry)
        return self._inside(relative)

    def load_weights(self, relative: str, map_location: str = "cpu") -> Any:
        """PyTorch weights (tensors only) of a listed, verified file of the package."""
        return _torch_load(self.file(relative), f"Model '{self.name}': weight file {relative}", map_location)

    def weight_files(self) -> list[Path]:
        return [self._inside(path) for path in self._listed()]

    def thresholds(self, criterion: str) -> Optional[dict[str, float]]:
        """Working points for e.g. criterion "GGG>=2"; None when the model has none."""
        entry = (self.card.get("thresholds") or {}).get(criterion)
        return entry if isinstance(entry, dict) else None

    def verify(self) -> None:
        """Check every file a loader opens is listed, and every listed file lies inside the
        package, exists and matches its sha256 (raises ModelError)."""
        _check_loaded_files_listed(self.card, str(self.card_path), defaults=True)
        for entry in self._listed().values():
            self._verify_entry(entry)


def load_model_package(path: str | os.PathLike, verify: bool = True) -> ModelPackage:
    """Read a package folder (or its model.json) and check its card (`check_card`); verify
    the files' checksums unless told not to."""
    path = Path(path)
    root = path.parent if path.name == "model.json" else path
    card_path = root / "model.json"
    if not card_path.is_file():
        raise ModelError(f"{root}: not a model package (no model.json).")
    try:
        card = json.loads(card_path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise ModelError(f"{card_path}: not valid JSON ({exc}).") from None
    except OSError as exc:
        raise ModelError(f"{card_path}: cannot be read ({exc.strerror or exc}).") from None
    check_card(card, str(card_path))
    package = ModelPackage(root, card)
    if verify:
        package.verify()
    return package


def write_model_card(root: str | os.PathLike, card: dict[str, Any], weight_files: list[str]) -> ModelPackage:
    """Write model.json for files already in `root`, computing their sha256 and sizes."""
    root = Path(root)
    card = dict(card)
    card["format"] = MODEL_FORMAT
    card["files"] = [{"path": rel, "sha256": sha256_of(root / rel), "bytes": (root / rel).stat().st_size}
                     for rel in weight_files]
    missing = [k for k in REQUIRED_KEYS if k not in card]
    if missing:
        raise ModelError(f"model card for {root} lacks {', '.join(missing)}.")
    check_card(card, f"model card for {root}")  # never write a package that install or load would refuse
    with atomic_file(root / "model.json") as handle:
        json.dump(card, handle, indent=1)
    return ModelPackage(root, card)


def installed_packages(task: Optional[str] = None) -> list[ModelPackage]:
    """Bundled demo models plus those installed in the per-user folder (no checksum pass)."""
    found = []
    for base in (bundled_models_dir(), user_models_dir()):
        if not base.is_dir():
            continue
        for card in sorted(base.glob("*/model.json")):
            try:
                pkg = load_model_package(card, verify=False)
            except ModelError:
                continue
            if task is None or pkg.task == task:
                found.append(pkg)
    return found


def find_model(name_or_path: str, task: Optional[str] = None, verify: bool = True) -> ModelPackage:
    """Resolve a model given as a folder path or as the name of an installed package."""
    candidate = Path(name_or_path)
    if candidate.exists():
        pkg = load_model_package(candidate, verify=verify)
    else:
        matches = [p for p in installed_packages(task) if p.name == name_or_path]
        if not matches:
            names = ", ".join(sorted({p.name for p in installed_packages(task)})) or "none"
            raise ModelError(f"No model named {name_or_path!r} is installed (installed: {names}).")
        pkg = matches[-1]  # a user-installed package overrides a bundled one of the same name
        if verify:
            pkg.verify()
    if task is not None and pkg.task != task:
        raise ModelError(f"Model '{pkg.name}' is a {pkg.task!r} model, not a {task!r} model.")
    return pkg
