"""Every shipped recipe: valid, fully commented, in its language's folder, and it trains for
two steps when the tiny models and the fixture bitext are substituted by overrides."""

import re
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from optical.cli import app
from optical.recipe import load_recipe
from optical.recipe_files import find_recipe, list_recipes, recipes_dir
from tiny_models import BITEXT_VI

RECIPES_DIR = Path(__file__).parents[1] / "recipes"
RECIPES = sorted(RECIPES_DIR.glob("*/*.yaml"))
NAMED_TASKS = {"mmarco", "wikiclir", "captions", "beir", "bitext"}
runner = CliRunner()


def test_there_are_recipes_for_five_languages():
    assert {p.parent.name for p in RECIPES} >= {"vi", "sw", "id", "hi", "bn"}
    assert {p.stem for p in RECIPES_DIR.glob("vi/*.yaml")} >= {"mmarco", "wikiclir", "captions"}


@pytest.mark.parametrize("path", RECIPES, ids=lambda p: f"{p.parent.name}/{p.stem}")
def test_recipe_is_valid_commented_and_in_its_language_folder(path):
    recipe = load_recipe(path)
    assert recipe.lang == path.parent.name
    assert recipe.bitext.path or recipe.bitext.hf_name  # names its bitext source
    assert recipe.eval.task in NAMED_TASKS
    if path.stem in NAMED_TASKS:
        assert recipe.eval.task == path.stem
    if recipe.eval.task == "captions":
        assert recipe.teacher.kind == "clip"
    elif path.stem in ("mmarco", "wikiclir"):
        assert recipe.teacher.kind == "sentence-transformers"
    for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), start=1):
        # every key that holds a value (not a section header) says what it is for
        if re.match(r"^\s*(- )?[\w.]+:\s*[^#\s]", line):
            assert "#" in line, f"{path}:{number}: key without a comment: {line.strip()}"


@pytest.fixture(scope="module")
def tiny_teachers(tiny_teacher_st, tiny_clip):
    return {"sentence-transformers": tiny_teacher_st, "clip": tiny_clip}


@pytest.mark.parametrize("path", RECIPES, ids=lambda p: f"{p.parent.name}/{p.stem}")
def test_recipe_trains_two_steps_on_tiny_models(path, tiny_teachers, tiny_student, tmp_path):
    from optical.training.loop import distill

    kind = load_recipe(path).teacher.kind
    recipe = load_recipe(path, [f"teacher.model={tiny_teachers[kind]}", f"student.model={tiny_student}",
                                f"bitext.path={BITEXT_VI}", "bitext.hf_name=null", "bitext.hf_config=null",
                                "train.steps=2", "train.batch_size=8", f"output_dir={tmp_path / 'run'}"])
    result = distill(recipe, show_progress=False)
    assert result.steps == 2 and len(result.losses) == 2 and np.all(np.isfinite(result.losses))
    assert (result.student_dir / "modules.json").is_file()


def test_recipes_dir_finds_the_repository_folder(monkeypatch, tmp_path):
    assert recipes_dir().resolve() == RECIPES_DIR.resolve()
    assert find_recipe("vi/mmarco") == find_recipe("vi/mmarco.yaml") == RECIPES_DIR / "vi" / "mmarco.yaml"
    (tmp_path / "xx").mkdir()
    (tmp_path / "xx" / "demo.yaml").write_text("lang: xx  # test\n")
    monkeypatch.setenv("OPTICAL_RECIPES", str(tmp_path))
    assert [e.name for e in list_recipes()] == ["xx/demo"]


def test_cli_recipes_list_is_a_table_of_every_recipe():
    result = runner.invoke(app, ["recipes", "list"])
    assert result.exit_code == 0, result.output
    lines = result.output.strip().splitlines()
    assert lines[0].split() == ["language", "task", "teacher", "student", "losses"]
    assert len(lines) == 1 + len(RECIPES)
    row = next(line for line in lines if line.split()[:2] == ["vi", "captions"])
    assert "clip:" in row and "sigrot:1,infonce:0.1" in row


def test_cli_recipes_show_prints_the_file_and_unknown_names_fail_in_one_line():
    result = runner.invoke(app, ["recipes", "show", "vi/mmarco"])
    assert result.exit_code == 0
    assert result.stdout == (RECIPES_DIR / "vi" / "mmarco.yaml").read_text(encoding="utf-8")
    result = runner.invoke(app, ["recipes", "show", "xx/nothing"])
    assert result.exit_code == 2 and "error: unknown recipe 'xx/nothing'" in result.output
