r"""SIGROT: similarity-graph regularised optimal transport between sentence embeddings."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from optical.losses.base import DistillBatch
from optical.ot import sinkhorn


def cosine_cost(x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """1 − cos between the rows of x [B, D] and y [B', D] → [B, B']."""
    return 1.0 - F.normalize(x, dim=-1) @ F.normalize(y, dim=-1).T


def teacher_graph(target: torch.Tensor, temperature: float) -> torch.Tensor:
    """Symmetric similarity graph G [B, B] of mass 1 from the teacher's embeddings [B, D].

    P = row-softmax(cos(t_i, t_j) / temperature); G = (P + Pᵀ) / (2B). Each row of P/B
    carries the mass 1/B of its sentence; the symmetrisation makes the self-transport
    problems of the debiased loss symmetric, which is what makes the teacher a stationary
    point (see SigrotLoss).
    """
    t = F.normalize(target, dim=-1)
    rows = torch.softmax(t @ t.T / temperature, dim=1) / len(target)
    return (rows + rows.T) / 2


def _kl(p: torch.Tensor, q: torch.Tensor) -> torch.Tensor:
    """Generalised KL(p | q) = Σ p log(p/q) − p + q, for non-negative measures of any shape."""
    return (torch.xlogy(p, p) - torch.xlogy(p, q) - p + q).sum()


class SigrotLoss(nn.Module):
    r"""Unbalanced entropic OT between student and teacher sentence embeddings, with the
    plan pulled towards the teacher's own similarity graph.

    For embeddings x, y ([B, D] each, uniform masses a = b = 1/B) and cost
    C_ij = 1 − cos(x_i, y_j), with G the teacher graph (`teacher_graph`):

        OT_G(x, y) = min_{T ≥ 0}  ⟨T, C⟩ + ε KL(T | a⊗b) + λ KL(T | G)
                                   + ρ KL(T1 | a) + ρ KL(Tᵀ1 | b)

    (ε = `epsilon`, λ = `graph_weight`, ρ = `rho`, None = hard marginals). The two KL
    terms merge into one, (ε+λ) KL(T | R) + const, with the geometric mixture
    log R = (ε log(a⊗b) + λ log G) / (ε+λ); so T is entropic unbalanced OT with reference
    measure R (POT: `sinkhorn_unbalanced(a, b, C, ε+λ, ρ, c=R, reg_type="kl")`), solved
    by `optical.ot.sinkhorn(..., log_prior=log R)`. λ = 0 is plain unbalanced OT; a large λ
    makes the plan copy the teacher graph, so a sentence may also be matched to the
    teacher's near-paraphrases in the batch instead of only to its own translation.

    The loss is the debiased value (a Sinkhorn divergence, Feydy et al. 2019)

        loss = OT_G(s, t) − ½ OT_G(s, s) − ½ OT_G(t, t)        (`debias=True`)

    or OT_G(s, t) alone (`debias=False`). Gradients use the envelope theorem: the plans are
    solved without autograd and the gradient flows through the costs. With debias the loss
    is 0 and stationary at s = t (G and the self-cost are symmetric, so the self-plan's two
    halves cancel the cross term); without it the entropic plan spreads mass over
    neighbours and pulls each student embedding towards the teacher's neighbours.

    | input | shape | meaning |
    |---|---|---|
    | batch.student_sentence | [B, D] | s, student embedding of the other language |
    | batch.teacher_sentence | [B, D] | t (target="text"), teacher English embedding |
    | batch.teacher_image | [B, D] / None | t (target="image" and present), CLIP image embedding |
    | returns | scalar | loss |

    Reference: similarity-graph regularised OT for cross-lingual CLIP distillation
    (ViCLIP-OT, 2026); Chizat et al. 2018 (unbalanced Sinkhorn); Feydy et al. 2019
    (Sinkhorn divergences). The paper combines it with InfoNCE weighted 0.1.

    With `debias=True` a student equal to the teacher costs nothing; another one does:

    >>> import torch
    >>> from optical.losses.base import DistillBatch
    >>> t = torch.nn.functional.normalize(torch.randn(4, 8, generator=torch.Generator().manual_seed(0)), dim=-1)
    >>> def batch(s):
    ...     return DistillBatch(teacher_tokens=t[:, None], teacher_mask=torch.ones(4, 1, dtype=torch.bool),
    ...                         teacher_sentence=t, student_tokens=s[:, None],
    ...                         student_mask=torch.ones(4, 1, dtype=torch.bool), student_sentence=s)
    >>> loss = SigrotLoss(epsilon=0.05)
    >>> abs(float(loss(batch(t)))) < 1e-6, float(loss(batch(t.flip(0)))) > 0
    (True, True)
    """

    def __init__(self, epsilon: float = 0.05, graph_weight: float = 0.05, rho: float | None = 1.0,
                 temperature: float = 0.1, target: str = "text", debias: bool = True,
                 max_iter: int = 200, tol: float = 1e-6):
        super().__init__()
        if target not in ("text", "image"):
            raise ValueError(f"target must be 'text' or 'image', got {target!r}")
        if epsilon <= 0 or graph_weight < 0 or temperature <= 0 or (rho is not None and rho <= 0):
            raise ValueError("sigrot: epsilon, temperature (and rho) must be > 0, graph_weight >= 0")
        self.epsilon, self.graph_weight, self.rho = epsilon, graph_weight, rho
        self.temperature, self.target, self.debias = temperature, target, debias
        self.max_iter, self.tol = max_iter, tol

    def target_embeddings(self, batch: DistillBatch) -> torch.Tensor:
        if self.target == "image":
            if batch.teacher_image is None:  # never train on text while the recipe says image
                raise ValueError("sigrot target='image' needs batch.teacher_image (CLIP image embeddings)")
            return batch.teacher_image
        return batch.teacher_sentence

    def reference(self, graph: torch.Tensor) -> torch.Tensor:
        """log R [B, B]: geometric mixture of a⊗b (weight ε) and the graph G (weight λ)."""
        n = len(graph)
        log_ab = torch.full_like(graph, -2.0 * torch.log(torch.tensor(float(n))).item())
        eps, lam = self.epsilon, self.graph_weight
        return (eps * log_ab + lam * torch.log(graph.clamp_min(1e-38))) / (eps + lam)

    def plan(self, cost: torch.Tensor, graph: torch.Tensor) -> torch.Tensor:
        """Transport plan T [B, B] for cost [B, B] (no autograd)."""
        n = len(cost)
        masses = torch.full((1, n), 1.0 / n, dtype=cost.dtype, device=cost.device)
        with torch.no_grad():
            result = sinkhorn(cost.detach()[None], masses, masses, self.epsilon + self.graph_weight, self.rho,
                              self.max_iter, self.tol, log_prior=self.reference(graph)[None])
        return result.plan[0]

    def objective(self, plan: torch.Tensor, cost: torch.Tensor, graph: torch.Tensor) -> torch.Tensor:
        """The OT_G objective at `plan` (differentiable through `cost` only)."""
        n = len(cost)
        a = torch.full((n,), 1.0 / n, dtype=cost.dtype, device=cost.device)
        value = (plan * cost).sum()
        value = value + self.epsilon * _kl(plan, a[:, None] * a[None, :]) + self.graph_weight * _kl(plan, graph)
        if self.rho is not None:
            value = value + self.rho * (_kl(plan.sum(1), a) + _kl(plan.sum(0), a))
        return value

    def ot_value(self, x: torch.Tensor, y: torch.Tensor, graph: torch.Tensor) -> torch.Tensor:
        cost = cosine_cost(x, y)
        return self.objective(self.plan(cost, graph), cost, graph)

    def forward(self, batch: DistillBatch) -> torch.Tensor:
        # half precision (autocast) loses the plan; double stays double (gradient checks)
        dtype = torch.promote_types(batch.student_sentence.dtype, torch.float32)
        student = batch.student_sentence.to(dtype)
        target = self.target_embeddings(batch).to(dtype).detach()
        graph = teacher_graph(target, self.temperature)
        loss = self.ot_value(student, target, graph)
        if self.debias:
            with torch.no_grad():
                teacher_self = self.ot_value(target, target, graph)
            loss = loss - 0.5 * self.ot_value(student, student, graph) - 0.5 * teacher_self
        return loss
