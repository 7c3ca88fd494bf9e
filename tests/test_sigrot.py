"""SIGROT: plans against POT (reference measure c), stationarity at the teacher, recipes, training."""

import numpy as np
import ot
import pytest
import torch

from optical.errors import OpticalError
from optical.losses import LOSSES
from optical.losses.base import DistillBatch
from optical.losses.sigrot import SigrotLoss, cosine_cost, teacher_graph
from optical.ot import sinkhorn
from optical.recipe import recipe_from_dict


def sentence_batch(student, teacher, image=None):
    """A DistillBatch with only the sentence fields meaningful (SIGROT reads nothing else)."""
    n, dim = teacher.shape
    tokens = torch.zeros(n, 1, dim, dtype=teacher.dtype)
    mask = torch.ones(n, 1, dtype=torch.bool)
    return DistillBatch(tokens, mask, teacher, tokens, mask, student, teacher_image=image)


def embeddings(n=8, dim=16, seed=0):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(n, dim, generator=g, dtype=torch.float64), torch.randn(n, dim, generator=g, dtype=torch.float64)


def test_registered_as_recipe_loss_with_params():
    assert LOSSES["sigrot"] is SigrotLoss
    recipe = recipe_from_dict({"loss": [{"name": "sigrot", "weight": 1.0, "epsilon": 0.1, "graph_weight": 0.2,
                                         "temperature": 0.05, "rho": None, "target": "text"},
                                        {"name": "infonce", "weight": 0.1}]})
    assert recipe.loss[0].params["graph_weight"] == 0.2
    # distill has no image embeddings: an image target is refused, not trained on text
    with pytest.raises(OpticalError, match=r"loss\.0\.target: 'image' needs image embeddings"):
        recipe_from_dict({"loss": [{"name": "sigrot", "target": "image"}]})


@pytest.mark.parametrize("rho", [0.5, 5.0, None])
@pytest.mark.parametrize("graph_weight", [0.0, 0.05, 0.5])
def test_plan_matches_pot_with_reference_measure(rho, graph_weight):
    student, teacher = embeddings(seed=1)
    loss = SigrotLoss(epsilon=0.05, graph_weight=graph_weight, rho=rho, temperature=0.1, max_iter=20000, tol=1e-13)
    graph = teacher_graph(teacher, 0.1)
    cost = cosine_cost(student, teacher)
    plan = loss.plan(cost, graph).numpy()
    a = np.full(len(cost), 1 / len(cost))
    reference = np.exp(loss.reference(graph).numpy())
    expected = ot.sinkhorn_unbalanced(a, a, cost.numpy(), 0.05 + graph_weight, float("inf") if rho is None else rho,
                                      reg_type="kl", c=reference, numItermax=200000, stopThr=1e-15)
    np.testing.assert_allclose(plan, expected, atol=1e-5)
    if graph_weight == 0.0:  # no graph: the reference is a ⊗ b, the solver's default
        default = sinkhorn(cost[None], torch.tensor(a)[None], torch.tensor(a)[None], 0.05, rho, 20000, 1e-13).plan[0]
        np.testing.assert_allclose(plan, default.numpy(), atol=1e-10)


def test_graph_is_symmetric_with_unit_mass_and_pulls_plan_towards_it():
    student, teacher = embeddings(seed=2)
    graph = teacher_graph(teacher, 0.1)
    torch.testing.assert_close(graph, graph.T)
    assert abs(float(graph.sum()) - 1) < 1e-12
    cost = cosine_cost(student, teacher)
    weak = SigrotLoss(graph_weight=0.0, rho=None, max_iter=5000, tol=1e-12).plan(cost, graph)
    strong = SigrotLoss(graph_weight=5.0, rho=None, max_iter=5000, tol=1e-12).plan(cost, graph)
    assert (strong - graph).abs().sum() < (weak - graph).abs().sum()


def test_debiased_loss_is_zero_stationary_and_minimal_at_the_teacher():
    _, teacher = embeddings(seed=3)
    loss = SigrotLoss(epsilon=0.05, graph_weight=0.1, rho=1.0, max_iter=5000, tol=1e-13)
    student = teacher.clone().requires_grad_(True)
    value = loss(sentence_batch(student, teacher))
    value.backward()
    assert abs(float(value.detach())) < 1e-9
    assert float(student.grad.abs().max()) < 1e-7
    g = torch.Generator().manual_seed(0)
    for scale in (0.05, 0.3, 1.0):
        moved = teacher + scale * torch.randn(teacher.shape, generator=g, dtype=teacher.dtype)
        assert float(loss(sentence_batch(moved, teacher))) > 0


def test_gradient_matches_finite_differences():
    """Envelope gradient (plans constant) equals the derivative of the optimal value."""
    student, teacher = embeddings(n=5, dim=6, seed=4)
    loss = SigrotLoss(epsilon=0.1, graph_weight=0.1, rho=1.0, max_iter=20000, tol=1e-14)
    student.requires_grad_(True)
    loss(sentence_batch(student, teacher)).backward()
    direction = torch.randn(student.shape, generator=torch.Generator().manual_seed(1), dtype=student.dtype)
    h = 1e-5
    with torch.no_grad():
        up = loss(sentence_batch(student + h * direction, teacher))
        down = loss(sentence_batch(student - h * direction, teacher))
    numeric = float(up - down) / (2 * h)
    assert abs(float((student.grad * direction).sum()) - numeric) < 1e-5


def test_image_target_used_when_present():
    student, teacher = embeddings(seed=5)
    image = teacher.flip(0)
    on_text = SigrotLoss(target="text")(sentence_batch(student, teacher, image))
    on_image = SigrotLoss(target="image")(sentence_batch(student, teacher, image))
    assert not torch.isclose(on_text, on_image)
    with pytest.raises(ValueError, match="teacher_image"):  # no silent fallback to the text
        SigrotLoss(target="image")(sentence_batch(student, teacher))
    with pytest.raises(ValueError):
        SigrotLoss(target="audio")


def test_one_training_step_with_sigrot_and_infonce_moves_the_student(tiny_clip, tiny_student, bitext_tsv, tmp_path):
    from optical.models.student import Student
    from optical.training.loop import distill

    recipe = recipe_from_dict({"teacher": {"kind": "clip", "model": str(tiny_clip)},
                               "student": {"model": str(tiny_student)},
                               "bitext": {"path": str(bitext_tsv), "heldout": 0},
                               "loss": [{"name": "sigrot", "weight": 1.0}, {"name": "infonce", "weight": 0.1}],
                               "warm_start": {"method": "none"}, "output_dir": str(tmp_path / "run")},
                              ["train.steps=1", "train.batch_size=8", "train.lr=1e-2", "train.warmup_ratio=0"])
    result = distill(recipe, show_progress=False)
    before = Student.create(str(tiny_student), 16, layers=recipe.student.layers).state_dict()
    after = Student.load(result.student_dir).state_dict()
    assert np.isfinite(result.losses[0])
    head = next(k for k in after if k.endswith("linear.weight"))
    body = next(k for k in before if "encoder.layer.0.attention" in k and k.endswith("query.weight"))
    assert not torch.equal(before[head], after[head]) and not torch.equal(before[body], after[body])
