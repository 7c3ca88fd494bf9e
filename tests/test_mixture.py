"""Encoder mixtures (`--doc-encoder "student+0.3*teacher"`): the parser, the arithmetic, the
evaluation end to end on tiny models, and one-line errors."""

import json
import math

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st
from typer.testing import CliRunner

from optical.cli import app
from optical.errors import OpticalError
from optical.eval.mixture import MixtureEncoder, MixtureSpec, parse_mixture
from test_evaluate import beir_folder, run_dir  # noqa: F401  (fixtures)
from test_parsers import PROPERTY, one_line

runner = CliRunner()


def test_parse_names_weights_and_order():
    assert parse_mixture("student+0.3*teacher") == MixtureSpec(((1.0, "student"), (0.3, "teacher")))
    assert parse_mixture("2 * teacher + 1e-1*packaged:multilingual-e5-small") == MixtureSpec(
        ((2.0, "teacher"), (0.1, "packaged:multilingual-e5-small")))
    assert str(parse_mixture("1.0*student+.5*teacher")) == "student+0.5*teacher"
    assert parse_mixture("student") is None and parse_mixture("packaged:x") is None


def test_a_folder_whose_name_holds_a_plus_is_one_encoder(tmp_path):
    folder = tmp_path / "e5+head"
    folder.mkdir()
    assert parse_mixture(str(folder)) is None


@pytest.mark.parametrize("spec, pattern", [
    ("student+", "empty term"),
    ("+teacher", "empty term"),
    ("student+0*teacher", "must be a positive number"),
    ("student+1e999*teacher", "must be a positive number"),
    ("student+-1*teacher", "is not WEIGHT*ENCODER"),
    ("student+x*teacher", "is not WEIGHT*ENCODER"),
    ("student+0.5*student", "appears twice"),
])
def test_bad_mixtures_are_one_line(spec, pattern):
    with pytest.raises(OpticalError) as err:
        parse_mixture(spec)
    assert pattern in one_line(err.value)


@PROPERTY
@given(st.text(max_size=60))
def test_any_spec_parses_or_says_why(spec):
    try:
        parsed = parse_mixture(spec)
    except OpticalError as err:
        one_line(err)
        return
    if parsed is None:
        return
    assert len(parsed.terms) >= 2
    assert all(w > 0 and math.isfinite(w) and name.strip() == name and name for w, name in parsed.terms)
    assert parse_mixture(str(parsed)) == parsed  # the printed form reads back as the same mixture


@PROPERTY
@given(st.lists(st.tuples(st.floats(0.01, 100.0), st.sampled_from(["student", "teacher", "packaged:a", "org/model"])),
                min_size=2, max_size=4, unique_by=lambda t: t[1]))
def test_printed_mixtures_read_back(terms):
    spec = MixtureSpec(tuple((float(f"{w:g}"), name) for w, name in terms))
    assert parse_mixture(str(spec)) == spec


class Fixed:
    """An encoder returning given (unnormalised) vectors."""

    def __init__(self, vectors, name="fixed", role="document"):
        self.vectors, self.name, self.identity, self.role = np.asarray(vectors, np.float32), name, name + "@1", role

    def with_role(self, role):
        return Fixed(self.vectors, self.name, role)

    def encode(self, texts, batch_size=64, show_progress=False):
        return self.vectors[:len(texts)]


def test_mixture_is_the_normalised_weighted_sum_of_normalised_terms():
    a, b = [[3.0, 4.0], [0.0, 2.0]], [[1.0, 0.0], [0.0, -5.0]]
    mix = MixtureEncoder(parse_mixture("a+0.5*b"), [(1.0, Fixed(a, "a")), (0.5, Fixed(b, "b"))])
    got = mix.encode(["x", "y"])
    expected = np.array([[0.6 + 0.5, 0.8], [0.0, 1.0 - 0.5]])
    expected /= np.linalg.norm(expected, axis=1, keepdims=True)
    np.testing.assert_allclose(got, expected, rtol=1e-6)
    assert mix.with_role("query").members[1][1].role == "query"
    other = MixtureEncoder(parse_mixture("a+0.6*b"), [(1.0, Fixed(a, "a")), (0.6, Fixed(b, "b"))])
    assert other.identity != mix.identity  # a new weight never reads a stale cache entry


def test_members_of_different_dimension_are_one_line():
    mix = MixtureEncoder(parse_mixture("a+b"), [(1.0, Fixed([[1.0, 0.0]], "a")), (1.0, Fixed([[1.0, 0.0, 0.0]], "b"))])
    with pytest.raises(OpticalError) as err:
        mix.encode(["x"])
    assert "mix encoders of one space" in one_line(err.value)


def test_eval_with_mixtures_end_to_end(tmp_path, beir_folder, run_dir):  # noqa: F811
    """On the tiny models the student *is* the teacher's folder: a mixture of the two must give
    the same ranking as either alone, and both sides accept a mixture."""
    outs = {}
    for name, q, d in [("plain", "teacher", "student"), ("mixed", "teacher+student", "student+0.3*teacher")]:
        outs[name] = tmp_path / name
        result = runner.invoke(app, ["eval", "--path", str(beir_folder), "--student", str(run_dir),
                                     "--query-encoder", q, "--doc-encoder", d, "--out", str(outs[name])])
        assert result.exit_code == 0, result.output
    plain, mixed = (json.loads((outs[n] / "metrics.json").read_text()) for n in ("plain", "mixed"))
    assert mixed["settings"]["doc_encoder"] == "student+0.3*teacher"
    for metric, value in plain["tasks"]["toy"]["metrics"].items():
        assert mixed["tasks"]["toy"]["metrics"][metric] == pytest.approx(value, abs=1e-6)


@pytest.mark.parametrize("extra, pattern", [
    (["--doc-encoder", "student+0*teacher"], "must be a positive number"),
    (["--doc-encoder", "student+teacher", "--passages", "8:4:max"], "need one document encoder"),
])
def test_eval_bad_mixture_is_one_error_line(beir_folder, run_dir, extra, pattern):  # noqa: F811
    result = runner.invoke(app, ["eval", "--path", str(beir_folder), "--student", str(run_dir), *extra])
    assert result.exit_code == 2, result.output
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ") and pattern in lines[0], result.stderr


def test_a_mixture_naming_a_missing_teacher_is_one_error_line(beir_folder, run_dir):  # noqa: F811
    result = runner.invoke(app, ["eval", "--path", str(beir_folder), "--student", str(run_dir / "student"),
                                 "--doc-encoder", "student+0.3*teacher"])
    assert result.exit_code == 2 and "--doc-encoder student+0.3*teacher: teacher needs" in result.stderr


def test_a_recipe_with_a_bad_mixture_names_file_line_and_key(tmp_path):
    from optical.recipe import load_recipe

    path = tmp_path / "r.yaml"
    path.write_text("lang: vi\neval:\n  task: beir\n  doc_encoder: student+0*teacher\n")
    with pytest.raises(OpticalError) as err:
        load_recipe(path)
    message = one_line(err.value)
    assert f"{path}:4" in message and "eval.doc_encoder" in message and "positive number" in message
    path.write_text("lang: vi\neval:\n  doc_encoder: student+0.3*teacher\n")
    assert load_recipe(path).eval.doc_encoder == "student+0.3*teacher"
