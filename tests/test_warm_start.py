"""Closed-form head fit: recovers a known linear map; the fitted student round-trips."""

import json

import numpy as np
import pytest
import torch
from sentence_transformers import SentenceTransformer

from optical.errors import OpticalError
from optical.models.student import Student
from optical.training.warm_start import fit_procrustes, fit_ridge, pooled_student_states, warm_start


def test_ridge_recovers_a_known_map():
    g = torch.Generator().manual_seed(0)
    x = torch.randn(400, 12, generator=g)
    w, b = torch.randn(12, 20, generator=g), torch.randn(20, generator=g)
    w_hat, b_hat = fit_ridge(x, x @ w + b, ridge=1e-8)
    torch.testing.assert_close(w_hat, w, atol=1e-4, rtol=0)
    torch.testing.assert_close(b_hat, b, atol=1e-4, rtol=0)


def test_procrustes_recovers_a_scaled_rotation():
    g = torch.Generator().manual_seed(1)
    x = torch.randn(300, 16, generator=g)
    q, _ = torch.linalg.qr(torch.randn(16, 16, generator=g))
    w_hat, _ = fit_procrustes(x, 3.0 * x @ q + 1.0)
    torch.testing.assert_close(w_hat, 3.0 * q, atol=1e-4, rtol=0)


def test_warm_start_fits_student_head_and_saved_student_reproduces_it(tmp_path, tiny_student, bitext_tsv):
    pairs = [tuple(line.split("\t")) for line in bitext_tsv.read_text("utf-8").splitlines()]
    student = Student.create(str(tiny_student), output_dim=8, max_length=32)
    # a synthetic "teacher": a fixed linear map of the student's own pooled states
    other = pooled_student_states(student, [p[1] for p in pairs], 16, "cpu")
    english = pooled_student_states(student, [p[0] for p in pairs], 16, "cpu")
    w_true = torch.randn(student.hidden_dim, 8, generator=torch.Generator().manual_seed(2))
    target = (other + english) / 2 @ w_true
    report = warm_start(student, pairs, target, method="ridge", ridge=1e-3)
    assert report.heldout_cosine_after > max(report.heldout_cosine_before, 0.9)
    student.save(tmp_path / "s")
    loaded = SentenceTransformer(str(tmp_path / "s"))
    texts = [p[1] for p in pairs[:5]]
    expected = torch.nn.functional.normalize(other[:5] @ student.head.weight.detach().T + student.head.bias.detach(), dim=-1)
    np.testing.assert_allclose(loaded.encode(texts, normalize_embeddings=True), expected.numpy(), atol=1e-4)


def test_pooled_states_are_cached_between_runs(tmp_path, tiny_student, bitext_tsv, monkeypatch):
    import optical.training.warm_start as ws

    pairs = [tuple(line.split("\t")) for line in bitext_tsv.read_text("utf-8").splitlines()]
    target = torch.randn(len(pairs), 8, generator=torch.Generator().manual_seed(3))
    cache = tmp_path / "pooled.safetensors"
    first = warm_start(Student.create(str(tiny_student), output_dim=8), pairs, target, cache_path=cache)
    assert cache.is_file()

    def must_not_run(*args, **kwargs):
        raise AssertionError("pooled states should come from the cache")

    monkeypatch.setattr(ws, "pooled_student_states", must_not_run)
    second = warm_start(Student.create(str(tiny_student), output_dim=8), pairs, target, cache_path=cache)
    assert second.heldout_cosine_after == first.heldout_cosine_after


def test_warm_start_without_english_rows_fits_only_the_other_side(tiny_student, bitext_tsv):
    """stack_english=False regresses the other side alone: its training fit is at least as
    tight there as the stacked fit's, and the English side is left unfitted."""
    pairs = [tuple(line.split("\t")) for line in bitext_tsv.read_text("utf-8").splitlines()]
    probe = Student.create(str(tiny_student), output_dim=8, max_length=32)
    other = pooled_student_states(probe, [p[1] for p in pairs], 16, "cpu")
    target = other @ torch.randn(probe.hidden_dim, 8, generator=torch.Generator().manual_seed(4))
    alone = Student.create(str(tiny_student), output_dim=8, max_length=32)
    warm_start(alone, pairs, target, ridge=1e-6, heldout_fraction=0.0, stack_english=False)
    stacked = Student.create(str(tiny_student), output_dim=8, max_length=32)
    warm_start(stacked, pairs, target, ridge=1e-6, heldout_fraction=0.0, stack_english=True)

    def error(student):
        with torch.no_grad():
            return float(((other @ student.head.weight.T + student.head.bias - target) ** 2).mean())

    assert error(alone) < 1e-4 < error(stacked)


def test_warm_start_sample_is_seeded_and_covers_all_when_asked():
    from optical.training.warm_start import warm_start_sample

    a, b = warm_start_sample(100, 10, seed=1), warm_start_sample(100, 10, seed=2)
    assert a == sorted(a) and len(set(a)) == 10 and a != b and a == warm_start_sample(100, 10, seed=1)
    assert warm_start_sample(5, 10, seed=1) == warm_start_sample(5, None, seed=3) == list(range(5))


def _distill(tmp_path, name, tiny_teacher_st, tiny_student, bitext_tsv, **student):
    from optical.recipe import recipe_from_dict
    from optical.training.loop import distill

    refit = student.pop("refit", False)
    refit_layers = student.pop("refit_layers", None)  # None: the refit reads student.layers
    steps = student.pop("steps", 4)
    recipe = recipe_from_dict({
        "teacher": {"model": str(tiny_teacher_st), "max_length": 32},
        "student": {"model": str(tiny_student), "max_length": 32, **student},
        "bitext": {"path": str(bitext_tsv), "heldout": 8}, "loss": [{"name": "mse", "weight": 1.0}],
        "warm_start": {"pairs": 32, "refit": refit, "refit_layers": refit_layers},
        "train": {"steps": steps, "batch_size": 8, "lr": 1e-3, "checkpoint_every": 0, "eval_every": 0, "seed": 3},
        "output_dir": str(tmp_path / name)})
    return distill(recipe, show_progress=False)


def _assert_ridge_head(saved: Student, trained: Student, run_dir) -> None:
    """`saved`'s head is the ridge fit (λ 1, both sides stacked) of `trained`'s pooled states of
    the run's warm-start pairs onto their teacher embeddings, recomputed here by hand from the
    run's own pairs and targets (through the loop's set-up steps)."""
    from optical.recipe import load_recipe
    from optical.training.loop import Distiller

    runner = Distiller(load_recipe(run_dir / "recipe.yaml"), show_progress=False)
    runner.setup_data()
    runner.setup_models()
    runner.setup_teacher_states()
    pairs, chosen = runner.warm_start_pairs()
    trained.eval()
    n_held = int(len(pairs) * 0.1)
    x = torch.cat([pooled_student_states(trained, [p[1] for p in pairs], 64, "cpu")[n_held:],
                   pooled_student_states(trained, [p[0] for p in pairs], 64, "cpu")[n_held:]])
    y = runner.store.sentence[chosen].float()[n_held:]
    w, bias = fit_ridge(x, torch.cat([y, y]), 1.0)
    torch.testing.assert_close(saved.head.weight, w.T, atol=1e-4, rtol=1e-4)
    torch.testing.assert_close(saved.head.bias, bias, atol=1e-4, rtol=1e-4)


def test_refit_fits_the_head_again_on_the_trained_encoder(tmp_path, tiny_teacher_st, tiny_student, bitext_tsv):
    """Same steps, same encoder weights; with refit the head is the closed-form fit on the
    trained encoder's states of the warm start's pairs, and metrics.json reports it."""
    from safetensors.torch import load_file

    plain = _distill(tmp_path, "plain", tiny_teacher_st, tiny_student, bitext_tsv)
    refit = _distill(tmp_path, "refit", tiny_teacher_st, tiny_student, bitext_tsv, refit=True)
    a = load_file(str(plain.student_dir / "model.safetensors"))
    b = load_file(str(refit.student_dir / "model.safetensors"))
    assert a.keys() == b.keys()
    for key in a:  # the encoder is the same trained encoder
        torch.testing.assert_close(a[key], b[key])
    trained = Student.load(plain.student_dir)
    again = Student.load(refit.student_dir)
    assert not torch.allclose(trained.head.weight, again.head.weight)
    # the refit head is the ridge solution on the trained encoder (recomputed here by hand)
    metrics = json.loads((refit.run_dir / "metrics.json").read_text())
    assert metrics["refit"]["pairs"] == 32 and "refit" not in json.loads((plain.run_dir / "metrics.json").read_text())
    _assert_ridge_head(again, trained, refit.run_dir)


def test_refit_on_other_layers_trains_through_the_last_layer_and_saves_all(tmp_path, tiny_teacher_st, tiny_student,
                                                                            bitext_tsv):
    """warm_start.refit_layers=all: the same trained encoder as a last-layer run, then a head on
    every layer fitted in closed form; the saved folder reads every layer and says so."""
    from safetensors.torch import load_file

    plain = _distill(tmp_path, "plain", tiny_teacher_st, tiny_student, bitext_tsv, layers="last")
    switched = _distill(tmp_path, "switched", tiny_teacher_st, tiny_student, bitext_tsv, layers="last",
                        refit=True, refit_layers="all")
    a = load_file(str(plain.student_dir / "model.safetensors"))
    b = load_file(str(switched.student_dir / "model.safetensors"))
    for key in a:  # the encoder trained through the last-layer head, in both runs
        torch.testing.assert_close(a[key], b[key])
    student = Student.load(switched.student_dir)
    depth = student.transformer.auto_model.config.num_hidden_layers
    assert student.layers == list(range(depth + 1)) and (switched.student_dir / "layer_concat.py").is_file()
    metrics = json.loads((switched.run_dir / "metrics.json").read_text())
    assert metrics["refit"]["layers"] == list(range(depth + 1)) and metrics["refit"]["heldout_cosine_before"] is None
    assert "trust_remote_code=True" in (switched.student_dir / "README.md").read_text()
    # the head is the ridge fit on every layer of the trained encoder
    trained = Student.load(plain.student_dir)
    trained.use_layers("all")
    _assert_ridge_head(student, trained, switched.run_dir)


def test_refit_on_other_layers_without_training_is_that_layers_warm_start(tmp_path, tiny_teacher_st, tiny_student,
                                                                         bitext_tsv):
    """0 steps: a last-layer student refitted on every layer holds the head a `student.layers:
    all` warm start fits (same pairs, same untouched encoder)."""
    switched = _distill(tmp_path, "switched", tiny_teacher_st, tiny_student, bitext_tsv, layers="last",
                        refit=True, refit_layers="all", steps=0)
    direct = _distill(tmp_path, "direct", tiny_teacher_st, tiny_student, bitext_tsv, layers="all", steps=0)
    a, b = Student.load(switched.student_dir), Student.load(direct.student_dir)
    assert a.layers == b.layers is not None
    torch.testing.assert_close(a.head.weight, b.head.weight)
    torch.testing.assert_close(a.head.bias, b.head.bias)
    # and with nothing to switch, 0 steps refit nothing
    plain = _distill(tmp_path, "plain", tiny_teacher_st, tiny_student, bitext_tsv, layers="all", refit=True, steps=0)
    assert "refit" not in json.loads((plain.run_dir / "metrics.json").read_text())


def test_refit_layers_name_the_saved_students_layers_only_with_a_refit():
    from optical.recipe import recipe_from_dict

    defaults = recipe_from_dict({})
    assert (defaults.student.layers, defaults.warm_start.refit_layers, defaults.saved_layers) == ("last", "all", "all")
    assert recipe_from_dict({"warm_start": {"refit": False}}).saved_layers == "last"  # no refit: the trained head
    assert recipe_from_dict({"warm_start": {"refit_layers": None}, "student": {"layers": [0, -1]}}).saved_layers == (0, -1)
    assert recipe_from_dict({"warm_start": {"refit_layers": 3}}).warm_start.refit_layers == (3,)
    with pytest.raises(OpticalError, match="warm_start.refit_layers: name at least one layer") as err:
        recipe_from_dict({"warm_start": {"refit_layers": []}})
    assert "\n" not in str(err.value)
