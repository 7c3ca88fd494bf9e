"""Vocabulary extension: units the tokenizer cannot read get tokens, fitted in closed form."""

import json
import unicodedata

import numpy as np
import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from optical.errors import OpticalError
from optical.models.student import Student
from optical.models.vocabulary import (
    AUTO_UNKNOWN_SHARE,
    extend_vocabulary,
    fit_new_embeddings,
    text_units,
    unknown_token_share,
    unknown_units,
)
from optical.recipe import load_recipe, recipe_from_dict
from optical.training.loop import distill

# Tibetan-script words are [UNK] to the tiny student's vocabulary (as most of Dzongkha is to e5-small's)
DZ = ["con mèo ngủ", "བཀྲ་ཤིས་བདེ་ལེགས con mèo", "ཡིག་ཆ ngủ", "བཀྲ་ཤིས་ ཡིག་ཆ", "ལེགས་ con"] * 3
EN = ["a cat sleeps", "hello a cat", "a file sleeps", "hello file", "good cat"] * 3


def test_text_units_keep_syllables_with_their_tsheg():
    assert text_units("བཀྲ་ཤིས་ བདེ་ལེགས།") == ["བཀྲ་", "ཤིས་", "བདེ་", "ལེགས།"]
    assert text_units("Hello, world 42!") == ["Hello,", "world", "42!"]
    assert text_units("  ,;  ") == []


@settings(deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(text=st.text(max_size=80))
def test_text_units_keep_every_letter_in_order(text):
    """Units never hold a space, never start with punctuation, and together keep every letter,
    mark and digit of the text, in order."""
    units = text_units(text)
    assert all(u and not any(c.isspace() for c in u) and unicodedata.category(u[0])[0] in "LMN" for u in units)
    kept = [c for c in text if unicodedata.category(c)[0] in "LMN"]
    assert [c for u in units for c in u if unicodedata.category(c)[0] in "LMN"] == kept


def test_unknown_units_are_the_unreadable_ones_most_frequent_first(tiny_student):
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(tiny_student)
    found = unknown_units(tokenizer, DZ)
    units = [u for u, _ in found]
    assert "con" not in units and "mèo" not in units  # readable
    assert all(tokenizer.unk_token_id in tokenizer(u, add_special_tokens=False)["input_ids"] for u in units)
    counts = [c for _, c in found]
    assert counts == sorted(counts, reverse=True) and min(counts) >= 2
    assert dict(found)["བཀྲ་"] == 6  # 3 × "བཀྲ་ཤིས་བདེ་ལེགས" + 3 × "བཀྲ་ཤིས་ ཡིག་ཆ"


def test_fit_new_embeddings_is_the_ridge_least_squares_solution():
    """Checked against numpy's dense least squares on the same system, written out by hand."""
    gen = torch.Generator().manual_seed(0)
    n_old, k, hidden = 7, 3, 5
    emb = torch.randn(n_old + k, hidden, generator=gen)
    target = [[0, 7, 8], [8, 9, 1, 1], [9, 7], [2, 3]]  # the last holds no new token: not in the fit
    english = [[1, 2], [3], [4, 5, 6], [0]]
    ridge = 0.1
    got, misfit = fit_new_embeddings(emb, n_old, target, english, ridge)
    old = emb[:n_old].double().numpy()
    rows, rhs = [], []
    for t, e in list(zip(target, english))[:3]:
        a = np.zeros(k)
        for tok in t:
            if tok >= n_old:
                a[tok - n_old] += 1 / len(t)
        rows.append(a)
        rhs.append(old[e].mean(0) - sum(old[tok] for tok in t if tok < n_old) / len(t))
    mu = old.mean(0)
    a_aug = np.vstack([np.array(rows), np.sqrt(ridge) * np.eye(k)])
    b_aug = np.vstack([np.array(rhs), np.sqrt(ridge) * np.tile(mu, (k, 1))])
    expected = np.linalg.lstsq(a_aug, b_aug, rcond=None)[0]
    np.testing.assert_allclose(got.double().numpy(), expected, atol=1e-5)
    assert 0 <= misfit < 1


def test_extension_gives_tokens_to_the_unknown_units_and_leaves_old_rows_alone(tiny_student):
    student = Student.create(str(tiny_student), 16)
    before = student.transformer.auto_model.get_input_embeddings().weight.detach().clone()
    n_old, pairs = len(student.tokenizer), list(zip(EN, DZ))
    assert unknown_token_share(student.tokenizer, DZ) > AUTO_UNKNOWN_SHARE
    units = [u for u, _ in unknown_units(student.tokenizer, DZ)]
    report = extend_vocabulary(student, pairs, "auto")
    assert report.added == report.candidates == len(units) >= 4
    assert student.tokenizer.convert_ids_to_tokens(list(range(n_old, n_old + report.added))) == units
    assert report.unknown_before > 0.2 and report.unknown_after == 0.0  # every unit occurs at least twice
    assert unknown_token_share(student.tokenizer, DZ) == 0.0
    weight = student.transformer.auto_model.get_input_embeddings().weight
    assert weight.shape[0] == len(student.tokenizer) == n_old + report.added
    assert torch.equal(weight[:n_old], before[:n_old])
    assert not torch.allclose(weight[n_old:], weight[n_old:].mean(0).expand_as(weight[n_old:]))  # not one vector
    # a sentence of one known word is read as before; the Tibetan ones now by their new tokens
    ids = student.tokenizer("བཀྲ་ཤིས་ con", add_special_tokens=False)["input_ids"]
    assert sum(i >= n_old for i in ids) == 2 and student.tokenizer.unk_token_id not in ids


def test_extension_respects_its_limit_and_auto_leaves_a_readable_language_alone(tiny_student):
    student = Student.create(str(tiny_student), 16)
    n_old = len(student.tokenizer)
    assert extend_vocabulary(student, list(zip(EN, DZ)), 0) is None and len(student.tokenizer) == n_old
    vi = ["con mèo ngủ", "con mèo"] * 4
    assert extend_vocabulary(student, list(zip(EN, vi)), "auto") is None and len(student.tokenizer) == n_old
    report = extend_vocabulary(student, list(zip(EN, DZ)), 1)
    assert report.added == 1 and report.candidates > 1 and 0 < report.unknown_after < report.unknown_before
    assert student.tokenizer.convert_ids_to_tokens(n_old) == unknown_units(
        Student.create(str(tiny_student), 16).tokenizer, DZ)[0][0]  # the most frequent unit


@pytest.mark.parametrize("value,expected", [("auto", "auto"), ("0", 0), ("8000", 8000)])
def test_new_tokens_recipe_values(value, expected):
    assert load_recipe("recipes/vi/quickstart.yaml", [f"student.new_tokens={value}"]).student.new_tokens == expected


@pytest.mark.parametrize("value", ["-1", "many", "1.5"])
def test_new_tokens_bad_values_are_one_line(value):
    with pytest.raises(OpticalError, match="student.new_tokens") as err:
        load_recipe("recipes/vi/quickstart.yaml", [f"student.new_tokens={value}"])
    assert "\n" not in str(err.value)


def test_distill_extends_saves_and_reloads_the_vocabulary(tiny_teacher_st, tiny_student, tmp_path, capsys):
    """End to end: the report reaches metrics.json, the unknown share is the one after the
    extension (no warning), and the saved folder encodes the same with plain sentence-transformers."""
    from sentence_transformers import SentenceTransformer

    path = tmp_path / "dz.tsv"
    path.write_text("".join(f"{en}\t{dz}\n" for en, dz in zip(EN, DZ)), "utf-8")
    recipe = recipe_from_dict({"lang": "dz", "teacher": {"model": str(tiny_teacher_st)},
                               "student": {"model": str(tiny_student)},
                               "bitext": {"path": str(path), "heldout": 0}, "output_dir": str(tmp_path / "r")},
                              ["train.steps=2", "train.batch_size=4"])
    result = distill(recipe, show_progress=False)
    metrics = json.loads((tmp_path / "r" / "metrics.json").read_text())
    assert metrics["vocabulary"]["added"] > 0 and metrics["vocabulary"]["unknown_before"] > 0.2
    assert metrics["student_unknown_tokens"] == 0.0
    assert "unknown token" not in capsys.readouterr().out
    loaded = Student.load(result.student_dir)
    assert len(loaded.tokenizer) == loaded.transformer.auto_model.get_input_embeddings().weight.shape[0]
    assert loaded.tokenizer.unk_token_id not in loaded.tokenizer("བཀྲ་ཤིས་", add_special_tokens=False)["input_ids"]
    plain = SentenceTransformer(str(result.student_dir), device="cpu", trust_remote_code=True)  # the refit's LayerConcat
    np.testing.assert_allclose(plain.encode(DZ[:4], normalize_embeddings=True), loaded.encode(DZ[:4]), atol=1e-5)


def test_an_extended_student_resumes_bit_identical(tiny_teacher_st, tiny_student, tmp_path, monkeypatch):
    """Killed after a checkpoint and resumed: the checkpoint holds the new tokens (no second
    extension), the weights and metrics.json equal an unbroken run's, vocabulary report included."""
    import optical.training.loop as loop

    class Killed(BaseException):
        pass

    path = tmp_path / "dz.tsv"
    path.write_text("".join(f"{en}\t{dz}\n" for en, dz in zip(EN, DZ)), "utf-8")

    def recipe(out):
        return recipe_from_dict({"lang": "dz", "teacher": {"model": str(tiny_teacher_st)},
                                 "student": {"model": str(tiny_student)},
                                 "bitext": {"path": str(path), "heldout": 0}, "output_dir": str(tmp_path / out)},
                                ["train.steps=4", "train.batch_size=4", "train.checkpoint_every=2"])

    unbroken = distill(recipe("a"), show_progress=False)
    real = loop.save_checkpoint

    def save_then_die(run_dir, at, *args, **kwargs):
        saved = real(run_dir, at, *args, **kwargs)
        if at == 2:
            raise Killed(saved)
        return saved

    with monkeypatch.context() as patch:
        patch.setattr(loop, "save_checkpoint", save_then_die)
        with pytest.raises(Killed):
            distill(recipe("b"), show_progress=False)
    calls = []
    monkeypatch.setattr(loop, "extend_vocabulary", lambda *a, **k: calls.append(a))
    resumed = distill(recipe("b"), resume=True, show_progress=False)
    assert calls == []  # the student came from the checkpoint, tokens and all
    a, b = Student.load(unbroken.student_dir).state_dict(), Student.load(resumed.student_dir).state_dict()
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    summary = [json.loads((tmp_path / run / "metrics.json").read_text()) for run in ("a", "b")]
    for s in summary:
        s.pop("seconds")
    assert summary[0] == summary[1] and summary[1]["vocabulary"]["added"] > 0


def test_a_matrix_padded_past_the_vocabulary_keeps_its_size(tiny_student):
    """Models often pad the embedding matrix past the tokenizer (e5-small: 250,037 rows for
    250,002 tokens): new tokens take the ids from len(tokenizer) on, and the matrix only grows."""
    student = Student.create(str(tiny_student), 16)
    encoder, n_old = student.transformer.auto_model, len(student.tokenizer)
    encoder.resize_token_embeddings(n_old + 5, mean_resizing=False)
    before = encoder.get_input_embeddings().weight.detach().clone()
    report = extend_vocabulary(student, list(zip(EN, DZ)), 2)
    weight = encoder.get_input_embeddings().weight
    assert report.added == 2 and weight.shape[0] == n_old + 5
    assert torch.equal(weight[:n_old], before[:n_old]) and torch.equal(weight[n_old + 2:], before[n_old + 2:])
    assert not torch.equal(weight[n_old:n_old + 2], before[n_old:n_old + 2])
    assert student.tokenizer.convert_tokens_to_ids(student.tokenizer.convert_ids_to_tokens(n_old + 1)) == n_old + 1
