"""A run directory: what `optical distill` writes, and the one reader of it.

    <run>/recipe.yaml    the recipe the run used, in full (written first)
    <run>/log.jsonl      one JSON record per step and per held-out check
    <run>/checkpoints/   step-NNNNNN/ folders and `latest` (optical.training.checkpoint)
    <run>/student/       the trained student, a sentence-transformers folder
    <run>/metrics.json   the summary, written last: its presence means the run finished
    <run>/trackers/      what the recipe's `train.trackers` wrote (TensorBoard events, metrics.csv)
    <run>/eval*/         what `optical eval --out` wrote there

:func:`load_run` is how evaluation, captions, `optical align` and `Student.load` read a run;
the other functions keep one run per folder for `optical distill`.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from pathlib import Path

from optical.errors import OpticalError, writing
from optical.files import atomic_write_text
from optical.recipe import Recipe, load_recipe, recipe_differences

#: what a run writes into its folder; any of them there means the folder holds a run
RUN_FILES = ("recipe.yaml", "log.jsonl", "metrics.json", "student", "checkpoints", "trackers")


def is_run_dir(path: str | Path) -> bool:
    """True when `path` is a folder holding a run's recipe.yaml or student/."""
    path = Path(path)
    return (path / "recipe.yaml").is_file() or (path / "student").is_dir()


def load_run(path: str | Path, overrides: list[str] = (), require_student: bool = True) -> tuple[Recipe, Path]:
    """Read a run directory → (its recipe with `overrides` applied, its student folder).

    Every problem is one OpticalError line: no such folder, no recipe.yaml, a run that has
    not saved its student yet, an empty or broken student folder (those two are checked
    only with `require_student`, for callers that bring their own student)."""
    path = Path(path)
    if not path.is_dir():
        raise OpticalError(f"{path}: run directory not found")
    recipe_file = path / "recipe.yaml"
    if not recipe_file.is_file():
        raise OpticalError(f"{path}: not a run directory (no recipe.yaml)")
    recipe = load_recipe(recipe_file, overrides)
    student = path / "student"
    if not require_student:
        return recipe, student
    if not student.is_dir():
        latest = path / "checkpoints" / "latest"
        hint = (f"; its last checkpoint is {latest.parent / latest.read_text(encoding='utf-8').strip()}"
                if latest.is_file() else "")
        raise OpticalError(f"{path}: the run has no student/ yet (not finished{hint})")
    if not (student / "modules.json").is_file():
        raise OpticalError(f"{student}: not a saved student (no modules.json); the run's final save "
                           f"did not complete: resume it with `optical distill --resume --out {path}`")
    return recipe, student


def check_run_dir(run_dir: Path, recipe: Recipe, resume: bool, overwrite: bool = False,
                  resume_changed: bool = False, say=print) -> bool:
    """Keep one run per folder. Without `resume` the folder must not hold a run (absent or
    empty is fine) unless `overwrite`; with it, the run's saved recipe must match `recipe` but
    for progress-only keys, unless `resume_changed` (then each change is reported through
    `say`). Returns True when `resume` finds the run already finished."""
    if run_dir.exists() and not run_dir.is_dir():
        raise OpticalError(f"output_dir {run_dir}: is a file, not a folder; choose another --out")
    if overwrite and resume:
        raise OpticalError("--overwrite and --resume exclude each other: overwrite starts the run afresh")
    if resume_changed and not resume:
        raise OpticalError("--resume-changed needs --resume")
    found = [name for name in RUN_FILES if (run_dir / name).exists()]
    if not resume:
        if found and not overwrite:
            raise OpticalError(f"{run_dir}: already holds a run ({found[0]}); continue it with --resume, "
                               f"replace it with --overwrite, or choose a new --out")
        return False
    saved = run_dir / "recipe.yaml"
    if saved.is_file():
        changes = recipe_differences(load_recipe(saved), recipe)
        if changes and not resume_changed:
            key, old, new = changes[0]
            raise OpticalError(f"--resume: {key} is {new!r} but the run in {run_dir} used {old!r} ({saved}); "
                               f"resume with the same recipe, allow it with --resume-changed, or choose a new --out")
        for key, old, new in changes:
            say(f"--resume-changed: {key}: {old!r} -> {new!r}")
    return (run_dir / "metrics.json").is_file()  # written last, after the student


def clear_run_dir(run_dir: Path) -> list[Path]:
    """Remove a previous run's own files and folders (RUN_FILES, eval*) for --overwrite;
    anything else the user keeps there stays. Returns what was removed."""
    removed = []
    if not run_dir.is_dir():
        return removed
    names = [*RUN_FILES, *sorted(p.name for p in run_dir.glob("eval*"))]
    with writing(run_dir):
        for name in dict.fromkeys(names):
            path = run_dir / name
            if path.is_symlink() or path.is_file():
                path.unlink()  # a link is removed, never followed
            elif path.is_dir():
                shutil.rmtree(path)
            else:
                continue
            removed.append(path)
    return removed


def check_writable(run_dir: Path) -> None:
    """Fail in one line, before any model loads, when the run folder cannot be written."""
    with writing(run_dir):
        run_dir.mkdir(parents=True, exist_ok=True)
        fd, probe = tempfile.mkstemp(dir=run_dir, prefix=".write-check-", suffix=".tmp")
        os.close(fd)
        os.unlink(probe)


def append_log(path: Path, record: dict) -> None:
    """One JSON line onto the run's log.jsonl."""
    with writing(path), path.open("a", encoding="utf-8") as handle:
        handle.write(json.dumps(record) + "\n")


def truncate_log(path: Path, step: int) -> None:
    """Drop the log records a resumed run will write again (steps after its checkpoint)."""
    if not path.is_file():
        return
    kept = [line for line in path.read_text(encoding="utf-8").splitlines()
            if line.strip() and not _after(line, step)]
    atomic_write_text(path, "".join(line + "\n" for line in kept))


def _after(line: str, step: int) -> bool:
    try:
        record = json.loads(line)
    except ValueError:
        return False
    return isinstance(record, dict) and (record.get("final") is True or
                                         (isinstance(record.get("step"), int) and record["step"] > step))
