"""The shipped recipes (`recipes/<lang>/<task>.yaml`): where they are, list, find.

Looked up, first hit wins: `$OPTICAL_RECIPES`; `recipes/` inside the installed package
(package data); `recipes/` next to the package (a source checkout or editable install);
`<prefix>/share/optical/recipes` (installed as data files).
"""

from __future__ import annotations

import os
import sys
from dataclasses import dataclass
from pathlib import Path

from optical.errors import OpticalError


def recipes_dir() -> Path:
    """The folder holding `<lang>/<task>.yaml`; OpticalError if none is found."""
    package = Path(__file__).resolve().parent
    candidates = [Path(os.environ["OPTICAL_RECIPES"])] if os.environ.get("OPTICAL_RECIPES") else []
    candidates += [package / "recipes", package.parent / "recipes",
                   Path(sys.prefix) / "share" / "optical" / "recipes"]
    for folder in candidates:
        if folder.is_dir() and any(folder.glob("*/*.yaml")):
            return folder
    raise OpticalError("no shipped recipes found (looked in " + ", ".join(str(c) for c in candidates)
                       + "); set OPTICAL_RECIPES to a recipes/ folder")


@dataclass(frozen=True)
class RecipeEntry:
    """One shipped recipe: `vi/mmarco` → recipes/vi/mmarco.yaml."""

    lang: str
    task: str
    path: Path

    @property
    def name(self) -> str:
        return f"{self.lang}/{self.task}"


def list_recipes(folder: Path | None = None) -> list[RecipeEntry]:
    folder = folder or recipes_dir()
    return [RecipeEntry(p.parent.name, p.stem, p) for p in sorted(folder.glob("*/*.yaml"))]


def find_recipe(name: str, folder: Path | None = None) -> Path:
    """`vi/mmarco`, `vi/mmarco.yaml` or an existing file path → the recipe file."""
    if Path(name).is_file():
        return Path(name)
    key = name[:-5] if name.endswith(".yaml") else name
    entries = list_recipes(folder)
    for entry in entries:
        if entry.name == key:
            return entry.path
    known = ", ".join(e.name for e in entries)
    raise OpticalError(f"unknown recipe {name!r} (shipped: {known})")


def recipe_table(recipes: list[tuple[RecipeEntry, object]]) -> str:
    """Plain-text table of (entry, its loaded Recipe): language, task, teacher, student, losses."""
    rows = [("language", "task", "teacher", "student", "losses")]
    for entry, recipe in recipes:
        losses = ",".join(f"{t.name}:{t.weight:g}" for t in recipe.loss)
        rows.append((entry.lang, entry.task, f"{recipe.teacher.kind}:{recipe.teacher.model_spec}",
                     recipe.student.model, losses))
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    return "\n".join("  ".join(cell.ljust(w) for cell, w in zip(row, widths)).rstrip() for row in rows)
