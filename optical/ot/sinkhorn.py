r"""Batched log-domain Sinkhorn for entropic (balanced or unbalanced) optimal transport.

For each batch item solve

    min_T  <T, C> + ε KL(T | a ⊗ b) + ρ KL(T 1 | a) + ρ KL(Tᵀ 1 | b)

with ρ = ∞ (hard marginals, the balanced problem) or ρ < ∞ (KL-relaxed marginals,
Chizat et al. 2016). The plan is T_ij = exp(f_i + log a_i + log b_j - C_ij / ε + g_j)
where the scaled potentials f, g follow the fixed point

    f = λ (log a - LSE_j(log a_i + log b_j - C_ij/ε + g_j) + ... )   λ = ρ / (ρ + ε)

This is the formulation of POT's `ot.sinkhorn` (balanced; there KL and entropy give the
same plan) and `ot.sinkhorn_unbalanced(..., reg_type="kl")`, so plans match POT's. Working
on log-potentials keeps small ε (1e-3 with costs in [0, 2]) free of under/overflow.

Padding: a zero mass means log a = -inf; those rows/columns are masked out of every
log-sum-exp, so padded tokens carry no mass and leave the real tokens' plan unchanged.

References: Cuturi 2013 (Sinkhorn distances); Peyré & Cuturi 2019, §4.4 (log domain);
Chizat, Peyré, Schmitzer & Vialard 2018 (unbalanced scaling algorithms).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch


@dataclass
class SinkhornResult:
    """plan: [batch, n, m]; iterations run; final potential change (the stopping error)."""

    plan: torch.Tensor
    iterations: int
    error: float


def sinkhorn(
    cost: torch.Tensor,
    a: torch.Tensor,
    b: torch.Tensor,
    epsilon: float = 0.05,
    rho: float | None = None,
    max_iter: int = 100,
    tol: float = 1e-6,
    check_every: int = 10,
) -> SinkhornResult:
    """Entropic OT plans for a batch of problems, on the device of `cost`.

    | arg | shape | meaning |
    |---|---|---|
    | cost | [batch, n, m] | cost matrices |
    | a | [batch, n] | source masses, ≥ 0 (0 = padding) |
    | b | [batch, m] | target masses, ≥ 0 (0 = padding) |
    | returns.plan | [batch, n, m] | transport plans, zero on padded rows/columns |

    `epsilon` is the entropic regularisation (POT's `reg`), `rho` the marginal relaxation
    (POT's `reg_m`; None = balanced). Iterations stop at `max_iter` or once the largest
    change of the potentials (in cost units, ε·Δf) falls below `tol`; checked every
    `check_every` iterations because each check synchronises a GPU with the host.
    Autograd flows through the iterations when the inputs require grad (unrolled
    gradient); for the envelope gradient call this under `torch.no_grad()`.
    """
    if cost.dim() != 3:
        raise ValueError(f"cost must be [batch, n, m], got shape {tuple(cost.shape)}")
    if cost.dtype in (torch.float16, torch.bfloat16):
        cost = cost.float()  # log-sum-exp in half precision loses the plan
    a, b = a.to(cost), b.to(cost)
    row_real, col_real = a > 0, b > 0
    log_a = torch.log(a.clamp_min(1e-38)).masked_fill(~row_real, 0.0)
    log_b = torch.log(b.clamp_min(1e-38)).masked_fill(~col_real, 0.0)
    real = row_real[:, :, None] & col_real[:, None, :]
    # log of the Gibbs kernel w.r.t. the reference measure a ⊗ b; -inf off the real block
    log_kernel = (log_a[:, :, None] + log_b[:, None, :] - cost / epsilon).masked_fill(~real, float("-inf"))
    # Fully padded rows/columns get a finite (ignored) kernel in their own log-sum-exp, so
    # the unrolled backward never computes exp(-inf - -inf) = NaN there.
    row_kernel = log_kernel.masked_fill(~row_real[:, :, None], 0.0)
    col_kernel = log_kernel.masked_fill(~col_real[:, None, :], 0.0)
    lam = 1.0 if rho is None else rho / (rho + epsilon)

    f = torch.zeros_like(log_a)
    g = torch.zeros_like(log_b)
    error = float("inf")
    iterations = 0
    for iterations in range(1, max_iter + 1):
        f_prev = f
        f = lam * (log_a - torch.logsumexp(row_kernel + g[:, None, :], dim=2))
        f = f.masked_fill(~row_real, 0.0)
        g = lam * (log_b - torch.logsumexp(col_kernel + f[:, :, None], dim=1))
        g = g.masked_fill(~col_real, 0.0)
        if iterations % check_every == 0 or iterations == max_iter:
            error = float((f - f_prev).detach().abs().max()) * epsilon
            if error < tol:
                break
    plan = torch.exp(log_kernel + f[:, :, None] + g[:, None, :])
    return SinkhornResult(plan=plan, iterations=iterations, error=error)
