"""`optical align`: alignment scores on hand-made plans, plans built as training builds them,
pictures (PNG + HTML) and the diagnostic end to end on tiny models, one-line errors."""

import json
import math
import sys

import pytest
import torch
from typer.testing import CliRunner

import tiny_models
from optical import align
from optical.cli import app
from optical.errors import OpticalError
from optical.recipe import recipe_from_dict
from optical.training.loop import distill

runner = CliRunner()


def run_cli(*args):
    return runner.invoke(app, ["align", *map(str, args)])


# ----------------------------------------------------------------------------- token strings


def test_surface_strips_piece_markers_and_lowercases():
    assert align.surface("##Office") == "office"
    assert align.surface("▁LibreOffice") == "libreoffice"
    assert align.surface("Ġcalc") == "calc"
    assert align.surface("writer</w>") == "writer"
    assert align.surface("2024") == "2024"


def test_content_needs_three_characters_and_not_only_punctuation():
    assert align.is_content("calc") and align.is_content("2024") and align.is_content("x86")
    assert not align.is_content("an") and not align.is_content("...") and not align.is_content("▁")


def test_identical_token_matches_across_tokenizers():
    teacher = ["libre", "##office", "calc", "is", "...", "2024"]
    student = ["▁Libre", "Office", "▁Calc", "▁is", "▁là", "...", "▁2024"]
    m = align.identical_token_matches(teacher, student)
    assert m.shape == (6, 7)
    expected = {(0, 0), (1, 1), (2, 2), (5, 6)}  # "is" too short, "..." punctuation
    assert {tuple(ij) for ij in m.nonzero().tolist()} == expected


# ----------------------------------------------------------------------------- hand-made plans


def test_identity_plan_aligns_every_matched_token():
    plan, matches = torch.eye(4) / 4, torch.eye(4, dtype=torch.bool)
    share, hit = align.identical_token_scores(plan, matches)
    assert share.tolist() == [1.0] * 4 and hit.tolist() == [1.0] * 4


def test_uniform_plan_scores_the_chance_level():
    matches = torch.zeros(3, 5, dtype=torch.bool)
    matches[0, 1] = True  # one of five columns
    matches[2, [0, 4]] = True  # two of five
    share, hit = align.identical_token_scores(torch.full((3, 5), 1 / 15), matches)
    assert share.tolist() == pytest.approx([1 / 5, 2 / 5])
    assert hit.tolist() == pytest.approx([1 / 5, 2 / 5])  # ties split evenly


def test_argmax_ties_split_and_unmatched_rows_are_skipped():
    plan = torch.tensor([[0.4, 0.4, 0.2], [0.1, 0.1, 0.8]])
    matches = torch.tensor([[True, False, False], [False, False, False]])
    share, hit = align.identical_token_scores(plan, matches)
    assert share.tolist() == pytest.approx([0.4]) and hit.tolist() == pytest.approx([0.5])


def test_entropy_ratio_and_diagonal_offset():
    assert align.entropy_ratio(torch.full((3, 4), 1 / 12)) == pytest.approx(1.0)
    assert align.entropy_ratio(torch.eye(5) / 5) == pytest.approx(0.5)  # log n / log n²
    assert align.entropy_ratio(torch.ones(1, 1)) == 1.0
    assert align.diagonal_offset(torch.eye(6)) == pytest.approx(0.0)
    assert align.diagonal_offset(torch.ones(50, 50)) == pytest.approx(1 / 3, abs=1e-3)
    anti = torch.eye(4).flip(1)  # reversed order: far off the diagonal
    assert align.diagonal_offset(anti) > align.diagonal_offset(torch.ones(4, 4))


def test_alignment_report_compares_with_uniform_and_independent_plans():
    identity = torch.eye(4) / 4
    shifted = torch.roll(torch.eye(4), 1, dims=1) / 4  # every row's mass one column off
    matches = torch.eye(4, dtype=torch.bool)
    good = align.alignment_report([identity], [matches])
    bad = align.alignment_report([shifted], [matches])
    assert good["mass_share"] == 1.0 and good["argmax_accuracy"] == 1.0
    assert bad["mass_share"] == 0.0 and bad["argmax_accuracy"] == 0.0
    for r in (good, bad):
        assert r["mass_share_uniform"] == pytest.approx(0.25) and r["argmax_accuracy_uniform"] == pytest.approx(0.25)
        assert r["mass_share_independent"] == pytest.approx(0.25)  # uniform marginals: a⊗b is uniform
        assert r["matched_tokens"] == 4 and r["matched_pairs"] == 1
    assert good["diagonal_offset"] == 0.0 and good["diagonal_offset_independent"] == pytest.approx(5 / 16)
    none = align.alignment_report([identity], [torch.zeros(4, 4, dtype=torch.bool)])
    assert none["matched_tokens"] == 0 and math.isnan(none["mass_share"])
    assert json.loads(align.to_json(none))["mass_share"] is None
    text = align.format_report({**none, "run": "r", "masses": "uniform", "epsilon": 0.05, "rho": None, "cost": "cosine"})
    assert "n/a" in text and "0 English tokens" in text


def test_independent_plan_keeps_the_marginals():
    plan = torch.tensor([[0.3, 0.1], [0.0, 0.6]])
    indep = align.independent_plan(plan)
    assert torch.allclose(indep.sum(1), plan.sum(1)) and torch.allclose(indep.sum(0), plan.sum(0))


def test_missing_matplotlib_is_one_line(monkeypatch):
    monkeypatch.setitem(sys.modules, "matplotlib.figure", None)  # import raises ImportError
    with pytest.raises(OpticalError, match="pip install matplotlib"):
        align.figure_class()


# ----------------------------------------------------------------------------- tiny models


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory, tiny_teacher_st, tiny_student):
    """A finished two-step run with IDF masses (its bitext is the fixture TSV)."""
    out = tmp_path_factory.mktemp("align") / "run"
    recipe = recipe_from_dict({"teacher": {"model": str(tiny_teacher_st)}, "student": {"model": str(tiny_student)},
                               "bitext": {"path": str(tiny_models.BITEXT_VI), "heldout": 4},
                               "output_dir": str(out), "warm_start": {"method": "none"},
                               "ot": {"masses": "idf", "epsilon": 0.1}},
                              ["train.steps=2", "train.batch_size=8"])
    distill(recipe, show_progress=False)
    return out


def test_plans_are_built_as_training_builds_them(run_dir):
    from optical.ot import idf_masses
    from optical.ot.masks import ot_mask

    aligner = align.load_aligner(run_dir)
    assert aligner.masses.startswith("idf") and aligner.ot["epsilon"] == 0.1
    pairs = [("The cat sleeps on the warm bed.", "Con mèo ngủ trên giường ấm."),
             ("I drink hot coffee every morning.", "Tôi uống cà phê nóng mỗi sáng.")]
    plans = aligner.plans(pairs)
    first = plans[0]
    assert first.teacher_tokens == ["the", "cat", "sleeps", "on", "the", "warm", "bed", "."]  # no [CLS]/[SEP]
    assert "[CLS]" not in first.student_tokens and "[SEP]" not in first.student_tokens
    assert first.plan.shape == first.cost.shape == (len(first.teacher_tokens), len(first.student_tokens))
    # row marginals are the IDF masses training uses
    enc = aligner.teacher.tokenize([pairs[0][0]])
    mask = ot_mask(enc["input_ids"], enc["attention_mask"], set(aligner.teacher.tokenizer.all_special_ids), True)
    a = idf_masses(enc["input_ids"], mask, aligner.teacher_idf)[0][mask[0]]
    assert torch.allclose(first.plan.sum(1), a, atol=1e-4)
    assert first.plan.sum() == pytest.approx(1.0, abs=1e-4)
    # batching does not change a pair's plan
    alone = aligner.plans([pairs[1]])[0]
    assert torch.allclose(alone.plan, plans[1].plan, atol=1e-5)


def test_idf_falls_back_to_uniform_without_the_bitext(run_dir):
    aligner = align.load_aligner(run_dir, overrides=["bitext.path=/nonexistent/pairs.tsv"])
    assert aligner.masses.startswith("uniform (") and aligner.teacher_idf is None
    pair = aligner.plans([("the cat sleeps", "con mèo ngủ")])[0]
    assert torch.allclose(pair.plan.sum(1), torch.full((3,), 1 / 3), atol=1e-4)
    assert "masses uniform (" in align.pair_title(aligner, pair)


def test_teacher_and_student_specs_instead_of_a_run(tiny_teacher_st, tiny_student):
    """A plain encoder as student gets the identity head; its prompt prefix stays out of the plan."""
    aligner = align.load_aligner(teacher=str(tiny_teacher_st), student=str(tiny_student),
                                 overrides=["student.prefix='query: '"])
    assert aligner.masses.startswith("uniform") and aligner.student.prefix_length() > 0
    pair = aligner.plans([("the cat sleeps", "the cat sleeps")])[0]
    assert pair.student_tokens == ["the", "cat", "sleeps"]
    assert align.identical_token_matches(pair.teacher_tokens, pair.student_tokens).sum() == 3


def test_cli_picture_writes_png_and_html(run_dir, tmp_path):
    out = tmp_path / "plan.png"
    result = run_cli("--run", run_dir, "--en", "The cat sleeps on the warm bed.", "--other",
                     "Con mèo ngủ trên giường ấm.", "--out", out)
    assert result.exit_code == 0, result.output
    assert out.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    page = (tmp_path / "plan.html").read_text(encoding="utf-8")
    assert page.count("<table>") == 2 and "<script" not in page.lower() and "http" not in page
    assert "<th>sleeps</th>" in page and "mèo" in page
    assert "wrote" in result.output and "plan entropy" in result.output


def test_cli_diagnostic_prints_and_writes_json(run_dir, tmp_path):
    bitext = tmp_path / "pairs.tsv"
    # untranslated words on both sides, as product names and identifiers are in help texts
    bitext.write_text("the cat sleeps\tcon mèo sleeps\nthe library\tthư viện library\n"
                      + tiny_models.BITEXT_VI.read_text(encoding="utf-8"), encoding="utf-8")
    out = tmp_path / "scores.json"
    result = run_cli("--run", run_dir, "--bitext", bitext, "--pairs", 12, "--batch-size", 5, "--json", out)
    assert result.exit_code == 0, result.output
    assert "identical tokens" in result.output and "entropy" in result.output
    report = json.loads(out.read_text())
    assert report["pairs"] == 12 and report["matched_tokens"] >= 2 and report["matched_pairs"] >= 2
    assert 0 < report["entropy_ratio"] <= 1 + 1e-6
    for key in ("mass_share", "argmax_accuracy", "mass_share_uniform", "argmax_accuracy_uniform"):
        assert 0 <= report[key] <= 1
    assert report["masses"].startswith("idf") and report["epsilon"] == 0.1


@pytest.mark.parametrize("args, message", [
    (["--run", "/nonexistent/run", "--en", "a cat", "--other", "con mèo"], "run directory not found"),
    (["--en", "a cat", "--other", "con mèo"], "--run"),
    (["--run", "RUN", "--en", "  ", "--other", "con mèo"], "non-empty"),
    (["--run", "RUN", "--other", "con mèo"], "--en"),
    (["--run", "RUN", "--bitext", "/nonexistent/pairs.tsv"], "bitext file not found"),
    (["--run", "RUN", "--bitext", "BINARY"], "no usable sentence pairs"),
    (["--run", "RUN", "--bitext", "UTF16"], "the file is UTF-16"),
    (["--run", "RUN", "--bitext", "BINARY", "--en", "a"], "leave out --en"),
    (["--run", "RUN", "--bitext", "BINARY", "--pairs", "0"], "at least 1"),
    (["--run", "NOSTUDENT", "--en", "a cat", "--other", "con mèo"], "no student/"),
])
def test_cli_bad_input_is_one_line(run_dir, tmp_path, args, message):
    binary = tmp_path / "junk.tsv"
    binary.write_bytes(b"\x81\xff\xfe\x00 no tab here\n\xc3\x28\t\xa0\xa1\n")  # junk, not a BOM
    utf16 = tmp_path / "utf16.tsv"
    utf16.write_bytes("a cat\tcon mèo\n".encode("utf-16"))
    no_student = tmp_path / "pruned"
    no_student.mkdir()
    (no_student / "recipe.yaml").write_text((run_dir / "recipe.yaml").read_text())
    swap = {"RUN": run_dir, "BINARY": binary, "NOSTUDENT": no_student, "UTF16": utf16}
    result = run_cli(*[swap.get(a, a) for a in args])
    assert result.exit_code == 2, result.output
    lines = result.output.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ") and message in lines[0], result.output
