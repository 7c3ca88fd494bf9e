"""The package's public API: `from optical import load_recipe, distill, evaluate` gives the
functions whatever was imported before; `load_recipe` takes shipped recipe names; `--version`."""

from __future__ import annotations

import importlib.metadata
import re
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
from typer.testing import CliRunner

import optical
from optical.cli import app
from optical.errors import OpticalError
from optical.recipe import load_recipe

REPO = Path(__file__).parents[1]
runner = CliRunner()


def run_python(code: str) -> str:
    """Run `code` in a fresh interpreter (import order matters), return its stdout."""
    done = subprocess.run([sys.executable, "-c", textwrap.dedent(code)], capture_output=True, text=True,
                          cwd=REPO, timeout=300)
    assert done.returncode == 0, done.stderr
    return done.stdout


def test_all_names_the_public_functions():
    assert {"load_recipe", "distill", "evaluate"} <= set(optical.__all__)
    assert all(name in dir(optical) for name in optical.__all__)
    with pytest.raises(AttributeError, match="no attribute 'nope'"):
        optical.nope  # noqa: B018


def test_package_exports_are_the_functions_in_either_import_order():
    out = run_python("""
        import inspect, sys
        import optical
        assert "torch" not in sys.modules, "import optical must stay light"
        from optical import load_recipe, distill, evaluate
        assert all(inspect.isfunction(f) for f in (load_recipe, distill, evaluate))
        from optical.eval.retrieval import evaluate as direct, retrieve
        assert direct is evaluate and optical.evaluate is evaluate
        print("ok")
    """)
    assert out.strip() == "ok"
    out = run_python("""
        import inspect
        from optical.eval.retrieval import retrieve
        from optical import evaluate
        assert inspect.isfunction(evaluate) and evaluate.__module__ == "optical.eval.retrieval"
        print("ok")
    """)
    assert out.strip() == "ok"
    out = run_python("""
        import inspect
        import optical.training.loop, optical.run_dir, optical.eval.retrieval  # subpackages never shadow names
        from optical import distill, Distiller, load_run, evaluate
        assert inspect.isfunction(distill) and inspect.isfunction(load_run) and inspect.isfunction(evaluate)
        assert Distiller is optical.training.loop.Distiller
        print("ok")
    """)
    assert out.strip() == "ok"


# ------------------------------------------------------------------------ load_recipe


def test_load_recipe_takes_a_shipped_name_like_the_cli():
    by_name = load_recipe("vi/quickstart", ["train.steps=10"])
    by_path = load_recipe(REPO / "recipes" / "vi" / "quickstart.yaml", ["train.steps=10"])
    assert by_name == by_path and by_name.train.steps == 10
    assert load_recipe(str(REPO / "recipes" / "vi" / "quickstart.yaml")) == load_recipe("vi/quickstart")


def test_load_recipe_unknown_name_and_missing_file_fail_in_one_line(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    with pytest.raises(OpticalError, match=r"unknown recipe 'xx/nothing' \(shipped: .*vi/quickstart"):
        load_recipe("xx/nothing")
    for missing in ("nope.yaml", "vi/quickstart.yaml", tmp_path / "dir" / "nope.yml"):
        with pytest.raises(OpticalError, match="recipe file not found") as err:
            load_recipe(missing)
        assert "\n" not in str(err.value)


def test_load_recipe_prefers_an_existing_file_over_a_shipped_name(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "vi").mkdir()
    (tmp_path / "vi" / "quickstart").write_text("name: local\n", encoding="utf-8")
    assert load_recipe("vi/quickstart").name == "local"


# ------------------------------------------------------------------------ --version


def test_version_option_prints_the_installed_version():
    result = runner.invoke(app, ["--version"])
    assert result.exit_code == 0, result.output
    assert result.output == f"optical {importlib.metadata.version('optical')}\n"


def test_version_falls_back_to_the_package_version(monkeypatch):
    def not_installed(name):
        raise importlib.metadata.PackageNotFoundError(name)

    monkeypatch.setattr(importlib.metadata, "version", not_installed)
    result = runner.invoke(app, ["--version"])
    assert result.exit_code == 0, result.output
    assert result.output == f"optical {optical.__version__}\n"


def test_package_version_matches_pyproject():
    text = (REPO / "pyproject.toml").read_text(encoding="utf-8")
    assert re.search(r'^version = "([^"]+)"', text, flags=re.MULTILINE).group(1) == optical.__version__
