"""optical: token-level optimal-transport distillation for cross-lingual retrieval.

Public API (imported lazily so `optical --help` stays fast):

    from optical import load_recipe, distill, evaluate, Student, Teacher
    recipe = load_recipe("recipes/vi/quickstart.yaml", ["train.steps=10"])
    result = distill(recipe)
    metrics = evaluate("beir", path="data/vi/clir", student=result.run_dir,
                       query_encoder="teacher", doc_encoder="student")

`optical.evaluate` is the function, although `optical/evaluate.py` is a submodule of the
same name: `import optical.evaluate` and `from optical.evaluate import retrieve` load the
module as usual (it lives in `sys.modules`), but the package attribute stays the function
whichever is imported first. For the module object itself, use
`importlib.import_module("optical.evaluate")` (`import optical.evaluate as m` gives the
function, because Python reads that alias off the package attribute).
"""

from __future__ import annotations

import importlib
import sys
import types

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

__all__ = ["load_recipe", "distill", "evaluate", "Recipe", "Student", "Teacher", "load_teacher",
           "OpticalError"]

# Exports named like the submodule that defines them (optical.evaluate.evaluate).
_SHADOWED = frozenset(name for name, (module, _) in _EXPORTS.items() if module == f"{__name__}.{name}")


def __getattr__(name: str):
    if name in _EXPORTS:
        module, attr = _EXPORTS[name]
        value = getattr(importlib.import_module(module), attr)
        globals()[name] = value  # resolved once: later lookups do not come back here
        return value
    raise AttributeError(f"module 'optical' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__))


class _Package(types.ModuleType):
    """The `optical` module's class: keeps exported functions ahead of same-named submodules.

    Loading a submodule binds it on its package (`setattr(optical, "evaluate", <module>)`),
    which would replace the exported function by the module (`'module' object is not
    callable`); the binding is turned into the module's function of that name instead.
    """

    def __setattr__(self, name: str, value) -> None:
        if (name in _SHADOWED and isinstance(value, types.ModuleType)
                and value.__name__ == f"{self.__name__}.{name}" and hasattr(value, _EXPORTS[name][1])):
            value = getattr(value, _EXPORTS[name][1])
        super().__setattr__(name, value)


sys.modules[__name__].__class__ = _Package
