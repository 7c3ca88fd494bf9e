"""Recipes: YAML → dataclasses, overrides, and one-line errors that name file, line and key."""

from pathlib import Path

import pytest

from optical.errors import OpticalError
from optical.recipe import Flag, load_recipe, recipe_from_dict

RECIPES = sorted((Path(__file__).parents[1] / "recipes").rglob("*.yaml"))


def write(tmp_path, text):
    path = tmp_path / "r.yaml"
    path.write_text(text, encoding="utf-8")
    return path


def test_defaults_and_overrides_parse_numbers():
    recipe = recipe_from_dict({}, ["train.lr=1e-5", "ot.rho=0.5", "train.steps=3", "loss=token_ot:1,mse:0.25"])
    assert recipe.train.lr == 1e-5 and isinstance(recipe.train.lr, float)
    assert recipe.ot.rho == 0.5 and recipe.train.steps == 3
    assert [(t.name, t.weight) for t in recipe.loss] == [("token_ot", 1.0), ("mse", 0.25)]


def test_yaml_scientific_notation_without_dot_is_a_number(tmp_path):
    recipe = load_recipe(write(tmp_path, "train:\n  lr: 2e-5\n"))
    assert recipe.train.lr == 2e-5


def test_round_trip_through_yaml(tmp_path):
    recipe = recipe_from_dict({"loss": [{"name": "mse", "weight": 2, "english": False}]}, ["ot.masses=idf"])
    again = load_recipe(write(tmp_path, recipe.to_yaml()))
    assert again == recipe


@pytest.mark.parametrize("text, expected", [
    ("train:\n  lr: 2e-5\n  lrr: 3\n", "r.yaml:3: train.lrr: unknown key (did you mean 'train.lr'?)"),
    ("lang: vi\ntrain:\n  lr: fast\n", "r.yaml:3: train.lr: expected a number, got 'fast'"),
    ("ot:\n  masses: tfidf\n", "r.yaml:2: ot.masses: expected one of 'uniform', 'idf', got 'tfidf'"),
    ("loss:\n  - name: token_ott\n", "r.yaml:2: loss.0.name: unknown loss 'token_ott'"),
    ("loss:\n  - name: mse\n    englsh: true\n", "r.yaml:2: loss.0: unknown parameter 'englsh' for loss 'mse'"),
    ("loss:\n  - name: token_ot\n    english: 'yes'\n", "r.yaml:3: loss.0.english: expected true or false, got 'yes'"),
    ("train: [\n", "r.yaml:2: invalid YAML"),
    ("ot:\n  epsilon: 0\n", "r.yaml:2: ot.epsilon: must be > 0"),
    ("train:\n  head_lr: -1e-4\n", "r.yaml:2: train.head_lr: must be > 0 or null"),
    ("train:\n  weight_decay: -0.1\n", "r.yaml:2: train.weight_decay: must be >= 0"),
    ("train:\n  epochs: 0\n", "r.yaml:2: train.epochs: must be > 0"),
    ("warm_start:\n  pairs: 0\n", "r.yaml:2: warm_start.pairs: must be at least 1 or null"),
    ("train:\n  warmup_ratio: 1.5\n", "r.yaml:2: train.warmup_ratio: must be in [0, 1]"),
    ("train:\n  warmup_ratio: -0.1\n", "r.yaml:2: train.warmup_ratio: must be in [0, 1]"),
    ("loss:\n  - name: token_ot\n    epsilon: 0\n", "r.yaml:3: loss.0.epsilon: must be > 0"),
    ("loss:\n  - name: token_ot\n    epsilon: -0.5\n", "r.yaml:3: loss.0.epsilon: must be > 0"),
    ("student:\n  max_length: 0\n", "r.yaml:2: student.max_length: must be at least 1"),
    ("teacher:\n  max_length: -3\n", "r.yaml:2: teacher.max_length: must be at least 1"),
    ("train:\n  max_grad_norm: -1\n", "r.yaml:2: train.max_grad_norm: must be >= 0"),
])
def test_bad_recipes_name_file_line_and_key(tmp_path, text, expected):
    with pytest.raises(OpticalError) as err:
        load_recipe(write(tmp_path, text))
    message = str(err.value)
    assert "\n" not in message
    assert message.split("/")[-1].startswith(expected)


def test_missing_recipe_file(tmp_path):
    with pytest.raises(OpticalError, match="recipe file not found"):
        load_recipe(tmp_path / "nope.yaml")


def test_bad_override_is_one_line():
    with pytest.raises(OpticalError, match="expected KEY=VALUE"):
        recipe_from_dict({}, ["train.lr"])


def test_flags_only_recipe_has_the_measured_defaults():
    recipe = recipe_from_dict({}, [Flag("teacher.kind", "clip", "--teacher"), Flag("lang", "vi", "--lang"),
                                   Flag("bitext.path", "pairs.tsv", "--bitext"), Flag("student.model", "x", "--student"),
                                   Flag("output_dir", "runs/vi", "--out")])
    assert recipe.teacher.model_spec == "openai/clip-vit-base-patch32"
    assert (recipe.lang, recipe.bitext.path, recipe.student.model, recipe.output_dir) == ("vi", "pairs.tsv", "x", "runs/vi")
    # flags-only runs get the best measured settings (docs/results.md), not OPTICAL's originals
    assert [(t.name, t.weight) for t in recipe.loss] == [("token_ot", 1.0), ("mse", 100.0)]
    assert (recipe.ot.epsilon, recipe.ot.masses, recipe.student.prefix) == (0.02, "idf", "")
    assert recipe.warm_start.method == "ridge" and recipe.warm_start.english


def test_set_keeps_yaml_types_but_a_string_field_keeps_its_text():
    recipe = recipe_from_dict({}, ["student.model=0123", "lang=no", "output_dir=1.10", "name=yes",
                                   "train.lr=2e-5", "train.steps=0x10", "bitext.path=null", "student.normalize=yes"])
    assert (recipe.student.model, recipe.lang, recipe.output_dir, recipe.name) == ("0123", "no", "1.10", "yes")
    assert recipe.train.lr == 2e-5 and recipe.train.steps == 16  # YAML 1.1 hex
    assert recipe.bitext.path is None and recipe.student.normalize is True
    assert recipe_from_dict({}, ['bitext.path="pairs #1.tsv"', "name='0123'"]).bitext.path == "pairs #1.tsv"


def test_errors_name_the_option_not_a_recipe_line(tmp_path):
    with pytest.raises(OpticalError, match=r"^--set train\.lr=abc: train\.lr: expected a number"):
        recipe_from_dict({}, ["train.lr=abc"])
    with pytest.raises(OpticalError, match=r"^--on-bad-line: bitext\.on_bad_line: expected one of"):
        recipe_from_dict({}, [Flag("bitext.on_bad_line", "maybe", "--on-bad-line")])
    with pytest.raises(OpticalError, match=r"^--steps: train\.steps: must be >= 0"):
        recipe_from_dict({}, [Flag("train.steps", -1, "--steps")])
    with pytest.raises(OpticalError, match=r"^--loss: loss\.0\.name: unknown loss"):
        recipe_from_dict({}, [Flag("loss", "nope:1", "--loss")])
    path = tmp_path / "r.yaml"
    path.write_text("train:\n  lr: 0.001\n")
    with pytest.raises(OpticalError, match=r"^--set train\.lr=-1: train\.lr: must be > 0"):
        load_recipe(path, ["train.lr=-1"])
    # a later flag replaces an earlier --set text: the value is typed again
    assert recipe_from_dict({}, ["lang=no", Flag("lang", "vi", "--lang")]).lang == "vi"


def test_distill_flags_reach_the_recipe_as_typed(monkeypatch, tmp_path):
    """--lang no (Norwegian), --student 0123, --bitext 'pairs #1.tsv', --out 1.10: as typed."""
    from typer.testing import CliRunner

    import optical.training.loop as loop
    from optical.cli import app

    seen = {}

    def fake_distill(recipe, **_):
        seen["recipe"] = recipe
        return loop.DistillResult(Path(recipe.output_dir), Path(recipe.output_dir) / "student", 0)

    monkeypatch.setattr(loop, "distill", fake_distill)
    result = CliRunner().invoke(app, ["distill", "--lang", "no", "--student", "0123", "--bitext", "pairs #1.tsv",
                                      "--out", "1.10", "--steps", "3", "--set", "train.lr=3e-5"])
    assert result.exit_code == 0, result.output
    recipe = seen["recipe"]
    assert (recipe.lang, recipe.student.model, recipe.bitext.path, recipe.output_dir) == ("no", "0123", "pairs #1.tsv", "1.10")
    assert (recipe.train.steps, recipe.train.lr) == (3, 3e-5)
    bad = CliRunner().invoke(app, ["distill", "--bitext", "p.tsv", "--set", "train.lr=abc"])
    assert bad.exit_code == 2 and bad.output.strip().splitlines() == [
        "error: --set train.lr=abc: train.lr: expected a number, got 'abc'"]


@pytest.mark.parametrize("path", RECIPES, ids=[str(p.relative_to(p.parents[1])) for p in RECIPES])
def test_every_shipped_recipe_loads(path):
    recipe = load_recipe(path)
    assert recipe.lang == path.parent.name


def test_no_clipping_and_null_values_stay_allowed(tmp_path):
    recipe = load_recipe(write(tmp_path, "train:\n  max_grad_norm: 0\n  head_lr: null\n  warmup_ratio: 0\n"
                                         "warm_start:\n  pairs: null\n"))
    assert recipe.train.max_grad_norm == 0 and recipe.warm_start.pairs is None
    assert load_recipe(write(tmp_path, "train:\n  max_grad_norm: null\n")).train.max_grad_norm is None
