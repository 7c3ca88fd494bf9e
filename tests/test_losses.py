"""Losses: values that follow their definitions, gradients that reach the student."""

import ot
import pytest
import torch

from optical.losses import DistillBatch, InfoNCELoss, SentenceMSELoss, TokenOTLoss, build_objective
from optical.ot import cost_matrix
from optical.recipe import LossTerm, OTConfig


def make_batch(requires_grad=True, seed=0, b=3, n=6, m=5, d=8):
    g = torch.Generator().manual_seed(seed)
    student_tokens = torch.randn(b, m, d, generator=g, requires_grad=requires_grad)
    student_sentence = torch.randn(b, d, generator=g, requires_grad=requires_grad)
    teacher_mask = torch.ones(b, n, dtype=torch.bool)
    teacher_mask[0, 4:] = False
    student_mask = torch.ones(b, m, dtype=torch.bool)
    student_mask[1, 3:] = False
    return DistillBatch(
        teacher_tokens=torch.randn(b, n, d, generator=g), teacher_mask=teacher_mask,
        teacher_sentence=torch.randn(b, d, generator=g), student_tokens=student_tokens,
        student_mask=student_mask, student_sentence=student_sentence,
        student_sentence_en=torch.randn(b, d, generator=g, requires_grad=requires_grad))


def test_token_ot_equals_pot_transport_cost():
    batch = make_batch(requires_grad=False)
    loss = TokenOTLoss(epsilon=0.1, max_iter=5000, tol=1e-10)(batch)
    expected = 0.0
    for i in range(3):
        x = batch.teacher_tokens[i][batch.teacher_mask[i]].double()
        y = batch.student_tokens[i][batch.student_mask[i]].double()
        c = cost_matrix(x[None], y[None])[0].numpy()
        a = torch.full((len(x),), 1.0 / len(x), dtype=torch.float64).numpy()
        bb = torch.full((len(y),), 1.0 / len(y), dtype=torch.float64).numpy()
        expected += (ot.sinkhorn(a, bb, c, 0.1, numItermax=100000, stopThr=1e-12) * c).sum() / 3
    assert float(loss) == pytest.approx(expected, abs=1e-5)


@pytest.mark.parametrize("gradient", ["envelope", "unrolled"])
def test_token_ot_gradient_reaches_real_student_tokens_only(gradient):
    batch = make_batch()
    TokenOTLoss(gradient=gradient)(batch).backward()
    grad = batch.student_tokens.grad
    assert grad[batch.student_mask].abs().sum() > 0
    assert grad[~batch.student_mask].abs().sum() == 0  # padding neither moves nor is moved


def test_envelope_and_unrolled_give_the_same_value():
    batch = make_batch(requires_grad=False)
    a = TokenOTLoss(gradient="envelope", tol=1e-9, max_iter=2000)(batch)
    b = TokenOTLoss(gradient="unrolled", tol=1e-9, max_iter=2000)(batch)
    assert float(a) == pytest.approx(float(b), abs=1e-6)


def test_token_ot_decreases_when_student_copies_teacher():
    batch = make_batch(requires_grad=False, n=5, m=5)
    batch.student_mask = batch.teacher_mask.clone()
    far = TokenOTLoss()(batch)
    batch.student_tokens = batch.teacher_tokens.clone()
    near = TokenOTLoss()(batch)
    assert float(near) < float(far)


def test_token_ot_english_adds_the_english_side_transport():
    """english=True: the target-side plan cost plus the same cost for the student's English tokens
    (their own mask and masses); english=False ignores them; the gradient reaches both sides."""
    batch = make_batch()
    g = torch.Generator().manual_seed(5)
    batch.student_tokens_en = torch.randn(3, 7, 8, generator=g, requires_grad=True)
    batch.student_mask_en = torch.ones(3, 7, dtype=torch.bool)
    batch.student_mask_en[2, 5:] = False
    batch.student_masses_en = torch.rand(3, 7, generator=g) * batch.student_mask_en
    batch.student_masses_en = batch.student_masses_en / batch.student_masses_en.sum(-1, keepdim=True)
    loss = TokenOTLoss(epsilon=0.1)
    target_only = TokenOTLoss(epsilon=0.1, english=False)(batch).detach()
    english_only = DistillBatch(
        teacher_tokens=batch.teacher_tokens, teacher_mask=batch.teacher_mask, teacher_sentence=batch.teacher_sentence,
        student_tokens=batch.student_tokens_en, student_mask=batch.student_mask_en,
        student_sentence=batch.student_sentence, student_masses=batch.student_masses_en)
    both = TokenOTLoss(epsilon=0.1, english=True)(batch)
    assert float(loss(batch).detach()) == pytest.approx(float(target_only))
    assert float(both.detach()) == pytest.approx(float(target_only) + float(loss(english_only).detach()), rel=1e-6)
    both.backward()
    assert batch.student_tokens.grad[batch.student_mask].abs().sum() > 0
    assert batch.student_tokens_en.grad[batch.student_mask_en].abs().sum() > 0
    assert batch.student_tokens_en.grad[~batch.student_mask_en].abs().sum() == 0


def test_token_ot_english_must_be_a_boolean():
    with pytest.raises(ValueError, match="english must be true or false"):
        TokenOTLoss(english="yes")


def test_objective_asks_for_english_tokens_only_for_token_ot_english():
    ot_config = OTConfig()
    plain = build_objective([LossTerm("token_ot", 1.0), LossTerm("mse", 1.0)], ot_config)
    english = build_objective([LossTerm("token_ot", 1.0, {"english": True}), LossTerm("mse", 1.0, {"english": False})],
                              ot_config)
    assert plain.needs_english_student and not plain.needs_english_tokens
    assert english.needs_english_student and english.needs_english_tokens


def test_mse_uses_english_side_when_asked():
    batch = make_batch()
    both = SentenceMSELoss(english=True)(batch)
    other_only = SentenceMSELoss(english=False)(batch)
    expected = torch.nn.functional.mse_loss(batch.student_sentence, batch.teacher_sentence)
    assert other_only.item() == pytest.approx(expected.item())
    assert both.item() > other_only.item()
    both.backward()
    assert batch.student_sentence_en.grad is not None


def test_infonce_is_low_when_pairs_match_and_high_when_shuffled():
    teacher = torch.nn.functional.normalize(torch.randn(8, 16), dim=-1)
    batch = make_batch(b=8, d=16)
    batch.teacher_sentence = teacher
    batch.student_sentence = teacher.clone().requires_grad_(True)
    matched = InfoNCELoss(temperature=0.05)(batch)
    batch.student_sentence = teacher[torch.roll(torch.arange(8), 1)]
    shuffled = InfoNCELoss(temperature=0.05)(batch)
    assert matched.item() < 0.1 < shuffled.item()


def test_objective_weights_terms():
    batch = make_batch(requires_grad=False)
    objective = build_objective((LossTerm("token_ot", 2.0), LossTerm("mse", 0.5)), OTConfig(epsilon=0.1))
    total, parts = objective(batch)
    assert float(total) == pytest.approx(2.0 * parts["token_ot"] + 0.5 * parts["mse"], rel=1e-5)
    assert objective.losses[0].epsilon == 0.1  # OT settings come from the recipe's ot section
