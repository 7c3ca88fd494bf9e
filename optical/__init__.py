"""optical: token-level optimal-transport distillation for cross-lingual retrieval.

Public API (imported lazily, so `optical --help` does not load torch):

    from optical import load_recipe, distill, evaluate
    recipe = load_recipe("vi/quickstart", ["train.steps=10"])     # a shipped name or a path
    result = distill(recipe)
    report = evaluate("beir", path="data/vi/clir", student=result.run_dir,
                      query_encoder="teacher", doc_encoder="student")

The functions live in `optical.recipe`, `optical.training.loop` (`distill`, the step-by-step
`Distiller`), `optical.run_dir` (`load_run`) and `optical.eval.retrieval` (`evaluate`).
"""

from __future__ import annotations

import importlib

__version__ = "0.1.0"

_EXPORTS = {
    "load_recipe": "optical.recipe",
    "Recipe": "optical.recipe",
    "distill": "optical.training.loop",
    "Distiller": "optical.training.loop",
    "load_run": "optical.run_dir",
    "evaluate": "optical.eval.retrieval",
    "Student": "optical.models.student",
    "Teacher": "optical.models.teacher",
    "load_teacher": "optical.models.teacher",
    "OpticalError": "optical.errors",
}

__all__ = list(_EXPORTS)


def __getattr__(name: str):
    if name in _EXPORTS:
        value = getattr(importlib.import_module(_EXPORTS[name]), name)
        globals()[name] = value  # resolved once: later lookups do not come back here
        return value
    raise AttributeError(f"module 'optical' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__))
