"""Pictures: training curves from a tiny run's log.jsonl (`optical plot curves`) and the
per-query gains of two evaluations (`optical eval --compare A B --plot`)."""

import json
import sys

import numpy as np
import pytest
from PIL import Image
from typer.testing import CliRunner

import tiny_models
from tiny_models import one_error_line
from optical.cli import app
from optical.errors import OpticalError
from optical.plots import CURVES_SIZE, DPI, GAINS_SIZE, gains, read_curves, read_curves_text
from optical.recipe import recipe_from_dict
from optical.training.loop import distill

runner = CliRunner()


@pytest.fixture(scope="module")
def run(tiny_teacher_st, tiny_student, tmp_path_factory):
    out = tmp_path_factory.mktemp("plots") / "run"
    recipe = recipe_from_dict({"teacher": {"model": str(tiny_teacher_st)}, "student": {"model": str(tiny_student)},
                               "bitext": {"path": str(tiny_models.BITEXT_VI), "heldout": 8}, "output_dir": str(out)},
                              ["train.steps=6", "train.batch_size=8", "train.eval_every=2", "train.warmup_ratio=0.5"])
    distill(recipe, show_progress=False)
    return out


def png(path):
    with Image.open(path) as image:
        image.load()
        return image.format, image.size, image.convert("L").getextrema()


def without_matplotlib(monkeypatch):
    for name in ("matplotlib", "matplotlib.figure", "matplotlib.backends", "matplotlib.backends.backend_agg"):
        monkeypatch.setitem(sys.modules, name, None)


# ----------------------------------------------------------------------------- curves


def test_curves_are_the_logged_numbers(run):
    records = [json.loads(line) for line in (run / "log.jsonl").read_text().splitlines()]
    steps = [r for r in records if "loss" in r]
    curves = read_curves(run)
    assert set(curves.losses) == {"loss", "token_ot", "mse"}
    for name in curves.losses:
        assert curves.losses[name] == ([r["step"] for r in steps], [r[name] for r in steps])
    assert curves.lr == ([r["step"] for r in steps], [r["lr"] for r in steps])
    assert curves.lr[1][0] < curves.lr[1][2] > curves.lr[1][-1]  # warmup, then decay
    checks = {r["step"]: r["heldout"] for r in records if "heldout" in r}  # the final check is step 6's
    assert set(curves.heldout) == set(checks[2])
    assert curves.heldout["cosine_to_teacher"] == ([2, 4, 6], [checks[s]["cosine_to_teacher"] for s in (2, 4, 6)])


def test_read_curves_skips_a_cut_line_and_keeps_the_last_record_of_a_step():
    text = ('{"step": 1, "loss": 2.0, "token_ot": 1.0, "lr": 0.1}\n'
            '{"step": 2, "loss": 1.5, "token_ot": 0.9, "lr": 0.2}\n'
            '{"step": 2, "heldout": {"cosine_to_teacher": 0.5}}\n'
            '{"step": 2, "loss": 1.4, "token_ot": 0.8, "lr": 0.2}\n'
            '{"step": 3, "lo')
    curves = read_curves_text(text)
    assert curves.losses == {"loss": ([1, 2], [2.0, 1.4]), "token_ot": ([1, 2], [1.0, 0.8])}
    assert curves.heldout == {"cosine_to_teacher": ([2], [0.5])}


def test_plot_curves_writes_a_png_of_the_promised_size(run, tmp_path):
    out = tmp_path / "curves.png"
    result = runner.invoke(app, ["plot", "curves", str(run), "--out", str(out)])
    assert result.exit_code == 0, result.output
    assert result.output.strip() == f"wrote {out}"
    kind, size, (darkest, lightest) = png(out)
    assert kind == "PNG" and size == (int(CURVES_SIZE[0] * DPI), int(CURVES_SIZE[1] * DPI))
    assert darkest < 100 and lightest > 200  # something is drawn on the white page
    assert [p.name for p in tmp_path.iterdir()] == ["curves.png"]  # no temporary file left


def test_plot_curves_default_out_is_in_the_run(run, tmp_path):
    import shutil

    copy = tmp_path / "run"
    shutil.copytree(run, copy)
    result = runner.invoke(app, ["plot", "curves", str(copy)])
    assert result.exit_code == 0, result.output
    assert png(copy / "curves.png")[0] == "PNG"


def test_plot_curves_errors_are_one_line(run, tmp_path, monkeypatch):
    one_error_line(runner.invoke(app, ["plot", "curves", str(tmp_path / "nope")]), "run directory not found")
    one_error_line(runner.invoke(app, ["plot", "curves", str(run), "--out", str(tmp_path / "no" / "c.png")]),
                   "output folder not found")
    empty = tmp_path / "warm-only"
    empty.mkdir()
    (empty / "recipe.yaml").write_text((run / "recipe.yaml").read_text())
    one_error_line(runner.invoke(app, ["plot", "curves", str(empty)]), "log.jsonl: not found")
    (empty / "log.jsonl").write_text('{"step": 0, "heldout": {"cosine_to_teacher": 0.9}, "final": true}\n')
    one_error_line(runner.invoke(app, ["plot", "curves", str(empty)]), "no training step logged")
    without_matplotlib(monkeypatch)
    one_error_line(runner.invoke(app, ["plot", "curves", str(run), "--out", str(tmp_path / "c.png")]),
                   "needs matplotlib: pip install matplotlib")
    assert not (tmp_path / "c.png").exists()


# ----------------------------------------------------------------------------- per-query gains


@pytest.fixture()
def evaluations(tmp_path):
    """Two eval folders: per_query.json with a clean task, its English-corpus variant, two metrics."""
    rng = np.random.default_rng(7)
    qids = [f"q{i}" for i in range(40)]
    folders = []
    for name, shift in (("a", 0.0), ("b", 0.1)):
        values = {m: {q: float(np.clip(rng.random() + shift, 0, 1)) for q in qids} for m in ("nDCG@10", "R@10")}
        if name == "b":
            values["nDCG@10"]["q0"] = values["nDCG@10"]["q1"] = 0.0  # a tie is possible below
            del values["R@10"]["q39"]  # scored by A only: left out
        folder = tmp_path / name / "eval-clir"
        folder.mkdir(parents=True)
        (folder / "per_query.json").write_text(json.dumps({"clir": values, "clir[en]": values}))
        folders.append(folder)
    return folders


def test_gains_are_b_minus_a_per_query_sorted(evaluations):
    a, b = evaluations
    per_a = json.loads((a / "per_query.json").read_text())["clir"]
    per_b = json.loads((b / "per_query.json").read_text())["clir"]
    (panel,) = gains(a, b)  # the clean task only, its first (main) metric
    assert (panel.task, panel.metric) == ("clir", "nDCG@10")
    expected = {q: per_b["nDCG@10"][q] - per_a["nDCG@10"][q] for q in per_a["nDCG@10"]}
    assert dict(zip(panel.qids, panel.diffs.tolist())) == pytest.approx(expected)
    assert list(panel.diffs) == sorted(panel.diffs, reverse=True)
    assert panel.wins == sum(d > 0 for d in expected.values()) and panel.losses == sum(d < 0 for d in expected.values())
    assert panel.wins + panel.losses + panel.ties == 40
    (recall,) = gains(a, b, metric="R@10")
    assert recall.metric == "R@10" and len(recall.qids) == 39 and "q39" not in recall.qids
    with pytest.raises(OpticalError, match="share no metric 'MAP'"):
        gains(a, b, metric="MAP")


def test_compare_plot_cli(evaluations, tmp_path, monkeypatch):
    a, b = evaluations
    out = tmp_path / "gains.png"
    result = runner.invoke(app, ["eval", "--compare", str(a), str(b), "--plot", str(out)])
    assert result.exit_code == 0, result.output
    assert "| clir | nDCG@10 |" in result.stdout and f"wrote {out}" in result.output
    kind, size, (darkest, lightest) = png(out)
    assert kind == "PNG" and size == (int(GAINS_SIZE[0] * DPI), int(GAINS_SIZE[1] * DPI))
    assert darkest < 100 and lightest > 200
    one_error_line(runner.invoke(app, ["eval", "--plot", str(out)]), "--plot", "--compare")
    one_error_line(runner.invoke(app, ["eval", "--compare", str(a), str(b), "--plot", str(tmp_path / "x" / "g.png")]),
                   "folder", "not found")
    without_matplotlib(monkeypatch)
    one_error_line(runner.invoke(app, ["eval", "--compare", str(a), str(b), "--plot", str(tmp_path / "g2.png")]),
                   "needs matplotlib")


# ----------------------------------------------------------------------------- grid results


@pytest.fixture
def grid_results(tmp_path):
    """A grid's results.json as `collect` writes it, from hand-written per-query files:
    variants a (two seeds on vi and eu) and b (one seed, vi only)."""
    from optical.experiments import cells, collect, grid_from_dict, run_dir

    grid = grid_from_dict({"name": "toy", "recipe": "r.yaml", "languages": ["vi", "eu"], "seeds": [1, 2],
                           "budgets": [10], "baseline": "a", "out": str(tmp_path / "g"),
                           "variants": {"a": {}, "b": {}}})
    for cell in cells(grid):
        if cell.variant.name == "b" and (cell.lang == "eu" or cell.seed == 2):
            continue
        shift = {"a": 0.5, "b": 0.7}[cell.variant.name] + 0.01 * cell.seed
        folder = run_dir(grid, cell) / "eval-clir"
        folder.mkdir(parents=True)
        (folder / "per_query.json").write_text(json.dumps({"toy": {"nDCG@10": {"q1": shift, "q2": shift + 0.1}}}))
    bounds = tmp_path / "g" / "vi" / "bounds"
    bounds.mkdir(parents=True)
    (bounds / "per_query.json").write_text(json.dumps({"toy": {"nDCG@10": {"q1": 0.2}},
                                                       "toy[en]": {"nDCG@10": {"q1": 0.9}}}))
    collect(grid)
    return tmp_path / "g"


def test_grid_bars_are_the_table_numbers(grid_results):
    from optical.plots import grid_bars, read_grid_results

    bars = grid_bars(read_grid_results(grid_results))
    assert bars.languages == ["vi", "eu"] and bars.variants == ["a", "b"]
    assert bars.means["a"] == [pytest.approx(0.565), pytest.approx(0.565)]
    assert bars.seeds["a"][0] == [pytest.approx(0.56), pytest.approx(0.57)]
    assert bars.means["b"] == [pytest.approx(0.76), None]  # b never ran on eu
    assert bars.references["vi"] == {"upper": 0.9, "lower": 0.2} and bars.references["eu"] == {}
    only = grid_bars(read_grid_results(grid_results / "results.json"), variants=["b"], languages=["eu", "vi"])
    assert only.languages == ["vi"] and only.variants == ["b"]


def test_plot_grid_cli_writes_a_png_beside_the_results(grid_results):
    result = runner.invoke(app, ["plot", "grid", str(grid_results)])
    assert result.exit_code == 0, result.output
    out = grid_results / "results.png"
    assert result.output.strip() == f"wrote {out}"
    kind, (width, height), (darkest, lightest) = png(out)
    assert kind == "PNG" and height == 500 and darkest < 100 and lightest > 200


def test_plot_grid_errors_are_one_line(grid_results, tmp_path, monkeypatch):
    (tmp_path / "bad.json").write_text("[1, 2]")
    (tmp_path / "cut.json").write_text('{"rows": [')
    cases = [
        (["plot", "grid", str(tmp_path / "nowhere")], "not found; run `optical grid GRID.yaml --collect-only` first"),
        (["plot", "grid", str(tmp_path / "bad.json")], "not a grid results file (no rows / metric)"),
        (["plot", "grid", str(tmp_path / "cut.json")], "not a grid results file ("),
        (["plot", "grid", str(grid_results), "--variant", "c"], "variant 'c' is not in the grid results; rows: a, b"),
        (["plot", "grid", str(grid_results), "--lang", "om"], "no results to draw"),
        (["plot", "grid", str(grid_results), "--out", str(tmp_path / "no" / "x.png")], "output folder not found"),
    ]
    for args, message in cases:
        result = runner.invoke(app, args)
        assert result.exit_code == 2 and message in one_error_line(result), (args, result.output)
    without_matplotlib(monkeypatch)
    result = runner.invoke(app, ["plot", "grid", str(grid_results)])
    assert result.exit_code == 2 and "needs matplotlib" in one_error_line(result)
