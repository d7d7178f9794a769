"""Model packages (DESIGN.md): a folder with `model.json` and weight files with sha256.

model.json keys: format ("prostate-cad-model/1"), name, version, task ("detector",
"zones", "focalnet", ...), architecture {name, hyper-parameters}, channels, spacing,
crop_size, class_names, thresholds {"GGG>=k": {"max_sensitivity": t, "balanced": t,
"computed_on": "..."}}, training_data, intended_use, licence, files [{path, sha256,
bytes}]. Each task reads the extra keys it needs; this module only knows the envelope.
"""

from __future__ import annotations

import hashlib
import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Optional

from ..errors import ModelError
from ..output_files import atomic_file
from ..resources import bundled_models_dir, user_models_dir

MODEL_FORMAT = "prostate-cad-model/1"
REQUIRED_KEYS = ("name", "version", "task", "intended_use", "files")


def sha256_of(path: str | os.PathLike, chunk: int = 1 << 20) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        while block := handle.read(chunk):
            digest.update(block)
    return digest.hexdigest()


@dataclass
class ModelPackage:
    root: Path
    card: dict[str, Any]

    @property
    def name(self) -> str:
        return self.card["name"]

    @property
    def version(self) -> str:
        return str(self.card["version"])

    @property
    def task(self) -> str:
        return self.card["task"]

    def file(self, relative: str) -> Path:
        return self.root / relative

    def weight_files(self) -> list[Path]:
        return [self.root / f["path"] for f in self.card["files"]]

    def thresholds(self, criterion: str) -> Optional[dict[str, float]]:
        """Working points for e.g. criterion "GGG>=2"; None when the model has none."""
        entry = (self.card.get("thresholds") or {}).get(criterion)
        return entry if isinstance(entry, dict) else None

    def verify(self) -> None:
        """Check every listed file exists and matches its sha256 (raises ModelError)."""
        for f in self.card["files"]:
            path = self.root / f["path"]
            if not path.is_file():
                raise ModelError(f"Model '{self.name}': weight file {path} is missing.")
            actual = sha256_of(path)
            if actual != f.get("sha256"):
                raise ModelError(f"Model '{self.name}': {path.name} fails its sha256 check "
                                 f"(expected {f.get('sha256')}, got {actual}); the file is corrupt or was replaced.")


def load_model_package(path: str | os.PathLike, verify: bool = True) -> ModelPackage:
    """Read a package folder (or its model.json); verify checksums unless told not to."""
    path = Path(path)
    root = path.parent if path.name == "model.json" else path
    card_path = root / "model.json"
    if not card_path.is_file():
        raise ModelError(f"{root}: not a model package (no model.json).")
    try:
        card = json.loads(card_path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise ModelError(f"{card_path}: not valid JSON ({exc}).") from None
    if not isinstance(card, dict) or card.get("format") != MODEL_FORMAT:
        raise ModelError(f"{card_path}: unknown model format {card.get('format') if isinstance(card, dict) else None!r}; "
                         f"expected {MODEL_FORMAT!r}.")
    missing = [k for k in REQUIRED_KEYS if k not in card]
    if missing:
        raise ModelError(f"{card_path}: missing keys {', '.join(missing)}.")
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
