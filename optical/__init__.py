"""optical: token-level optimal-transport distillation for cross-lingual retrieval.

Public API (imported lazily so `optical --help` stays fast):

    from optical import load_recipe, distill, evaluate, Student, Teacher
    recipe = load_recipe("recipes/vi/quickstart.yaml", ["train.steps=10"])
    result = distill(recipe)
    metrics = evaluate("beir", path="data/vi/clir", student=result.run_dir,
                       query_encoder="teacher", doc_encoder="student")
"""

from __future__ import annotations

import importlib

__version__ = "0.1.0"

_EXPORTS = {
    "load_recipe": ("optical.recipe", "load_recipe"),
    "Recipe": ("optical.recipe", "Recipe"),
    "distill": ("optical.train", "distill"),
    "evaluate": ("optical.evaluate", "evaluate"),
    "Student": ("optical.models.student", "Student"),
    "Teacher": ("optical.models.teacher", "Teacher"),
    "load_teacher": ("optical.models.teacher", "load_teacher"),
    "OpticalError": ("optical.errors", "OpticalError"),
}

__all__ = list(_EXPORTS)


def __getattr__(name: str):
    if name in _EXPORTS:
        module, attr = _EXPORTS[name]
        return getattr(importlib.import_module(module), attr)
    raise AttributeError(f"module 'optical' has no attribute {name!r}")
