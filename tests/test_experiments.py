"""Experiment grids: parsing (with property-based fuzzing), cells, skipping, the verdict table,
and one grid run end to end on the tiny models."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest
import yaml
from hypothesis import given, settings
from hypothesis import strategies as st
from typer.testing import CliRunner

import tiny_models
from optical.cli import app
from optical.errors import OpticalError
from optical.experiments import cells, collect, grid_from_dict, load_grid, parse_budget, run_dir

runner = CliRunner()


def minimal(**extra) -> dict:
    data = {"recipe": "r.yaml", "languages": ["vi"], "seeds": [1, 2], "budgets": [10], "baseline": "a",
            "variants": {"a": {"set": {"loss": "mse:1"}}, "b": {"set": {"train.lr": 1e-4}},
                         "ws": {"set": {"train.steps": 0}}, "a-maxp": {"eval_of": "a", "eval": {"passages": "8:4:max"}}}}
    data.update(extra)
    return data


def test_budgets_parse():
    assert parse_budget("130") == {"train.steps": 130}
    assert parse_budget("5ep") == {"train.steps": None, "train.epochs": 5.0}
    for bad in ("-1", "abc", "0ep", "nanep", "1.5"):
        with pytest.raises(OpticalError, match="budget"):
            parse_budget(bad)


def test_cells_pin_budgets_and_share_runs():
    grid = grid_from_dict(minimal(budgets=[10, 20]))
    got = {(c.variant.name, c.budget, c.seed) for c in cells(grid)}
    assert ("ws", "pinned", 1) in got and ("ws", "10", 1) not in got  # steps 0 runs once per seed
    assert ("a", "10", 2) in got and ("a", "20", 2) in got
    assert len(cells(grid)) == 2 * 2 + 2 * 2 + 2 + 2 * 2
    maxp = next(c for c in cells(grid) if c.variant.name == "a-maxp")
    plain = next(c for c in cells(grid) if c.variant.name == "a" and c.budget == maxp.budget and c.seed == maxp.seed)
    assert run_dir(grid, maxp) == run_dir(grid, plain)  # only the evaluation differs


@pytest.mark.parametrize("change, pattern", [
    ({"baseline": "nope"}, "baseline: 'nope' is not one of the variants"),
    ({"variants": {"a": {"sett": {}}}}, r"variants.a.sett: unknown key"),
    ({"variants": {"a": {"eval": {"bogus": 1}}}}, r"variants.a.eval.bogus: unknown evaluation option"),
    ({"variants": {"a": {}, "b": {"eval_of": "c"}}}, r"variants.b.eval_of: 'c' is not a variant"),
    ({"seeds": ["x"]}, "seeds: expected int"),
    ({"languages": []}, "languages: must not be empty"),
    ({"budgets": ["soon"]}, "budget 'soon'"),
    ({"colour": 1}, "colour: unknown key"),
])
def test_bad_grids_are_one_line_errors(change, pattern):
    with pytest.raises(OpticalError, match=pattern):
        grid_from_dict(minimal(**change), "g.yaml")


yaml_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=True) | st.text(max_size=8),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=8), inner, max_size=3),
    max_leaves=12)


@settings(max_examples=300, deadline=None)
@given(st.dictionaries(st.sampled_from(["recipe", "languages", "seeds", "budgets", "baseline", "variants",
                                        "metric", "name", "out", "data", "other"]), yaml_values, max_size=8))
def test_grid_parser_never_raises_anything_else(data):
    try:
        grid_from_dict(data, "fuzz.yaml")
    except OpticalError as err:
        assert "\n" not in str(err)


@settings(max_examples=200, deadline=None)
@given(st.binary(max_size=200))
def test_grid_file_bytes_never_raise_anything_else(tmp_path_factory, raw):
    path = tmp_path_factory.mktemp("grid") / "g.yaml"
    path.write_bytes(raw)
    try:
        load_grid(path)
    except OpticalError as err:
        assert "\n" not in str(err)


def test_collect_pairs_against_the_baseline(tmp_path):
    """Hand-written per-query files: means, seed spread, Δ and the paired p-value."""
    grid = grid_from_dict(minimal(out=str(tmp_path), seeds=[1, 2]))
    rng = np.random.default_rng(0)
    base = rng.uniform(0.2, 0.6, size=40)
    for cell in cells(grid):
        if cell.variant.name not in ("a", "b"):
            continue
        shift = 0.2 if cell.variant.name == "b" else 0.0
        values = {f"q{i}": float(v + shift + 0.01 * cell.seed) for i, v in enumerate(base)}
        folder = run_dir(grid, cell) / "eval-clir"
        folder.mkdir(parents=True)
        (folder / "per_query.json").write_text(json.dumps({"toy": {"nDCG@10": values}}))
    bounds = tmp_path / "vi" / "bounds"
    bounds.mkdir(parents=True)
    (bounds / "per_query.json").write_text(json.dumps({"toy": {"nDCG@10": {"q0": 0.1}},
                                                       "toy[en]": {"nDCG@10": {"q0": 0.9}}}))
    result = collect(grid)
    rows = {r["variant"]: r for r in result["rows"]}
    a, b = rows["a"]["languages"]["vi"], rows["b"]["languages"]["vi"]
    assert a["mean"] == pytest.approx(base.mean() + 0.015)
    assert a["std"] == pytest.approx(0.005)
    assert a["seed_means"] == {"1": pytest.approx(base.mean() + 0.01), "2": pytest.approx(base.mean() + 0.02)}
    assert b["diff"] == pytest.approx(0.2) and b["p_perm"] < 0.001
    assert "diff" not in a  # the baseline is not tested against itself
    assert b["gap_closed"] == pytest.approx((b["mean"] - 0.1) / 0.8)
    table = (tmp_path / "results.md").read_text()
    assert "| b | 10 |" in table and "+0.200" in table and "upper bound" in table
    gap_rows = table.split("Share of the language gap closed")[1]
    assert f"| b | 10 | {100 * b['gap_closed']:.0f} % (2) |" in gap_rows


@pytest.mark.slow
def test_grid_end_to_end_on_tiny_models(tmp_path, tiny_teacher_st, tiny_student, monkeypatch):
    """Two variants × two seeds × one language through `optical grid`; a second call trains nothing."""
    monkeypatch.chdir(tmp_path)
    _toy_grid(tmp_path, tiny_teacher_st, tiny_student, seeds=[1, 2], baseline="mse",
              variants={"warm-start-only": {"set": {"train.steps": 0}}, "mse": {},
                        "token-ot": {"set": {"loss": "token_ot:1"}}})
    result = runner.invoke(app, ["grid", "grid.yaml"])
    assert result.exit_code == 0, result.output
    table = (tmp_path / "runs/toy/results.md").read_text()
    for name in ("warm-start-only", "mse", "token-ot", "upper bound", "lower bound", "zero-shot student"):
        assert f"| {name}" in table
    saved = yaml.safe_load((tmp_path / "runs/toy/vi/3/token-ot/seed-2/recipe.yaml").read_text())
    assert saved["train"]["seed"] == 2 and saved["train"]["steps"] == 3 and saved["loss"][0]["name"] == "token_ot"
    stamp = (tmp_path / "runs/toy/vi/3/mse/seed-1/student/model.safetensors").stat().st_mtime_ns
    again = runner.invoke(app, ["grid", "grid.yaml"])
    assert again.exit_code == 0, again.output
    assert (tmp_path / "runs/toy/vi/3/mse/seed-1/student/model.safetensors").stat().st_mtime_ns == stamp
    dry = runner.invoke(app, ["grid", "grid.yaml", "--dry-run"])
    assert dry.output.count("done") == 6 and "todo" not in dry.output
    # the same runs tested against another variant: a second table, the grid's own untouched
    before = (tmp_path / "runs/toy/results.md").read_text()
    other = runner.invoke(app, ["grid", "grid.yaml", "--collect-only", "--baseline", "token-ot"])
    assert other.exit_code == 0, other.output
    assert "against `token-ot`" in (tmp_path / "runs/toy/results-vs-token-ot.md").read_text()
    assert (tmp_path / "runs/toy/results.md").read_text() == before
    bad = runner.invoke(app, ["grid", "grid.yaml", "--collect-only", "--baseline", "nope"])
    assert bad.exit_code == 2 and "--baseline nope: not a variant" in bad.output


def _toy_grid(tmp_path, tiny_teacher_st, tiny_student, **grid_extra):
    """A tiny data folder, base recipe and grid file in tmp_path (the working directory)."""
    data = tmp_path / "data" / "vi"
    (data / "clir" / "qrels").mkdir(parents=True)
    shutil.copy(tiny_models.BITEXT_VI, data / "train.tsv")
    pairs = [line.split("\t") for line in tiny_models.BITEXT_VI.read_text(encoding="utf-8").splitlines()][:10]
    with (data / "clir" / "corpus.jsonl").open("w", encoding="utf-8") as f, \
            (data / "clir" / "corpus_en.jsonl").open("w", encoding="utf-8") as g, \
            (data / "clir" / "queries.jsonl").open("w", encoding="utf-8") as h:
        for i, (en, vi) in enumerate(pairs):
            f.write(json.dumps({"_id": f"d{i}", "title": "", "text": vi}, ensure_ascii=False) + "\n")
            g.write(json.dumps({"_id": f"d{i}", "title": "", "text": en}) + "\n")
            h.write(json.dumps({"_id": f"q{i}", "text": en}) + "\n")
    (data / "clir" / "qrels" / "test.tsv").write_text(
        "query-id\tcorpus-id\tscore\n" + "".join(f"q{i}\td{i}\t1\n" for i in range(len(pairs))))
    recipe = {"teacher": {"model": str(tiny_teacher_st), "max_length": 32},
              "student": {"model": str(tiny_student), "max_length": 32},
              "bitext": {"heldout": 4}, "loss": "mse:1", "warm_start": {"pairs": 16},
              "train": {"batch_size": 4, "lr": 1e-3, "eval_every": 0, "checkpoint_every": 0}}
    (tmp_path / "base.yaml").write_text(yaml.safe_dump(recipe))
    grid = {"name": "toy", "recipe": "base.yaml", "languages": ["vi"], "seeds": [1], "budgets": [3],
            "baseline": "ws", "out": "runs/toy", **grid_extra}
    (tmp_path / "grid.yaml").write_text(yaml.safe_dump(grid))


def test_pruned_run_retrained_for_a_new_evaluation_keeps_every_evaluation(tmp_path, tiny_teacher_st,
                                                                         tiny_student, monkeypatch):
    """keep_students: false, then a new eval_of variant asked for alone: the run is trained
    again and the evaluations of every variant sharing it are written again too."""
    monkeypatch.chdir(tmp_path)
    _toy_grid(tmp_path, tiny_teacher_st, tiny_student, keep_students=False,
              variants={"ws": {"set": {"train.steps": 0}},
                        "ws-own": {"eval_of": "ws", "eval": {"query_encoder": "student"}}})
    first = runner.invoke(app, ["grid", "grid.yaml", "--variant", "ws"])
    assert first.exit_code == 0, first.output
    folder = tmp_path / "runs/toy/vi/pinned/ws/seed-1"
    assert (folder / "eval-clir" / "per_query.json").is_file() and not (folder / "student").exists()
    second = runner.invoke(app, ["grid", "grid.yaml", "--variant", "ws-own"])
    assert second.exit_code == 0, second.output
    assert (folder / "eval-clir" / "per_query.json").is_file()
    assert (folder / "eval-clir-query_encoder=student" / "per_query.json").is_file()


def test_a_variant_may_search_with_an_encoder_mixture(tmp_path, tiny_teacher_st, tiny_student, monkeypatch):
    """eval: {doc_encoder: student+0.5*teacher}: evaluated on the same run, in its own folder
    (no glob character in the name); a bad mixture fails before any training."""
    monkeypatch.chdir(tmp_path)
    _toy_grid(tmp_path, tiny_teacher_st, tiny_student,
              variants={"ws": {"set": {"train.steps": 0}},
                        "ws-mix": {"eval_of": "ws", "eval": {"doc_encoder": "student+0.5*teacher"}}})
    result = runner.invoke(app, ["grid", "grid.yaml"])
    assert result.exit_code == 0, result.output
    folder = tmp_path / "runs/toy/vi/pinned/ws/seed-1"
    mixed = json.loads((folder / "eval-clir-doc_encoder=student+0.5xteacher" / "metrics.json").read_text())
    assert mixed["settings"]["doc_encoder"] == "student+0.5*teacher"
    assert mixed["settings"]["query_encoder"] == "teacher"
    assert json.loads((folder / "eval-clir" / "metrics.json").read_text())["settings"]["doc_encoder"] == "student"
    with pytest.raises(OpticalError, match=r"variants.ws-mix.eval.doc_encoder: encoder mixture .* positive number"):
        grid_from_dict(minimal(variants={"a": {}, "ws-mix": {"eval_of": "a", "eval": {"doc_encoder": "student+0*teacher"}}}))


def test_grid_cli_bad_file_is_one_line(tmp_path):
    (tmp_path / "g.yaml").write_text("recipe: r.yaml\nlanguages: [vi]\nseeds: [1]\nbaseline: x\nvariants: {y: {}}\n")
    result = runner.invoke(app, ["grid", str(tmp_path / "g.yaml")])
    assert result.exit_code == 2
    assert result.output.strip().splitlines() == [f"error: {tmp_path / 'g.yaml'}: baseline: 'x' is not one of the variants"]


def test_rows_are_compared_on_the_seeds_both_ran(tmp_path):
    """The baseline ran seed 2 only; the variant seeds 1 and 2: Δ uses seed 2 alone."""
    grid = grid_from_dict(minimal(out=str(tmp_path), seeds=[1, 2]))
    for cell in cells(grid):
        if (cell.variant.name, cell.seed) not in (("a", 2), ("b", 1), ("b", 2)):
            continue
        value = {("a", 2): 0.5, ("b", 1): 0.9, ("b", 2): 0.6}[(cell.variant.name, cell.seed)]
        folder = run_dir(grid, cell) / "eval-clir"
        folder.mkdir(parents=True)
        (folder / "per_query.json").write_text(json.dumps({"toy": {"nDCG@10": {f"q{i}": value for i in range(5)}}}))
    b = next(r for r in collect(grid)["rows"] if r["variant"] == "b")["languages"]["vi"]
    assert b["mean"] == pytest.approx(0.75) and b["seeds"] == [1, 2]
    assert b["diff"] == pytest.approx(0.1) and b["paired_seeds"] == [2]
    assert "seeds 2)" in (tmp_path / "results.md").read_text()


def test_shipped_grids_load_and_their_committed_records_are_still_done(monkeypatch):
    """Every grid file in experiments/ parses, and every finished cell whose record is committed
    under experiments/results/ still counts as done under today's recipe schema: a changed
    default that a grid does not pin would otherwise delete those cells and train them again."""
    from pathlib import Path

    from optical.experiments import _trained, cell_recipe

    root = Path(__file__).resolve().parents[1]
    monkeypatch.chdir(root)  # grid files name their recipe, data and out relative to the project
    grids = sorted((root / "experiments").glob("*.yaml"))
    assert grids
    checked = 0
    for path in grids:
        grid = load_grid(path)
        assert grid.out.startswith("experiments/results/"), path
        for cell in cells(grid):
            folder = run_dir(grid, cell)
            if (folder / "metrics.json").is_file() and cell.variant.eval_of is None:
                assert _trained(folder, cell_recipe(grid, cell)), f"{folder}: its recipe.yaml no longer matches {path.name}"
                checked += 1
    assert checked > 0 or not any((root / "experiments" / "results").rglob("metrics.json"))
